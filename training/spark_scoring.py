"""Batch scoring on Spark: the champion scores a Spark DataFrame of features, writing Parquet.

Each Spark partition is scored by the same :meth:`models.scorer.WinbackScorer.score` the CLI and
the service call (``mapInPandas``: pandas batches in, pandas scores out), so a customer gets
the same scores whichever engine ran. One score is not a function of the customer alone:
``priority`` ranks the value at risk over everyone scored, so it is ranked again over the
whole DataFrame after the batches (Spark's ``rank``, ties sharing the smallest rank, as
:meth:`models.policy.winback.WinbackPolicy.decide` does with pandas).

Why ``mapInPandas`` and not ``mlflow.pyfunc.spark_udf``: both run the same scorer per batch;
the UDF path flattens dates to text and reasons to one string (the pyfunc output schema) and
makes each executor load the model from the registry, while ``mapInPandas`` keeps the
scorer's own column types and ships the already-loaded scorer. ``benchmarks/bench_spark.py``
times both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from features.build import parse_cutoff
from features.spark import SparkLog, build_features_spark
from models.scorer import WinbackScorer

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

#: Partition column of the written scores: one directory per scoring day.
PARTITION = "as_of"


def _score_batches(scorer: WinbackScorer, day: pd.Timestamp, date_columns: list[str]):
    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for features in batches:
            if len(features):
                for col in date_columns:
                    features[col] = pd.to_datetime(features[col]).astype("datetime64[us]")
                yield scorer.score(features, day, reasons=False)
    return score


def score_spark(scorer: WinbackScorer, features: "DataFrame", as_of: dt.date | str) -> "DataFrame":
    """Every customer's scores (without reasons) as a Spark DataFrame, columns as
    :meth:`WinbackScorer.score` gives them, ``priority`` ranked over the whole DataFrame.

    ``features`` is a feature table built with the scorer's reference as of ``as_of``
    (:func:`features.spark.build_features_spark` with ``reference=scorer.reference_``).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    day = parse_cutoff(as_of)
    date_columns = [f.name for f in features.schema.fields if f.dataType.typeName() == "date"]
    sample: pd.DataFrame = features.limit(2).toPandas()
    for col in date_columns:
        sample[col] = pd.to_datetime(sample[col]).astype("datetime64[us]")
    schema = features.sparkSession.createDataFrame(scorer.score(sample, day, reasons=False)).schema
    scored = features.mapInPandas(_score_batches(scorer, day, date_columns), schema)
    rank = F.rank().over(Window.orderBy(F.col("value_at_risk").desc())).cast(
        schema["priority"].dataType)
    return scored.withColumn("priority", rank).select(schema.names)


@dataclass(frozen=True)
class SparkScoreSummary:
    """What :func:`score_log_spark` wrote."""

    out: str
    customers: int
    as_of: str


def write_scores_spark(scores: "DataFrame", out: str | Path) -> str:
    """Write scores as Parquet under ``out``, partitioned by ``as_of`` (``out/as_of=YYYY-MM-DD/``).

    Only the partitions being written are replaced, so daily runs accumulate side by side.
    """
    out = str(out) if "://" in str(out) else str(Path(out).absolute())   # Spark Connect: not the server's folder
    if out.lower().endswith((".csv", ".xlsx")):
        raise ValueError(f"--out {out}: the Spark engine writes a Parquet directory "
                         "(partitioned by as_of), e.g. --out scores/")
    (scores.withColumn(PARTITION, scores[PARTITION].cast("date"))
     .write.mode("overwrite").option("partitionOverwriteMode", "dynamic")
     .partitionBy(PARTITION).parquet(out))
    return out


def score_log_spark(scorer: WinbackScorer, slog: SparkLog, as_of: dt.date | str, out: str | Path,
                    model_version: str | None = None) -> SparkScoreSummary:
    """Build the scorer's features from a log on Spark, score everyone as of ``as_of`` and write
    the scores (with ``model_version``) to ``out`` (:func:`write_scores_spark`)."""
    from pyspark.sql import functions as F

    features, _ = build_features_spark(slog, as_of, reference=scorer.reference_)
    features = features.persist()                 # read by the schema sample and by the scoring
    try:
        scores = score_spark(scorer, features, as_of)
        scores = scores.select("customer_id", F.lit(model_version).cast("string").alias("model_version"),
                               *[c for c in scores.columns if c != "customer_id"])
        written = write_scores_spark(scores, out)
    finally:
        features.unpersist()
    day = parse_cutoff(as_of).date().isoformat()
    customers = slog.spark.read.parquet(written).where(F.col(PARTITION) == F.lit(day).cast("date")).count()
    return SparkScoreSummary(written, customers, day)
