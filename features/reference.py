"""The feature contract: everything that defines a feature value beyond the transactions.

RFM quintile edges and typical category repurchase intervals depend on the whole customer base;
windows and tiers, the shop's time zone (what "a day" is) and the BG/NBD time unit are choices.
Training fixes all of them once, in a :class:`FeatureReference`, and every door that computes
features for that model (the snapshot job, ``/score_history``, batch scoring, the training
origins themselves) uses the same one, so a customer gets the same feature values, and the same
scores, whichever way they are asked for. :meth:`FeatureReference.fingerprint` names a
reference in short; a feature snapshot records it, and the service refuses a snapshot built
with another model's reference.

With customer attributes or engagement events (:class:`features.side.SideData`) the reference
also fixes their schema: each attribute's kind and, for text, its categories
(:class:`AttributeSpec`), and the event types counted. Every door then builds the same
``attr_*``, ``events_*`` and ``days_since_*`` columns, whether or not it was given the side data.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Literal

from features.settings import FeatureSettings, Freq

#: The prefix of the feature columns made from customer attributes.
ATTRIBUTE_PREFIX = "attr_"


def feature_token(name: str) -> str:
    """A name as it appears in a feature column: lower case, runs of anything but letters,
    digits and ``_`` as one ``_`` (``"Signup Source"`` -> ``signup_source``)."""
    return re.sub(r"\W+", "_", str(name).strip()).strip("_").lower()


def event_columns(event_type: str, windows_days: tuple[int, ...]) -> list[str]:
    """The columns one event type adds: ``events_<type>_<N>d`` per window, ``days_since_<type>``."""
    token = feature_token(event_type)
    return [f"events_{token}_{n}d" for n in windows_days] + [f"days_since_{token}"]


@dataclass(frozen=True)
class AttributeSpec:
    """One customer attribute as a model reads it: the column ``name`` in the customers file,
    its feature column ``feature`` (``attr_<name>``), ``kind`` and, for ``"categorical"``, the
    categories known when the reference was fitted (any other value is read as missing)."""

    name: str
    feature: str
    kind: Literal["numeric", "categorical"]
    categories: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """Plain JSON-ready values (the categories as a list)."""
        return {"name": self.name, "feature": self.feature, "kind": self.kind,
                "categories": list(self.categories)}

    @classmethod
    def from_dict(cls, data: dict) -> "AttributeSpec":
        """The spec :meth:`to_dict` wrote (no categories: none known)."""
        return cls(data["name"], data["feature"], data["kind"], tuple(data.get("categories", ())))


@dataclass(frozen=True)
class FeatureReference:
    """RFM edges (``recency``, ``frequency``, ``monetary`` → four quintile edges), category
    intervals in days, feature settings (windows, tiers), the shop's time zone and ``freq``;
    with side data, the customer ``attributes`` and the ``event_types`` counted."""

    rfm_edges: dict[str, list[float]]
    category_interval_days: dict[str, float] = field(default_factory=dict)
    settings: FeatureSettings = field(default_factory=FeatureSettings)
    timezone: str = "UTC"
    freq: Freq = "D"
    attributes: tuple[AttributeSpec, ...] = ()
    event_types: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """Plain JSON-ready values; side data only when there is some, so a reference without it
        keeps the fingerprint it had before side data existed."""
        data = {"rfm_edges": {k: [float(x) for x in v] for k, v in sorted(self.rfm_edges.items())},
                "category_interval_days": {k: float(v) for k, v in sorted(self.category_interval_days.items())},
                "settings": self.settings.to_dict(), "timezone": self.timezone, "freq": self.freq}
        if self.attributes:             # only when there are: a reference without side data
            data["attributes"] = [a.to_dict() for a in self.attributes]     # keeps its fingerprint
        if self.event_types:
            data["event_types"] = list(self.event_types)
        return data

    @property
    def attribute_columns(self) -> list[str]:
        """The ``attr_*`` feature columns, in the order the table has them."""
        return [a.feature for a in self.attributes]

    @property
    def event_feature_columns(self) -> list[str]:
        """The ``events_<type>_<N>d`` and ``days_since_<type>`` columns, in table order."""
        return [c for t in self.event_types for c in event_columns(t, self.settings.windows_days)]

    @property
    def side_columns(self) -> list[str]:
        """Every column the side data adds to the feature table (empty without side data)."""
        return self.attribute_columns + self.event_feature_columns

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureReference":
        """The reference :meth:`to_dict` wrote; keys an older reference lacks take their defaults."""
        settings = FeatureSettings.from_dict(data["settings"]) if "settings" in data else FeatureSettings()
        return cls(rfm_edges={k: [float(x) for x in v] for k, v in data["rfm_edges"].items()},
                   category_interval_days={k: float(v) for k, v in data.get("category_interval_days", {}).items()},
                   settings=settings, timezone=data.get("timezone", "UTC"), freq=data.get("freq", "D"),
                   attributes=tuple(AttributeSpec.from_dict(a) for a in data.get("attributes", ())),
                   event_types=tuple(data.get("event_types", ())))

    def fingerprint(self) -> str:
        """A short stable id of this reference: equal ids, equal feature definitions."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
