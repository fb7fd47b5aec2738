"""The BG/NBD summary: frequency, recency, T and monetary value.

Exactly the definitions of ``lifetimes.utils.summary_data_from_transaction_data`` applied to the
transactions on or before the cutoff: purchases in the same period (day or week, weeks starting
on Monday as pandas' ``W`` periods do) collapse into one and their amounts add up; ``frequency``
counts repeat periods; ``recency`` and ``T`` are measured in periods from the first purchase
period to the last one and to the cutoff's period; ``monetary_value`` is the mean spend over the
repeat periods, 0 for a customer without one.
"""

from __future__ import annotations

from features.settings import Freq
from features.sql import money_sum

COLUMNS = ("frequency", "recency", "T", "monetary_value")


def period_expr(day: str, freq: Freq) -> str:
    """The SQL for the start of the period holding ``day``."""
    return day if freq == "D" else f"CAST(date_trunc('week', {day}) AS DATE)"


def summary_sql(cutoff: str, freq: Freq) -> str:
    """A SELECT of customer_id and the summary columns, from the ``daily`` table."""
    unit = 1 if freq == "D" else 7
    return f"""
        SELECT customer_id,
            CAST(count(*) - 1 AS DOUBLE) AS frequency,
            date_diff('day', min(period), max(period)) / {unit}.0 AS recency,
            date_diff('day', min(period), {period_expr(cutoff, freq)}) / {unit}.0 AS T,
            CASE WHEN count(*) > 1
                 THEN ({money_sum('spend')} - arg_min(spend, period)) / (count(*) - 1) ELSE 0.0 END
                AS monetary_value
        FROM (SELECT customer_id, {period_expr('day', freq)} AS period, {money_sum('spend')} AS spend
              FROM daily GROUP BY customer_id, period)
        GROUP BY customer_id"""


def daily_summary_columns() -> list[str]:
    """The summary columns for ``freq="D"`` from the customer-level aggregates of
    :func:`features.build._customers_sql` (a period is a purchase day, so no second GROUP BY):
    the same values :func:`summary_sql` gives, with the same arithmetic."""
    return [
        "CAST(purchase_days - 1 AS DOUBLE) AS frequency",
        "date_diff('day', first_purchase_date, last_purchase_date) / 1.0 AS recency",
        "tenure_days / 1.0 AS T",
        "CASE WHEN purchase_days > 1 THEN (total_spend - first_purchase_value) / (purchase_days - 1) "
        "ELSE 0.0 END AS monetary_value",
    ]
