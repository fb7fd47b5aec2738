"""Rolling windows: orders and spend in the last N days before the cutoff, and the spend trend.

A window of N days is (cutoff − N days, cutoff]. ``spend_trend`` compares the last
``trend_days`` with the ``trend_days`` before them as (last − previous) / (last + previous):
+1 all spend is recent, −1 it all stopped, 0 steady or no spend in either.
"""

from __future__ import annotations

from features.sql import money_sum


def window_aggregates(cutoff: str, windows_days: tuple[int, ...], trend_days: int) -> list[str]:
    """Aggregate expressions over the ``daily`` table, one per window column."""
    parts = []
    for n in windows_days:
        recent = f"day > {cutoff} - INTERVAL {int(n)} DAY"
        parts.append(f"coalesce(sum(orders) FILTER (WHERE {recent}), 0) AS orders_{n}d")
        parts.append(f"{money_sum('spend', recent)} AS spend_{n}d")
    last = money_sum("spend", f"day > {cutoff} - INTERVAL {trend_days} DAY")
    before = money_sum("spend", f"day > {cutoff} - INTERVAL {2 * trend_days} DAY "
                                f"AND day <= {cutoff} - INTERVAL {trend_days} DAY")
    parts.append(f"CASE WHEN {last} + {before} > 0 THEN ({last} - {before}) / ({last} + {before}) "
                 f"ELSE 0.0 END AS spend_trend")
    return parts
