"""Load-test the scoring service next to a plain BentoML service around a LightGBM model, and
next to two echo services that measure the HTTP floor.

Usage
-----
::

    .venv/bin/python benchmarks/bench_service.py [--workers 1] [--seconds 15] [--requests 6000]
        [--warmup 50] [--cdnow-customers N]
    .venv/bin/python benchmarks/bench_service.py --tiny   # both real servers, a few requests (tests)

This process is the client (a lean asyncio HTTP/1.1 client, :class:`Connection`, loopback only);
the services run as child processes on 127.0.0.1. A scorer is fitted on CDNOW with small models into a temporary MLflow
store (registered, alias ``champion``), and the CDNOW log (all 23,570 customers, or the first
``--cdnow-customers``) is the snapshot. The baseline is a plain ``@bentoml.service`` whose one
typed endpoint takes a list of feature rows and returns the churn booster's predictions (the same
LightGBM model text the scorer uses), the usual "wrap a model in BentoML" service.

Measured, each phase bounded by ``--requests`` and ``--seconds``, after a warm-up:

* one request at a time: latency of a single-customer call;
* 32 concurrent clients, one customer per request: requests/s, p50 and p99 latency
  (Winback with and without reasons; reasons are explained on first use, then cached);
* 4 concurrent clients, 1,000 customers per request: customers/s.

The 32-client phase also loads two echo services that do no work, with the same request body:
a bare Starlette route on uvicorn (the floor of any Python ASGI service here) and a BentoML
``@bentoml.api`` method (BentoML's per-endpoint cost). The targets of issue #11 are printed as
ratios from this one run: Winback at least 2x plain BentoML at one customer per request, its p99
at most 1.5x the bare echo's, and at 1,000 ids per request at least as fast as plain BentoML.
Each row also gives the server's CPU milliseconds per request (its processes' CPU time over the
phase): on a shared, busy machine that is the steadier figure, where requests/s and p99 mostly
measure how much CPU the client got.

"winback vs plain" is how many times faster Winback is (plain p50 / ours for latency, ours /
plain for throughput): below 1x the plain service is faster. Both services start from an
environment without the caller's ``WINBACK_*``, ``MLFLOW_*`` and ``BENTOML_*`` settings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

KEY = "bench-key"

# ---------------------------------------------------------------------- the plain baseline service

try:                                                  # only the service process needs these at import
    import bentoml
    from pydantic import BaseModel
except ImportError:                                   # pragma: no cover
    bentoml = None

if bentoml is not None and os.environ.get("BENCH_BASELINE_MODEL"):
    class Rows(BaseModel):
        rows: list[list[float]]

    @bentoml.service(name="plain_lightgbm", workers=1)
    class PlainLightGBM:
        def __init__(self) -> None:
            import lightgbm

            self.booster = lightgbm.Booster(model_file=os.environ["BENCH_BASELINE_MODEL"])

        @bentoml.api
        def predict(self, rows: list[list[float]]) -> list[float]:
            return self.booster.predict(np.asarray(rows, dtype=float), num_threads=1).tolist()

if bentoml is not None and os.environ.get("BENCH_ECHO_SERVICE"):
    @bentoml.service(name="echo_api", workers=1)
    class EchoAPI:
        """BentoML's own cost per request: an async ``@bentoml.api`` method that does nothing."""

        @bentoml.api
        async def echo(self, customer_ids: list[str], reasons: bool = True) -> dict:
            return {"customer_ids": customer_ids}


def bare_echo_app():
    """The floor: a Starlette route on uvicorn answering with the ids it was sent."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def echo(request: Request) -> Response:
        return JSONResponse({"customer_ids": (await request.json())["customer_ids"]})

    async def ready(_: Request) -> Response:
        return Response("\n")

    return Starlette(routes=[Route("/echo", echo, methods=["POST"]), Route("/readyz", ready)])


# ---------------------------------------------------------------------- setup


def fit_store(root: Path, customers: int | None = None, churn_estimators: int = 100,
              hazard_estimators: int = 50) -> tuple[str, Path, Path, list[str], np.ndarray]:
    """A temporary MLflow store with a champion, the CDNOW snapshot, the churn booster file,
    the snapshot's customer ids and feature rows for the baseline. ``customers``: only CDNOW's
    first N customers (default all)."""
    import mlflow
    import pandas as pd

    from features import TransactionLog, labelled_features, load_cdnow, prepare
    from features.cdnow import CDNOW_COLUMNS
    from features.job import read_feature_table, write_features
    from models.ml.churn import ChurnModel
    from models.pyfunc import log_scorer
    from models.scorer import WinbackScorer
    from training.registry import CHAMPION, MODEL_NAME, experiment_id

    raw = load_cdnow()
    if customers:
        raw = raw[raw["customer_id"].astype(int) <= customers]
    log = TransactionLog.from_frame(raw, CDNOW_COLUMNS)
    _, _, reference = prepare(log, "1997-09-30")          # the model's feature contract, for every origin
    train = pd.concat([labelled_features(log, c, 90, reference) for c in ("1997-04-30", "1997-06-30")])
    calibration = labelled_features(log, "1997-09-30", 90, reference)
    scorer = WinbackScorer(horizon_days=90, churn=ChurnModel(n_estimators=churn_estimators, learning_rate=0.05),
                           hazard_estimators=hazard_estimators).fit(train, calibration, reference)
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    (root / "mlruns").mkdir()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    example = raw[raw["customer_id"].isin(["00001", "00002"])].rename(
        columns={"date": "timestamp", "dollar_value": "amount"})[["customer_id", "timestamp", "amount"]]
    with mlflow.start_run(experiment_id=experiment_id(uri)):
        info = log_scorer(scorer, example, "1997-09-30")
    version = mlflow.register_model(info.model_uri, MODEL_NAME).version
    mlflow.MlflowClient(uri).set_registered_model_alias(MODEL_NAME, CHAMPION, version)
    snapshot = root / "snapshot.parquet"
    write_features(log, "1997-09-30", snapshot, "D", reference=scorer.reference_)
    booster = root / "churn_model.txt"
    scorer.churn_model_.booster_.save_model(str(booster))
    features, as_of, _ = read_feature_table(snapshot)
    rows = np.nan_to_num(scorer.model_input(features)[scorer.churn_features_].to_numpy(float))  # JSON has no NaN
    return uri, snapshot, booster, features["customer_id"].astype(str).tolist(), rows


@contextlib.contextmanager
def bare_echo(log: Path):
    """The bare echo app on uvicorn (its defaults) in a child process; yields its base URL."""
    import subprocess

    from serving.run import free_port, stop, wait_ready

    port = free_port()
    path = [str(ROOT / "benchmarks"), str(ROOT), os.environ.get("PYTHONPATH")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, path)))
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "bench_service:bare_echo_app",
                                    "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_ready(f"http://127.0.0.1:{port}", process, 60, log)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(process)


# ---------------------------------------------------------------------- load generation


class Connection:
    """One keep-alive HTTP/1.1 connection posting JSON and reading whole answers.

    A lean client on purpose: with an httpx client the bare echo and Winback both ran at
    665 requests/s, the same rate: the client, on the same 2 cores, was the limit. This one writes
    pre-built header bytes and reads the status, ``Content-Length`` (or chunks) and body; the floor
    table prints its CPU per request beside the server's. Every service is loaded by the same client.
    """

    def __init__(self, url: str, headers: dict | None = None) -> None:
        host_port, _, path = url.removeprefix("http://").partition("/")
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.head = (f"POST /{path} HTTP/1.1\r\nHost: {host_port}\r\n{extra}"
                     "Content-Type: application/json\r\nContent-Length: ").encode()
        self.reader = self.writer = None

    async def post(self, body: dict) -> int:
        """Send ``body`` as JSON; the answer's status code once its body has been read."""
        import orjson

        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        data = orjson.dumps(body)
        self.writer.write(self.head + str(len(data)).encode() + b"\r\n\r\n" + data)
        head = (await self.reader.readuntil(b"\r\n\r\n")).lower()
        status = int(head[9:12])
        if b"transfer-encoding: chunked" in head:
            while size := int((await self.reader.readline()).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readline()
        else:
            start = head.find(b"\r\ncontent-length:") + 17
            await self.reader.readexactly(int(head[start:head.index(b"\r\n", start)]) if start > 16 else 0)
        if b"connection: close" in head:
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def load(url: str, make_body, concurrency: int, requests: int, seconds: float,
               headers: dict | None = None, warmup: int = 50) -> dict:
    """``concurrency`` clients (one connection each) send requests until ``requests`` are done
    or ``seconds`` pass."""
    connections = [Connection(url, headers) for _ in range(concurrency)]
    for i in range(warmup):
        if (status := await connections[i % concurrency].post(make_body())) != 200:
            raise RuntimeError(f"warm-up request to {url} answered {status}")
    latencies: list[float] = []
    errors = 0
    remaining = requests
    deadline = time.perf_counter() + seconds

    async def worker(connection: Connection):
        nonlocal remaining, errors
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            body = make_body()
            start = time.perf_counter()
            status = await connection.post(body)
            latencies.append(time.perf_counter() - start)
            errors += status != 200

    server = ServerCPU(url)
    started, cpu, own = time.perf_counter(), server.seconds(), time.process_time()
    try:
        await asyncio.gather(*(worker(c) for c in connections))
    finally:
        elapsed, cpu = time.perf_counter() - started, server.seconds() - cpu
        own = time.process_time() - own
        for connection in connections:
            await connection.close()
    lat = np.asarray(latencies) * 1000
    return {"requests": len(lat), "errors": errors, "rps": len(lat) / elapsed,
            "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
            "cpu_ms": 1000 * cpu / max(len(lat), 1), "client_cpu_ms": 1000 * own / max(len(lat), 1)}


class ServerCPU:
    """CPU time of the server behind ``url`` (the process started with its port, and children).

    Milliseconds of server CPU per request depend far less on the machine's load than
    requests/s do: on a busy 2-core machine they are the steadier figure."""

    def __init__(self, url: str) -> None:
        import psutil

        port = url.rsplit(":", 1)[1].split("/")[0]
        roots = [p for p in psutil.process_iter(["cmdline"])
                 if p.info["cmdline"] and port in p.info["cmdline"] and p.pid != os.getpid()]
        self.processes = roots + [c for r in roots for c in r.children(recursive=True)]

    def seconds(self) -> float:
        import psutil

        total = 0.0
        for process in self.processes:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total


def run_phases(winback: str, plain: str, ids: list[str], rows: np.ndarray, args,
               echoes: dict[str, str]) -> tuple[list[tuple], dict[str, dict]]:
    rng = random.Random(0)
    auth = {"Authorization": f"Bearer {KEY}"}

    def one_id(reasons: bool):
        return lambda: {"customer_ids": [rng.choice(ids)], "reasons": reasons}

    batch = min(1000, len(ids))

    def many_ids():
        start = rng.randrange(len(ids) - batch + 1)
        return {"customer_ids": ids[start:start + batch], "reasons": False}

    def one_row():
        return {"rows": [rows[rng.randrange(len(rows))].tolist()]}

    def many_rows():
        start = rng.randrange(len(rows) - batch + 1)
        return {"rows": rows[start:start + batch].tolist()}

    n, s, w = args.requests, args.seconds, args.warmup
    few, w_few = max(n // 20, 4), min(w, 5)
    phases = [
        ("single call, 1 client", "latency p50 ms",
         lambda: load(f"{winback}/score", one_id(False), 1, min(n, 500), s, auth, w),
         lambda: load(f"{plain}/predict", one_row, 1, min(n, 500), s, warmup=w)),
        ("1 customer/request, 32 clients", "requests/s",
         lambda: load(f"{winback}/score", one_id(False), 32, n, s, auth, w),
         lambda: load(f"{plain}/predict", one_row, 32, n, s, warmup=w)),
        ("  same, with reasons", "requests/s",
         lambda: load(f"{winback}/score", one_id(True), 32, n, s, auth, w), None),
        (f"{batch:,} customers/request, 4 clients", "customers/s",
         lambda: load(f"{winback}/score", many_ids, 4, few, s, auth, w_few),
         lambda: load(f"{plain}/predict", many_rows, 4, few, s, warmup=w_few)),
    ]
    results, floor = [], {}
    for name, unit, ours, base in phases:
        mine = asyncio.run(ours())
        theirs = asyncio.run(base()) if base else None
        results.append((name, unit, mine, theirs))
        print(f"  measured: {name}", file=sys.stderr, flush=True)
        if name.startswith("1 customer/request"):             # the echoes, right after, same load
            for label, url in echoes.items():
                floor[label] = asyncio.run(load(url, one_id(False), 32, n, s, warmup=w))
                print(f"  measured: {label}", file=sys.stderr, flush=True)
    return results, floor


def report(results: list[tuple], workers: int, batch: int) -> None:
    def ratio(mine: dict, theirs: dict | None, unit: str) -> str:
        if theirs is None:
            return "—"
        faster = theirs["p50"] / mine["p50"] if unit == "latency p50 ms" else mine["rps"] / theirs["rps"]
        return f"{faster:.2f}x"

    def cell(r: dict | None, unit: str) -> str:
        if r is None:
            return "—"
        if unit == "latency p50 ms":
            return f"{r['p50']:.1f} ms (p99 {r['p99']:.1f})"
        value = r["rps"] * (batch if unit == "customers/s" else 1)
        return f"{value:,.0f}/s  p50 {r['p50']:.1f} ms  p99 {r['p99']:.1f} ms" + (
            f"  ({r['errors']} errors)" if r["errors"] else "")

    print(f"\nScoring service vs plain BentoML + LightGBM, {workers} worker(s) each, "
          f"{os.cpu_count()} CPUs, loopback, client in a separate process")
    print(f"{'phase':<38} {'unit':<15} {'winback /score':<42} {'plain BentoML /predict':<42} "
          "winback vs plain")
    for name, unit, mine, theirs in results:
        print(f"{name:<38} {unit:<15} {cell(mine, unit):<42} {cell(theirs, unit):<42} "
              f"{ratio(mine, theirs, unit)}")
    print("requests per phase: " + ", ".join(
        f"{name.strip()}: {mine['requests']}" + (f"/{theirs['requests']}" if theirs else "")
        for name, _, mine, theirs in results))


def report_floor(results: list[tuple], floor: dict[str, dict], batch: int) -> None:
    """The echo services beside Winback at 32 clients, and the issue's targets as ratios."""
    single = next(r for r in results if r[0].startswith("1 customer/request"))
    many = next(r for r in results if r[0].startswith(f"{batch:,} customers"))
    rows = [("winback /score (1 id)", single[2]), ("plain BentoML + LightGBM /predict", single[3]), *floor.items()]
    print("\nThe HTTP floor, 1 id per request, 32 clients, 1 worker each")
    print(f"{'service':<38} {'requests/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'server CPU ms/request':>22} "
          f"{'client CPU ms/request':>22} {'requests':>9} {'errors':>7}")
    for label, r in rows:
        print(f"{label:<38} {r['rps']:>11,.0f} {r['p50']:>8.1f} {r['p99']:>8.1f} {r['cpu_ms']:>22.2f} "
              f"{r['client_cpu_ms']:>22.2f} {r['requests']:>9} {r['errors']:>7}")
    bare = floor.get("bare Starlette echo on uvicorn")
    targets = [("winback / plain requests/s at 1 id (target >= 2x)", _ratio(single[2]["rps"], single[3]["rps"])),
               (f"winback / plain customers/s at {batch:,} ids (target >= 1x)", _ratio(many[2]["rps"], many[3]["rps"])),
               ("plain / winback server CPU per request at 1 id", _ratio(single[3]["cpu_ms"], single[2]["cpu_ms"]))]
    if bare:
        targets.append(("winback p99 / bare echo p99 at 32 clients (target <= 1.5x)",
                        _ratio(single[2]["p99"], bare["p99"])))
    for label, value in targets:
        print(f"{label:<62} {value:.2f}x")


def _ratio(a: float, b: float) -> float:
    """A / b; NaN when b is 0 (a tiny run can use less CPU than the clock's 10 ms tick)."""
    return a / b if b else float("nan")


def main(argv: list[str] | None = None) -> int:
    from measure import parse_args, print_load

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1, help="BentoML workers of each service")
    parser.add_argument("--seconds", type=float, default=15.0, help="time bound of each phase")
    parser.add_argument("--requests", type=int, default=6000, help="request bound of each phase")
    parser.add_argument("--warmup", type=int, default=50,
                        help="untimed requests before each phase (at most 5 for 1,000-id requests)")
    parser.add_argument("--cdnow-customers", type=int, default=None, metavar="N",
                        help="fit and serve CDNOW's first N customers only (default: all 23,570)")
    parser.add_argument("--churn-estimators", type=int, default=100, help="trees of the churn model")
    parser.add_argument("--hazard-estimators", type=int, default=50, help="trees of the hazard model")
    args = parse_args(parser, argv, tiny={"requests": 20, "seconds": 5.0, "warmup": 2, "cdnow_customers": 3000,
                                          "churn_estimators": 30, "hazard_estimators": 15})

    from serving.run import running, service_env

    print_load("at start")
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        root = Path(tmp)
        print("fitting a scorer on CDNOW and writing the snapshot ...", file=sys.stderr, flush=True)
        uri, snapshot, booster, ids, rows = fit_store(root, args.cdnow_customers, args.churn_estimators,
                                                      args.hazard_estimators)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("WINBACK_", "MLFLOW_", "BENTOML_"))}
        env = service_env(uri, snapshot=snapshot, poll_seconds=0, workers=args.workers, base=base)
        env.update(WINBACK_API_KEYS=KEY, BENTOML_HOME=str(root / "bentoml"))
        print("starting both services ...", file=sys.stderr, flush=True)
        plain_env = dict(env, BENCH_BASELINE_MODEL=str(booster),
                         BENTOML_CONFIG_OPTIONS=f"services.plain_lightgbm.workers={args.workers}",
                         PYTHONPATH=os.pathsep.join([str(ROOT / "benchmarks"), env["PYTHONPATH"]]))
        echo_env = dict(plain_env, BENCH_ECHO_SERVICE="1",
                        BENTOML_CONFIG_OPTIONS=f"services.echo_api.workers={args.workers}")
        with ThreadPoolExecutor(4) as pool:  # start them at once; each is stopped by the stack
            starting = [pool.submit(stack.enter_context, running(env, log=root / "winback.log")),
                        pool.submit(stack.enter_context, running(plain_env, log=root / "plain.log",
                                                                 service="bench_service:PlainLightGBM")),
                        pool.submit(stack.enter_context, bare_echo(root / "bare.log")),
                        pool.submit(stack.enter_context, running(echo_env, log=root / "echo.log",
                                                                 service="bench_service:EchoAPI"))]
        winback, plain, bare, echo = (future.result() for future in starting)
        echoes = {"bare Starlette echo on uvicorn": f"{bare}/echo", "BentoML @bentoml.api echo": f"{echo}/echo"}
        results, floor = run_phases(winback, plain, ids, rows, args, echoes)
    batch = min(1000, len(ids))
    report(results, args.workers, batch)
    report_floor(results, floor, batch)
    print_load("at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
