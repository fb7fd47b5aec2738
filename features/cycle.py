"""Purchase-cycle features: how regularly a customer buys, and how late they are now.

Gaps are the days between consecutive purchase days (several orders on one day are one
purchase day). ``overdue_ratio`` is the days since the last purchase over the mean gap: above 1,
the customer is later than their own habit. Customers with one purchase day have no gap, and
these columns are NULL for them.
"""

from __future__ import annotations

COLUMNS = ("mean_gap_days", "median_gap_days", "std_gap_days", "last_gap_days")


def cycle_sql() -> str:
    """A SELECT of customer_id and the gap statistics, from the ``daily`` table."""
    return """
        SELECT customer_id,
            avg(gap) AS mean_gap_days,
            list_median(list(gap)) AS median_gap_days,      -- far faster than median() per group
            round(stddev_samp(gap), 9) AS std_gap_days,     -- rounded: parallel sums reorder
            CAST(arg_max(gap, day) AS DOUBLE) AS last_gap_days
        FROM (SELECT customer_id, day,
                     date_diff('day', lag(day) OVER (PARTITION BY customer_id ORDER BY day), day) AS gap
              FROM daily)
        WHERE gap IS NOT NULL
        GROUP BY customer_id"""
