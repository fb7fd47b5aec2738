"""Spark engine benchmark: the feature job on Spark ``local[2]`` vs DuckDB, on one machine.

Both sides run the same feature definitions (Spark gets DuckDB's SQL transpiled by sqlglot) on
the same synthetic log, in this one process, one after the other:

``duckdb``
    ``read_transactions`` (validation; every optional column mapped) and
    ``features.job.write_features`` streaming the feature table to Parquet.
``spark``
    The same validation (:func:`features.spark.read_transactions_spark`: DuckDB checks the
    files and stages the canonical log as Parquet), then the features on Spark SQL written
    as Parquet. Seconds are given for the whole and for the Spark part alone; the session's
    start-up is measured apart.

Then, unless ``--no-training-frame``, one training origin (features joined with 90-day labels,
:func:`features.spark.labelled_features_spark`) is collected to pandas, as the one-machine fit
receives it, and its memory per customer is printed with the figure for 10M customers.

Example::

    flock /tmp/winback-heavy.lock .venv/bin/python benchmarks/bench_spark.py     # 10M rows
    .venv/bin/python benchmarks/bench_spark.py --tiny                          # 2,000 rows
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from measure import outside_repo, parse_args, print_load  # noqa: E402

COLUMNS = dict(order_id="order_id", quantity="quantity", category="category", channel="channel")


def run_duckdb(log_path: Path, out: Path, cutoff: str) -> dict:
    from features import read_transactions
    from features.job import write_features
    from features.settings import ColumnMap

    started = time.perf_counter()
    log = read_transactions(log_path, ColumnMap(**COLUMNS), memory_limit="3GB")
    summary = write_features(log, cutoff, out)
    return {"seconds": time.perf_counter() - started, "customers": summary.customers}


def run_spark(spark, log_path: Path, out: Path, cutoff: str) -> dict:
    from features.settings import ColumnMap
    from features.spark import build_features_spark, read_transactions_spark

    started = time.perf_counter()
    slog = read_transactions_spark(log_path, spark, ColumnMap(**COLUMNS), memory_limit="3GB",
                                   staging=out.parent)
    staged = time.perf_counter()
    features, _ = build_features_spark(slog, cutoff)
    features.write.mode("overwrite").parquet(str(out))
    done = time.perf_counter()
    customers = spark.read.parquet(str(out)).count()
    return {"seconds": done - started, "spark_seconds": done - staged, "customers": customers,
            "slog": slog}


def training_frame_memory(slog, cutoff: str) -> tuple[int, int]:
    """(customers, bytes) of one training origin collected to pandas."""
    import pandas as pd

    from features.spark import labelled_features_spark, to_pandas

    origin = (pd.Timestamp(cutoff) - pd.Timedelta(days=90)).date().isoformat()
    frame = to_pandas(labelled_features_spark(slog, origin, 90))
    return len(frame), int(frame.memory_usage(deep=True).sum())


def same_tables(duck: Path, spark_dir: Path) -> bool:
    """Every customer and column equal (floats to 1e-9)."""
    import pandas as pd

    a = pd.read_parquet(duck)
    b = pd.read_parquet(spark_dir).sort_values("customer_id", ignore_index=True)
    b = b.astype({c: a[c].dtype for c in a.columns})
    try:
        pd.testing.assert_frame_equal(a, b[a.columns], check_exact=False, rtol=0, atol=1e-9)
        return True
    except AssertionError as exc:
        print(f"DIFFERENT: {str(exc)[:400]}")
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000, help="target log size in rows")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--data-dir", default="/tmp/winback-bench", help="logs and outputs; not the repo")
    ap.add_argument("--cutoff", default="2025-12-31", help="as-of day (the generator's last day)")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--driver-memory", default="8g", help="spark.driver.memory (local mode: all of Spark)")
    ap.add_argument("--no-training-frame", action="store_true")
    args = parse_args(ap, argv, tiny={"rows": 2000, "driver_memory": "1g"})

    data_dir = outside_repo(args.data_dir)

    import bench_features
    import pyarrow.parquet as pq
    import pyspark

    from features.spark import spark_session

    log_path, customers = bench_features.ensure_log(data_dir, args.rows, args.seed)
    rows = pq.ParquetFile(log_path).metadata.num_rows
    print(f"cores {os.cpu_count()}, pyspark {pyspark.__version__}, master {args.master}, "
          f"driver memory {args.driver_memory}, cutoff {args.cutoff}, {rows:,} rows, {customers:,} customers")
    print_load("at start")
    duck_out = data_dir / f"spark_bench_duckdb_c{customers}.parquet"
    spark_out = data_dir / f"spark_bench_spark_c{customers}"
    duck = run_duckdb(log_path, duck_out, args.cutoff)
    print(f"duckdb: {duck['seconds']:.1f} s", flush=True)
    started = time.perf_counter()
    spark = spark_session(args.master, "winback-bench", {
        "spark.driver.memory": args.driver_memory, "spark.ui.enabled": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true"})
    spark.sparkContext.setLogLevel("ERROR")
    start_up = time.perf_counter() - started
    sp = run_spark(spark, log_path, spark_out, args.cutoff)
    print(f"spark: {sp['seconds']:.1f} s (session start-up {start_up:.1f} s apart)", flush=True)
    equal = same_tables(duck_out, spark_out) and duck["customers"] == sp["customers"]

    print(f"\n| rows | customers | DuckDB s | Spark {args.master} s | of which Spark SQL s | Spark / DuckDB |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {rows:,} | {customers:,} | {duck['seconds']:.1f} | {sp['seconds']:.1f} | "
          f"{sp['spark_seconds']:.1f} | {sp['seconds'] / duck['seconds']:.2f}x |")
    print(f"parity (every customer and column, floats to 1e-9) -> {'OK' if equal else 'DIFFERENT'}")
    if not args.no_training_frame:
        n, size = training_frame_memory(sp["slog"], args.cutoff)
        print(f"training origin in pandas: {n:,} customers, {size / 2**20:.1f} MiB, "
              f"{size / n:.0f} bytes/customer -> {size / n * 1e7 / 2**30:.2f} GiB per 10M customers")
    print_load("at end")
    spark.stop()
    shutil.rmtree(spark_out, ignore_errors=True)
    duck_out.unlink(missing_ok=True)
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
