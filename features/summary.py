"""The BG/NBD summary: frequency, recency, T and monetary value.

Exactly the definitions of ``lifetimes.utils.summary_data_from_transaction_data`` applied to the
transactions on or before the cutoff: purchases in the same period (day or week, weeks starting
on Monday as pandas' ``W`` periods do) collapse into one and their amounts add up; ``frequency``
counts repeat periods; ``recency`` and ``T`` are measured in periods from the first purchase
period to the last one and to the cutoff's period; ``monetary_value`` is the mean spend over the
repeat periods, 0 for a customer without one.

``litt`` is the sum over the repeat purchases of the log of the gap to the purchase before, in
the summary's unit (days, or whole weeks between period starts): the statistic the MBG/CNBD-k
likelihood reads to choose the regularity ``k`` (Reutterer, Platzer & Schroeder 2020; BTYDplus'
``elog2cbs``); 0 for a customer without repeat purchase. ``lifetimes`` has no such column.
"""

from __future__ import annotations

from features.settings import Freq
from features.sql import money_sum

COLUMNS = ("frequency", "recency", "T", "monetary_value")
"""The columns of ``lifetimes.utils.summary_data_from_transaction_data`` (the parity checks')."""

TABLE_COLUMNS = COLUMNS + ("litt",)
"""The summary columns of the feature table: lifetimes' and ``litt``."""


def litt_partial(gap: str) -> str:
    """Aggregate: the sum of ``ln(gap)`` over the rows with a gap (NULL for a first purchase), each
    term as DECIMAL(38, 18) so that the sum is exact and the same in any order (a sum of doubles
    differs in the last bits with the order the rows are added in) and can be carried forward."""
    return f"sum(CAST(ln({gap}) AS DECIMAL(38, 18)))"


def litt_column(partial: str) -> str:
    """``litt`` from :func:`litt_partial`: rounded to 1e-9, 0 when there is no gap."""
    return f"coalesce(round(CAST({partial} AS DOUBLE), 9), 0.0)"


def litt_expr(gap: str) -> str:
    """Aggregate: ``litt`` over the rows with a ``gap`` (:func:`litt_partial`, :func:`litt_column`)."""
    return litt_column(litt_partial(gap))


def daily_partials() -> list[str]:
    """Aggregates over the staged ``daily`` rows (with their ``gap``, :data:`features.cycle.GAP`)
    that the daily summary needs in the customers' one GROUP BY: ``litt``'s exact sum."""
    return [f"{litt_partial('gap')} AS _litt"]


def period_expr(day: str, freq: Freq) -> str:
    """The SQL for the start of the period holding ``day``."""
    return day if freq == "D" else f"CAST(date_trunc('week', {day}) AS DATE)"


def summary_sql(cutoff: str, freq: Freq) -> str:
    """A SELECT of customer_id and the summary columns, from the ``daily`` table."""
    unit = 1 if freq == "D" else 7
    gap = "date_diff('day', lag(period) OVER (PARTITION BY customer_id ORDER BY period), period)"
    return f"""
        SELECT customer_id,
            CAST(count(*) - 1 AS DOUBLE) AS frequency,
            date_diff('day', min(period), max(period)) / {unit}.0 AS recency,
            date_diff('day', min(period), {period_expr(cutoff, freq)}) / {unit}.0 AS T,
            CASE WHEN count(*) > 1
                 THEN ({money_sum('spend')} - arg_min(spend, period)) / (count(*) - 1) ELSE 0.0 END
                AS monetary_value,
            {litt_expr('gap')} AS litt
        FROM (SELECT customer_id, period, spend, {gap} / {unit}.0 AS gap
              FROM (SELECT customer_id, {period_expr('day', freq)} AS period, {money_sum('spend')} AS spend
                    FROM daily GROUP BY customer_id, period))
        GROUP BY customer_id"""


def daily_summary_columns() -> list[str]:
    """The summary columns for ``freq="D"`` from the customer-level columns of
    :func:`features.build.finalize_sql` (a period is a purchase day, so no second GROUP BY):
    the same values :func:`summary_sql` gives, with the same arithmetic."""
    return [
        "CAST(purchase_days - 1 AS DOUBLE) AS frequency",
        "date_diff('day', first_purchase_date, last_purchase_date) / 1.0 AS recency",
        "tenure_days / 1.0 AS T",
        "CASE WHEN purchase_days > 1 THEN (total_spend - first_purchase_value) / (purchase_days - 1) "
        "ELSE 0.0 END AS monetary_value",
        f"{litt_column('_litt')} AS litt",
    ]
