"""Features as of a cutoff depend only on the transactions on or before it, and on nothing else
about the log: not on later purchases, not on row order, not on customers' names."""

from __future__ import annotations

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from features import build_features, build_labels

CUTOFF = pd.Timestamp("2024-03-31")
START = pd.Timestamp("2023-01-01")

purchase = st.tuples(
    st.sampled_from(["a", "b", "c", "d", "e"]),
    st.integers(0, 600),                                  # days after START; some after the cutoff
    st.integers(0, 86_399),                               # second of the day
    st.floats(0, 5_000, allow_nan=False).map(lambda x: round(x, 2)),
    st.sampled_from(["coffee", "tea", "tv"]),
)
logs = st.lists(purchase, min_size=1, max_size=60)


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": [r[0] for r in rows],
        "timestamp": [START + pd.Timedelta(days=r[1], seconds=r[2]) for r in rows],
        "amount": [r[3] for r in rows],
        "category": [r[4] for r in rows],
    })


def features_of(df: pd.DataFrame, freq: str = "D") -> pd.DataFrame:
    return build_features(df, CUTOFF.date(), freq=freq).reset_index(drop=True)


fast = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fast
@given(logs, logs, st.sampled_from(["D", "W"]))
def test_purchases_after_the_cutoff_change_nothing(rows, later, freq):
    df = frame(rows)
    seen = df[df["timestamp"] < CUTOFF + pd.Timedelta(days=1)]
    future = frame(later)
    future["timestamp"] = CUTOFF + pd.Timedelta(days=1) + (future["timestamp"] - START)
    if seen.empty:
        return
    assert_frame_equal(features_of(seen, freq), features_of(pd.concat([df, future]), freq))


@fast
@given(logs, st.randoms(use_true_random=False))
def test_row_order_changes_nothing(rows, rnd):
    df = frame(rows)
    if (df["timestamp"] > CUTOFF + pd.Timedelta(days=1)).all():
        return
    shuffled = df.sample(frac=1.0, random_state=rnd.randint(0, 2**31))
    assert_frame_equal(features_of(df), features_of(shuffled))


@fast
@given(logs)
def test_renaming_customers_changes_only_their_ids(rows):
    df = frame(rows)
    if (df["timestamp"] > CUTOFF + pd.Timedelta(days=1)).all():
        return
    renamed = df.assign(customer_id="x-" + df["customer_id"])
    a = features_of(df).drop(columns="customer_id")
    b = features_of(renamed).drop(columns="customer_id")
    assert_frame_equal(a, b)


def test_labels_do_not_leak_into_features(cdnow_raw):
    """Features at the cutoff are the same whether or not the label window is in the log."""
    cutoff = "1997-09-30"
    early = cdnow_raw[cdnow_raw["date"] <= cutoff].rename(
        columns={"date": "timestamp", "dollar_value": "amount"})[["customer_id", "timestamp", "amount"]]
    full = cdnow_raw.rename(columns={"date": "timestamp", "dollar_value": "amount"})[
        ["customer_id", "timestamp", "amount"]]
    assert_frame_equal(build_features(early, cutoff), build_features(full, cutoff))
    assert build_labels(full, cutoff, 273)["purchased"].any()
