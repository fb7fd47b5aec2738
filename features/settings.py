"""Typed configuration for reading transaction logs and building features.

Everything a feature job can be told lives here, as frozen dataclasses with defaults that work,
so the CLI, training and the service build features from the same explicit settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Freq = Literal["D", "W"]


@dataclass(frozen=True)
class ColumnMap:
    """Which column of the input holds each field.

    ``customer_id`` and ``timestamp`` are required; the others are optional and ``None`` means
    the input has no such column. Without ``amount`` (visits, a subscription box, a shop that
    exports no prices) every purchase counts 1: the purchase-based scores are unchanged and value
    is in purchases (Gamma-Gamma then values every order at the mean, 1).
    """

    customer_id: str = "customer_id"
    timestamp: str = "timestamp"
    amount: str | None = "amount"
    order_id: str | None = None
    quantity: str | None = None
    category: str | None = None
    channel: str | None = None

    def required(self) -> dict[str, str]:
        """Canonical name -> input column, for the columns every log must have."""
        required = {"customer_id": self.customer_id, "timestamp": self.timestamp}
        return {**required, "amount": self.amount} if self.amount else required

    def optional(self) -> dict[str, str]:
        """Canonical name -> input column, for the optional columns that are mapped."""
        pairs = {
            "order_id": self.order_id,
            "quantity": self.quantity,
            "category": self.category,
            "channel": self.channel,
        }
        return {name: col for name, col in pairs.items() if col}


@dataclass(frozen=True)
class IngestPolicy:
    """What to do with rows that are valid but need a decision.

    duplicates
        Exact duplicate rows (every mapped column equal). ``"auto"`` drops them when an order id
        is mapped (the same order loaded twice) and keeps them otherwise, because without an
        order id two identical lines can be two real purchases (CDNOW has 255 such lines).
        ``"drop"`` and ``"keep"`` force either way.
    refunds
        Rows with a negative amount. ``"exclude"`` (default) keeps them out of every feature: a
        refund is not a purchase event, and netting it would move purchase dates. ``"error"``
        rejects the log.
    zero_amounts
        Rows with amount 0 (free orders, samples). ``"keep"`` (default) counts them as purchase
        events with no spend, as lifetimes does; ``"exclude"`` drops them.
    timezone
        Timestamps that carry an offset are converted to this zone and the zone dropped;
        naive timestamps are taken as already local to it. Day boundaries (what "on or before
        the cutoff" means) are this zone's. Default UTC; a Taiwanese shop wants "Asia/Taipei".
    date_format
        A ``strptime`` format for text timestamps (e.g. ``"%Y%m%d"``); ``None`` parses ISO 8601.
    """

    duplicates: Literal["auto", "drop", "keep"] = "auto"
    refunds: Literal["exclude", "error"] = "exclude"
    zero_amounts: Literal["keep", "exclude"] = "keep"
    timezone: str = "UTC"
    date_format: str | None = None


@dataclass(frozen=True)
class TierSettings:
    """Membership tiers by spend over a rolling window.

    ``thresholds`` maps tier name to the minimum spend over the last ``window_days``, lowest
    first; the first tier's threshold is 0. A tier is reviewed every ``review_days``: at the next
    review the window will have moved, so keeping a tier needs the spend that is still inside
    the window then.
    """

    thresholds: tuple[tuple[str, float], ...] = (("member", 0.0), ("silver", 2000.0), ("gold", 10000.0))
    labels_zh_tw: tuple[tuple[str, str], ...] = (("member", "一般會員"), ("silver", "銀卡會員"), ("gold", "金卡會員"))
    window_days: int = 365
    review_days: int = 30

    def __post_init__(self) -> None:
        values = [v for _, v in self.thresholds]
        if not values or values[0] != 0 or values != sorted(values) or len(set(values)) != len(values):
            raise ValueError(
                f"tier thresholds must start at 0 and strictly increase, got {self.thresholds}"
            )


@dataclass(frozen=True)
class FeatureSettings:
    """How features are computed beyond the BG/NBD time unit: windows and tiers."""

    windows_days: tuple[int, ...] = (30, 90, 180, 365)
    trend_days: int = 90
    tiers: TierSettings = field(default_factory=TierSettings)

    def to_dict(self) -> dict:
        """Plain JSON-ready values (tuples become lists)."""
        tiers = self.tiers
        return {"windows_days": list(self.windows_days), "trend_days": self.trend_days,
                "tiers": {"thresholds": [[n, float(v)] for n, v in tiers.thresholds],
                          "labels_zh_tw": [[n, z] for n, z in tiers.labels_zh_tw],
                          "window_days": tiers.window_days, "review_days": tiers.review_days}}

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureSettings":
        """The settings :meth:`to_dict` wrote (as a reference's JSON keeps them)."""
        tiers = data["tiers"]
        return cls(
            windows_days=tuple(int(d) for d in data["windows_days"]), trend_days=int(data["trend_days"]),
            tiers=TierSettings(thresholds=tuple((n, float(v)) for n, v in tiers["thresholds"]),
                               labels_zh_tw=tuple((n, z) for n, z in tiers["labels_zh_tw"]),
                               window_days=int(tiers["window_days"]), review_days=int(tiers["review_days"])))
