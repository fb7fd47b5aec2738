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


def cycle_partials() -> list[str]:
    """Aggregates over per-day rows with a ``gap`` column (:data:`GAP`) that the gap statistics
    need beside the first and last purchase days and ``purchase_days``: the median (which needs
    every gap: :mod:`features.incremental` keeps each customer's gaps for it), the sum of
    squared gaps (exact integers) and the last gap. The sum of the gaps is the last purchase day
    minus the first, and there are ``purchase_days - 1`` of them."""
    some = "FILTER (WHERE gap IS NOT NULL)"
    return [
        f"list_median(list(gap) {some}) AS median_gap_days",    # far faster than median() per group
        "sum(gap * gap) AS _gap_sq",
        f"CAST(arg_max(gap, day) {some} AS DOUBLE) AS last_gap_days",
    ]


def cycle_columns() -> list[str]:
    """The columns of :data:`COLUMNS` from :func:`cycle_partials` and the customer's first and
    last purchase days and ``purchase_days``: mean and sample standard deviation from exact
    integer sums (so the same whatever the order the gaps were added in), the standard deviation
    rounded to 1e-9."""
    n = "(purchase_days - 1)"
    total = "date_diff('day', first_purchase_date, last_purchase_date)"
    return [
        f"CASE WHEN purchase_days > 1 THEN CAST({total} AS DOUBLE) / {n} END AS mean_gap_days",
        "median_gap_days",
        f"CASE WHEN purchase_days > 2 THEN round(sqrt(CAST({n} * _gap_sq - {total} * {total} AS DOUBLE) "
        f"/ ({n} * (purchase_days - 2))), 9) END AS std_gap_days",
        "last_gap_days",
    ]
