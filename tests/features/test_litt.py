"""``litt``, the sum of log inter-purchase times the MBG/CNBD-k reads, equals a pandas computation
from the raw log for every CDNOW customer, daily and weekly, and Spark computes the same."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import build_features
from features.spark import build_features_spark, spark_log, to_pandas

sys.path.append(str(Path(__file__).resolve().parents[1]))
import spark_support  # noqa: E402


def litt_from_raw(raw: pd.DataFrame, cutoff: str, freq: str) -> pd.Series:
    """Per customer: sum of log(gap) between consecutive distinct purchase periods, in the
    period's unit (days; weeks from Monday to Monday, pandas' ``W`` periods), 0 without repeat."""
    seen = raw[raw["date"] <= cutoff]
    days = pd.to_datetime(seen["date"]).dt.normalize()
    period = days if freq == "D" else days.dt.to_period("W").dt.start_time
    periods = pd.DataFrame({"customer_id": seen["customer_id"], "period": period}).drop_duplicates()
    periods = periods.sort_values(["customer_id", "period"])
    unit = 1 if freq == "D" else 7
    gaps = periods.groupby("customer_id")["period"].diff().dt.days / unit
    return np.log(gaps).groupby(periods["customer_id"]).sum(min_count=0).fillna(0.0).sort_index()


@pytest.mark.parametrize("freq", ["D", "W"])
@pytest.mark.parametrize("cutoff", ["1997-04-15", "1998-06-30"])
def test_litt_equals_pandas_for_every_cdnow_customer(cdnow, cdnow_raw, cutoff, freq):
    ours = build_features(cdnow, cutoff, freq=freq).set_index("customer_id")
    want = litt_from_raw(cdnow_raw, cutoff, freq)
    assert list(ours.index) == list(want.index)
    np.testing.assert_allclose(ours["litt"], want, rtol=0, atol=1e-8)
    assert (ours.loc[ours["frequency"] == 0, "litt"] == 0).all()
    assert (ours["litt"] >= 0).all()        # gaps are at least one day or one week


def test_litt_sits_beside_the_lifetimes_summary_columns(cdnow):
    table = build_features(cdnow, "1997-09-30", freq="W")
    assert list(table.columns[:6]) == ["customer_id", "frequency", "recency", "T", "monetary_value", "litt"]
    assert table["litt"].dtype == np.float64


def test_litt_on_a_hand_checked_log():
    """Days 0, 3, 10 (two orders on day 10) and 24: gaps 3, 7, 14 days; weeks from 1997-01-06
    (a Monday): periods 0, 0, 1, 3 -> gaps 1 and 2 weeks."""
    log = pd.DataFrame({
        "customer_id": ["a", "a", "a", "a", "a", "b"],
        "timestamp": pd.to_datetime(["1997-01-06 00:00", "1997-01-09 00:00", "1997-01-16 09:00", "1997-01-16 18:00",
                                     "1997-01-30 00:00", "1997-01-08 00:00"]),
        "amount": [10.0, 5.0, 3.0, 4.0, 8.0, 2.0]})
    daily = build_features(log, "1997-02-28", freq="D").set_index("customer_id")["litt"]
    weekly = build_features(log, "1997-02-28", freq="W").set_index("customer_id")["litt"]
    assert daily["a"] == pytest.approx(np.log(3) + np.log(7) + np.log(14), abs=1e-9)
    assert weekly["a"] == pytest.approx(np.log(1) + np.log(2), abs=1e-9)
    assert daily["b"] == 0 and weekly["b"] == 0


@pytest.mark.parametrize("freq", ["D", "W"])
def test_spark_litt_equals_duckdb(cdnow_raw, freq):
    from features import TransactionLog
    from features.cdnow import CDNOW_COLUMNS

    spark = spark_support.spark()
    small = TransactionLog.from_frame(cdnow_raw[cdnow_raw["customer_id"].astype(int) <= 300], CDNOW_COLUMNS)
    got, _ = build_features_spark(spark_log(small, spark), "1997-12-31", freq)
    got = to_pandas(got.select("customer_id", "frequency", "litt")).sort_values("customer_id")
    want = build_features(small, "1997-12-31", freq=freq)[["customer_id", "frequency", "litt"]]
    assert (want["litt"] > 0).any()
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True),
                                  check_exact=False, rtol=0, atol=1e-9)
