"""Soak the scoring service: many clients for minutes, valid and invalid requests mixed.

Usage
-----
::

    .venv/bin/python benchmarks/bench_soak.py [--clients 20] [--seconds 180] [--cdnow-customers N]
    .venv/bin/python benchmarks/bench_soak.py --tiny      # a few seconds (tests)

This process is the client (asyncio + httpx, loopback only); the service runs as a child process
on 127.0.0.1 with a scorer fitted on CDNOW into a temporary MLflow store (see
``bench_service.fit_store``). Each client picks, at random, one of: ``/score`` for 1 or 50 ids,
``/score_history`` for a posted customer, ``/winback``, ``/info``, and the invalid requests a CRM
integration really sends (a wrong key, an unknown field, a wrong type, a body that is not JSON,
``text/plain``, an over-limit list, a history with an impossible timestamp). It reports, per kind:
requests, status codes seen, p50 and p99 latency; errors are 5xx answers, and answers whose
status is not the one that kind must get. It also reports the service's resident memory (all its
processes) after the warm-up and at the end, so a leak shows as growth.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

KEY = "soak-key"


def request_kinds(ids: list[str]) -> dict[str, tuple[str, str, object, int]]:
    """Kind -> (method, path, body or raw text, the status it must get)."""
    history = {"as_of": "1997-09-30", "customers": [{"customer_id": "soak-1", "transactions": [
        {"timestamp": "1997-01-03", "amount": 29.9}, {"timestamp": "1997-03-14T18:20:00+08:00", "amount": 12.5}]}]}
    return {
        "score 1 id": ("POST", "/score", lambda r: {"customer_ids": [r.choice(ids)], "reasons": False}, 200),
        "score 50 ids": ("POST", "/score", lambda r: {"customer_ids": r.sample(ids, 50), "reasons": False}, 200),
        "score with reasons": ("POST", "/score", lambda r: {"customer_ids": [r.choice(ids)]}, 200),
        "score_history": ("POST", "/score_history", lambda r: history, 200),
        "winback list": ("POST", "/winback", lambda r: {"limit": 20, "lang": "zh-TW"}, 200),
        "info": ("GET", "/info", None, 200),
        "bad: wrong key": ("POST", "/score", lambda r: {"customer_ids": ["00001"]}, 401),
        "bad: unknown field": ("POST", "/score", lambda r: {"customer_ids": ["00001"], "extra": 1}, 400),
        "bad: wrong type": ("POST", "/winback", lambda r: {"limit": "10"}, 400),
        "bad: not JSON": ("POST", "/score", "{not json", 400),
        "bad: text/plain": ("POST", "/score", "customer_ids=00001", 415),
        "bad: over the limit": ("POST", "/winback", lambda r: {"limit": 10**7}, 400),
        "bad: impossible timestamp": ("POST", "/score_history", lambda r: {
            "as_of": "1997-09-30", "customers": [{"customer_id": "x", "transactions": [
                {"timestamp": "9999-12-31T23:59:59-14:00", "amount": 1.0}]}]}, 400),
    }


async def soak(url: str, ids: list[str], clients: int, seconds: float, seed: int = 0) -> dict:
    import httpx

    kinds = request_kinds(ids)
    names = list(kinds)
    results: dict[str, dict] = defaultdict(lambda: {"latencies": [], "statuses": defaultdict(int), "errors": 0})
    deadline = time.perf_counter() + seconds
    auth = {"Authorization": f"Bearer {KEY}"}

    async def client_loop(client: httpx.AsyncClient, rng: random.Random) -> None:
        while time.perf_counter() < deadline:
            name = rng.choice(names)
            method, path, body, expected = kinds[name]
            headers = dict(auth)
            if name == "bad: wrong key":
                headers["Authorization"] = "Bearer not-a-key"
            start = time.perf_counter()
            if method == "GET":
                answer = await client.get(path, headers=headers)
            elif isinstance(body, str):
                kind = "text/plain" if name == "bad: text/plain" else "application/json"
                answer = await client.post(path, content=body, headers={**headers, "Content-Type": kind})
            else:
                answer = await client.post(path, content=json.dumps(body(rng)),
                                           headers={**headers, "Content-Type": "application/json"})
            entry = results[name]
            entry["latencies"].append(time.perf_counter() - start)
            entry["statuses"][answer.status_code] += 1
            entry["errors"] += answer.status_code >= 500 or answer.status_code != expected

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        await asyncio.gather(*(client_loop(client, random.Random(seed + i)) for i in range(clients)))
    return results


def service_rss(url: str) -> int:
    """Resident memory of the process listening on ``url``'s port and all its children, in bytes."""
    import psutil

    port = int(url.rsplit(":", 1)[1])
    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            root = psutil.Process(conn.pid)
            while root.parent() is not None and "bentoml" in " ".join(root.parent().cmdline()):
                root = root.parent()
            procs = [root, *root.children(recursive=True)]
            return sum(p.memory_info().rss for p in procs if p.is_running())
    return 0


def report(results: dict, rss_start: int, rss_end: int, seconds: float) -> int:
    print(f"{'request':<26} {'n':>6} {'statuses':<20} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    total = errors = 0
    for name, entry in sorted(results.items()):
        lat = np.asarray(entry["latencies"]) * 1000
        statuses = ",".join(f"{k}×{v}" for k, v in sorted(entry["statuses"].items()))
        print(f"{name:<26} {len(lat):>6} {statuses:<20} {np.percentile(lat, 50):>8.1f} "
              f"{np.percentile(lat, 99):>8.1f} {entry['errors']:>6}")
        total += len(lat)
        errors += entry["errors"]
    every = np.concatenate([np.asarray(e["latencies"]) for e in results.values()]) * 1000
    print(f"{'all':<26} {total:>6} {'':<20} {np.percentile(every, 50):>8.1f} {np.percentile(every, 99):>8.1f} "
          f"{errors:>6}")
    print(f"{total / seconds:.0f} requests/s; errors (5xx or an unexpected status): {errors}")
    growth = (rss_end - rss_start) / rss_start if rss_start else float("nan")
    print(f"service RSS after warm-up {rss_start / 2**20:.0f} MiB, at end {rss_end / 2**20:.0f} MiB "
          f"({growth:+.1%})")
    return errors


def main(argv: list[str] | None = None) -> int:
    from measure import parse_args, print_load

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=180.0, help="how long to soak")
    parser.add_argument("--cdnow-customers", type=int, default=None, metavar="N",
                        help="fit and serve CDNOW's first N customers only (default: all 23,570)")
    args = parse_args(parser, argv, tiny={"clients": 4, "seconds": 4.0, "cdnow_customers": 2000})

    from bench_service import fit_store

    from serving.run import running, service_env

    print_load("at start")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print("fitting a scorer on CDNOW and writing the snapshot ...", file=sys.stderr, flush=True)
        uri, snapshot, _, ids, _ = fit_store(root, args.cdnow_customers, 30, 15)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("WINBACK_", "MLFLOW_", "BENTOML_"))}
        env = service_env(uri, snapshot=snapshot, poll_seconds=0, base=base)
        env.update(WINBACK_API_KEYS=KEY, BENTOML_HOME=str(root / "bentoml"), WINBACK_MAX_LIMIT="1000")
        with running(env, log=root / "winback.log") as url:
            asyncio.run(soak(url, ids, args.clients, min(2.0, args.seconds), seed=1))    # warm-up
            rss_start = service_rss(url)
            print(f"soaking with {args.clients} clients for {args.seconds:.0f} s ...", file=sys.stderr, flush=True)
            results = asyncio.run(soak(url, ids, args.clients, args.seconds))
            rss_end = service_rss(url)
    errors = report(results, rss_start, rss_end, args.seconds)
    print_load("at end")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
