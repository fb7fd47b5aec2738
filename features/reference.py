"""The feature contract: everything that defines a feature value beyond the transactions.

RFM quintile edges and typical category repurchase intervals depend on the whole customer base;
windows and tiers, the shop's time zone (what "a day" is) and the BG/NBD time unit are choices.
Training fixes all of them once, in a :class:`FeatureReference`, and every door that computes
features for that model (the snapshot job, ``/score_history``, batch scoring, the training
origins themselves) uses the same one, so a customer gets the same feature values, and the same
scores, whichever way they are asked for. :meth:`FeatureReference.fingerprint` names a
reference in short; a feature snapshot records it, and the service refuses a snapshot built
with another model's reference.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from features.settings import FeatureSettings, Freq


@dataclass(frozen=True)
class FeatureReference:
    """RFM edges (``recency``, ``frequency``, ``monetary`` → four quintile edges), category
    intervals in days, feature settings (windows, tiers), the shop's time zone and ``freq``."""

    rfm_edges: dict[str, list[float]]
    category_interval_days: dict[str, float] = field(default_factory=dict)
    settings: FeatureSettings = field(default_factory=FeatureSettings)
    timezone: str = "UTC"
    freq: Freq = "D"

    def to_dict(self) -> dict:
        return {"rfm_edges": {k: [float(x) for x in v] for k, v in sorted(self.rfm_edges.items())},
                "category_interval_days": {k: float(v) for k, v in sorted(self.category_interval_days.items())},
                "settings": self.settings.to_dict(), "timezone": self.timezone, "freq": self.freq}

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureReference":
        settings = FeatureSettings.from_dict(data["settings"]) if "settings" in data else FeatureSettings()
        return cls(rfm_edges={k: [float(x) for x in v] for k, v in data["rfm_edges"].items()},
                   category_interval_days={k: float(v) for k, v in data.get("category_interval_days", {}).items()},
                   settings=settings, timezone=data.get("timezone", "UTC"), freq=data.get("freq", "D"))

    def fingerprint(self) -> str:
        """A short stable id of this reference: equal ids, equal feature definitions."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
