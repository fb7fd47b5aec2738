"""Each feature group on a small log computed by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from features import FeatureSettings, TierSettings, build_features, build_labels
from features.rfm import SEGMENTS

CUTOFF = "2024-06-30"


def tx(rows: list[tuple]) -> pd.DataFrame:
    cols = ["customer_id", "timestamp", "amount", "category"][: len(rows[0])]
    frame = pd.DataFrame(rows, columns=cols)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], format="ISO8601")
    return frame


@pytest.fixture
def small() -> pd.DataFrame:
    return tx([
        ("a", "2024-01-01", 10.0, "coffee"),
        ("a", "2024-01-01 18:00", 5.0, "coffee"),   # same day: one purchase day, 2 orders
        ("a", "2024-02-01", 20.0, "coffee"),
        ("a", "2024-03-02", 30.0, "coffee"),
        ("a", "2024-06-20", 40.0, "tea"),
        ("b", "2024-06-29", 100.0, "tea"),
        ("c", "2023-07-15", 2500.0, "tv"),
        ("a", "2024-07-05", 999.0, "coffee"),       # after the cutoff: never seen
    ])


def row(features: pd.DataFrame, customer: str) -> pd.Series:
    return features.set_index("customer_id").loc[customer]


def test_summary_rfm_and_cycle_by_hand(small):
    f = build_features(small, CUTOFF)
    a = row(f, "a")
    assert (a.frequency, a.recency, a["T"]) == (3, 171, 181)        # 4 purchase days, Jan 1 -> Jun 20 -> Jun 30
    assert a.monetary_value == pytest.approx((20 + 30 + 40) / 3)
    assert (a.orders, a.purchase_days, a.total_spend) == (5, 4, 105.0)
    assert a.first_purchase_value == 15.0
    assert a.days_since_last_purchase == 10 and a.tenure_days == 181
    gaps = [31, 30, 110]
    assert a.mean_gap_days == pytest.approx(sum(gaps) / 3)
    assert a.median_gap_days == 31 and a.last_gap_days == 110
    assert a.std_gap_days == pytest.approx(pd.Series(gaps).std())
    assert a.overdue_ratio == pytest.approx(10 / (sum(gaps) / 3))
    b = row(f, "b")
    assert (b.frequency, b.recency, b.monetary_value) == (0, 0, 0)
    assert math.isnan(b.mean_gap_days) and math.isnan(b.overdue_ratio)


def test_windows_and_trend(small):
    a = row(build_features(small, CUTOFF), "a")
    assert (a.orders_30d, a.spend_30d) == (1, 40.0)
    assert (a.orders_180d, a.spend_180d) == (3, 90.0)   # (Jan 2, Jun 30]: Feb 1, Mar 2, Jun 20
    assert (a.orders_365d, a.spend_365d) == (5, 105.0)
    # last 90 days (Apr 1 - Jun 30): 40; the 90 before (Jan 2 - Apr 1): 50
    assert a.spend_trend == pytest.approx((40 - 50) / (40 + 50))


def test_tiers_need_and_keep():
    settings = FeatureSettings(tiers=TierSettings(review_days=30))
    f = build_features(tx([("c", "2023-07-15", 2500.0), ("c", "2024-06-01", 100.0),
                           ("d", "2024-06-01", 12000.0)]), CUTOFF, settings=settings)
    c, d = row(f, "c"), row(f, "d")
    assert c.tier == "silver" and c.tier_zh_tw == "銀卡會員" and c.tier_spend == 2600.0
    assert c.amount_to_next_tier == pytest.approx(10000 - 2600)
    # next review 2024-07-30: the window then starts after 2023-07-31, so the 2,500 drops out
    assert c.amount_to_keep_tier == pytest.approx(2000 - 100)
    assert d.tier == "gold" and math.isnan(d.amount_to_next_tier) and d.amount_to_keep_tier == 0


def test_replenishment_uses_own_cycle_or_the_category_typical_one(small):
    f = build_features(small, CUTOFF)
    a, b = row(f, "a"), row(f, "b")
    assert a.top_category == "coffee"
    assert a.replenish_interval_days == 30.5                     # own gaps 31 and 30
    assert a.replenish_due_in_days == pytest.approx(30.5 - (pd.Timestamp(CUTOFF) - pd.Timestamp("2024-03-02")).days)
    assert b.top_category == "tea" and math.isnan(b.replenish_interval_days)   # no tea gap anywhere


def test_features_without_category_have_null_replenishment(cdnow):
    f = build_features(cdnow, "1997-06-30")
    assert f["top_category"].isna().all()


def test_segment_map_covers_every_score_pair_once():
    import duckdb

    for r in range(1, 6):
        for fs in range(1, 6):
            hits = [en for en, _, cond in SEGMENTS
                    if duckdb.execute(f"SELECT {cond} FROM (SELECT {r} AS r_score, {fs} AS f_score)").fetchone()[0]]
            assert len(hits) == 1, (r, fs, hits)


def test_rfm_scores_span_one_to_five_on_cdnow(cdnow):
    f = build_features(cdnow, "1997-09-30")
    for col in ("r_score", "f_score", "m_score"):
        assert set(f[col]) <= {1, 2, 3, 4, 5} and f[col].nunique() >= 3
    # more recent buyers never get a lower R score
    ordered = f.sort_values("days_since_last_purchase")
    assert ordered["r_score"].is_monotonic_decreasing
    assert f["segment_zh_tw"].notna().all()


def test_labels_by_hand(small):
    labels = build_labels(small, "2024-06-20", horizon_days=15).set_index("customer_id")
    assert set(labels.index) == {"a", "c"}                     # b first bought after the cutoff
    a, c = labels.loc["a"], labels.loc["c"]
    assert a.purchased and a.horizon_purchase_days == 1 and a.horizon_spend == 999.0
    assert a.days_to_next_purchase == 15 and not a.next_purchase_censored
    assert not c.purchased and c.days_to_next_purchase == 15 and c.next_purchase_censored


def test_labels_refuse_a_horizon_past_the_data(small):
    with pytest.raises(ValueError, match="after the log's last day"):
        build_labels(small, CUTOFF, horizon_days=30)


def test_cdnow_holdout_label_rate(cdnow):
    labels = build_labels(cdnow, "1997-09-30", horizon_days=273)
    assert len(labels) == 23_570
    assert 0.25 < labels["purchased"].mean() < 0.35
