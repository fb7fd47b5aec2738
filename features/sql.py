"""Small SQL helpers shared by the feature definitions."""

from __future__ import annotations


def money_sum(expr: str, where: str | None = None) -> str:
    """SUM of amounts, exact and so independent of row order and threads.

    Summing doubles in parallel gives last-bit differences from run to run; amounts are
    summed as DECIMAL(18, 4) (to 1/10,000 of the currency unit) and the total returned as DOUBLE.
    """
    condition = f" FILTER (WHERE {where})" if where else ""
    return f"CAST(coalesce(sum({decimal(expr)}){condition}, 0) AS DOUBLE)"


def decimal(expr: str) -> str:
    """An amount as the exact DECIMAL(18, 4) :func:`money_sum` adds up."""
    return f"CAST({expr} AS DECIMAL(18, 4))"


def day_totals_sql(source: str, orders: str, where: str = "true", keep: str | None = None,
                   extra: str = "") -> str:
    """One row per customer and purchase day of ``source`` (rows with ``customer_id``, ``ts``,
    ``amount``): ``spend``, ``orders`` (the expression given) and ``rows_kept``.

    With ``keep``, only rows meeting it count towards ``spend`` and ``rows_kept`` (days with
    none have ``rows_kept`` 0); ``extra`` adds aggregates. The one home of "a purchase day".
    Counts are INTEGER (a 100M-row log keeps ~95M such rows; sums of them are HUGEINT anyway).
    """
    kept = f" FILTER (WHERE {keep})" if keep else ""
    more = ", " + extra if extra else ""
    return f"""
        SELECT customer_id, CAST(ts AS DATE) AS day, {money_sum('amount', keep)} AS spend,
            CAST({orders} AS INTEGER) AS orders, CAST(count(*){kept} AS INTEGER) AS rows_kept{more}
        FROM {source} WHERE {where} GROUP BY customer_id, CAST(ts AS DATE)"""
