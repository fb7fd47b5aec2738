"""A CRM's nightly full-base sync: ``GET /scores`` (one streamed answer) beside asking ``/score``
for every customer 1,000 ids at a time, against one service, in one run; and the service's memory.

Usage
-----
::

    .venv/bin/python benchmarks/bench_sync.py [--customers 200000] [--seed 42] [--clients 4]
    .venv/bin/python benchmarks/bench_sync.py --customers 1000000      # the issue's size and memory
    .venv/bin/python benchmarks/bench_sync.py --tiny                   # a few seconds' worth (tests)

A scorer is fitted on CDNOW with small models into a temporary MLflow store (registered as
champion, as ``bench_service.py`` does); ``synthetic.py`` writes a log of ``--customers``
customers, and their feature table (built with the model's feature reference, as ``winback
features --model-uri`` builds it) is the service's snapshot. The service runs as a child process
on 127.0.0.1 (one worker); this process is the client.

Measured, each as customers delivered per second of wall time (the client reads every byte;
neither side parses JSON, as a CRM loader would after either):

* ``/score`` pages: every customer, 1,000 ids per request, ``reasons: false``, over ``--clients``
  keep-alive connections (what a CRM does without the sync call);
* ``GET /scores`` NDJSON and Parquet, one request each, after the service has written the
  snapshot's files (it does once per snapshot, in the background, when it starts serving it;
  the wait for them is printed as its own row);
* ``GET /scores?since=<ETag>`` of the same snapshot (nothing changed: an empty answer).

The goal of issue #24 is the sync at least 5x the pages. The service's memory is the resident
set of the ``bentoml serve`` process and its workers (sampled every 0.1 s): after start, and the
peak over the run; the goal at 1M customers is under 2 GiB. One truth: a sample of customers'
lines equal their ``/score`` answers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from measure import parse_args, print_load  # noqa: E402

KEY = "bench-key"
GiB = 1024 ** 3


def build(root: Path, customers: int, seed: int, cdnow_customers: int | None) -> tuple[str, Path]:
    """The MLflow store with a champion fitted on CDNOW, and the synthetic customers' snapshot."""
    import bench_service
    import synthetic

    from features import ColumnMap, read_transactions
    from features.job import write_features
    from training.registry import load_version, resolve_version

    uri, *_ = bench_service.fit_store(root, customers=cdnow_customers, churn_estimators=30, hazard_estimators=15)
    log_path = root / "transactions.parquet"
    synthetic.write_transactions(log_path, customers, seed=seed)
    from mlflow import MlflowClient

    scorer = load_version(resolve_version(MlflowClient(uri, registry_uri=uri), "models:/winback@champion"))
    log = read_transactions([str(log_path)], ColumnMap())
    snapshot = root / "snapshot.parquet"
    write_features(log, log.report.last_timestamp.date().isoformat(), snapshot, "D", reference=scorer.reference_)
    log_path.unlink()
    return uri, snapshot


class Memory:
    """The resident set of the server's processes (the arbiter and its workers), sampled."""

    def __init__(self, url: str) -> None:
        from bench_service import ServerCPU

        self.processes = ServerCPU(url).processes
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> int:
        import psutil

        total = 0
        for process in self.processes:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, self.now())

    def __enter__(self) -> "Memory":
        self.peak = self.now()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


async def fetch(url: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], int, int]:
    """GET ``path``: (status, headers, bytes, newlines) of the whole answer, read as it streams."""
    host_port = url.removeprefix("http://")
    host, port = host_port.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 22)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host_port}\r\n{extra}Connection: close\r\n\r\n".encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    answer = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    size = newlines = 0
    while chunk := await reader.read(1 << 20):          # chunked framing counted too: a few bytes a MiB
        size += len(chunk)
        newlines += chunk.count(b"\n")
    writer.close()
    return status, answer, size, newlines


async def score_pages(url: str, ids: list[str], clients: int) -> float:
    """Every id through ``/score``, 1,000 per request over ``clients`` connections; seconds."""
    from bench_service import Connection

    pages = [ids[i:i + 1000] for i in range(0, len(ids), 1000)]
    connections = [Connection(url + "/score", {"Authorization": f"Bearer {KEY}"}) for _ in range(clients)]

    async def work(connection: Connection) -> None:
        while pages:
            page = pages.pop()
            if (status := await connection.post({"customer_ids": page, "reasons": False})) != 200:
                raise RuntimeError(f"/score answered {status}")

    started = time.perf_counter()
    await asyncio.gather(*(work(c) for c in connections))
    seconds = time.perf_counter() - started
    for connection in connections:
        await connection.close()
    return seconds


def one_truth(url: str, lines: bytes, sample: int = 200) -> bool:
    """A sample of the stream's lines equal the same customers' ``/score`` answers."""
    import httpx
    import orjson

    rows = [orjson.loads(line) for line in lines.splitlines()]
    chosen = random.Random(0).sample(rows, min(sample, len(rows)))
    answer = httpx.post(url + "/score", json={"customer_ids": [r["customer_id"] for r in chosen], "reasons": False},
                        headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
    return answer.status_code == 200 and answer.json()["customers"] == chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=200_000, help="synthetic customers in the snapshot")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--clients", type=int, default=4, help="connections asking /score pages")
    parser.add_argument("--cdnow-customers", type=int, default=None,
                        help="fit the scorer on CDNOW's first N customers (default all)")
    parser.add_argument("--data-dir", type=Path, default=None, help="where the store and snapshot go (temporary)")
    args = parse_args(parser, argv, {"customers": 3000, "cdnow_customers": 2000, "clients": 2})
    print_load("at start")
    import httpx

    from serving.run import running, service_env

    with tempfile.TemporaryDirectory(dir=args.data_dir) as folder:
        root = Path(folder)
        started = time.perf_counter()
        uri, snapshot = build(root, args.customers, args.seed, args.cdnow_customers)
        seconds = time.perf_counter() - started
        print(f"store, {args.customers:,} synthetic customers and their snapshot in {seconds:.0f} s")
        (root / "bentoml").mkdir()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("WINBACK_", "MLFLOW_", "BENTOML_"))}
        env = service_env(uri, snapshot=snapshot, poll_seconds=0, base=base)
        env.update(BENTOML_HOME=str(root / "bentoml"), WINBACK_API_KEYS=KEY, WINBACK_MAX_IDS="10000")
        auth = {"Authorization": f"Bearer {KEY}"}
        started = time.perf_counter()
        with running(env, log=root / "server.log", timeout=1800) as url:
            print(f"service ready in {time.perf_counter() - started:.0f} s")
            with Memory(url) as memory:
                at_start = memory.now()
                waited = time.perf_counter()
                status, first, size, newlines = asyncio.run(fetch(url, "/scores", auth))   # waits for the files
                waited = time.perf_counter() - waited
                assert status == 200 and int(first["x-customers"]) == args.customers <= newlines, first
                rows = []
                for name, path, headers in (("GET /scores, NDJSON", "/scores", auth),
                                            ("GET /scores, Parquet", "/scores",
                                             {**auth, "Accept": "application/vnd.apache.parquet"})):
                    clock = time.perf_counter()
                    status, answer, size, newlines = asyncio.run(fetch(url, path, headers))
                    seconds = time.perf_counter() - clock
                    assert status == 200 and answer["x-customers"] == str(args.customers), (status, answer)
                    rows.append((name, seconds, size))
                clock = time.perf_counter()
                status, answer, size, _ = asyncio.run(fetch(url, f"/scores?since={first['etag']}", auth))
                since_seconds = time.perf_counter() - clock
                assert status == 200 and answer["x-sync"] == "delta" and answer["x-customers"] == "0"
                ids = [line.split(b'"', 4)[3].decode() for line in
                       httpx.get(url + "/scores", headers=auth, timeout=600).content.splitlines()]
                pages = asyncio.run(score_pages(url, list(ids), args.clients))
                truth = one_truth(url, httpx.get(url + "/scores", headers=auth, timeout=600).content)
            peak = memory.peak
    n = args.customers
    paged = n / pages
    print(f"\nsync of {n:,} customers, load above; customers/s, and the ratio to /score pages")
    print("columns: call | seconds | MB | customers/s | vs /score pages")
    print(f"/score, 1,000 ids/request, {args.clients} clients | {pages:.2f} | - | {paged:,.0f} | 1.00x")
    for name, seconds, size in rows:
        print(f"{name} | {seconds:.2f} | {size / 1e6:,.0f} | {n / seconds:,.0f} | {n / seconds / paged:.2f}x")
    print(f"first GET /scores (waits for the snapshot's files) | {waited:.2f} | - | {n / waited:,.0f} | "
          f"{n / waited / paged:.2f}x")
    print(f"GET /scores?since=<current ETag> (nothing changed) | {since_seconds:.3f} | - | - | -")
    print(f"service memory (arbiter + worker RSS): {at_start / GiB:.2f} GiB after start, peak {peak / GiB:.2f} GiB "
          f"during the run ({'under' if peak < 2 * GiB else 'OVER'} 2 GiB)")
    print(f"one truth: a sample of stream lines equal /score's answers: {'OK' if truth else 'DIFFERENT'}")
    print_load("at end")
    return 0 if truth else 1


if __name__ == "__main__":
    raise SystemExit(main())
