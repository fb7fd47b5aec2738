"""Batch scoring on Spark equals the local scorer for every customer and every column."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from features.build import prepare
from features.labels import labelled_features
from features.spark import build_features_spark, spark_log
from models.ml.churn import ChurnModel
from models.scorer import WinbackScorer
from training.spark_scoring import score_log_spark, score_spark, write_scores_spark

sys.path.append(str(Path(__file__).resolve().parents[1]))
import spark_support  # noqa: E402

AS_OF, HORIZON = "1997-12-31", 120


@pytest.fixture(scope="module")
def scorer(small_log) -> WinbackScorer:
    _, _, reference = prepare(small_log, "1997-08-31")
    train = labelled_features(small_log, "1997-07-31", HORIZON, reference)
    calibration = labelled_features(small_log, "1997-08-31", HORIZON, reference)
    return WinbackScorer(horizon_days=HORIZON, churn=ChurnModel(n_estimators=30),
                         hazard_estimators=15).fit(train, calibration, reference)


@pytest.fixture(scope="module")
def slog(small_log):
    return spark_log(small_log, spark_support.spark())


def test_spark_scores_equal_the_local_scorer(scorer, slog, small_log, tmp_path):
    summary = score_log_spark(scorer, slog, AS_OF, tmp_path / "scores", model_version="7")
    assert (tmp_path / "scores" / f"as_of={AS_OF}").is_dir()
    got = pd.read_parquet(tmp_path / "scores" / f"as_of={AS_OF}").sort_values("customer_id", ignore_index=True)
    want = scorer.score(small_log, AS_OF, reasons=False)
    assert summary.customers == len(want) == len(got) == 4000
    assert (got.pop("model_version") == "7").all()
    assert want["priority"].nunique() > 100            # a ranking over everyone, not per batch
    want = want.drop(columns="as_of")
    assert list(got.columns) == list(want.columns)
    for col in want.columns:
        if pd.api.types.is_float_dtype(want[col]):
            pd.testing.assert_series_equal(got[col], want[col], check_exact=False, rtol=0, atol=1e-9)
        elif pd.api.types.is_datetime64_any_dtype(want[col]):
            pd.testing.assert_series_equal(got[col].astype("datetime64[us]"), want[col].astype("datetime64[us]"))
        else:
            assert got[col].tolist() == want[col].tolist(), col


def test_the_scores_dataframe_keeps_the_scorers_columns(scorer, slog, small_log):
    features, reference = build_features_spark(slog, AS_OF, reference=scorer.reference_)
    assert reference is scorer.reference_
    scores = score_spark(scorer, features, AS_OF)
    assert scores.columns == list(scorer.score(small_log, AS_OF, reasons=False).columns)
    with pytest.raises(ValueError, match="Parquet directory"):
        write_scores_spark(scores, "scores.csv")


def test_training_origins_built_on_spark_equal_duckdbs(scorer, slog, small_log):
    """`winback train --engine spark`: the stacked training frame the fit reads is the same
    from both engines, column by column."""
    from training.pipeline import training_frame

    origins = [pd.Timestamp("1997-06-30"), pd.Timestamp("1997-07-31")]
    reference = scorer.reference_
    quiet = lambda *_: None                                          # noqa: E731
    local = training_frame(small_log, origins, HORIZON, reference, quiet)
    on_spark = training_frame(small_log, origins, HORIZON, reference, quiet, slog)
    assert list(on_spark.columns) == list(local.columns) and len(local) > 0
    pd.testing.assert_frame_equal(on_spark, local, check_dtype=False, check_exact=False, rtol=1e-9)
