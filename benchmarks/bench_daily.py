"""Daily-run benchmark: the day's feature table from the kept state vs a full rebuild.

One day of ``winback daily`` as a shop would run it: a history of ``--rows`` rows (the synthetic
log of ``benchmarks/synthetic.py``, as ``bench_features.py`` makes it) and one new file of
``--new-rows`` orders dated the next day (existing customers and some new ones, refunds of old
orders among them). Both variants write the feature table as of that day with the same feature
reference, in their own subprocess:

``full rebuild``
    what ``winback daily`` did before the state existed, and what a user without it runs:
    ``read_transactions`` of every file (checked, as ingest checks) and
    ``features.job.write_features``.
``incremental``
    ``features.incremental.daily_features`` with the state the previous day's run left (built
    untimed first, and copied back before each timed run): only the new file is read.

The two tables must be equal (every column, every value, the types): the exit status is 1 when
they are not, or when the incremental run fell back to a rebuild. Printed: each variant's
seconds, CPU seconds and peak memory, the ratio in one run, and the load average.

    .venv/bin/python benchmarks/bench_daily.py                    # 10M rows of history, 10k new
    .venv/bin/python benchmarks/bench_daily.py --rows 1000000 --repeat 3
    .venv/bin/python benchmarks/bench_daily.py --tiny              # seconds (tests)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from measure import cpu_seconds, outside_repo, parse_args, peak_rss, print_load  # noqa: E402

CUSTOMERS_PER_ROW = 0.108           # as bench_features.py: the generator gives ~9.26 rows per customer
TARGET_RATIO = 20.0                 # the target at 10M rows of history and 10k new rows
TARGET_ROWS = 10_000_000
HISTORY_END = "2025-12-31"          # the generator's last day
NEW_DAY = "2026-01-01"


def columns():
    from features import ColumnMap

    return ColumnMap(customer_id="customer_id", timestamp="timestamp", amount="amount", order_id="order_id",
                     quantity="quantity", category="category", channel="channel")


# ---------------------------------------------------------------------------
# measured work, one variant per subprocess


def run_full(files: list[str], out: str, reference: str, state: str, memory_limit: str, threads: int | None) -> dict:
    from features import FeatureReference, IngestPolicy, read_transactions
    from features.job import write_features

    ref = FeatureReference.from_dict(json.loads(Path(reference).read_text()))
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    log = read_transactions(files, columns(), IngestPolicy(), memory_limit=memory_limit, threads=threads)
    summary = write_features(log, NEW_DAY, out, reference=ref)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": cpu_seconds() - cpu0,
            "customers": summary.customers, "mode": "full"}


def run_incremental(files: list[str], out: str, reference: str, state: str, memory_limit: str,
                    threads: int | None) -> dict:
    from features import FeatureReference, IngestPolicy
    from features.incremental import daily_features

    ref = FeatureReference.from_dict(json.loads(Path(reference).read_text()))
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    done = daily_features(files, NEW_DAY, out, ref, state, columns(), IngestPolicy(),
                          memory_limit=memory_limit, threads=threads)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": cpu_seconds() - cpu0,
            "customers": done.summary.customers, "mode": done.mode, "reason": done.reason,
            "rows_read": done.report.rows_read if done.report else 0}


RUNNERS = {"full": run_full, "incremental": run_incremental}


# ---------------------------------------------------------------------------
# driver


def ensure_history(data_dir: Path, rows: int, seed: int) -> Path:
    import synthetic

    customers = max(1, round(rows * CUSTOMERS_PER_ROW))
    path = data_dir / f"tx_c{customers}_s{seed}.parquet"
    if not path.exists():
        print(f"generating {path} ({customers:,} customers) ...", flush=True)
        stats = synthetic.write_transactions(path, customers, seed=seed)
        print(f"  {stats.rows:,} rows, {stats.seconds:.1f} s", flush=True)
    return path


def write_new_day(history: Path, path: Path, new_rows: int, seed: int) -> int:
    """``new_rows`` rows dated :data:`NEW_DAY`: orders of customers drawn from the history
    (a tenth of them new customers), priced and categorised like history rows, and one refund
    in fifty of an old order; every order id new."""
    import numpy as np
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    table = pq.read_table(history, columns=["customer_id", "amount", "quantity", "category", "channel"])
    picks = rng.integers(0, table.num_rows, new_rows)
    frame = table.take(picks).to_pandas()
    new = rng.random(new_rows) < 0.1
    frame.loc[new, "customer_id"] = [f"N{seed:02d}{i:07d}" for i in range(int(new.sum()))]
    frame["amount"] = frame["amount"].abs()
    refund = (rng.random(new_rows) < 0.02) & ~new
    frame.loc[refund, "amount"] = -frame.loc[refund, "amount"]
    seconds = rng.integers(0, 86_400, new_rows)
    frame["timestamp"] = np.datetime64(NEW_DAY) + seconds.astype("timedelta64[s]")
    frame["order_id"] = [f"D{seed:02d}{i:09d}" for i in range(new_rows)]
    frame = frame[["customer_id", "order_id", "timestamp", "amount", "quantity", "category", "channel"]]
    frame.to_parquet(path, index=False)
    return len(frame)


def measure(variant: str, files: list[Path], out: Path, reference: Path, state: Path,
            args: argparse.Namespace) -> dict:
    load_before = os.getloadavg()[0]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--out", str(out),
           "--reference", str(reference), "--state", str(state), "--memory-limit", args.memory_limit,
           *(["--threads", str(args.threads)] if args.threads else []), "--files", *map(str, files)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=args.data_dir, env=env, capture_output=True, text=True)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-8:]
        print(f"  {variant}: FAILED (exit {done.returncode}): " + " | ".join(tail), flush=True)
        return {"failed": True}
    result = json.loads(lines[-1][len("RESULT "):])
    result.update(process_seconds=time.perf_counter() - t0, load_before=load_before, load_after=os.getloadavg()[0])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=float, default=10_000_000, help="rows of history (default 10M)")
    ap.add_argument("--new-rows", type=int, default=10_000, help="rows in the new day's file (default 10k)")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs of each variant (best kept)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--data-dir", default="/tmp/winback-bench", help="logs, state and outputs; not the repo")
    ap.add_argument("--memory-limit", default="3GB", help="DuckDB memory_limit for both variants")
    ap.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: one per core)")
    ap.add_argument("--child", choices=tuple(RUNNERS), help=argparse.SUPPRESS)
    ap.add_argument("--files", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--reference", help=argparse.SUPPRESS)
    ap.add_argument("--state", help=argparse.SUPPRESS)
    args = parse_args(ap, argv, tiny={"rows": 2000, "new_rows": 50})

    if args.child:
        result = RUNNERS[args.child](args.files, args.out, args.reference, args.state, args.memory_limit,
                                     args.threads)
        result["peak_rss"] = peak_rss()
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    data_dir = outside_repo(args.data_dir)
    args.data_dir = str(data_dir)

    import duckdb
    import pandas as pd
    import pyarrow.parquet as pq

    print(f"cores {os.cpu_count()}, duckdb {duckdb.__version__}, memory_limit {args.memory_limit}, "
          f"history to {HISTORY_END}, new day {NEW_DAY}, seed {args.seed}")
    print_load("at start")
    history = ensure_history(data_dir, int(args.rows), args.seed)
    work = data_dir / f"daily_{history.stem}_n{args.new_rows}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "tx").mkdir(parents=True)
    new_file = work / "tx" / f"orders_{NEW_DAY}.parquet"
    new_rows = write_new_day(history, new_file, args.new_rows, args.seed)
    history_rows = pq.ParquetFile(history).metadata.num_rows

    # untimed set-up: the model's reference, then yesterday's run (it leaves the state)
    from features import IngestPolicy, read_transactions
    from features.incremental import daily_features
    from features.job import feature_table_metadata, write_features

    print(f"set-up: the reference and yesterday's state from {history_rows:,} rows ...", flush=True)
    t0 = time.perf_counter()
    log = read_transactions(history, columns(), IngestPolicy(), memory_limit=args.memory_limit, threads=args.threads)
    write_features(log, HISTORY_END, work / "reference_table.parquet")
    del log
    reference_json = feature_table_metadata(work / "reference_table.parquet")["winback.reference"]
    (work / "reference.json").write_text(reference_json)
    from features import FeatureReference

    reference = FeatureReference.from_dict(json.loads(reference_json))
    built = daily_features([history], HISTORY_END, work / f"features_{HISTORY_END}.parquet", reference,
                           work / "state0", columns(), IngestPolicy(), memory_limit=args.memory_limit,
                           threads=args.threads)
    print(f"  state built by a full rebuild in {built.seconds:.1f} s (set-up total {time.perf_counter() - t0:.1f} s)",
          flush=True)

    files = [history, new_file]
    best: dict[str, dict] = {}
    for i in range(args.repeat):
        for variant in ("full", "incremental"):
            state = work / "state"
            shutil.rmtree(state, ignore_errors=True)
            shutil.copytree(work / "state0", state)
            out = work / f"{variant}_{NEW_DAY}.parquet"
            print(f"run {i + 1}: {variant} ...", flush=True)
            result = measure(variant, files, out, work / "reference.json", state, args)
            if result.get("failed"):
                return 1
            print(f"  {result['seconds']:.2f} s (cpu {result['cpu_seconds']:.2f}), peak "
                  f"{result['peak_rss'] / 2**20:,.0f} MiB, load {result['load_before']:.2f} -> "
                  f"{result['load_after']:.2f}", flush=True)
            if variant not in best or result["seconds"] < best[variant]["seconds"]:
                best[variant] = result
    print_load("at end")

    full, inc = best["full"], best["incremental"]
    a = pd.read_parquet(work / f"full_{NEW_DAY}.parquet")
    b = pd.read_parquet(work / f"incremental_{NEW_DAY}.parquet")
    same = a.equals(b) and list(a.dtypes) == list(b.dtypes) and list(a.columns) == list(b.columns)
    ratio = full["seconds"] / inc["seconds"]
    print()
    print("| history rows | new rows | customers | full rebuild s | full peak | incremental s | incremental peak "
          "| speed-up |")
    print("|-------------:|---------:|----------:|---------------:|----------:|--------------:|-----------------:|---------:|")
    print(f"| {history_rows:,} | {new_rows:,} | {full['customers']:,} | {full['seconds']:.2f} | "
          f"{full['peak_rss'] / 2**20:,.0f} MiB | {inc['seconds']:.2f} | {inc['peak_rss'] / 2**20:,.0f} MiB "
          f"| {ratio:.1f}x |")
    print(f"cpu seconds: full rebuild {full['cpu_seconds']:.2f}, incremental {inc['cpu_seconds']:.2f} "
          f"({full['cpu_seconds'] / max(inc['cpu_seconds'], 1e-9):.1f}x)")
    print(f"incremental run: mode {inc['mode']}{' (' + inc['reason'] + ')' if inc.get('reason') else ''}, "
          f"{inc['rows_read']:,} rows read")
    print(f"tables equal: {'OK' if same else 'MISMATCH'} ({len(a):,} vs {len(b):,} rows)")
    if history_rows >= TARGET_ROWS * 0.9:
        print(f"target: >= {TARGET_RATIO:.0f}x faster than a full rebuild at {history_rows:,} rows of history "
              f"and {new_rows:,} new: {ratio:.1f}x -> {'MET' if ratio >= TARGET_RATIO else 'MISSED'}")
    return 0 if same and inc["mode"] == "incremental" else 1


if __name__ == "__main__":
    sys.exit(main())
