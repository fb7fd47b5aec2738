"""Win-back timing: turn scores into when to step in and whom to call first.

Policy, not a model: it has no parameters to learn, only choices a CRM team sets.

``winback_date`` is the earlier of two days:

* the day the customer becomes **overdue**: their last purchase plus the ``overdue_quantile``
  (default 80 %) of their own gap between purchases. Under the BG/NBD family a customer's
  purchase rate has the posterior Gamma(r + x, α + T), so a gap exceeds g with probability
  ((α + T) / (α + T + g))^(r + x) and the q-quantile is (α + T) · ((1 − q)^(−1/(r + x)) − 1);
* the day their **P(alive)** would fall below ``p_alive_threshold`` if they kept not buying
  (the purchase model's P(alive) at T + d, found by bisection to within a day).

Both days move earlier when the last purchase moves earlier and nothing else changes (the gap
quantile depends only on the number of purchases and the customer's age; P(alive) falls with
the silence), so **the longer silent of two otherwise equal customers never gets a later date**.
A day already past becomes the as-of day itself, with ``winback_now`` true. A day more than
``max_days`` ahead is no plan: with neither within reach, ``winback_date`` stays empty.
``value_at_risk`` = churn probability × expected 12-month value; ``priority`` ranks it.

The purchase model must be one where a one-time buyer can drop out (MBG/NBD or Pareto/NBD):
under BG/NBD such a customer's P(alive) is 1 forever and only the gap quantile, which for them
is centuries, would date them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from models.clv.base import PurchaseModel


@dataclass(frozen=True)
class WinbackPolicy:
    """When to act and in which order.

    overdue_quantile : share of a customer's usual gaps that are shorter than "overdue".
    p_alive_threshold : act before P(alive) would drop below this.
    max_days : plan at most this far ahead of the as-of date.
    """

    overdue_quantile: float = 0.8
    p_alive_threshold: float = 0.5
    max_days: int = 730

    def __post_init__(self) -> None:
        if not 0 < self.overdue_quantile < 1:
            raise ValueError(f"overdue_quantile must be in (0, 1), got {self.overdue_quantile}")
        if not 0 < self.p_alive_threshold < 1:
            raise ValueError(f"p_alive_threshold must be in (0, 1), got {self.p_alive_threshold}")
        if self.max_days < 1:
            raise ValueError(f"max_days must be at least 1, got {self.max_days}")

    def overdue_days_after_last(self, model: PurchaseModel, summary: pd.DataFrame) -> np.ndarray:
        """Days after the last purchase at which the customer becomes overdue."""
        r, alpha = model.params_["r"], model.params_["alpha"]
        x, T = summary["frequency"].to_numpy(float), summary["T"].to_numpy(float)
        gap_units = (alpha + T) * ((1 - self.overdue_quantile) ** (-1 / (r + x)) - 1)
        return gap_units * model.time_unit_days

    def p_alive_crossing_days(self, model: PurchaseModel, summary: pd.DataFrame) -> np.ndarray:
        """Days after the as-of date when P(alive) falls below the threshold (0 if already,
        NaN if not within ``max_days``)."""
        def p_alive_after(days: np.ndarray) -> np.ndarray:
            shifted = summary[["frequency", "recency", "T"]].copy()
            shifted["T"] = shifted["T"] + days / model.time_unit_days
            return model.predict_p_alive(shifted)

        n = len(summary)
        below_now = p_alive_after(np.zeros(n)) < self.p_alive_threshold
        below_at_max = p_alive_after(np.full(n, float(self.max_days))) < self.p_alive_threshold
        lo, hi = np.zeros(n), np.full(n, float(self.max_days))
        for _ in range(int(np.ceil(np.log2(max(self.max_days, 2)))) + 1):   # to within a day
            mid = (lo + hi) / 2
            below = p_alive_after(mid) < self.p_alive_threshold
            hi, lo = np.where(below, mid, hi), np.where(below, lo, mid)
        return np.where(below_now, 0.0, np.where(below_at_max, np.ceil(hi), np.nan))

    def winback_days(self, model: PurchaseModel, features: pd.DataFrame) -> np.ndarray:
        """Days from the as-of date to the win-back day (0: now; NaN: none within ``max_days``)."""
        silent = features["days_since_last_purchase"].to_numpy(float)
        overdue = np.ceil(self.overdue_days_after_last(model, features) - silent)
        overdue = np.where(overdue > self.max_days, np.nan, np.maximum(overdue, 0.0))
        return np.fmin(overdue, self.p_alive_crossing_days(model, features))   # NaN only where both are

    def decide(self, model: PurchaseModel, features: pd.DataFrame, churn_probability: np.ndarray,
               clv_12m: np.ndarray, as_of: pd.Timestamp) -> pd.DataFrame:
        """``winback_date``, ``winback_now``, ``value_at_risk`` and ``priority`` per customer."""
        days = self.winback_days(model, features)
        dates = np.datetime64(as_of, "ns") + pd.to_timedelta(days, unit="D").to_numpy()
        value_at_risk = np.asarray(churn_probability) * np.asarray(clv_12m)
        priority = pd.Series(-value_at_risk).rank(method="min").astype(int).to_numpy()  # ties share a rank
        return pd.DataFrame({
            "winback_date": dates,
            "winback_now": days == 0,
            "value_at_risk": value_at_risk,
            "priority": priority,
        }, index=features.index)


LIST_COLUMNS = {  # column -> (English header, zh-TW header)
    "priority": ("priority", "優先順序"),
    "customer_id": ("customer_id", "顧客編號"),
    "value_at_risk": ("value_at_risk", "風險價值"),
    "churn_probability": ("churn_probability", "流失機率"),
    "clv_12m": ("clv_12m", "未來12個月價值"),
    "winback_date": ("winback_date", "建議挽回日"),
    "next_purchase_date": ("next_purchase_date", "預計下次購買日"),
    "segment": ("segment", "客群"),
    "tier": ("tier", "會員等級"),
    "reasons": ("reasons", "原因"),
}


def winback_ranking(value_at_risk: ArrayLike, customer_ids: ArrayLike) -> np.ndarray:
    """Row positions in win-back order: highest value at risk first, ties by customer id.

    The one ranking of the win-back list: `winback rank` (:func:`winback_list`), ``/winback``
    and the dashboard's list (through :class:`serving.state.ScoredSnapshot`) all take it.
    """
    ids = np.asarray(customer_ids).astype(str)
    return np.lexsort((ids, -np.asarray(value_at_risk, dtype=float)))


def winback_mask(value_at_risk: ArrayLike, segments: np.ndarray, tiers: np.ndarray,
                 wanted_segments: Sequence[str] = (), wanted_tiers: Sequence[str] = (),
                 min_value: float = 0.0) -> np.ndarray:
    """Which rows the win-back list keeps: value at risk of at least ``min_value``, and a segment
    and a tier among those wanted (none wanted: any). ``segments`` and ``tiers`` are (n, 2)
    arrays of the English and Traditional Chinese labels; a label matches in either language."""
    keep = np.asarray(value_at_risk, dtype=float) >= min_value
    if wanted_segments:
        keep &= np.isin(segments, list(wanted_segments)).any(axis=1)
    if wanted_tiers:
        keep &= np.isin(tiers, list(wanted_tiers)).any(axis=1)
    return keep


def winback_list(scores: pd.DataFrame, top: int, segments: list[str] | None = None,
                 tiers: list[str] | None = None, min_value: float = 0.0,
                 lang: str = "en") -> pd.DataFrame:
    """The win-back list a marketer works through: highest value at risk first.

    ``scores`` is a scorer's output. Segments and tiers filter in either language; ``lang``
    picks the language of segment, tier, reasons and the column headers ("en" or "zh-TW").
    """
    if lang not in ("en", "zh-TW"):
        raise ValueError(f"lang must be 'en' or 'zh-TW', got {lang!r}")
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    order = winback_ranking(scores["value_at_risk"], scores["customer_id"])
    keep = winback_mask(scores["value_at_risk"], scores[["segment", "segment_zh_tw"]].to_numpy(object),
                        scores[["tier", "tier_zh_tw"]].to_numpy(object), segments or (), tiers or (), min_value)
    chosen = scores.iloc[order[keep[order]][:top]]
    zh = lang == "zh-TW"
    out = pd.DataFrame({
        "priority": np.arange(1, len(chosen) + 1),
        "customer_id": chosen["customer_id"].to_numpy(),
        "value_at_risk": chosen["value_at_risk"].round(2).to_numpy(),
        "churn_probability": chosen["churn_probability"].round(4).to_numpy(),
        "clv_12m": chosen["clv_12m"].round(2).to_numpy(),
        "winback_date": chosen["winback_date"].dt.date.to_numpy(),
        "next_purchase_date": chosen["next_purchase_date"].dt.date.to_numpy(),
        "segment": chosen["segment_zh_tw" if zh else "segment"].to_numpy(),
        "tier": chosen["tier_zh_tw" if zh else "tier"].to_numpy(),
        "reasons": (chosen["reasons_zh_tw" if zh else "reasons"].map("；".join if zh else "; ".join).to_numpy()
                    if "reasons" in chosen else [""] * len(chosen)),
    })
    return out.rename(columns={k: v[1 if zh else 0] for k, v in LIST_COLUMNS.items()})
