"""Shared fixtures: the real CDNOW log, loaded once per test session."""

from __future__ import annotations

import contextlib
import os

import pandas as pd
import pytest

from features import TransactionLog, cdnow_log, load_cdnow
from features.cdnow import CDNOW_COLUMNS


@pytest.fixture(scope="session")
def cdnow_raw() -> pd.DataFrame:
    return load_cdnow()


@pytest.fixture(scope="session")
def cdnow() -> TransactionLog:
    return cdnow_log()


@pytest.fixture(scope="session")
def small_log(cdnow_raw) -> TransactionLog:
    """The first 4,000 CDNOW customers, every one of their transactions."""
    return TransactionLog.from_frame(cdnow_raw[cdnow_raw["customer_id"].astype(int) <= 4000], CDNOW_COLUMNS)


@pytest.fixture
def store(tmp_path) -> str:
    """An empty MLflow store (SQLite) per test."""
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


def _required() -> bool:
    """Under CI a missing real part fails the tests that need it; elsewhere they are skipped."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on 127.0.0.1 for the session (see ``postgres_support``)."""
    import postgres_support

    with contextlib.ExitStack() as stack:
        try:
            import psycopg  # noqa: F401

            server = stack.enter_context(postgres_support.running_postgres())
        except Exception as exc:
            if _required():
                pytest.fail(f"PostgreSQL is required under CI: {exc}")
            pytest.skip(f"no PostgreSQL: {exc}")
        yield server
