"""Constants and checks shared by the serving tests (imported by name: tests have no packages)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from models.scorer import WinbackScorer

AS_OF = "1997-09-30"
KEYS = ("test-key-one", "test-key-two")
#: A dashboard-only key the session's service also accepts (refused on the API with 403).
VIEWER_KEY = "test-viewer-key"

FLOATS = ["churn_probability", "p_alive", "expected_purchases_30d", "expected_purchases_90d",
          "expected_purchases_365d", "p_purchase_7d", "p_purchase_30d", "p_purchase_90d",
          "expected_order_value", "clv_12m", "value_at_risk"]
DATES = ["next_purchase_date", "next_purchase_low", "next_purchase_high", "winback_date"]
LABELS = ["winback_now", "segment", "segment_zh_tw", "tier", "tier_zh_tw"]


def assert_same_scores(got: pd.DataFrame, expected: pd.DataFrame, with_priority: bool) -> None:
    """Answers (JSON, indexed by customer id) equal the scorer's frame for the same customers."""
    expected = expected.loc[got.index]
    np.testing.assert_allclose(got[FLOATS].to_numpy(float), expected[FLOATS].to_numpy(float), rtol=1e-12)
    for col in DATES:
        want = [None if pd.isna(d) else d.date().isoformat() for d in expected[col]]
        assert [None if pd.isna(d) else d for d in got[col]] == want, col
    for col in LABELS + (["priority"] if with_priority else []):
        assert list(got[col]) == list(expected[col]), col


def register_version(tracking_uri: str, scorer: WinbackScorer, example: pd.DataFrame, metrics: dict) -> str:
    """Log ``scorer`` in a run, register it as a new version of ``winback``; return the version."""
    import mlflow

    from models.pyfunc import log_scorer
    from training.registry import MODEL_NAME, experiment_id

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    with mlflow.start_run(experiment_id=experiment_id(tracking_uri)):
        mlflow.log_metrics(metrics)
        info = log_scorer(scorer, example, AS_OF)
    return mlflow.register_model(info.model_uri, MODEL_NAME).version


def set_champion(tracking_uri: str, version: str) -> None:
    from mlflow import MlflowClient

    from training.registry import CHAMPION, MODEL_NAME

    MlflowClient(tracking_uri, registry_uri=tracking_uri).set_registered_model_alias(MODEL_NAME, CHAMPION, version)
