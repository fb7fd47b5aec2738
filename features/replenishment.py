"""Replenishment: when a customer's favourite category is due again.

Only where the log has a category column. A customer's favourite category is the one they
bought on the most days (ties: alphabetical). Its repurchase interval is the customer's own
median gap between purchase days of that category when they have at least two such gaps, and
otherwise the category's typical interval: the median gap over all customers, taken from the
:class:`~features.reference.FeatureReference`. ``replenish_due_in_days`` is negative when the
customer is overdue.
"""

from __future__ import annotations

from features.transactions import sql_escape

COLUMNS = ("top_category", "replenish_interval_days", "replenish_due_in_days")
MIN_OWN_GAPS = 2

GAPS_SQL = """
    SELECT customer_id, category, day,
        date_diff('day', lag(day) OVER (PARTITION BY customer_id, category ORDER BY day), day) AS gap
    FROM cat_days"""


def category_intervals_sql() -> str:
    """A SELECT of each category's median repurchase gap in days, over all customers."""
    return f"SELECT category, median(gap) FROM ({GAPS_SQL}) WHERE gap IS NOT NULL GROUP BY category"


def _values(intervals: dict[str, float]) -> str:
    if not intervals:
        return "SELECT NULL::VARCHAR AS category, NULL::DOUBLE AS interval_days WHERE false"
    rows = ", ".join(f"('{sql_escape(c)}', {float(v)!r})" for c, v in intervals.items())
    return f"SELECT * FROM (VALUES {rows}) AS t(category, interval_days)"


def replenishment_sql(cutoff: str, intervals: dict[str, float]) -> str:
    """A SELECT of customer_id and the replenishment columns, from the ``cat_days`` table."""
    interval = (f"CASE WHEN p.n_gaps >= {MIN_OWN_GAPS} THEN p.own_median "
                f"ELSE ref.interval_days END")
    return f"""
        SELECT p.customer_id, p.category AS top_category,
            {interval} AS replenish_interval_days,
            {interval} - date_diff('day', p.last_day, {cutoff}) AS replenish_due_in_days
        FROM (SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY n_days DESC, category) AS rank
              FROM (SELECT customer_id, category, count(*) AS n_days, max(day) AS last_day,
                           list_median(list(gap) FILTER (WHERE gap IS NOT NULL)) AS own_median,
                           count(gap) AS n_gaps
                    FROM ({GAPS_SQL}) GROUP BY customer_id, category)) AS p
        LEFT JOIN ({_values(intervals)}) AS ref ON ref.category = p.category
        WHERE p.rank = 1"""
