"""Purchase-cycle features: how regularly a customer buys, and how late they are now.

Gaps are the days between consecutive purchase days (several orders on one day are one
purchase day). ``overdue_ratio`` is the days since the last purchase over the mean gap: above 1,
the customer is later than their own habit. Customers with one purchase day have no gap, and
these columns are NULL for them.
"""

from __future__ import annotations

COLUMNS = ("mean_gap_days", "median_gap_days", "std_gap_days", "last_gap_days")

#: The gap before each purchase day (NULL for the first), a window over the customer's days;
#: staged once per log as ``daily.gap`` (:func:`features.build.stage_statements`).
GAP = "date_diff('day', lag(day) OVER (PARTITION BY customer_id ORDER BY day), day)"


def cycle_aggregates() -> list[str]:
    """Aggregate expressions over per-day rows with a ``gap`` column (:data:`GAP`), one per
    column of :data:`COLUMNS`; so the gap statistics share the customers' one GROUP BY."""
    some = "FILTER (WHERE gap IS NOT NULL)"
    return [
        f"avg(gap) {some} AS mean_gap_days",
        f"list_median(list(gap) {some}) AS median_gap_days",   # far faster than median() per group
        f"round(stddev_samp(gap) {some}, 9) AS std_gap_days",   # rounded: parallel sums reorder
        f"CAST(arg_max(gap, day) {some} AS DOUBLE) AS last_gap_days",
    ]


def cycle_sql() -> str:
    """A SELECT of customer_id and the gap statistics, from the staged ``daily`` (with its ``gap``)."""
    return f"""
        SELECT customer_id, {', '.join(cycle_aggregates())}
        FROM daily
        GROUP BY customer_id HAVING count(gap) > 0"""
