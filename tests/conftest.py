"""Shared fixtures: the real CDNOW log, loaded once per test session."""

from __future__ import annotations

import pandas as pd
import pytest

from features import TransactionLog, cdnow_log, load_cdnow


@pytest.fixture(scope="session")
def cdnow_raw() -> pd.DataFrame:
    return load_cdnow()


@pytest.fixture(scope="session")
def cdnow() -> TransactionLog:
    return cdnow_log()
