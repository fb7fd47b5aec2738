"""A scorer fitted once on a slice of the real CDNOW log, shared by the model tests."""

from __future__ import annotations

import pandas as pd
import pytest

from features import TransactionLog, labelled_features, prepare
from features.cdnow import CDNOW_COLUMNS
from models.ml.churn import ChurnModel
from models.scorer import WinbackScorer

HORIZON = 60


@pytest.fixture(scope="session")
def cdnow_slice(cdnow_raw) -> TransactionLog:
    """The first 6,000 CDNOW customers: every one of their transactions."""
    raw = cdnow_raw[cdnow_raw["customer_id"].astype(int) <= 6000]
    return TransactionLog.from_frame(raw, CDNOW_COLUMNS)


@pytest.fixture(scope="session")
def fitted_scorer(cdnow_slice) -> WinbackScorer:
    _, _, reference = prepare(cdnow_slice, "1997-09-30")
    train = pd.concat([labelled_features(cdnow_slice, c, HORIZON, reference) for c in ("1997-05-31", "1997-06-30")])
    calibration = labelled_features(cdnow_slice, "1997-09-30", HORIZON, reference)
    scorer = WinbackScorer(horizon_days=HORIZON, churn=ChurnModel(n_estimators=80, learning_rate=0.08),
                           hazard_estimators=40)
    return scorer.fit(train, calibration, reference)
