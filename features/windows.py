"""Rolling windows: orders and spend in the last N days before the cutoff, and the spend trend.

A window of N days is (cutoff − N days, cutoff]: the purchase days whose ``age`` (days before
the cutoff) is below N. ``spend_trend`` compares the last
``trend_days`` with the ``trend_days`` before them as (last − previous) / (last + previous):
+1 all spend is recent, −1 it all stopped, 0 steady or no spend in either.
"""

from __future__ import annotations

from features.sql import money_sum


def window_aggregates(cutoff: str, windows_days: tuple[int, ...], trend_days: int) -> list[str]:
    """Aggregate expressions over per-day rows with ``age``, the whole days from the purchase
    day to the cutoff (:data:`AGE`), one per window column."""
    parts = []
    for n in windows_days:
        recent = f"age < {int(n)}"                   # day > cutoff - n days
        parts.append(f"coalesce(sum(orders) FILTER (WHERE {recent}), 0) AS orders_{n}d")
        parts.append(f"{money_sum('spend', recent)} AS spend_{n}d")
    t = int(trend_days)
    last = money_sum("spend", f"age < {t}")
    before = money_sum("spend", f"age >= {t} AND age < {2 * t}")
    parts.append(f"CASE WHEN {last} + {before} > 0 THEN ({last} - {before}) / ({last} + {before}) "
                 f"ELSE 0.0 END AS spend_trend")
    return parts


def age_expr(cutoff: str) -> str:
    """Whole days from ``day`` to the cutoff: 0 on the cutoff day itself."""
    return f"date_diff('day', day, {cutoff})"
