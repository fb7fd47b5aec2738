"""The synthetic shop (``benchmarks/synthetic.py``: :func:`synthetic_shop`) carries the effects
its docstring documents: attributes shift dropout, engagement rises before purchases and fades
before dropout, the purchase rhythm is Erlang-k; it is seeded, fast, and leaves the chunked
benchmark log as it was."""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import synthetic  # noqa: E402

from features import CustomerAttributes, EngagementLog, SideData, build_features  # noqa: E402


@pytest.fixture(scope="module")
def shop():
    return synthetic.synthetic_shop(customers=3000, seed=0, attributes=True, events=True, erlang_k=3)


def test_the_chunked_benchmark_log_is_unchanged():
    """Pinned before the shop was added: the default log of a seed stays byte for byte."""
    df = pd.concat(list(synthetic.generate_transactions(3000, seed=1, chunk_customers=1000)), ignore_index=True)
    digest = hashlib.sha256(pd.util.hash_pandas_object(df, index=False).values.tobytes()).hexdigest()[:16]
    assert (len(df), digest) == (27783, "35d17115dbedc252")


def test_it_is_seeded_small_and_fast(shop):
    started = time.perf_counter()
    again = synthetic.synthetic_shop(customers=3000, seed=0, attributes=True, events=True, erlang_k=3)
    assert time.perf_counter() - started < 3
    for a, b in zip(shop, again):
        assert_frame_equal(a, b)
    other = synthetic.synthetic_shop(customers=3000, seed=1)
    assert not shop[0]["timestamp"].equals(other[0]["timestamp"])
    tx, customers, events = shop
    assert list(tx.columns) == ["customer_id", "order_id", "timestamp", "amount"]
    assert list(customers.columns) == ["customer_id", "channel", "age", "gender", "region"]
    assert list(events.columns) == ["customer_id", "timestamp", "event_type"]
    assert customers["customer_id"].is_unique and len(customers) == 3000
    assert set(events["event_type"]) == {"visit", "email_open"}
    assert tx["timestamp"].max() < pd.Timestamp("2026-01-01")
    assert events["timestamp"].min() >= pd.Timestamp("2024-01-01")
    tx2, no_customers, no_events = synthetic.synthetic_shop(customers=3000, seed=0, attributes=False, events=False)
    assert no_customers is None and no_events is None and len(tx2) > 0


def test_the_frames_are_read_as_side_data(shop):
    tx, customers, events = shop
    side = SideData(CustomerAttributes.from_frame(customers), EngagementLog.from_frame(events))
    table = build_features(tx, "2025-09-30", side=side)
    assert {"attr_channel", "attr_age", "events_visit_30d", "days_since_email_open"} <= set(table.columns)
    assert table["attr_age"].dtype == "float64" and str(table["attr_channel"].dtype) == "category"


def _orders_per_customer(tx: pd.DataFrame, customers: pd.DataFrame) -> pd.Series:
    counts = tx.groupby("customer_id").size()
    return customers.set_index("customer_id").assign(orders=counts)["orders"]


def test_channel_and_age_shift_dropout_as_documented(shop):
    tx, customers, _ = shop
    people = customers.set_index("customer_id").assign(orders=_orders_per_customer(tx, customers))
    by_channel = people.groupby("channel")["orders"].mean()
    assert by_channel["store"] > by_channel["app"] > by_channel["web"] > by_channel["marketplace"]
    assert people.loc[people["age"] >= 50, "orders"].mean() > 1.5 * people.loc[people["age"] < 30, "orders"].mean()
    flat_tx, flat_customers, _ = synthetic.synthetic_shop(customers=3000, seed=0, events=False, attribute_effect=0.0)
    flat = flat_customers.set_index("customer_id").assign(orders=_orders_per_customer(flat_tx, flat_customers))
    spread = flat.groupby("channel")["orders"].mean()
    assert spread.max() / spread.min() < 1.5 < by_channel.max() / by_channel.min()


def _median_gap_cv(tx: pd.DataFrame) -> float:
    days = tx["timestamp"].astype("int64") / 86_400e9
    gaps = days.groupby(tx["customer_id"]).diff().dropna()
    gaps = gaps.groupby(tx.loc[gaps.index, "customer_id"]).agg(["mean", "std", "size"])
    regular = gaps[gaps["size"] >= 8]
    return float((regular["std"] / regular["mean"]).median())


def test_the_rhythm_is_erlang_k():
    """Gaps' coefficient of variation is about 1/sqrt(k): 0.58 for k = 3, 1 for exponential."""
    erlang = _median_gap_cv(synthetic.synthetic_shop(customers=3000, seed=0, events=False, erlang_k=3)[0])
    poisson = _median_gap_cv(synthetic.synthetic_shop(customers=3000, seed=0, events=False, erlang_k=1)[0])
    assert 0.45 < erlang < 0.65 and 0.8 < poisson < 1.1


def test_engagement_rises_before_purchases_and_fades_before_dropout(shop):
    tx, _, events = shop
    end = pd.Timestamp("2025-12-31")
    visits = events[events["event_type"] == "visit"]
    last_buy = tx.groupby("customer_id")["timestamp"].max()
    recent = visits[visits["timestamp"] > end - pd.Timedelta(days=60)].groupby("customer_id").size()
    buyers = last_buy[last_buy > end - pd.Timedelta(days=30)].index
    silent = last_buy[last_buy < end - pd.Timedelta(days=365)].index
    assert recent.reindex(buyers, fill_value=0).mean() > 10 * recent.reindex(silent, fill_value=0).mean()
    # a visit in the 5 days before a purchase is far more common than in 5 days picked at random
    merged = pd.merge_asof(tx.sort_values("timestamp"), visits.sort_values("timestamp").rename(
        columns={"timestamp": "visit"}).assign(timestamp=lambda f: f["visit"]), on="timestamp",
        by="customer_id", direction="backward")
    before = (merged["timestamp"] - merged["visit"] <= pd.Timedelta(days=5)).mean()
    shifted = tx.assign(timestamp=tx["timestamp"] - pd.Timedelta(days=20)).sort_values("timestamp")
    merged = pd.merge_asof(shifted, visits.sort_values("timestamp").rename(columns={"timestamp": "visit"}).assign(
        timestamp=lambda f: f["visit"]), on="timestamp", by="customer_id", direction="backward")
    baseline = (merged["timestamp"] - merged["visit"] <= pd.Timedelta(days=5)).mean()
    assert before > 0.8 and before > 2 * baseline


def test_the_attributes_carry_churn_signal_the_history_does_not():
    """A small LightGBM on history features gains over 0.01 AUC from the real attributes, and
    nothing from shuffled ones (erlang_k=1: the log is otherwise MBG/NBD's own process)."""
    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score

    from features import labelled_features, prepare

    tx, customers, _ = synthetic.synthetic_shop(customers=3000, seed=0, events=False, erlang_k=1)
    rng = np.random.default_rng(1)
    shuffled = customers.assign(channel=rng.permutation(customers["channel"].values),
                                age=rng.permutation(customers["age"].values))
    history = ["frequency", "recency", "T", "days_since_last_purchase", "orders", "mean_gap_days",
               "last_gap_days", "overdue_ratio", "orders_90d", "orders_365d"]
    auc = {}
    for name, frame in (("real", customers), ("shuffled", shuffled)):
        side = SideData(customers=CustomerAttributes.from_frame(frame))
        _, _, reference = prepare(tx, "2025-06-30", side=side)
        train, test = (pd.concat([labelled_features(tx, o, 90, reference=reference, side=side) for o in origins])
                       for origins in (("2025-04-30", "2025-06-30"), ("2025-09-30",)))
        cols = history + reference.attribute_columns
        model = lgb.LGBMClassifier(n_estimators=300, learning_rate=0.03, num_leaves=7, min_child_samples=100,
                                   verbose=-1, n_jobs=1).fit(train[cols], ~train["purchased"])
        auc[name] = roc_auc_score(~test["purchased"], model.predict_proba(test[cols])[:, 1])
    plain = lgb.LGBMClassifier(n_estimators=300, learning_rate=0.03, num_leaves=7, min_child_samples=100,
                               verbose=-1, n_jobs=1).fit(train[history], ~train["purchased"])
    auc["none"] = roc_auc_score(~test["purchased"], plain.predict_proba(test[history])[:, 1])
    assert auc["real"] - auc["shuffled"] > 0.01, auc
    assert abs(auc["shuffled"] - auc["none"]) < 0.005, auc
