"""Feature-building benchmark: our DuckDB feature job vs lifetimes' summary, by log size.

For each log size this measures, in one run and on the same synthetic log:

``ours``
    The full feature job as production runs it: ``read_transactions`` (every optional column
    mapped, so exact duplicates are dropped by order id, refunds excluded, categories used) and
    ``features.job.write_features`` streaming the whole feature table to Parquet.
``lifetimes``
    ``pd.read_parquet`` of customer_id, timestamp and amount (refund rows filtered out in the
    read, so both sides summarise the same purchases), then
    ``lifetimes.utils.summary_data_from_transaction_data(..., monetary_value_col="amount",
    freq="D", observation_period_end=cutoff)``. The read and the call are timed separately.
``duckdb``
    A plain DuckDB query for the BG/NBD summary alone (frequency, recency, T, monetary value),
    read straight from the Parquet log and written to Parquet: the floor for what we do.

Every variant runs in its own subprocess (started with the data directory as the working
directory, so DuckDB spills, if any, never land in the repo). Peak memory is that process's own
high-water RSS (``VmHWM``): interpreter, imports, pandas and DuckDB included. Seconds
are measured inside the process around the measured work only (imports excluded).

Logs come from ``benchmarks/synthetic.py`` (seed ``--seed``, ~9.26 rows per customer, so a
target of N rows uses ``round(N * 0.108)`` customers) and are generated into ``--data-dir`` when
missing. Example::

    .venv/bin/python benchmarks/bench_features.py                       # 1M and 10M rows
    .venv/bin/python benchmarks/bench_features.py --rows 100000000 --variants ours duckdb --threads 2
    .venv/bin/python benchmarks/bench_features.py --tiny              # 2,000 rows, seconds (tests)

Logs are Parquet (CSV works the same way through ``read_transactions``, slower to parse).
``--memory-limit`` and ``--threads`` go to DuckDB for ``ours`` (through ``read_transactions``)
and ``duckdb``. Below the table a line gives ours / the plain DuckDB summary and the time
spent opening and validating the log.

The exit status is 1 when a variant fails or the BG/NBD columns differ from lifetimes'.
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

CUSTOMERS_PER_ROW = 0.108  # the generator's defaults give ~9.26 rows per customer
VARIANTS = ("ours", "lifetimes", "duckdb")
TARGET_RATIO_ROWS = 10_000_000  # target: >= 10x faster than lifetimes' summary at 10M rows
TARGET_RATIO = 10.0
TARGET_FLOOR_RATIO = 2.0  # ... and at most 2x the plain DuckDB summary
TARGET_BIG_ROWS = 90_000_000  # target at ~100M rows: < 60 s and < 4 GiB peak
TARGET_BIG_SECONDS = 60.0
TARGET_BIG_RSS = 4 * 1024**3


# ---------------------------------------------------------------------------
# measured work, one variant per subprocess




def run_ours(log_path: str, out: str, cutoff: str, memory_limit: str, threads: int | None) -> dict:
    from features import ColumnMap, IngestPolicy, read_transactions
    from features.job import write_features

    columns = ColumnMap(customer_id="customer_id", timestamp="timestamp", amount="amount",
                        order_id="order_id", quantity="quantity", category="category",
                        channel="channel")
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    log = read_transactions(log_path, columns, IngestPolicy(), memory_limit=memory_limit, threads=threads)
    t1 = time.perf_counter()
    summary = write_features(log, cutoff, out)
    t2 = time.perf_counter()
    return {"seconds": t2 - t0, "open_seconds": t1 - t0, "write_seconds": t2 - t1,
            "cpu_seconds": cpu_seconds() - cpu0, "customers": summary.customers,
            "rows_used": log.report.rows_used}


def run_lifetimes(log_path: str, out: str, cutoff: str, memory_limit: str, threads: int | None) -> dict:
    import pandas as pd
    from lifetimes.utils import summary_data_from_transaction_data

    cpu0, t0 = cpu_seconds(), time.perf_counter()
    frame = pd.read_parquet(log_path, columns=["customer_id", "timestamp", "amount"],
                            filters=[("amount", ">=", 0)])
    t1 = time.perf_counter()
    result = summary_data_from_transaction_data(
        frame, "customer_id", "timestamp", monetary_value_col="amount", freq="D",
        observation_period_end=cutoff)
    t2 = time.perf_counter()
    cpu = cpu_seconds() - cpu0
    rows = len(frame)
    del frame
    peak = peak_rss()  # before writing the (untimed) output for the parity check
    result.reset_index().to_parquet(out, index=False)
    return {"seconds": t2 - t1, "read_seconds": t1 - t0, "cpu_seconds": cpu,
            "customers": len(result), "rows_used": rows, "peak_rss": peak}


def run_duckdb(log_path: str, out: str, cutoff: str, memory_limit: str, threads: int | None) -> dict:
    import duckdb

    def quote(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    cpu0, t0 = cpu_seconds(), time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET memory_limit = {quote(memory_limit)}")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    day = f"DATE {quote(cutoff)}"
    con.execute(f"""
        COPY (
            WITH daily AS (
                SELECT customer_id, CAST("timestamp" AS DATE) AS day, sum(amount) AS spend
                FROM read_parquet({quote(log_path)})
                WHERE amount >= 0 AND "timestamp" < {day} + INTERVAL 1 DAY
                GROUP BY customer_id, day)
            SELECT customer_id,
                CAST(count(*) - 1 AS DOUBLE) AS frequency,
                CAST(date_diff('day', min(day), max(day)) AS DOUBLE) AS recency,
                CAST(date_diff('day', min(day), {day}) AS DOUBLE) AS T,
                CASE WHEN count(*) > 1 THEN (sum(spend) - arg_min(spend, day)) / (count(*) - 1)
                     ELSE 0.0 END AS monetary_value
            FROM daily GROUP BY customer_id ORDER BY customer_id
        ) TO {quote(out)} (FORMAT parquet)""")
    t1 = time.perf_counter()
    customers = con.execute(f"SELECT count(*) FROM read_parquet({quote(out)})").fetchone()[0]
    return {"seconds": t1 - t0, "cpu_seconds": cpu_seconds() - cpu0, "customers": customers}


RUNNERS = {"ours": run_ours, "lifetimes": run_lifetimes, "duckdb": run_duckdb}


def child_main(variant: str, log_path: str, out: str, cutoff: str, memory_limit: str,
               threads: int | None) -> int:
    result = RUNNERS[variant](log_path, out, cutoff, memory_limit, threads)
    result.setdefault("peak_rss", peak_rss())
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# ---------------------------------------------------------------------------
# driver




def ensure_log(data_dir: Path, rows: int, seed: int) -> tuple[Path, int]:
    """The synthetic log for about ``rows`` rows, generated when missing."""
    import synthetic

    customers = max(1, round(rows * CUSTOMERS_PER_ROW))
    path = data_dir / f"tx_c{customers}_s{seed}.parquet"
    if not path.exists():
        print(f"generating {path} ({customers:,} customers) ...", flush=True)
        stats = synthetic.write_transactions(path, customers, seed=seed)
        print(f"  {stats.rows:,} rows, {stats.bytes / 1e6:.1f} MB, {stats.seconds:.1f} s", flush=True)
    return path, customers


def measure(variant: str, log_path: Path, out: Path, args: argparse.Namespace) -> dict:
    """Run one variant in a fresh subprocess; its JSON result plus the load around it."""
    load_before = os.getloadavg()[0]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", variant,
           "--log", str(log_path), "--out", str(out), "--cutoff", args.cutoff,
           "--memory-limit", args.memory_limit] + (["--threads", str(args.threads)] if args.threads else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")]))}
    spill_dir = Path(args.data_dir) / ".tmp"  # DuckDB's default temp_directory, under the cwd
    t0 = time.perf_counter()
    stopped = None
    peak_spill = 0
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        proc = subprocess.Popen(cmd, cwd=args.data_dir, env=env, stdout=out_f, stderr=err_f, text=True)
        while proc.poll() is None:
            time.sleep(0.5)
            spill = _dir_bytes(spill_dir)
            peak_spill = max(peak_spill, spill)
            if args.timeout and time.perf_counter() - t0 > args.timeout:
                stopped = f"stopped after --timeout {args.timeout:.0f} s"
            elif args.max_spill_gb and spill > args.max_spill_gb * 1e9:
                stopped = f"stopped: DuckDB spill reached {spill / 1e9:.1f} GB (--max-spill-gb)"
            if stopped:
                proc.kill()  # only the child this function started
                proc.wait()
                # a killed DuckDB leaves its spill files behind; children run one at a time
                shutil.rmtree(spill_dir, ignore_errors=True)
                break
        wall = time.perf_counter() - t0
        out_f.seek(0)
        err_f.seek(0)
        stdout, stderr = out_f.read(), err_f.read()
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    if stopped or proc.returncode != 0 or not lines:
        tail = (stderr or stdout).strip().splitlines()[-5:]
        reason = stopped or f"exit {proc.returncode}"
        print(f"  {variant}: FAILED ({reason}, {wall:.0f} s, peak spill {peak_spill / 1e9:.1f} GB): "
              + " | ".join(tail), flush=True)
        return {"failed": True, "note": f">{wall:.0f} (stopped)" if stopped else "failed"}
    result = {**json.loads(lines[-1][len("RESULT "):]), "peak_spill": peak_spill}
    result.update(process_seconds=wall, load_before=load_before, load_after=os.getloadavg()[0])
    return result


def _dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def _mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f} MiB"


def _sec(n: float | None) -> str:
    return "-" if n is None else f"{n:.1f}"


def print_table(results: list[dict]) -> None:
    header = ["rows", "customers", "ours s", "ours peak", "lifetimes read s",
              "lifetimes summary s", "lifetimes peak", "ratio", "ratio incl. read",
              "duckdb summary s", "duckdb peak"]
    body = []
    for r in results:
        ours, lt, db = r.get("ours") or {}, r.get("lifetimes") or {}, r.get("duckdb") or {}
        ratio = ratio_read = "-"
        if ours.get("seconds") and lt.get("seconds"):
            ratio = f"{lt['seconds'] / ours['seconds']:.1f}x"
            ratio_read = f"{(lt['seconds'] + lt['read_seconds']) / ours['seconds']:.1f}x"
        customers = ours.get("customers") or lt.get("customers") or db.get("customers") or r["customers"]
        body.append([
            f"{r['rows']:,}", f"{customers:,}", ours.get("note") or _sec(ours.get("seconds")),
            _mib(ours.get("peak_rss")),
            _sec(lt.get("read_seconds")) if lt else r.get("lifetimes_note", "-"),
            _sec(lt.get("seconds")) if lt else r.get("lifetimes_note", "-"), _mib(lt.get("peak_rss")),
            ratio, ratio_read, db.get("note") or _sec(db.get("seconds")), _mib(db.get("peak_rss")),
        ])
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    for row in body:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths)) + " |")
    for r in results:
        ours, db = r.get("ours") or {}, r.get("duckdb") or {}
        if ours.get("seconds") and db.get("seconds"):
            print(f"{r['rows']:,} rows: ours / plain DuckDB summary = {ours['seconds'] / db['seconds']:.1f} "
                  f"times the time (open+validate {ours['open_seconds']:.1f} s of {ours['seconds']:.1f} s)")


def print_details(results: list[dict]) -> None:
    print("\nper variant: measured s (phases) | cpu s | process wall s incl. start-up | "
          "peak DuckDB spill | 1-min load before -> after")
    for r in results:
        for variant in VARIANTS:
            m = r.get(variant)
            if not m or m.get("failed"):
                continue
            if variant == "ours":
                phases = f"open+validate {m['open_seconds']:.1f} + write_features {m['write_seconds']:.1f}"
            elif variant == "lifetimes":
                phases = f"read {m['read_seconds']:.1f} + summary {m['seconds']:.1f}"
            else:
                phases = "query + COPY"
            print(f"  {r['rows']:>12,} {variant:<9} {m['seconds']:7.1f} s ({phases}) | "
                  f"cpu {m['cpu_seconds']:.1f} | wall {m['process_seconds']:.1f} | "
                  f"spill {m['peak_spill'] / 1e9:.1f} GB | "
                  f"load {m['load_before']:.2f} -> {m['load_after']:.2f}")


def check_parity(results: list[dict], data_dir: Path) -> bool:
    """Our BG/NBD columns must equal lifetimes' on the same log (else the race is unfair)."""
    import pandas as pd

    same = True
    for r in results:
        if not (r.get("ours") and r.get("lifetimes")) or r["ours"].get("failed") or r["lifetimes"].get("failed"):
            continue
        cols = ["frequency", "recency", "T", "monetary_value"]
        ours = pd.read_parquet(r["ours_out"], columns=["customer_id", *cols]).set_index("customer_id")
        lt = pd.read_parquet(r["lifetimes_out"]).set_index("customer_id")[cols]
        ours, lt = ours.sort_index(), lt.sort_index()
        same_ids = ours.index.equals(lt.index)
        diff = max(float((ours[c].astype(float) - lt[c]).abs().max()) for c in cols) if same_ids else float("nan")
        verdict = "OK" if same_ids and diff < 1e-6 else "MISMATCH"
        print(f"parity at {r['rows']:,} rows: {len(ours):,} vs {len(lt):,} customers, "
              f"max |ours - lifetimes| = {diff:.2e} -> {verdict}")
        same = same and verdict == "OK"
    return same


def print_targets(results: list[dict]) -> None:
    for r in results:
        ours, lt = r.get("ours") or {}, r.get("lifetimes") or {}
        if r["target"] == TARGET_RATIO_ROWS and ours.get("seconds") and lt.get("seconds"):
            ratio = lt["seconds"] / ours["seconds"]
            print(f"target: full features at {r['rows']:,} rows >= {TARGET_RATIO:.0f}x faster than "
                  f"lifetimes' summary alone: {ratio:.1f}x -> {'MET' if ratio >= TARGET_RATIO else 'MISSED'}")
        db = r.get("duckdb") or {}
        if r["target"] == TARGET_RATIO_ROWS and ours.get("seconds") and db.get("seconds"):
            ratio = ours["seconds"] / db["seconds"]
            print(f"target: full features at {r['rows']:,} rows at most {TARGET_FLOOR_RATIO:.0f}x the plain "
                  f"DuckDB summary: {ratio:.1f}x -> {'MET' if ratio <= TARGET_FLOOR_RATIO else 'MISSED'}")
        if r["rows"] >= TARGET_BIG_ROWS and ours.get("seconds"):
            ok = ours["seconds"] < TARGET_BIG_SECONDS and ours["peak_rss"] < TARGET_BIG_RSS
            print(f"target: {r['rows']:,} rows in < {TARGET_BIG_SECONDS:.0f} s and < 4 GiB: "
                  f"{ours['seconds']:.1f} s, {ours['peak_rss'] / 2**30:.2f} GiB -> {'MET' if ok else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", nargs="+", default=["1000000 10000000"],
                    help="target log sizes in rows (space or comma separated; default 1M and 10M)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--data-dir", default="/tmp/winback-bench",
                    help="where logs are generated (when missing) and outputs written; not the repo")
    ap.add_argument("--skip-lifetimes-above", type=int, default=20_000_000,
                    help="do not run lifetimes on logs with more rows than this")
    ap.add_argument("--memory-limit", default="3GB", help="DuckDB memory_limit for ours and duckdb")
    ap.add_argument("--threads", type=int, default=None,
                    help="DuckDB threads for ours and duckdb (default: one per core)")
    ap.add_argument("--cutoff", default="2025-12-31", help="as-of day (the generator's last day)")
    ap.add_argument("--timeout", type=float, default=1800,
                    help="stop a variant that runs longer than this many seconds (0: never)")
    ap.add_argument("--max-spill-gb", type=float, default=30,
                    help="stop a variant whose DuckDB spill files exceed this many GB (0: never)")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--log", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = parse_args(ap, argv, tiny={"rows": ["2000"]})

    if args.child:
        return child_main(args.child, args.log, args.out, args.cutoff, args.memory_limit, args.threads)

    data_dir = outside_repo(args.data_dir)
    args.data_dir = str(data_dir)

    import duckdb
    import lifetimes
    import pandas as pd
    import pyarrow.parquet as pq

    print(f"cores {os.cpu_count()}, duckdb {duckdb.__version__}, lifetimes {lifetimes.__version__}, "
          f"pandas {pd.__version__}, memory_limit {args.memory_limit}, cutoff {args.cutoff}, seed {args.seed}")
    print_load("at start")

    results = []
    for target in parse_counts(args.rows, "--rows"):
        log_path, customers = ensure_log(data_dir, target, args.seed)
        rows = pq.ParquetFile(log_path).metadata.num_rows
        r = {"rows": rows, "customers": customers, "target": target}
        for variant in args.variants:
            if variant == "lifetimes" and rows > args.skip_lifetimes_above:
                r["lifetimes_note"] = "skipped"
                continue
            out = data_dir / f"{variant}_features_c{customers}_s{args.seed}.parquet"
            r[f"{variant}_out"] = str(out)
            print(f"{rows:,} rows: {variant} ...", flush=True)
            r[variant] = measure(variant, log_path, out, args)
            if not r[variant].get("failed"):
                print(f"  {r[variant]['seconds']:.1f} s, peak {_mib(r[variant]['peak_rss'])}", flush=True)
        results.append(r)

    print_load("at end")
    print()
    print_table(results)
    print_details(results)
    print()
    same = check_parity(results, data_dir)
    print_targets(results)
    failed = any((r.get(v) or {}).get("failed") for r in results for v in VARIANTS)
    return 0 if same and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
