"""What the Customer page shows: the snapshot record ``/score`` answers with, and curves.

The numbers are the snapshot's own record (:meth:`serving.state.ScoredSnapshot.records`) and its
reasons, so the page and ``/score`` agree to the last digit; only display rounds them. The curves
are the served scorer's distributions for this one customer: the next-purchase CDF on the
scorer's grid (its median and 80 % interval are the record's ``next_purchase_*`` dates) and
P(alive) should no purchase happen, from the purchase model the record's ``p_alive`` comes from
(at day 0 the curve is that ``p_alive``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from serving.state import ScoredSnapshot

#: Days after the as-of day at which the P(alive) curve is drawn.
P_ALIVE_DAYS = tuple(range(0, 366, 15))
#: Feature columns shown as the customer's history.
HISTORY = ("first_purchase_date", "last_purchase_date", "orders", "purchase_days", "total_spend",
           "tier_spend", "amount_to_keep_tier", "amount_to_next_tier", "top_category",
           "replenish_due_in_days")


@dataclass
class CustomerView:
    """One customer as the page shows them: the ``/score`` record, reasons, history and curves."""

    customer_id: str
    record: dict
    reasons_en: list[str]
    reasons_zh_tw: list[str]
    history: dict
    cdf_days: list[int]
    cdf: list[float]
    p_alive_days: list[int]
    p_alive: list[float]
    review_date: dt.date
    replenish_date: dt.date | None
    next_tier: tuple[str, str] | None = None
    events: list[dict] = field(default_factory=list)
    #: (attribute name, value as known on the as-of day) for a model that reads customer attributes
    attributes: list[tuple[str, str | float | None]] = field(default_factory=list)


def customer_view(state: ScoredSnapshot, customer_id: str) -> CustomerView | None:
    """Everything the page shows for one snapshot customer, or None if not in the snapshot."""
    (position,) = state.positions([customer_id])
    if position is None:
        return None
    record = state.records([position])[0]
    en, zh = state.reasons([customer_id])[customer_id]
    values = state.model_input([customer_id])                   # the model input row
    scorer = state.scorer
    days, cdf = next_purchase_cdf(scorer, values)
    history = {c: _plain(values[c].iloc[0]) for c in HISTORY if c in values}
    tiers = scorer.feature_settings.tiers
    as_of = state.as_of.date()
    due = history.get("replenish_due_in_days")
    return CustomerView(
        customer_id=customer_id, record=record, reasons_en=en, reasons_zh_tw=zh, history=history,
        cdf_days=days, cdf=cdf, p_alive_days=list(P_ALIVE_DAYS),
        p_alive=p_alive_curve(scorer, values, P_ALIVE_DAYS),
        review_date=as_of + dt.timedelta(days=tiers.review_days),
        replenish_date=None if due is None else as_of + dt.timedelta(days=int(round(due))),
        next_tier=_next_tier(tiers, record["tier"]), attributes=attribute_values(scorer, values))


def attribute_values(scorer, values: pd.DataFrame) -> list[tuple[str, str | float | None]]:
    """The customer's attributes as the model read them: a category's name (the model input
    holds its code in the reference), a number, or None where missing or never seen."""
    out = []
    for spec in scorer.reference_.attributes:
        value = _plain(values[spec.feature].iloc[0]) if spec.feature in values else None
        if spec.kind == "categorical" and isinstance(value, (int, float)):
            value = spec.categories[int(value)] if 0 <= int(value) < len(spec.categories) else None
        out.append((spec.name, value))
    return out


def next_purchase_cdf(scorer, values: pd.DataFrame) -> tuple[list[int], list[float]]:
    """P(next purchase within d days) on the scorer's grid, from day 0, for one customer."""
    cdf = scorer.next_purchase_cdf(values)
    return [0, *map(int, scorer.grid_days_)], [0.0, *map(float, cdf[0])]


def p_alive_curve(scorer, values: pd.DataFrame, days: tuple[int, ...]) -> list[float]:
    """P(alive) ``d`` days after the as-of day if the customer buys nothing until then."""
    summary = values[["frequency", "recency", "T"]]
    unit = scorer.purchase_model_.time_unit_days
    later = pd.concat([summary.assign(T=summary["T"] + d / unit) for d in days], ignore_index=True)
    return [float(p) for p in scorer.purchase_model_.predict_p_alive(later)]


def _next_tier(tiers, current: str) -> tuple[str, str] | None:
    names = [name for name, _ in tiers.thresholds]
    if current not in names or names.index(current) == len(names) - 1:
        return None
    name = names[names.index(current) + 1]
    return name, dict(tiers.labels_zh_tw).get(name, name)


def _plain(value):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.date()
    if isinstance(value, np.generic):
        return value.item()
    return value


def customer_events(outbox, customer_id: str) -> list[dict]:
    """The trigger events recorded for one customer (sent or held out), newest first."""
    mine = outbox.events(customer_id=customer_id)
    return [{"as_of": e.as_of, "rule": e.rule, "template": e.template, "group": e.group, "status": e.status}
            for e in mine.iloc[::-1].itertuples(index=False)]
