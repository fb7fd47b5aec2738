"""The marketer's reports as DuckDB SQL over the validated transaction log, as of a date.

Each report is one function returning a DataFrame; each reads only the transactions on or
before ``as_of`` (the same day boundary as :func:`features.build_features`: the shop's time
zone, the whole ``as_of`` day included), so a report as of a past date is exactly what the
marketer would have seen that day. The log is reduced to customer-days by the staging SQL of
:func:`features.build.stage_statements` (one home for "a purchase day" and "an order"), and
the gap between purchase days is :data:`features.replenishment.GAPS_SQL`'s.

Definitions (names from the CRM playbook, ``shared/reference/crm-playbook.md``):

* A customer's **cohort** is the calendar month of their first purchase. In that month they
  are a **new** customer (新客), in every later month a **returning** one (舊客); all of a
  customer's purchases in a month count on one side, so a new customer who buys twice in
  their first month is still new.
* **Returning share of revenue** (舊客貢獻比): returning customers' revenue / the month's revenue.
* **Repurchase rate** (回購率): returning customers / customers who bought that month. The
  playbook judges CRM by the month-over-month growth of the repurchase rate beside the
  returning share of revenue; this is the customer-count counterpart of that revenue share
  (both are 0 in the first month, when nobody has bought before).
* **Retention** of a cohort *k* months after its first month: the share of the cohort's
  customers who bought in that month (month 0 is always 100 %).
* **Repurchase interval**: the days between two consecutive purchase days of one customer in
  one category (in all purchases when the log has no category column).
* **Tier review calendar**: from the feature table's tier columns (:mod:`features.tiers`):
  who would drop a tier at the next review (``as_of + review_days``) unless they spend
  ``amount_to_keep_tier`` before it (保級).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from features.build import cutoff_literal, parse_cutoff, stage_statements
from features.replenishment import GAPS_SQL
from features.settings import TierSettings
from features.sql import money_sum
from features.transactions import TransactionLog, sql_escape

#: Columns of :func:`monthly_new_vs_returning`, in order.
MONTHLY_COLUMNS = (
    "month", "through", "customers", "new_customers", "returning_customers",
    "orders", "new_orders", "returning_orders", "revenue", "new_revenue", "returning_revenue",
    "avg_order_value", "new_avg_order_value", "returning_avg_order_value",
    "returning_revenue_share", "repurchase_rate",
)
#: Columns of :func:`cohort_retention`.
COHORT_COLUMNS = ("cohort_month", "cohort_customers", "months_since_first", "active_customers", "retention")
#: Columns of :func:`repurchase_interval_summary` and :func:`repurchase_interval_histogram`.
INTERVAL_SUMMARY_COLUMNS = ("category", "customers", "intervals", "mean_days", "p25_days",
                            "median_days", "p75_days", "p90_days")
INTERVAL_HISTOGRAM_COLUMNS = ("category", "bin_start_days", "bin_end_days", "intervals", "share")
#: Columns of :func:`tier_review_calendar` and :func:`tier_review_summary`.
CALENDAR_COLUMNS = ("customer_id", "tier", "tier_zh_tw", "tier_spend", "kept_spend",
                    "amount_to_keep_tier", "drops_to", "drops_to_zh_tw", "review_date")
TIER_SUMMARY_COLUMNS = ("tier", "tier_zh_tw", "threshold", "customers", "dropping",
                        "dropping_share", "amount_to_keep_total", "review_date")


@dataclass(frozen=True)
class StagedLog:
    """A log reduced once, as of a date, to the customer-day tables the reports read.

    Made by :func:`stage_reports`; pass it as ``staged=`` to the report functions so that several
    reports over one log and date reduce the log once (on a large log the reduction is most of
    a report's time).
    """

    log: TransactionLog
    as_of: pd.Timestamp
    daily: str                  # temporary table names on ``log.con``
    cat_days: str


def _cat_days_select(log: TransactionLog, selects: dict[str, str], daily: str) -> str:
    """``cat_days``; every category as one (NULL) when the log has none, from ``daily``."""
    return (selects["cat_days"] if log.has_category
            else f"SELECT DISTINCT customer_id, NULL::VARCHAR AS category, day FROM {daily}")


@contextlib.contextmanager
def stage_reports(log: TransactionLog, as_of: dt.date | str) -> Iterator[StagedLog]:
    """Reduce the log as of ``as_of`` once, for several reports; the tables go on exit."""
    _check_history(log, as_of)
    selects = dict(stage_statements(cutoff_literal(as_of), log.has_order_id, log.has_category))
    suffix = uuid.uuid4().hex[:12]
    daily, cat_days = f"report_daily_{suffix}", f"report_cat_days_{suffix}"
    try:
        log.con.execute(f"CREATE TEMP TABLE {daily} AS {selects['daily']}")
        log.con.execute(f"CREATE TEMP TABLE {cat_days} AS {_cat_days_select(log, selects, daily)}")
        yield StagedLog(log, parse_cutoff(as_of), daily, cat_days)
    finally:
        for name in (daily, cat_days):
            log.con.execute(f"DROP TABLE IF EXISTS {name}")


def _with_staged(log: TransactionLog, as_of: dt.date | str, staged: StagedLog | None) -> str:
    """A WITH clause naming ``daily``, ``cat_days`` and ``firsts`` (each customer's cohort month)."""
    if staged is None:
        selects = dict(stage_statements(cutoff_literal(as_of), log.has_order_id, log.has_category))
        daily, cat_days = selects["daily"], _cat_days_select(log, selects, "daily")
    elif staged.log is not log or staged.as_of != parse_cutoff(as_of):
        raise ValueError(f"the staged log is as of {staged.as_of.date()} and of {staged.log.source}, "
                         f"not as of {parse_cutoff(as_of).date()} and of {log.source}")
    else:
        daily, cat_days = f"SELECT * FROM {staged.daily}", f"SELECT * FROM {staged.cat_days}"
    return (f"WITH daily AS ({daily}),\n cat_days AS ({cat_days}),\n firsts AS (SELECT customer_id, "
            "date_trunc('month', min(day)) AS cohort FROM daily GROUP BY customer_id)")


def _check_history(log: TransactionLog, as_of: dt.date | str) -> str:
    """The cutoff literal, after checking there is a purchase on or before it."""
    cutoff = cutoff_literal(as_of)
    first = log.report.first_timestamp
    if first is None or first.normalize() > parse_cutoff(as_of):
        raise ValueError(f"no purchases on or before {parse_cutoff(as_of).date()} in {log.source}; "
                         f"its first purchase is on {first.date() if first is not None else 'no day'}")
    return cutoff


def monthly_new_vs_returning(log: TransactionLog, as_of: dt.date | str,
                             staged: StagedLog | None = None) -> pd.DataFrame:
    """The monthly new vs returning customer report (每月新舊客獲取報表), one row per month.

    From the month of the first purchase to the month of ``as_of`` (months without purchases
    have zeros); ``through`` is the month's last day, or ``as_of`` for a month still running.
    For all, new and returning customers: customers, orders, revenue, average order value
    (revenue / orders); then ``returning_revenue_share`` and ``repurchase_rate`` (module
    docstring). Shares are NULL in a month with no purchases. Orders are counted as
    :func:`features.build_features` counts them: distinct order ids per customer and day when
    the log has order ids, else lines.
    """
    cutoff = _check_history(log, as_of)
    sides = []
    for side, cond in (("", "true"), ("new_", "is_new"), ("returning_", "NOT is_new")):
        sides += [f"count(*) FILTER (WHERE {cond}) AS {side}customers",
                  f"CAST(coalesce(sum(orders) FILTER (WHERE {cond}), 0) AS BIGINT) AS {side}orders",
                  f"{money_sum('revenue', cond)} AS {side}revenue"]
    aov = ", ".join(f"{s}revenue / nullif({s}orders, 0) AS {s}avg_order_value"
                    for s in ("", "new_", "returning_"))
    query = f"""{_with_staged(log, as_of, staged)},
        activity AS (
            SELECT date_trunc('month', d.day) AS month, d.customer_id,
                f.cohort = date_trunc('month', d.day) AS is_new,
                sum(d.orders) AS orders, {money_sum('d.spend')} AS revenue
            FROM daily AS d JOIN firsts AS f USING (customer_id) GROUP BY ALL),
        per_month AS (SELECT month, {', '.join(sides)} FROM activity GROUP BY month),
        months AS (
            SELECT CAST(unnest(generate_series((SELECT min(cohort) FROM firsts),
                date_trunc('month', {cutoff}), INTERVAL 1 MONTH)) AS DATE) AS month)
        SELECT m.month, least(last_day(m.month), {cutoff}) AS through,
            {', '.join(f'coalesce(p.{c}, 0) AS {c}' for c in MONTHLY_COLUMNS[2:11])},
            {aov},
            returning_revenue / nullif(revenue, 0) AS returning_revenue_share,
            returning_customers / nullif(customers, 0) AS repurchase_rate
        FROM months AS m LEFT JOIN per_month AS p ON p.month = m.month
        ORDER BY m.month"""
    return _frame(log.con, query, MONTHLY_COLUMNS, dates=("month", "through"))


def cohort_retention(log: TransactionLog, as_of: dt.date | str,
                     staged: StagedLog | None = None) -> pd.DataFrame:
    """Acquisition-cohort retention: one row per cohort month and month since first purchase.

    ``retention`` = ``active_customers`` (cohort customers with a purchase in that month) /
    ``cohort_customers``. Every cohort has a row for each month from its first to the month of
    ``as_of`` (which may be partial), so the heat map is a triangle.
    """
    cutoff = _check_history(log, as_of)
    query = f"""{_with_staged(log, as_of, staged)},
        sizes AS (SELECT cohort, count(*) AS cohort_customers FROM firsts GROUP BY cohort),
        grid AS (SELECT cohort, cohort_customers,
                    unnest(range(0, date_diff('month', cohort, date_trunc('month', {cutoff})) + 1))
                        AS months_since_first FROM sizes),
        active AS (
            SELECT f.cohort, date_diff('month', f.cohort, date_trunc('month', d.day)) AS months_since_first,
                count(DISTINCT d.customer_id) AS active_customers
            FROM daily AS d JOIN firsts AS f USING (customer_id) GROUP BY ALL)
        SELECT CAST(g.cohort AS DATE) AS cohort_month, g.cohort_customers, g.months_since_first,
            coalesce(a.active_customers, 0) AS active_customers,
            coalesce(a.active_customers, 0) / g.cohort_customers AS retention
        FROM grid AS g LEFT JOIN active AS a USING (cohort, months_since_first)
        ORDER BY cohort_month, months_since_first"""
    return _frame(log.con, query, COHORT_COLUMNS, dates=("cohort_month",))


def _gaps(log: TransactionLog, as_of: dt.date | str, staged: StagedLog | None) -> str:
    return f"""{_with_staged(log, as_of, staged)},
        gaps AS (SELECT customer_id, category, gap FROM ({GAPS_SQL}) WHERE gap IS NOT NULL)"""


def repurchase_interval_summary(log: TransactionLog, as_of: dt.date | str,
                                staged: StagedLog | None = None) -> pd.DataFrame:
    """Days between a customer's purchase days in a category: count and quantiles per category.

    ``customers`` have at least one repurchase in the category; ``intervals`` counts the gaps.
    Quantiles are exact (``quantile_cont``: linear interpolation, as ``numpy.percentile``).
    Categories with no repurchase are left out; without a category column there is one row,
    category NULL, over all purchases. Sorted by the number of intervals, most first.
    """
    _check_history(log, as_of)
    quantiles = ", ".join(f"quantile_cont(gap, {q}) AS p{int(q * 100)}_days" for q in (0.25, 0.5, 0.75, 0.9))
    query = f"""{_gaps(log, as_of, staged)}
        SELECT category, count(DISTINCT customer_id) AS customers, count(*) AS intervals,
            avg(gap) AS mean_days, {quantiles.replace('p50_days', 'median_days')}
        FROM gaps GROUP BY category ORDER BY intervals DESC, category"""
    return _frame(log.con, query, INTERVAL_SUMMARY_COLUMNS)


def repurchase_interval_histogram(log: TransactionLog, as_of: dt.date | str, bin_days: int = 15,
                                  max_days: int = 360, staged: StagedLog | None = None) -> pd.DataFrame:
    """The repurchase-interval distribution per category, in bins of ``bin_days``.

    A bin holds gaps in [``bin_start_days``, ``bin_end_days``); the last bin starts at
    ``max_days`` and is open (``bin_end_days`` NULL). ``share`` is the bin's part of the
    category's intervals. Only bins with intervals are returned.
    """
    if bin_days < 1 or max_days < bin_days or max_days % bin_days:
        raise ValueError(f"bin_days must be at least 1 and divide max_days, got {bin_days} and {max_days}")
    _check_history(log, as_of)
    query = f"""{_gaps(log, as_of, staged)}
        SELECT category, bin_start_days,
            CASE WHEN bin_start_days < {max_days} THEN bin_start_days + {bin_days} END AS bin_end_days,
            count(*) AS intervals,
            count(*) / sum(count(*)) OVER (PARTITION BY category) AS share
        FROM (SELECT category, CAST(least(floor(gap / {bin_days}) * {bin_days}, {max_days}) AS INTEGER)
                  AS bin_start_days FROM gaps)
        GROUP BY category, bin_start_days ORDER BY category NULLS FIRST, bin_start_days"""
    return _frame(log.con, query, INTERVAL_HISTOGRAM_COLUMNS)


def feature_cutoff(features: pd.DataFrame) -> pd.Timestamp:
    """The as-of date a feature table was built at (first purchase + tenure, for every row)."""
    if features.empty:
        raise ValueError("the feature table has no customers")
    days = pd.to_datetime(features["first_purchase_date"]) + pd.to_timedelta(features["tenure_days"], unit="D")
    unique = days.drop_duplicates()
    if len(unique) != 1:
        raise ValueError(f"the feature table mixes cutoffs: {', '.join(str(d.date()) for d in unique[:3])}")
    return pd.Timestamp(unique.iloc[0]).normalize()


def _tier_values(tiers: TierSettings, alias: str = "levels") -> str:
    zh = dict(tiers.labels_zh_tw)
    rows = ", ".join(f"({i}, '{sql_escape(n)}', '{sql_escape(zh.get(n, n))}', {float(t)!r})"
                     for i, (n, t) in enumerate(tiers.thresholds))
    return f"(VALUES {rows}) AS {alias}(level, name, name_zh_tw, threshold)"


def _calendar_sql(as_of: dt.date | str, tiers: TierSettings) -> str:
    """Everyone's kept spend and the tier it buys, from the ``features`` relation."""
    review = f"CAST({cutoff_literal(as_of)} + INTERVAL {tiers.review_days} DAY AS DATE)"
    return f"""
        WITH levels AS (SELECT * FROM {_tier_values(tiers)}),
        members AS (
            SELECT f.customer_id, f.tier, f.tier_zh_tw, f.tier_spend, f.amount_to_keep_tier,
                l.threshold, round(l.threshold - f.amount_to_keep_tier, 4) AS kept_spend
            FROM features AS f JOIN levels AS l ON l.name = f.tier)
        SELECT m.*, arg_max(k.name, k.threshold) AS drops_to,
            arg_max(k.name_zh_tw, k.threshold) AS drops_to_zh_tw, {review} AS review_date
        FROM members AS m JOIN levels AS k ON k.threshold <= m.kept_spend
        GROUP BY ALL"""


def _features_relation(features: pd.DataFrame, as_of: dt.date | str,
                       tiers: TierSettings) -> duckdb.DuckDBPyConnection:
    """A connection with ``features`` registered, after checking it is as of ``as_of``."""
    missing = [c for c in ("customer_id", "tier", "tier_spend", "amount_to_keep_tier",
                           "first_purchase_date", "tenure_days") if c not in features]
    if missing:
        raise ValueError(f"the feature table lacks the tier columns {missing}: build it with "
                         "features.build_features")
    built = feature_cutoff(features)
    if built != parse_cutoff(as_of):
        raise ValueError(f"the feature table is as of {built.date()}, not {parse_cutoff(as_of).date()}")
    names, values = zip(*tiers.thresholds)
    bought = np.asarray(names, dtype=object)[np.searchsorted(values, features["tier_spend"], side="right") - 1]
    wrong = features["tier"].to_numpy(object) != bought
    if wrong.any():
        row = features[wrong].iloc[0]
        raise ValueError(f"the feature table was built with other tier settings: customer {row['customer_id']} "
                         f"is {row['tier']!r} with a spend of {row['tier_spend']}, which buys {bought[wrong][0]!r} "
                         f"with the thresholds {dict(tiers.thresholds)}")
    con = duckdb.connect()
    con.register("features", features)
    return con


def tier_review_calendar(features: pd.DataFrame, as_of: dt.date | str,
                         tiers: TierSettings = TierSettings()) -> pd.DataFrame:
    """Who drops a tier at the next review (``as_of + review_days``), and what keeps it (保級).

    One row per customer with ``amount_to_keep_tier`` > 0: their tier, the spend that will still
    be inside the window at the review (``kept_spend``), the tier that spend buys
    (``drops_to``) and the review date. ``features`` is a :func:`features.build_features`
    table as of ``as_of`` built with these ``tiers`` (a scored snapshot has the same columns).
    Sorted by the amount needed, smallest first: the cheapest tiers to save come first.
    """
    con = _features_relation(features, as_of, tiers)
    query = (f"SELECT {', '.join(CALENDAR_COLUMNS)} FROM ({_calendar_sql(as_of, tiers)}) "
             "WHERE amount_to_keep_tier > 0 ORDER BY amount_to_keep_tier, customer_id")
    return _frame(con, query, CALENDAR_COLUMNS, dates=("review_date",))


def tier_review_summary(features: pd.DataFrame, as_of: dt.date | str,
                        tiers: TierSettings = TierSettings()) -> pd.DataFrame:
    """Per tier, lowest first: members now, how many drop at the next review unless they spend
    more, their share, and the total they need to spend to keep their tiers."""
    con = _features_relation(features, as_of, tiers)
    review = f"CAST({cutoff_literal(as_of)} + INTERVAL {tiers.review_days} DAY AS DATE)"
    query = f"""
        WITH calendar AS ({_calendar_sql(as_of, tiers)})
        SELECT l.name AS tier, l.name_zh_tw AS tier_zh_tw, l.threshold,
            count(c.customer_id) AS customers,
            count(c.customer_id) FILTER (WHERE c.amount_to_keep_tier > 0) AS dropping,
            count(c.customer_id) FILTER (WHERE c.amount_to_keep_tier > 0)
                / nullif(count(c.customer_id), 0) AS dropping_share,
            {money_sum('c.amount_to_keep_tier')} AS amount_to_keep_total, {review} AS review_date
        FROM {_tier_values(tiers, 'l')} LEFT JOIN calendar AS c ON c.tier = l.name
        GROUP BY l.level, l.name, l.name_zh_tw, l.threshold ORDER BY l.level"""
    return _frame(con, query, TIER_SUMMARY_COLUMNS, dates=("review_date",))


def _frame(con: duckdb.DuckDBPyConnection, query: str, columns: tuple[str, ...],
           dates: tuple[str, ...] = ()) -> pd.DataFrame:
    """Run a report query; date columns as ``datetime.date``, the columns in the documented order."""
    frame = con.execute(query).df()
    for column in dates:
        frame[column] = pd.to_datetime(frame[column]).dt.date
    return frame[list(columns)]
