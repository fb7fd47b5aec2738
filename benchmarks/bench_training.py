"""Training benchmark: wall time and peak memory of the whole training job, by number of customers.

For each customer count this runs, in its own subprocess, what ``winback train`` runs:

* ``read_transactions`` of a synthetic Parquet log (customer id, timestamp, amount, order id and
  category mapped), then
* ``training.pipeline.train(log, TrainConfig(cutoff, horizon_days, origins, origin_step_days),
  tracking_uri="sqlite:///<fresh temp dir>/mlflow.db")``: rolling-origin training data, scorer fit,
  out-of-time evaluation with the baselines, plots, model logging and registration.

Each run gets a fresh MLflow store (so there is no champion to evaluate, and the new version
always becomes champion). The subprocess's working directory is that store's temp directory
under ``--data-dir``, so DuckDB spill files never land in the repo; it is removed afterwards.

Reported per size: total seconds (read + train, imports excluded), the phases (``train``'s
``step`` callback marks each one with ``time.perf_counter()``; "setup" is the time before the
first step: origin plan, labels, MLflow run, data fingerprint), peak memory (the subprocess's
own ``VmHWM``; also sampled by the driver, so a run stopped by ``--timeout`` still has a figure),
CPU seconds, and the resulting churn AUC and best baseline AUC from ``result.evaluation``. The
details add the out-of-time metrics a faster fit must not cost (:data:`REPORTED_METRICS`) and,
for every phase and every feature build and fit inside it, its rows, seconds, the resident
memory at its end and its own peak (:class:`StepMemory`), so the run's peak has an address.

Logs come from ``benchmarks/synthetic.py`` (seed ``--seed``, defaults, ending 2025-12-31) and are
generated into ``--data-dir`` when missing (``tx_c<customers>_s<seed>.parquet``, the same names
``bench_features.py`` uses). Example::

    .venv/bin/python benchmarks/bench_training.py                           # 100k and 1M customers
    .venv/bin/python benchmarks/bench_training.py --customers 100000 --timeout 600
    .venv/bin/python benchmarks/bench_training.py --tiny       # 2,000 customers, 30/15 trees (tests)

The exit status is 1 when a run fails or is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from measure import cpu_seconds, outside_repo, parse_args, parse_counts, peak_rss, print_load  # noqa: E402

#: Out-of-time metrics printed per run besides the churn AUC: what a faster fit must not cost.
REPORTED_METRICS = ("churn_auc", "churn_brier", "churn_ece", "churn_auc_diff_low", "next_purchase_cindex",
                    "next_purchase_ibs", "next_purchase_mae_days", "next_purchase_coverage80", "value_gini")

LOG_END = "2025-12-31"  # the generator's default last day; the cutoff must leave a horizon after it


# ---------------------------------------------------------------------------
# measured work, in the subprocess


class StepMemory:
    """Resident memory now and the peak since the previous reading, per step.

    Each reading takes ``VmHWM`` (the peak so far) and then resets it through
    ``/proc/self/clear_refs`` (Linux 4.0+), so the next reading's peak is that step's own; the
    largest of them is the run's peak. Where the reset is not allowed, every reading shows the
    peak since the start instead (still a true upper bound).
    """

    def __init__(self) -> None:
        self.peak = 0

    def reading(self) -> str:
        status = _status()
        step_peak = status.get("VmHWM", 0)
        self.peak = max(self.peak, step_peak)
        try:
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")
        except OSError:
            pass
        return f"[rss {_mib(status.get('VmRSS', 0))}, step peak {_mib(step_peak)}]"

    def run_peak(self) -> int:
        return max(self.peak, peak_rss())


def _status() -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of this process in bytes (empty off Linux)."""
    out = {}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                key = line.split(":")[0]
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def child_main(args: argparse.Namespace) -> int:
    from features import ColumnMap, read_transactions
    from training.pipeline import TrainConfig, progress_lines, train

    columns = ColumnMap(customer_id="customer_id", timestamp="timestamp", amount="amount",
                        order_id="order_id", category="category")
    config = TrainConfig(cutoff=args.cutoff, horizon_days=args.horizon_days, origins=args.origins,
                         origin_step_days=args.origin_step_days, churn_estimators=args.churn_estimators,
                         hazard_estimators=args.hazard_estimators, threads=args.threads,
                         memory_limit=args.memory_limit or None)
    marks: list[tuple[str, float]] = []
    memory = StepMemory()

    def mark(name: str) -> None:
        now = time.perf_counter()
        marks.append((name, now))
        if len(marks) > 1:
            print(f"PROGRESS phase '{marks[-2][0]}' ended {memory.reading()}", flush=True)
        # streamed, so the driver knows the phase reached even if it has to stop this process
        print("PHASE " + json.dumps({"name": name, "t": now - t0}), flush=True)

    def progress(line: str) -> None:
        print(f"PROGRESS {line} {memory.reading()}", flush=True)

    cpu0, t0 = cpu_seconds(), time.perf_counter()
    mark("read_transactions")
    log = read_transactions(args.log, columns, memory_limit=args.memory_limit or None)
    mark("setup (labels, MLflow run, fingerprint)")
    result = train(log, config, tracking_uri=f"sqlite:///{args.store}/mlflow.db", step=mark,
                   progress=progress_lines(progress))
    t_end = time.perf_counter()
    print(f"PROGRESS phase '{marks[-1][0]}' ended {memory.reading()}", flush=True)

    phases = [(name, (marks[i + 1][1] if i + 1 < len(marks) else t_end) - t)
              for i, (name, t) in enumerate(marks)]
    evaluation = result.evaluation
    best_name, best_auc = max(evaluation.baselines.items(), key=lambda kv: kv[1])
    out = {
        "seconds": t_end - t0,
        "cpu_seconds": cpu_seconds() - cpu0,
        "phases": phases,
        "rows_used": log.report.rows_used,
        "customers_scored": len(evaluation.scored),
        "churn_auc": evaluation.metrics["churn_auc"],
        "best_baseline": best_name,
        "best_baseline_auc": best_auc,
        "version": result.version,
        "alias": result.alias,
        "peak_rss": memory.run_peak(),
        "metrics": {k: evaluation.metrics[k] for k in REPORTED_METRICS if k in evaluation.metrics},
    }
    print("RESULT " + json.dumps(out), flush=True)
    return 0


# ---------------------------------------------------------------------------
# driver




def ensure_log(data_dir: Path, customers: int, seed: int) -> Path:
    """The synthetic log for ``customers`` customers, generated when missing."""
    import synthetic

    path = data_dir / f"tx_c{customers}_s{seed}.parquet"
    if not path.exists():
        print(f"generating {path} ({customers:,} customers) ...", flush=True)
        stats = synthetic.write_transactions(path, customers, seed=seed, end=LOG_END)
        print(f"  {stats.rows:,} rows, {stats.bytes / 1e6:.1f} MB, {stats.seconds:.1f} s", flush=True)
    return path


def _child_hwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(customers: int, log_path: Path, args: argparse.Namespace) -> dict:
    """Run the training job in a fresh subprocess; its JSON result plus load around it."""
    load_before = os.getloadavg()
    store = Path(tempfile.mkdtemp(prefix=f"train_c{customers}_", dir=args.data_dir))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--log", str(log_path),
           "--store", str(store), "--cutoff", args.cutoff, "--horizon-days", str(args.horizon_days),
           "--origins", str(args.origins), "--origin-step-days", str(args.origin_step_days),
           "--churn-estimators", str(args.churn_estimators), "--hazard-estimators", str(args.hazard_estimators),
           "--memory-limit", args.memory_limit, "--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    stopped = None
    sampled_peak = 0
    try:
        with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
            proc = subprocess.Popen(cmd, cwd=store, env=env, stdout=out_f, stderr=err_f, text=True)
            while proc.poll() is None:
                time.sleep(0.5)
                sampled_peak = max(sampled_peak, _child_hwm(proc.pid))
                if args.timeout and time.perf_counter() - t0 > args.timeout:
                    stopped = f"stopped after --timeout {args.timeout:.0f} s"
                    proc.kill()  # only the child this function started
                    proc.wait()
                    break
            wall = time.perf_counter() - t0
            out_f.seek(0)
            err_f.seek(0)
            stdout, stderr = out_f.read(), err_f.read()
    finally:
        if not args.keep_store:
            shutil.rmtree(store, ignore_errors=True)
    load_after = os.getloadavg()
    phases_seen = [json.loads(ln[len("PHASE "):]) for ln in stdout.splitlines() if ln.startswith("PHASE ")]
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    base = {"process_seconds": wall, "load_before": load_before, "load_after": load_after,
            "sampled_peak": sampled_peak,
            "progress": [ln[len("PROGRESS "):] for ln in stdout.splitlines() if ln.startswith("PROGRESS ")]}
    if stopped or proc.returncode != 0 or not lines:
        reason = stopped or f"exit {proc.returncode}"
        last = phases_seen[-1] if phases_seen else None
        where = f"; last phase '{last['name']}' started at {last['t']:.0f} s" if last else ""
        tail = (stderr or stdout).strip().splitlines()[-5:]
        print(f"  FAILED ({reason}, {wall:.0f} s, sampled peak {_mib(sampled_peak)}{where})"
              + (": " + " | ".join(tail) if tail and not stopped else ""), flush=True)
        # phases that finished before the stop, and the one that was running
        done = [(a["name"], b["t"] - a["t"]) for a, b in zip(phases_seen, phases_seen[1:])]
        return {**base, "failed": True, "note": f">{wall:.0f} (stopped)" if stopped else "failed",
                "phases_seen": phases_seen, "phases": done,
                "running": phases_seen[-1]["name"] if phases_seen else None}
    return {**json.loads(lines[-1][len("RESULT "):]), **base}


def _mib(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"


def _short(phase: str) -> str:
    for sep in (" (", " on ", " as of ", " from "):
        phase = phase.split(sep)[0]
    return phase


def print_table(results: list[dict]) -> None:
    names: list[str] = []
    for r in results:
        running = [r["m"]["running"]] if r["m"].get("running") else []
        for name in [n for n, _ in r["m"].get("phases", [])] + running:
            if _short(name) not in names:
                names.append(_short(name))
    header = ["customers", "rows", "total s", "peak RSS", *[f"{n} s" for n in names],
              "churn AUC", "best baseline AUC"]
    body = []
    for r in results:
        m = r["m"]
        phases = {_short(n): f"{s:.1f}" for n, s in m.get("phases", [])}
        if m.get("running"):
            phases[_short(m["running"])] = "stopped" if m["note"].endswith("(stopped)") else "failed"
        if m.get("failed"):
            total, peak = m["note"], f">= {_mib(m['sampled_peak'])}"
            auc = best = "-"
        else:
            total, peak = f"{m['seconds']:.1f}", _mib(m["peak_rss"])
            auc = f"{m['churn_auc']:.4f}"
            best = f"{m['best_baseline_auc']:.4f} ({m['best_baseline']})"
        body.append([f"{r['customers']:,}", f"{r['rows']:,}", total, peak,
                     *[phases.get(n, "-") for n in names], auc, best])
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    for row in body:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths)) + " |")


def print_details(results: list[dict]) -> None:
    print("\nper run: phases | cpu s | process wall s incl. start-up | load (1/5/15 min) before -> after")
    for r in results:
        m = r["m"]
        load = (" ".join(f"{x:.2f}" for x in m["load_before"]) + " -> "
                + " ".join(f"{x:.2f}" for x in m["load_after"]))
        if m.get("failed"):
            seen = ", ".join(f"'{p['name']}' at {p['t']:.0f} s" for p in m["phases_seen"]) or "none"
            print(f"  {r['customers']:>10,} FAILED {m['note']}: phases started: {seen} | "
                  f"wall {m['process_seconds']:.1f} | load {load}")
            continue
        phases = " + ".join(f"{name} {s:.1f}" for name, s in m["phases"])
        print(f"  {r['customers']:>10,} {m['seconds']:.1f} s = {phases} | cpu {m['cpu_seconds']:.1f} | "
              f"wall {m['process_seconds']:.1f} | load {load}")
        print(f"  {'':>10} rows used {m['rows_used']:,}, customers scored {m['customers_scored']:,}, "
              f"version {m['version']} -> {m['alias']}")
        if m.get("metrics"):
            print(f"  {'':>10} metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in m["metrics"].items()))
        for line in m.get("progress", []):          # each feature build and fit of both recipes
            print(f"  {'':>10}{line}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", nargs="+", default=["100000 1000000"],
                    help="synthetic customer counts (space or comma separated; default 100k and 1M)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--data-dir", default="/tmp/winback-bench",
                    help="where logs are generated (when missing) and MLflow stores live; not the repo")
    ap.add_argument("--timeout", type=float, default=3600,
                    help="stop a run that takes longer than this many seconds (0: never)")
    ap.add_argument("--cutoff", default="2025-09-30", help="evaluation cutoff")
    ap.add_argument("--horizon-days", type=int, default=90)
    ap.add_argument("--origins", type=int, default=3)
    ap.add_argument("--origin-step-days", type=int, default=30)
    ap.add_argument("--churn-estimators", type=int, default=100, help="TrainConfig.churn_estimators")
    ap.add_argument("--hazard-estimators", type=int, default=80, help="TrainConfig.hazard_estimators")
    ap.add_argument("--memory-limit", default="",
                    help="DuckDB memory_limit for the log (default: DuckDB's own, as `winback train`)")
    ap.add_argument("--threads", type=int, default=0,
                    help="TrainConfig.threads: DuckDB and LightGBM threads (default 0: one per core)")
    ap.add_argument("--keep-store", action="store_true", help="keep each run's MLflow store")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--log", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    args = parse_args(ap, argv, tiny={"customers": ["2000"], "churn_estimators": 30, "hazard_estimators": 15})

    if args.child:
        return child_main(args)

    data_dir = outside_repo(args.data_dir)
    args.data_dir = str(data_dir)

    import duckdb
    import lightgbm
    import mlflow
    import pyarrow.parquet as pq

    print(f"cores {os.cpu_count()}, duckdb {duckdb.__version__}, lightgbm {lightgbm.__version__}, "
          f"mlflow {mlflow.__version__}, cutoff {args.cutoff}, horizon {args.horizon_days} d, "
          f"origins {args.origins} x {args.origin_step_days} d, trees {args.churn_estimators} churn / "
          f"{args.hazard_estimators} hazard, seed {args.seed}, "
          f"memory_limit {args.memory_limit or 'DuckDB default'}, threads {args.threads or 'one per core'}")
    print_load("at start")

    results = []
    for customers in parse_counts(args.customers, "--customers"):
        log_path = ensure_log(data_dir, customers, args.seed)
        rows = pq.ParquetFile(log_path).metadata.num_rows
        print(f"{customers:,} customers ({rows:,} rows): training ...", flush=True)
        m = measure(customers, log_path, args)
        if not m.get("failed"):
            print(f"  {m['seconds']:.1f} s, peak {_mib(m['peak_rss'])}, churn AUC {m['churn_auc']:.4f}",
                  flush=True)
        results.append({"customers": customers, "rows": rows, "m": m})

    print_load("at end")
    print()
    print_table(results)
    print_details(results)
    return 1 if any(r["m"].get("failed") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
