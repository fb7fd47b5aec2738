"""The marketer's reports: hand-made logs worked out by hand, CDNOW against pandas, no leakage."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from features import ColumnMap, FeatureSettings, TierSettings, TransactionLog, build_features, reports

AS_OF = "2024-06-15"
TIERS = TierSettings(thresholds=(("member", 0.0), ("silver", 40.0), ("gold", 60.0)),
                     labels_zh_tw=(("member", "一般會員"), ("silver", "銀卡會員"), ("gold", "金卡會員")),
                     window_days=90, review_days=30)

#: (customer, timestamp, amount, order id, category): worked through by hand in each test.
ROWS = [
    ("A", "2024-01-05 10:00", 100.0, "a1", "x"),
    ("A", "2024-01-20 10:00", 50.0, "a2", "x"),
    ("A", "2024-02-10 10:00", 30.0, "a3", "y"),
    ("A", "2024-03-15 10:00", 20.0, "a4", "x"),
    ("B", "2024-02-01 09:00", 200.0, "b1", "x"),
    ("B", "2024-02-01 09:00", 10.0, "b1", "y"),          # a second line of the same order
    ("B", "2024-04-01 12:00", 40.0, "b2", "x"),
    ("C", "2024-03-31 18:00", 60.0, "c1", "y"),
    ("C", "2024-06-15 23:30", 5.0, "c2", "x"),            # the last minute of the as-of day counts
    ("C", "2024-06-16 00:00", 500.0, "c3", "x"),          # the next day does not
    ("D", "2024-04-10 08:00", 45.0, "d1", "y"),
    ("D", "2024-04-20 08:00", 45.0, "d2", "y"),
]
MAPPING = ColumnMap(order_id="order_id", category="category")


def frame(rows=ROWS) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": [r[0] for r in rows], "timestamp": pd.to_datetime([r[1] for r in rows]),
                         "amount": [r[2] for r in rows], "order_id": [r[3] for r in rows],
                         "category": [r[4] for r in rows]})


@pytest.fixture(scope="module")
def log() -> TransactionLog:
    return TransactionLog.from_frame(frame(), MAPPING)


def test_monthly_report_by_hand(log):
    got = reports.monthly_new_vs_returning(log, AS_OF).set_index("month")
    assert list(got.index) == [dt.date(2024, m, 1) for m in range(1, 7)]
    assert got["through"].tolist() == [dt.date(2024, 1, 31), dt.date(2024, 2, 29), dt.date(2024, 3, 31),
                                       dt.date(2024, 4, 30), dt.date(2024, 5, 31), dt.date(2024, 6, 15)]
    expected = pd.DataFrame({   # Jan: A new; Feb: B new (one order, two lines), A back; Mar: C new, A back;
                                # Apr: D new (2 orders), B back; May: nobody; Jun: C back (5 on the 15th)
        "new_customers": [1, 1, 1, 1, 0, 0], "returning_customers": [0, 1, 1, 1, 0, 1],
        "new_orders": [2, 1, 1, 2, 0, 0], "returning_orders": [0, 1, 1, 1, 0, 1],
        "new_revenue": [150.0, 210.0, 60.0, 90.0, 0.0, 0.0],
        "returning_revenue": [0.0, 30.0, 20.0, 40.0, 0.0, 5.0],
    }, index=got.index)
    assert_frame_equal(got[expected.columns], expected, check_dtype=False)
    assert got["customers"].tolist() == [1, 2, 2, 2, 0, 1]
    assert got["orders"].tolist() == [2, 2, 2, 3, 0, 1]
    np.testing.assert_allclose(got["new_avg_order_value"], [75, 210, 60, 45, np.nan, np.nan])
    np.testing.assert_allclose(got["returning_avg_order_value"], [np.nan, 30, 20, 40, np.nan, 5])
    np.testing.assert_allclose(got["avg_order_value"], [75, 120, 40, 130 / 3, np.nan, 5])
    np.testing.assert_allclose(got["returning_revenue_share"], [0, 30 / 240, 20 / 80, 40 / 130, np.nan, 1])
    np.testing.assert_allclose(got["repurchase_rate"], [0, 0.5, 0.5, 0.5, np.nan, 1])


def test_monthly_totals_are_the_logs(log):
    got = reports.monthly_new_vs_returning(log, AS_OF)
    assert got["revenue"].sum() == pytest.approx(605.0)
    assert got["orders"].sum() == 10                         # distinct order ids per customer and day
    assert (got["new_revenue"] + got["returning_revenue"] == got["revenue"]).all()


def test_cohort_retention_by_hand(log):
    got = reports.cohort_retention(log, AS_OF)
    cells = {(c.month, k): a
             for c, k, a in zip(got["cohort_month"], got["months_since_first"], got["active_customers"])}
    assert cells == {(1, 0): 1, (1, 1): 1, (1, 2): 1, (1, 3): 0, (1, 4): 0, (1, 5): 0,      # A
                     (2, 0): 1, (2, 1): 0, (2, 2): 1, (2, 3): 0, (2, 4): 0,                  # B
                     (3, 0): 1, (3, 1): 0, (3, 2): 0, (3, 3): 1,                             # C
                     (4, 0): 1, (4, 1): 0, (4, 2): 0}                                        # D
    assert (got["cohort_customers"] == 1).all()
    assert (got["retention"] == got["active_customers"]).all()


def test_repurchase_intervals_by_hand(log):
    got = reports.repurchase_interval_summary(log, AS_OF)
    # x: A 01-05 -> 01-20 -> 03-15 (15, 55), B 02-01 -> 04-01 (60), D none, C one day (06-16 unseen)
    # y: D 04-10 -> 04-20 (10); A, B and C bought y on one day each
    assert got["category"].tolist() == ["x", "y"]
    x, y = got.iloc[0], got.iloc[1]
    assert (x["customers"], x["intervals"], y["customers"], y["intervals"]) == (2, 3, 1, 1)
    assert x["mean_days"] == pytest.approx(130 / 3)
    assert [x["p25_days"], x["median_days"], x["p75_days"], x["p90_days"]] == pytest.approx(
        np.percentile([15, 55, 60], [25, 50, 75, 90]))
    assert [y["mean_days"], y["median_days"], y["p90_days"]] == [10, 10, 10]


def test_repurchase_interval_histogram_by_hand(log):
    got = reports.repurchase_interval_histogram(log, AS_OF, bin_days=15, max_days=60)
    x = got[got["category"] == "x"]
    assert x["bin_start_days"].tolist() == [15, 45, 60]                    # 15, 55, 60 (open last bin)
    assert x["bin_end_days"].tolist()[:2] == [30, 60] and pd.isna(x["bin_end_days"].iloc[2])
    assert x["share"].tolist() == pytest.approx([1 / 3] * 3)
    y = got[got["category"] == "y"]
    assert y[["bin_start_days", "intervals", "share"]].values.tolist() == [[0, 1, 1.0]]
    with pytest.raises(ValueError, match="divide"):
        reports.repurchase_interval_histogram(log, AS_OF, bin_days=7, max_days=60)


def test_without_categories_all_purchases_are_one_group():
    plain = frame().drop(columns="category")
    log = TransactionLog.from_frame(plain, ColumnMap(order_id="order_id"))
    got = reports.repurchase_interval_summary(log, AS_OF)
    # purchase days: A 01-05, 01-20, 02-10, 03-15; B 02-01, 04-01; C 03-31, 06-15; D 04-10, 04-20
    gaps = [15, 21, 34, 60, 76, 10]
    assert len(got) == 1 and pd.isna(got["category"].iloc[0])
    assert (got["customers"].iloc[0], got["intervals"].iloc[0]) == (4, 6)
    assert got["median_days"].iloc[0] == pytest.approx(np.median(gaps))


@pytest.fixture(scope="module")
def tier_features(log) -> pd.DataFrame:
    return build_features(log, AS_OF, settings=FeatureSettings(tiers=TIERS))


def test_tier_review_calendar_by_hand(tier_features):
    # window: days after 03-17; at the review on 07-15 only days after 04-16 still count.
    # A: nothing in the window, member. B: 40 (04-01) silver, keeps 0, needs 40, drops to member.
    # C: 60 + 5 gold, keeps 5, needs 55, drops to member. D: 45 + 45 gold, keeps 45, needs 15 -> silver.
    got = reports.tier_review_calendar(tier_features, AS_OF, TIERS)
    assert got["customer_id"].tolist() == ["D", "B", "C"]
    assert got["tier"].tolist() == ["gold", "silver", "gold"]
    assert got["amount_to_keep_tier"].tolist() == pytest.approx([15, 40, 55])
    assert got["kept_spend"].tolist() == pytest.approx([45, 0, 5])
    assert got["drops_to"].tolist() == ["silver", "member", "member"]
    assert got["drops_to_zh_tw"].tolist() == ["銀卡會員", "一般會員", "一般會員"]
    assert set(got["review_date"]) == {dt.date(2024, 7, 15)}


def test_tier_review_summary_by_hand(tier_features):
    got = reports.tier_review_summary(tier_features, AS_OF, TIERS)
    assert got["tier"].tolist() == ["member", "silver", "gold"]
    assert got["customers"].tolist() == [1, 1, 2]
    assert got["dropping"].tolist() == [0, 1, 2]
    assert got["dropping_share"].tolist() == pytest.approx([0, 1, 1])
    assert got["amount_to_keep_total"].tolist() == pytest.approx([0, 40, 70])


def test_tier_calendar_refuses_features_of_another_day(log, tier_features):
    with pytest.raises(ValueError, match="as of 2024-06-15, not 2024-06-30"):
        reports.tier_review_calendar(tier_features, "2024-06-30", TIERS)
    with pytest.raises(ValueError, match="other tier settings: customer B is 'silver'.*buys 'member'"):
        reports.tier_review_calendar(tier_features, AS_OF, TierSettings())
    with pytest.raises(ValueError, match="lacks the tier columns"):
        reports.tier_review_summary(tier_features.drop(columns="tier"), AS_OF, TIERS)


def test_a_date_before_the_first_purchase_is_refused(log):
    with pytest.raises(ValueError, match="no purchases on or before 2023-12-31.*first purchase is on 2024-01-05"):
        reports.monthly_new_vs_returning(log, "2023-12-31")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        reports.cohort_retention(log, "06/15/2024")


@pytest.mark.parametrize("with_category", [True, False])
def test_staging_once_gives_the_same_reports_and_cleans_up(with_category):
    rows = frame() if with_category else frame().drop(columns="category")
    log = TransactionLog.from_frame(rows, MAPPING if with_category else ColumnMap(order_id="order_id"))
    tables = lambda: set(log.con.execute("SELECT table_name FROM duckdb_tables()").fetchall())
    before = tables()
    with reports.stage_reports(log, AS_OF) as staged:
        assert len(tables() - before) == 2
        for report in REPORTS:
            assert_frame_equal(report(log, AS_OF, staged=staged), report(log, AS_OF))
        with pytest.raises(ValueError, match="staged log is as of 2024-06-15.*not as of 2024-05-31"):
            reports.cohort_retention(log, "2024-05-31", staged)
    assert tables() == before


# ---- no leakage: later purchases change no report ---------------------------------------------

REPORTS = (reports.monthly_new_vs_returning, reports.cohort_retention,
           reports.repurchase_interval_summary, reports.repurchase_interval_histogram)
CUTOFF = pd.Timestamp("2024-03-31")
purchase = st.tuples(st.sampled_from("abcde"), st.integers(0, 400), st.integers(0, 86_399),
                     st.floats(0, 500, allow_nan=False).map(lambda v: round(v, 2)), st.sampled_from("xyz"))


def _frame_of(rows) -> pd.DataFrame:
    start = pd.Timestamp("2023-06-01")
    df = pd.DataFrame({"customer_id": [r[0] for r in rows],
                       "timestamp": [start + pd.Timedelta(days=r[1], seconds=r[2]) for r in rows],
                       "amount": [r[3] for r in rows], "category": [r[4] for r in rows]})
    return df


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(purchase, min_size=1, max_size=40))
def test_purchases_after_the_as_of_day_change_no_report(rows):
    df = _frame_of(rows)
    seen = df[df["timestamp"] < CUTOFF + pd.Timedelta(days=1)]
    if seen.empty:
        return
    full = TransactionLog.from_frame(df, ColumnMap(category="category"))
    past = TransactionLog.from_frame(seen, ColumnMap(category="category"))
    for report in REPORTS:
        assert_frame_equal(report(full, CUTOFF.date()), report(past, CUTOFF.date()))


def test_the_hand_log_without_its_future_gives_the_same_reports(log):
    seen = TransactionLog.from_frame(frame([r for r in ROWS if r[1] < "2024-06-16"]), MAPPING)
    assert len(frame()) - len(frame([r for r in ROWS if r[1] < "2024-06-16"])) == 1
    for report in REPORTS:
        assert_frame_equal(report(log, AS_OF), report(seen, AS_OF))


# ---- CDNOW: sanity against pandas --------------------------------------------------------------

CDNOW_AS_OF = "1997-12-31"


@pytest.fixture(scope="module")
def cdnow_seen(cdnow_raw) -> pd.DataFrame:
    return cdnow_raw[cdnow_raw["date"] <= CDNOW_AS_OF]


def test_cdnow_monthly_totals_equal_the_logs(cdnow, cdnow_seen):
    got = reports.monthly_new_vs_returning(cdnow, CDNOW_AS_OF)
    assert got["month"].iloc[0] == dt.date(1997, 1, 1) and got["month"].iloc[-1] == dt.date(1997, 12, 1)
    first = got.iloc[0]
    assert first["returning_customers"] == 0 and first["returning_revenue"] == 0
    assert first["returning_revenue_share"] == 0 and first["repurchase_rate"] == 0
    assert got["orders"].sum() == len(cdnow_seen)                       # no order ids: lines
    assert got["revenue"].sum() == pytest.approx(cdnow_seen["dollar_value"].sum(), abs=1e-6)
    assert got["new_customers"].sum() == cdnow_seen["customer_id"].nunique()
    by_month = cdnow_seen.groupby(cdnow_seen["date"].dt.to_period("M"))
    assert got["customers"].tolist() == by_month["customer_id"].nunique().tolist()
    np.testing.assert_allclose(got["revenue"], by_month["dollar_value"].sum(), rtol=0, atol=1e-6)


def test_cdnow_cohorts_against_pandas(cdnow, cdnow_seen):
    got = reports.cohort_retention(cdnow, CDNOW_AS_OF)
    seen = cdnow_seen.assign(month=cdnow_seen["date"].dt.to_period("M"))
    seen["cohort"] = seen.groupby("customer_id")["month"].transform("min")
    seen["k"] = (seen["month"] - seen["cohort"]).apply(lambda offset: offset.n)
    active = seen.groupby(["cohort", "k"])["customer_id"].nunique()
    expected = {(c.to_timestamp().date(), k): n for (c, k), n in active.items()}
    cells = {(c, k): a for c, k, a in zip(got["cohort_month"], got["months_since_first"], got["active_customers"])
             if a > 0}
    assert cells == expected
    assert (got.loc[got["months_since_first"] == 0, "retention"] == 1).all()
    assert len(got) == 12 + 11 + 10                                     # Jan, Feb, Mar cohorts to December


def test_cdnow_intervals_against_pandas(cdnow, cdnow_seen):
    got = reports.repurchase_interval_summary(cdnow, CDNOW_AS_OF).iloc[0]
    days = cdnow_seen[["customer_id", "date"]].drop_duplicates().sort_values(["customer_id", "date"])
    gaps = days.groupby("customer_id")["date"].diff().dt.days.dropna()
    assert got["intervals"] == len(gaps)
    assert got["mean_days"] == pytest.approx(gaps.mean())
    assert [got["p25_days"], got["median_days"], got["p75_days"], got["p90_days"]] == pytest.approx(
        np.percentile(gaps, [25, 50, 75, 90]))
    bins = reports.repurchase_interval_histogram(cdnow, CDNOW_AS_OF)
    assert bins["intervals"].sum() == len(gaps) and math.isclose(bins["share"].sum(), 1.0)
