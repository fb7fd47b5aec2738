"""Our BG/NBD summary equals lifetimes' summary_data_from_transaction_data on the CDNOW log."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifetimes.utils import summary_data_from_transaction_data

from features import build_features

COLUMNS = ["frequency", "recency", "T", "monetary_value"]


@pytest.mark.parametrize("freq", ["D", "W"])
@pytest.mark.parametrize("cutoff", ["1997-02-15", "1997-09-30", "1997-12-17", "1998-06-30"])
def test_summary_equals_lifetimes_for_every_customer(cdnow, cdnow_raw, cutoff, freq):
    ours = build_features(cdnow, cutoff, freq=freq).set_index("customer_id")
    seen = cdnow_raw[cdnow_raw["date"] <= cutoff]
    theirs = summary_data_from_transaction_data(
        seen, "customer_id", "date", monetary_value_col="dollar_value",
        observation_period_end=cutoff, freq=freq).sort_index()
    assert list(ours.index) == list(theirs.index)
    np.testing.assert_array_equal(ours[["frequency", "recency", "T"]], theirs[["frequency", "recency", "T"]])
    np.testing.assert_allclose(ours["monetary_value"], theirs["monetary_value"], rtol=1e-12, atol=1e-9)


def test_weekly_summary_matches_the_published_calibration_counts(cdnow):
    """The 39-week calibration of Fader, Hardie & Lee (2005) on the full log: T is 38-39 weeks
    for Q1 1997 first purchases, recency never exceeds T, and frequency is a whole number."""
    f = build_features(cdnow, "1997-09-30", freq="W")
    assert len(f) == 23_570
    assert f["T"].between(26, 39).all()
    assert (f["recency"] <= f["T"]).all()
    assert (f["frequency"] == f["frequency"].round()).all()
    assert (f.loc[f["frequency"] == 0, "monetary_value"] == 0).all()


def test_full_cdnow_log_shape(cdnow):
    assert cdnow.report.rows_read == 69_659
    f = build_features(cdnow, "1998-06-30")
    assert len(f) == 23_570
    assert pd.Timestamp(f["first_purchase_date"].min()) == pd.Timestamp("1997-01-01")
    assert pd.Timestamp(f["last_purchase_date"].max()) == pd.Timestamp("1998-06-30")
