"""Membership tiers: spend over a rolling window against thresholds.

``tier_spend`` is the spend in the last ``window_days``. ``amount_to_next_tier`` is what is
still needed to reach the next tier now (NULL at the top tier). ``amount_to_keep_tier`` is what
must be spent before the next review (``review_days`` after the cutoff) to keep the current tier
then: by that day the window will have moved, and only the spend that is still inside it counts.
"""

from __future__ import annotations

from features.settings import TierSettings
from features.transactions import sql_escape
from features.windows import spend_in


def tier_windows(tiers: TierSettings) -> tuple[int, int]:
    """The window lengths whose spend the tier columns need: the tier window, and the part of it
    still inside the window at the next review (day > cutoff + review - window)."""
    return int(tiers.window_days), int(tiers.window_days) - int(tiers.review_days)


def tier_spend_columns(tiers: TierSettings) -> list[str]:
    """``tier_spend`` and ``_tier_spend_kept`` from the window partials
    (:func:`features.windows.window_partials` over :func:`tier_windows`)."""
    window, kept = tier_windows(tiers)
    return [f"CAST({spend_in(window)} AS DOUBLE) AS tier_spend",
            f"CAST({spend_in(kept)} AS DOUBLE) AS _tier_spend_kept"]


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
