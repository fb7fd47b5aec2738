"""Population statistics that features are scored against, fixed once and reused.

RFM quintile edges and typical category repurchase intervals depend on the whole customer base.
Training fixes them at its cutoff; the service scores a single posted history against the same
numbers, so a customer gets the same RFM score and due date either way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class FeatureReference:
    """RFM edges (``recency``, ``frequency``, ``monetary`` → four quintile edges) and category intervals."""

    rfm_edges: dict[str, list[float]]
    category_interval_days: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureReference":
        return cls(rfm_edges={k: [float(x) for x in v] for k, v in data["rfm_edges"].items()},
                   category_interval_days={k: float(v) for k, v in data.get("category_interval_days", {}).items()})
