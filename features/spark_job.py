"""The feature job on Spark: what ``winback features --engine spark`` runs.

The table is built by :func:`features.spark.build_features_spark`. A ``.parquet`` or ``.csv``
output is one file, as the DuckDB job writes it (same columns, order, Parquet metadata and
CSV byte-order mark): Spark writes its part files beside the target and DuckDB streams them
into it. Any other path is written as a Parquet directory by Spark itself, for clusters
(``s3://bucket/features/``), with the cutoff and reference id in a ``_winback.json`` sidecar
where the file system is local.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from pathlib import Path

import duckdb

from features.build import parse_cutoff
from features.job import FeatureJobSummary, copy_table, no_customers, table_metadata
from features.output import check_output_path
from features.reference import FeatureReference
from features.settings import FeatureSettings, Freq
from features.spark import SparkLog, build_features_spark
from features.transactions import sql_escape


def write_features_spark(slog: SparkLog, cutoff: dt.date | str, out: str | Path,
                         freq: Freq | None = None, settings: FeatureSettings | None = None,
                         reference: FeatureReference | None = None) -> FeatureJobSummary:
    """Build the feature table on Spark and write it to ``out``; see the module docstring.

    The same checks as :func:`features.job.write_features`: the output path before any work,
    and a cutoff before every purchase is an error, not an empty table.
    """
    if "://" not in str(out):         # a Spark Connect server resolves a relative path in its own folder
        out = Path(out).absolute()
    single = str(out).lower().endswith((".parquet", ".csv"))
    if single:
        out = check_output_path(out)
    day = parse_cutoff(cutoff).date().isoformat()
    table, used = build_features_spark(slog, cutoff, freq, settings, reference)
    if slog.spark.table("daily").limit(1).count() == 0:
        raise no_customers(slog.log, day)
    if not single:
        table.write.mode("overwrite").parquet(str(out))
        if Path(str(out)).is_dir():
            Path(str(out), "_winback.json").write_text(json.dumps(table_metadata(day, used), ensure_ascii=False),
                                                       encoding="utf-8")
        written = slog.spark.read.parquet(str(out))
        segments = {r[0]: r[1] for r in written.groupBy("segment").count().orderBy("count", ascending=False).collect()}
        tiers = {r[0]: r[1] for r in written.groupBy("tier").count().orderBy("count", ascending=False).collect()}
        return FeatureJobSummary(Path(str(out)), sum(segments.values()), segments, tiers, used.fingerprint())
    parts = Path(tempfile.mkdtemp(prefix=f".{Path(out).name}.spark-", dir=Path(out).parent))
    try:
        table.write.mode("overwrite").parquet(str(parts))
        source = f"SELECT * FROM read_parquet('{sql_escape(str(parts))}/*.parquet') ORDER BY customer_id"
        return copy_table(duckdb.connect(), source, Path(out), day, used)
    finally:
        shutil.rmtree(parts, ignore_errors=True)

