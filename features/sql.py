"""Small SQL helpers shared by the feature definitions."""

from __future__ import annotations


def money_sum(expr: str, where: str | None = None) -> str:
    """SUM of amounts, exact and so independent of row order and threads.

    Summing doubles in parallel gives last-bit differences from run to run; amounts are
    summed as DECIMAL(18, 4) (to 1/10,000 of the currency unit) and the total returned as DOUBLE.
    """
    condition = f" FILTER (WHERE {where})" if where else ""
    return f"CAST(coalesce(sum(CAST({expr} AS DECIMAL(18, 4))){condition}, 0) AS DOUBLE)"
