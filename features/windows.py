"""Rolling windows: orders and spend in the last N days before the cutoff, and the spend trend.

A window of N days is (cutoff − N days, cutoff]: the purchase days whose ``age`` (days before
the cutoff) is below N; spend is summed exactly (DECIMAL). ``spend_trend`` compares the last
``trend_days`` with the ``trend_days`` before them as (last − previous) / (last + previous):
+1 all spend is recent, −1 it all stopped, 0 steady or no spend in either.
"""

from __future__ import annotations

from features.sql import decimal


def window_lengths(windows_days: tuple[int, ...], trend_days: int, tier_days: tuple[int, ...] = ()) -> tuple[int, ...]:
    """Every window length whose spend some column needs: the windows, the trend's ``t`` and
    ``2t`` and the tier windows (:func:`features.tiers.tier_windows`); lengths of 0 or less hold no day."""
    return tuple(sorted({int(n) for n in (*windows_days, trend_days, 2 * int(trend_days), *tier_days) if int(n) > 0}))


def window_partials(windows_days: tuple[int, ...], lengths: tuple[int, ...]) -> list[str]:
    """Aggregates over per-day rows with ``age`` (:func:`age_expr`): the orders of each window and
    the spend (exact DECIMAL sums, NULL when no day is inside) of each length in ``lengths``.

    They add up, so a customer's sums as of a later day are these plus the days bought since
    minus the days that left each window (:mod:`features.incremental` keeps them so)."""
    parts = [f"sum(orders) FILTER (WHERE age < {int(n)}) AS _orders_w{int(n)}" for n in windows_days]
    parts += [f"sum({decimal('spend')}) FILTER (WHERE age < {int(n)}) AS _spend_w{int(n)}" for n in lengths]
    return parts


def spend_in(days: int) -> str:
    """The exact spend of the last ``days`` days from the partials, NULL-safe (DECIMAL)."""
    return f"coalesce(_spend_w{int(days)}, 0)" if int(days) > 0 else "CAST(0 AS DECIMAL(38, 4))"


def window_columns(windows_days: tuple[int, ...], trend_days: int) -> list[str]:
    """The window columns and ``spend_trend`` from :func:`window_partials`."""
    parts = []
    for n in windows_days:
        parts.append(f"coalesce(_orders_w{int(n)}, 0) AS orders_{n}d")
        parts.append(f"CAST({spend_in(n)} AS DOUBLE) AS spend_{n}d")
    t = int(trend_days)
    last = f"CAST({spend_in(t)} AS DOUBLE)"
    before = f"CAST({spend_in(2 * t)} - {spend_in(t)} AS DOUBLE)"   # age in [t, 2t), exact
    parts.append(f"CASE WHEN {last} + {before} > 0 THEN ({last} - {before}) / ({last} + {before}) "
                 f"ELSE 0.0 END AS spend_trend")
    return parts


def age_expr(cutoff: str) -> str:
    """Whole days from ``day`` to the cutoff: 0 on the cutoff day itself."""
    return f"date_diff('day', day, {cutoff})"
