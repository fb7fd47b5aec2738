"""The scoring service's tail under an independent load generator: ``wrk`` against Winback's
``/score`` and against a bare Starlette echo on the same uvicorn, in one run.

Usage
-----
::

    .venv/bin/python benchmarks/bench_service_wrk.py [--seconds 10] [--connections 32] [--threads 2]
        [--rounds 3] [--cdnow-customers N]
    .venv/bin/python benchmarks/bench_service_wrk.py --tiny     # a few seconds of wrk (tests)

``wrk`` (Debian's package; installed with ``apt-get`` when missing and this runs as root) is the
client: 2 threads and 32 keep-alive connections by default, each request a ``POST`` with one
random CDNOW id (a Lua script picks it), reasons off. ``benchmarks/bench_service.py`` drives the
same services with its own Python client, which on these 2 cores measured mostly itself;
``wrk`` is written in C and is what a user would load a service with.

A scorer is fitted on CDNOW into a temporary MLflow store and served from the CDNOW snapshot
(``bench_service.fit_store``); the echo answers ``POST /echo`` with the ids it was sent
(``bench_service.bare_echo_app``), the floor of any Python service here. Both run one worker.
Each round loads the echo, then Winback, for ``--seconds`` each; a row per run gives requests/s,
p50, p99 and p99.9 latency (wrk's own histogram), the server's CPU milliseconds per request and
how often the kernel took the CPU from it (involuntary context switches: on a shared machine
the tail is mostly that). The targets of issue #23 are printed as ratios of the medians over
the rounds: Winback's p99 at most 3x the echo's and its requests/s at least 0.5x.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

KEY = "bench-key"

#: One random id per request from the file named by WRK_IDS; latency percentiles (wrk keeps
#: microseconds) printed in milliseconds by ``done``.
LUA = r"""
local ids = {}
for line in io.lines(os.getenv("WRK_IDS")) do ids[#ids + 1] = line end
local headers = {["Content-Type"] = "application/json"}
local key = os.getenv("WRK_KEY")
if key and key ~= "" then headers["Authorization"] = "Bearer " .. key end
local path = os.getenv("WRK_PATH")
request = function()
  local id = ids[math.random(#ids)]
  return wrk.format("POST", path, headers, '{"customer_ids":["' .. id .. '"],"reasons":false}')
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d seconds=%.3f errors=%d non2xx=%d p50=%.3f p99=%.3f p999=%.3f max=%.3f\n",
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    latency.max / 1000))
end
"""
RESULT = re.compile(r"RESULT requests=(\d+) seconds=([\d.]+) errors=(\d+) non2xx=(\d+) p50=([\d.]+) "
                    r"p99=([\d.]+) p999=([\d.]+) max=([\d.]+)")


def ensure_wrk() -> str:
    """The ``wrk`` executable; installed from Debian when missing (as root), else a clear error."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing Debian's wrk ...", file=sys.stderr, flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        installed = subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, capture_output=True)
        if installed.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, capture_output=True)
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("bench_service_wrk.py needs wrk: run 'apt-get install wrk' as root (or make system-deps)")
    return found


def server_pid(url: str) -> int:
    """The process answering on ``url``'s port: the worker (BentoML's arbiter only holds the socket)."""
    import psutil

    port = int(url.rsplit(":", 1)[1].split("/")[0])
    owners = {c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port
              and c.status == psutil.CONN_LISTEN and c.pid}
    for pid in owners:                                   # a worker is a child of another owner
        if psutil.Process(pid).ppid() in owners:
            return pid
    return min(owners)


def process_counters(pid: int) -> tuple[float, int]:
    """(CPU seconds, involuntary context switches) of ``pid`` so far."""
    import psutil

    process = psutil.Process(pid)
    times = process.cpu_times()
    return times.user + times.system, process.num_ctx_switches().involuntary


def run_wrk(wrk: str, url: str, path: str, key: str, ids: Path, script: Path, args) -> dict:
    """One wrk run against ``url + path``: its figures and the server's CPU per request."""
    pid = server_pid(url)
    cpu, switches = process_counters(pid)
    env = dict(os.environ, WRK_IDS=str(ids), WRK_KEY=key, WRK_PATH=path)
    done = subprocess.run([wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{args.seconds:g}s",
                           "-s", str(script), url + path], env=env, capture_output=True, text=True,
                          timeout=args.seconds + 60)
    found = RESULT.search(done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"wrk against {url}{path} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    cpu_after, switches_after = process_counters(pid)
    requests, seconds, errors, non2xx, p50, p99, p999, top = (float(x) for x in found.groups())
    return {"rps": requests / seconds, "p50": p50, "p99": p99, "p999": p999, "max": top,
            "requests": int(requests), "errors": int(errors + non2xx),
            "cpu_ms": 1000 * (cpu_after - cpu) / max(requests, 1), "preempted": switches_after - switches}


def report(runs: list[tuple[int, str, dict]], args) -> None:
    print(f"\nwrk -t{args.threads} -c{args.connections} -d{args.seconds:g}s, one random CDNOW id per "
          f"POST (reasons off), 1 worker each, {os.cpu_count()} CPUs shared with wrk")
    print("| round | service | requests/s | p50 ms | p99 ms | p99.9 ms | max ms | server CPU ms/request "
          "| preempted | requests | errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rnd, label, r in runs:
        print(f"| {rnd} | {label} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['p999']:.2f} | "
              f"{r['max']:.1f} | {r['cpu_ms']:.3f} | {r['preempted']:,} | {r['requests']:,} | {r['errors']} |")
    median = {label: {k: statistics.median(r[k] for _, lab, r in runs if lab == label)
                      for k in ("rps", "p50", "p99", "p999", "cpu_ms")} for label in ("bare echo", "winback")}
    for label, m in median.items():
        print(f"| median | {label} | {m['rps']:,.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {m['p999']:.2f} | — | "
              f"{m['cpu_ms']:.3f} | — | — | — |")
    echo, ours = median["bare echo"], median["winback"]
    print()
    for label, value in (("winback / bare echo requests/s (target >= 0.5x)", _ratio(ours["rps"], echo["rps"])),
                         ("winback p99 / bare echo p99 (target <= 3x)", _ratio(ours["p99"], echo["p99"])),
                         ("winback p50 / bare echo p50", _ratio(ours["p50"], echo["p50"])),
                         ("winback p99.9 / bare echo p99.9", _ratio(ours["p999"], echo["p999"])),
                         ("winback / bare echo server CPU per request", _ratio(ours["cpu_ms"], echo["cpu_ms"]))):
        print(f"{label:<50} {value:.2f}x")


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def main(argv: list[str] | None = None) -> int:
    from measure import parse_args, print_load

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=32, help="wrk's open connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk's threads")
    parser.add_argument("--rounds", type=int, default=3, help="echo-then-winback rounds (the ratios use medians)")
    parser.add_argument("--cdnow-customers", type=int, default=None, metavar="N",
                        help="fit and serve CDNOW's first N customers only (default: all 23,570)")
    parser.add_argument("--churn-estimators", type=int, default=100, help="trees of the churn model")
    parser.add_argument("--hazard-estimators", type=int, default=50, help="trees of the hazard model")
    args = parse_args(parser, argv, tiny={"seconds": 2.0, "rounds": 1, "cdnow_customers": 3000,
                                          "churn_estimators": 30, "hazard_estimators": 15})
    from bench_service import bare_echo, fit_store

    from serving.run import running, service_env

    print_load("at start")
    wrk = ensure_wrk()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        root = Path(tmp)
        print("fitting a scorer on CDNOW and writing the snapshot ...", file=sys.stderr, flush=True)
        uri, snapshot, _, ids, _ = fit_store(root, args.cdnow_customers, args.churn_estimators,
                                             args.hazard_estimators)
        (root / "ids.txt").write_text("\n".join(ids) + "\n")
        (root / "score.lua").write_text(LUA)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("WINBACK_", "MLFLOW_", "BENTOML_"))}
        env = service_env(uri, snapshot=snapshot, poll_seconds=0, workers=1, base=base)
        env.update(WINBACK_API_KEYS=KEY, BENTOML_HOME=str(root / "bentoml"))
        print("starting Winback and the bare echo ...", file=sys.stderr, flush=True)
        winback = stack.enter_context(running(env, log=root / "winback.log"))
        echo = stack.enter_context(bare_echo(root / "bare.log"))
        runs = []
        for rnd in range(1, args.rounds + 1):
            for label, url, path, key in (("bare echo", echo, "/echo", ""), ("winback", winback, "/score", KEY)):
                runs.append((rnd, label, run_wrk(wrk, url, path, key, root / "ids.txt", root / "score.lua", args)))
                print(f"  measured: round {rnd}, {label}", file=sys.stderr, flush=True)
    report(runs, args)
    print()
    print_load("at end")
    return 1 if any(r["errors"] for _, _, r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
