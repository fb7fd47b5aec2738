"""A small real CDNOW slice and an empty MLflow store per test."""

from __future__ import annotations

import pytest

from features import TransactionLog
from features.cdnow import CDNOW_COLUMNS
from training.pipeline import TrainConfig

CUTOFF, HORIZON = "1997-12-31", 120


@pytest.fixture(scope="session")
def small_log(cdnow_raw) -> TransactionLog:
    """The first 4,000 CDNOW customers, every one of their transactions."""
    return TransactionLog.from_frame(cdnow_raw[cdnow_raw["customer_id"].astype(int) <= 4000], CDNOW_COLUMNS)


@pytest.fixture
def store(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


def quick_config(**overrides) -> TrainConfig:
    """Small models: the tests check the pipeline's decisions, not model quality."""
    settings = dict(cutoff=CUTOFF, horizon_days=HORIZON, origins=2, origin_step_days=30,
                    churn_estimators=40, hazard_estimators=15, next_purchase="auto")
    return TrainConfig(**{**settings, **overrides})
