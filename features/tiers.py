"""Membership tiers: spend over a rolling window against thresholds.

``tier_spend`` is the spend in the last ``window_days``. ``amount_to_next_tier`` is what is
still needed to reach the next tier now (NULL at the top tier). ``amount_to_keep_tier`` is what
must be spent before the next review (``review_days`` after the cutoff) to keep the current tier
then: by that day the window will have moved, and only the spend that is still inside it counts.
"""

from __future__ import annotations

from features.settings import TierSettings
from features.sql import money_sum
from features.transactions import sql_escape


def tier_aggregates(cutoff: str, tiers: TierSettings) -> list[str]:
    """Aggregate expressions over per-day rows with ``age`` (days before the cutoff, see
    :func:`features.windows.age_expr`): the spend the tier columns need."""
    kept = int(tiers.window_days) - int(tiers.review_days)    # day > cutoff + review - window
    return [
        f"{money_sum('spend', f'age < {int(tiers.window_days)}')} AS tier_spend",
        f"{money_sum('spend', f'age < {kept}')} AS _tier_spend_kept",
    ]


def tier_columns(tiers: TierSettings) -> list[str]:
    """Expressions over ``tier_spend`` and ``_tier_spend_kept`` giving the tier columns."""
    levels = list(tiers.thresholds)
    zh = dict(tiers.labels_zh_tw)

    def case(value_of) -> str:
        arms = " ".join(f"WHEN tier_spend >= {float(t)!r} THEN {value_of(i)}"
                        for i, (_, t) in reversed(list(enumerate(levels))))
        return f"CASE {arms} END"

    quoted = lambda text: f"'{sql_escape(text)}'"
    next_gap = lambda i: (f"{float(levels[i + 1][1])!r} - tier_spend" if i + 1 < len(levels)
                          else "NULL::DOUBLE")
    return [
        f"{case(lambda i: quoted(levels[i][0]))} AS tier",
        f"{case(lambda i: quoted(zh.get(levels[i][0], levels[i][0])))} AS tier_zh_tw",
        f"{case(next_gap)} AS amount_to_next_tier",
        f"{case(lambda i: f'greatest(0.0, {float(levels[i][1])!r} - _tier_spend_kept)')} AS amount_to_keep_tier",
    ]
