"""The Spark engine computes the same feature table and labels as DuckDB, from the same SQL.

Parity for every column and customer (floats to 1e-9, strings and dates exactly) on CDNOW at
three cutoffs and on a synthetic log with categories, refunds and duplicate rows; labels too;
and a bad row gives the same message whichever engine reads the file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from features import build_features, read_transactions
from features.build import prepare
from features.labels import build_labels, labelled_features
from features.settings import ColumnMap
from features.spark import (
    build_features_spark,
    build_labels_spark,
    labelled_features_spark,
    read_transactions_spark,
    spark_log,
    to_pandas,
    to_spark_sql,
)
from features.transactions import TransactionDataError

sys.path.append(str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parents[2] / "benchmarks"))
import spark_support  # noqa: E402
import synthetic  # noqa: E402

SYNTHETIC_COLUMNS = ColumnMap(order_id="order_id", quantity="quantity", category="category",
                              channel="channel")


def assert_same_table(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Same columns, dtypes, customers and order; floats to 1e-9, everything else exactly."""
    assert list(got.columns) == list(want.columns)
    assert got.dtypes.to_dict() == want.dtypes.to_dict()
    assert len(want) > 0
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=0, atol=1e-9)
    for col in want.columns:
        if not pd.api.types.is_float_dtype(want[col]):
            pd.testing.assert_series_equal(got[col], want[col], check_exact=True)


@pytest.fixture(scope="module")
def spark():
    return spark_support.spark()


@pytest.fixture(scope="module")
def spark_cdnow(spark, cdnow):
    return spark_log(cdnow, spark)


@pytest.fixture(scope="module")
def synthetic_path(tmp_path_factory) -> Path:
    """~300 customers with categories and refunds, and 40 rows loaded twice."""
    frame = pd.concat(list(synthetic.generate_transactions(300, seed=7, arrow_strings=False)),
                      ignore_index=True)
    assert (frame["amount"] < 0).any() and frame["category"].nunique() > 3
    frame = pd.concat([frame, frame.sample(40, random_state=1)], ignore_index=True)
    path = tmp_path_factory.mktemp("spark") / "tx.parquet"
    frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("cutoff", ["1997-03-31", "1997-09-30", "1998-06-30"])
def test_cdnow_features_equal_duckdb(spark_cdnow, cdnow, cutoff):
    table, reference = build_features_spark(spark_cdnow, cutoff)
    assert_same_table(to_pandas(table), build_features(cdnow, cutoff))
    assert reference == prepare(cdnow, cutoff)[2]


def test_synthetic_features_and_labels_equal_duckdb(spark, synthetic_path):
    log = read_transactions(synthetic_path, SYNTHETIC_COLUMNS)
    assert log.report.refunds_excluded > 0 and log.report.duplicates_dropped == 40
    slog = read_transactions_spark(synthetic_path, spark, SYNTHETIC_COLUMNS)
    got = to_pandas(labelled_features_spark(slog, "2025-06-30", 90))
    want = labelled_features(log, "2025-06-30", 90)
    assert want["top_category"].notna().any() and want["replenish_due_in_days"].notna().any()
    assert want["purchased"].any() and not want["purchased"].all()
    assert_same_table(got, want.assign(origin=want["origin"].astype("datetime64[ns]")))
    weekly, _ = build_features_spark(slog, "2025-06-30", "W")
    assert_same_table(to_pandas(weekly), build_features(log, "2025-06-30", "W"))


def test_cdnow_labels_equal_duckdb(spark_cdnow, cdnow):
    assert_same_table(to_pandas(build_labels_spark(spark_cdnow, "1997-09-30", 273)),
                      build_labels(cdnow, "1997-09-30", 273))


def test_a_horizon_past_the_log_is_refused_as_on_duckdb(spark_cdnow, cdnow):
    with pytest.raises(ValueError) as theirs:
        build_labels(cdnow, "1998-06-01", 90)
    with pytest.raises(ValueError, match="after the log's last day") as ours:
        build_labels_spark(spark_cdnow, "1998-06-01", 90)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("suffix, bad, column", [
    (".csv", {"amount": "12,5x"}, "amount"),
    (".csv", {"timestamp": "31/02/2024"}, "timestamp"),
    (".parquet", {"customer_id": " "}, "customer_id"),
])
def test_a_bad_row_gives_the_same_message_on_both_engines(spark, tmp_path, suffix, bad, column):
    frame = pd.DataFrame({"customer_id": ["a", "b", "c"], "timestamp": ["2024-01-02"] * 3,
                          "amount": ["1.5", "2", "3"]})
    for name, value in bad.items():
        frame.loc[1, name] = value
    path = tmp_path / f"log{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path, index=False)
    with pytest.raises(TransactionDataError) as duck:
        read_transactions(path)
    with pytest.raises(TransactionDataError) as ours:
        read_transactions_spark(path, spark)
    assert str(ours.value) == str(duck.value)
    assert "row 2" in str(ours.value) and repr(column) in str(ours.value)


def test_transpiling_keeps_duckdb_medians_and_quantiles_meaning():
    """The rewrites sqlglot needs help with: DuckDB's list_median over a (filtered) list and
    quantile_cont with a list of fractions."""
    sql = to_spark_sql("SELECT list_median(list(g) FILTER (WHERE g IS NOT NULL)), "
                       "quantile_cont(x, [0.2, 0.8]) FROM t")
    assert "MEDIAN(g) FILTER(WHERE NOT g IS NULL)" in sql
    assert "percentile(x, ARRAY(0.2, 0.8))" in sql.replace("PERCENTILE", "percentile")


def test_the_spark_feature_job_writes_the_duckdb_jobs_file(spark_cdnow, cdnow, tmp_path):
    """`winback features --engine spark --dataset cdnow --cutoff 1997-09-30` equals DuckDB's."""
    import pyarrow.parquet as pq

    from features.job import write_features
    from features.spark_job import write_features_spark

    ours = write_features_spark(spark_cdnow, "1997-09-30", tmp_path / "spark.parquet")
    theirs = write_features(cdnow, "1997-09-30", tmp_path / "duckdb.parquet")
    assert (ours.customers, ours.segments, ours.tiers, ours.reference_id) == \
        (theirs.customers, theirs.segments, theirs.tiers, theirs.reference_id)
    got, want = pq.read_table(ours.out), pq.read_table(theirs.out)
    assert got.schema.metadata == want.schema.metadata
    assert [(f.name, f.type) for f in got.schema] == [(f.name, f.type) for f in want.schema]
    assert_same_table(got.to_pandas(), want.to_pandas())
    with pytest.raises(ValueError, match="no purchases on or before the cutoff 1996-12-31"):
        write_features_spark(spark_cdnow, "1996-12-31", tmp_path / "early.parquet")
