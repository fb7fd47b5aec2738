"""CRM triggers: rules as data, and the day's events they fire (issue #10).

A rule says *when* a customer should hear from the brand (自動化旅程); the rules live in a TOML
file (:file:`crm/triggers_default.toml` documents every key) and :func:`evaluate` turns one
day's customer table into events. Everything here is a pure function of its arguments; the only
I/O is reading the TOML.

The rules, on the as-of day ``d`` (dates compared as calendar days):

``winback_due``
    ``winback_date <= d`` and no ``winback_due`` event for the customer on or after their
    ``last_purchase_date``: one win-back per silence. The policy (:mod:`models.policy.winback`) turns a
    day already past into the as-of day itself, so "today" and "passed but never sent" are the
    same test here; without the "since the last purchase" check an overdue customer would be
    due again every day.
``tier_keep``
    ``0 < amount_to_keep_tier <= max_amount`` and the review is at most ``review_within_days``
    away. The feature table computes ``amount_to_keep_tier`` for the review ``review_days``
    (``TierSettings.review_days``, default 30) after its cutoff, so the review date is
    ``d + review_days`` and the rule fires when ``review_days <= review_within_days``; its
    cooldown keeps it from firing daily. The event carries ``review_date``.
``tier_upgrade``
    ``0 < amount_to_next_tier <= max_amount`` (missing at the top tier: never fires).
``replenishment_due``
    ``-grace_days < replenish_due_in_days <= lead_days`` (missing without categories: never).
``vip_silent``
    ``tier`` at least ``min_tier`` on ``[global] tier_order`` and ``days_since_last_purchase``
    exactly ``days``.
``post_purchase``
    ``days_since_last_purchase`` in ``days``.

Then, in order: the filters (``segments``, ``tiers``, ``min_value_at_risk``); the cooldown (no
event of the same rule for the customer in the ``cooldown_days - 1`` days before ``d``: an event
on day ``e`` allows the next on ``e + cooldown_days``); the weekly cap (at most
``max_per_customer_per_week`` events in the seven days ``d - 6 .. d``, past events included,
lowest ``priority`` first, ties by rule name); last, the holdout group. Past events of both
groups count for cooldowns and the cap, so a held-out customer is treated exactly like a treated
one except that nothing is delivered. Only past events *before* ``d`` count, so evaluating a day
again gives the same events and the same idempotency keys.

**The win-back stop** (``[budget]``, issue #21). A customer with ``p_alive`` below
``winback_stop_below_p_alive`` (default 0.1), or with ``winback_stop_after_unanswered`` (default
3) unanswered ``winback_due`` events, gets no more ``winback_due`` events. An event is unanswered
when no purchase followed it within the rule's ``window_days``: ``past`` may say so in an
``answered`` column (the job computes it from the log); without it, an event is answered when the
customer's ``last_purchase_date`` is after the event's day. Held-out events count like sent ones,
so the stop treats both groups alike.

**Expected net value** (issue #21). Each event's ``fields`` carry ``expected_uplift``, the change
in P(purchase within the rule's ``window_days``) the message causes; ``expected_incremental_value``
= uplift x ``value_basis``, which is ``clv_12m`` (the 12-month value) for ``winback_due`` and
``expected_order_value`` for the other rules; ``net_value`` = that - ``cost_per_send``;
``ranking``, ``"uplift_model"`` when a fitted uplift model chose the order (``uplift_model`` names
its version) or ``"value_at_risk"`` when the rule has no model yet and its uplift is the prior
``[uplift] prior_uplift`` (default 0, a constant share); and ``uplift_note``, why.

**The budget** (``[budget] max_sends_per_day``, default 1,000), last: the day's events are
ranked by ``net_value``, then ``value_at_risk`` (so with the prior of 0, value at risk decides),
then priority and customer; going down that list the holdout hash assigns each its group, and
once ``max_sends_per_day`` send events are taken every later event is ``skipped_budget``:
recorded, never sent, not counted by cooldowns, caps or the stop (the customer may be chosen
another day). The holdout stays a random share of the selected events, because the hash does not
depend on the rank.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_RULES_PATH = Path(__file__).with_name("triggers_default.toml")

EVENT_COLUMNS = ("idempotency_key", "customer_id", "rule", "as_of", "group", "template", "priority", "fields")
PAST_COLUMNS = ("customer_id", "rule", "as_of", "group")
#: The randomised groups (what the lift report and the uplift model compare).
GROUPS = ("send", "holdout")
#: The group of an event the day's budget left out: recorded, never sent.
SKIPPED = "skipped_budget"
#: What an event's ``fields`` carry about its value (issue #21).
VALUE_FIELDS = ("expected_uplift", "expected_incremental_value", "value_basis", "net_value",
                "cost_per_send", "ranking", "uplift_model", "uplift_note", "budget_rank")

#: Keys every rule table has: key -> (type name, default). Priorities and cooldowns per rule below.
COMMON_KEYS: dict[str, tuple[str, Any]] = {
    "enabled": ("bool", True), "priority": ("int", 100), "cooldown_days": ("int", 30),
    "holdout_share": ("float", 0.1), "template": ("str", None), "segments": ("list[str]", []),
    "tiers": ("list[str]", []), "min_value_at_risk": ("float", 0.0), "window_days": ("int", 30),
}
#: The rules there are, with their own keys: rule -> key -> (type name, default).
RULE_KEYS: dict[str, dict[str, tuple[str, Any]]] = {
    "winback_due": {},
    "tier_keep": {"max_amount": ("float", 3000.0), "review_days": ("int", 30),
                  "review_within_days": ("int", 30)},
    "tier_upgrade": {"max_amount": ("float", 1000.0)},
    "replenishment_due": {"lead_days": ("int", 0), "grace_days": ("int", 14)},
    "vip_silent": {"min_tier": ("str", "gold"), "days": ("int", 30)},
    "post_purchase": {"days": ("list[int]", [7, 25, 30])},
}
GLOBAL_KEYS: dict[str, tuple[str, Any]] = {
    "max_per_customer_per_week": ("int", 1), "salt": ("str", "winback-holdout-v1"),
    "tier_order": ("list[str]", ["member", "silver", "gold"]),
}
BUDGET_KEYS: dict[str, tuple[str, Any]] = {
    "max_sends_per_day": ("int", 1000), "cost_per_send": ("float", 0.0),
    "winback_stop_after_unanswered": ("int", 3), "winback_stop_below_p_alive": ("float", 0.1),
}
UPLIFT_KEYS: dict[str, tuple[str, Any]] = {
    "prior_uplift": ("float", 0.0), "min_treated": ("int", 500), "min_holdout": ("int", 100),
}
#: The tables of a rules file that are not rules.
SETTINGS_TABLES = ("global", "budget", "uplift")
#: What an event's value is measured in, per rule (default: the expected order value).
VALUE_BASIS = {"winback_due": "clv_12m"}


@dataclass(frozen=True)
class Rule:
    """One trigger rule: the keys every rule has, and its own in ``params`` (see
    :data:`RULE_KEYS`; read them with :meth:`param`)."""

    name: str
    enabled: bool = True
    priority: int = 100
    cooldown_days: int = 30
    holdout_share: float = 0.1
    template: str = ""
    segments: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    min_value_at_risk: float = 0.0
    window_days: int = 30
    params: tuple[tuple[str, Any], ...] = ()

    def param(self, key: str) -> Any:
        """The rule's own setting ``key`` (its default when the file leaves it out)."""
        own = dict(self.params)
        if key in own:
            return own[key]
        if key in RULE_KEYS.get(self.name, {}):
            return RULE_KEYS[self.name][key][1]
        raise KeyError(f"rule {self.name!r} has no setting {key!r}")

    def to_dict(self) -> dict:
        """The rule's table as in the TOML file (lists for tuples)."""
        out = {"enabled": self.enabled, "priority": self.priority, "cooldown_days": self.cooldown_days,
               "holdout_share": self.holdout_share, "template": self.template,
               "segments": list(self.segments), "tiers": list(self.tiers),
               "min_value_at_risk": self.min_value_at_risk, "window_days": self.window_days}
        for key in RULE_KEYS[self.name]:
            value = self.param(key)
            out[key] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class Budget:
    """The day's send budget and the win-back stop (the ``[budget]`` table)."""

    max_sends_per_day: int = 1000
    cost_per_send: float = 0.0
    winback_stop_after_unanswered: int = 3
    winback_stop_below_p_alive: float = 0.1

    def __post_init__(self) -> None:
        if self.max_sends_per_day < 0:
            raise ValueError(f"[budget] max_sends_per_day: must be at least 0, got {self.max_sends_per_day}")
        if not self.cost_per_send >= 0:
            raise ValueError(f"[budget] cost_per_send: must be at least 0, got {self.cost_per_send}")
        if self.winback_stop_after_unanswered < 0:
            raise ValueError(f"[budget] winback_stop_after_unanswered: must be at least 0 (0 = never), "
                             f"got {self.winback_stop_after_unanswered}")
        if not 0 <= self.winback_stop_below_p_alive < 1:
            raise ValueError(f"[budget] winback_stop_below_p_alive: must be in [0, 1), "
                             f"got {self.winback_stop_below_p_alive}")


@dataclass(frozen=True)
class UpliftSettings:
    """When a rule's uplift model may rank, and the prior until then (the ``[uplift]`` table)."""

    prior_uplift: float = 0.0
    min_treated: int = 500
    min_holdout: int = 100

    def __post_init__(self) -> None:
        if not -1 <= self.prior_uplift <= 1:
            raise ValueError(f"[uplift] prior_uplift: must be in [-1, 1], got {self.prior_uplift}")
        if self.min_treated < 1 or self.min_holdout < 1:
            raise ValueError(f"[uplift] min_treated and min_holdout: must be at least 1, "
                             f"got {self.min_treated} and {self.min_holdout}")


@dataclass(frozen=True)
class UpliftRanking:
    """How one rule's events are valued on a day: a fitted uplift model or the prior.

    ``predict`` maps the fired customers' rows (the ``customers`` frame :func:`evaluate` reads)
    to their uplift; ``None`` means the prior. ``model`` names the model (``winback-uplift/3``),
    ``note`` says why this ranking was chosen.
    """

    predict: Callable[[pd.DataFrame], np.ndarray] | None = None
    model: str = ""
    note: str = ""

    @property
    def ranking(self) -> str:
        """Which ranking values the rule's events: ``uplift_model`` or ``value_at_risk``."""
        return "uplift_model" if self.predict is not None else "value_at_risk"


@dataclass(frozen=True)
class TriggerRules:
    """The rules and the global settings: what a rules file holds."""

    rules: tuple[Rule, ...] = ()
    max_per_customer_per_week: int = 1
    salt: str = "winback-holdout-v1"
    tier_order: tuple[str, ...] = ("member", "silver", "gold")
    budget: Budget = Budget()
    uplift: UpliftSettings = UpliftSettings()

    def __post_init__(self) -> None:
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"rules are named more than once: {names}")
        if self.max_per_customer_per_week < 1:
            raise ValueError(f"[global] max_per_customer_per_week: must be at least 1, "
                             f"got {self.max_per_customer_per_week}")

    def __getitem__(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(f"no rule {name!r}; rules: {[r.name for r in self.rules]}")

    @classmethod
    def from_toml(cls, path: str | Path | None = None) -> "TriggerRules":
        """Read and check a rules file; ``None`` reads :file:`triggers_default.toml` beside this
        module. Unknown tables or keys and values of the wrong type raise ``ValueError`` naming
        the file, table and key."""
        path = DEFAULT_RULES_PATH if path is None else Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path}: not valid TOML: {error}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str = "rules") -> "TriggerRules":
        """Check and build from the parsed TOML (tables as dicts); see :meth:`from_toml`."""
        unknown = [t for t in data if t not in SETTINGS_TABLES and t not in RULE_KEYS]
        if unknown:
            raise ValueError(f"{source}: unknown rule table(s) {unknown}; known: "
                             f"{[*SETTINGS_TABLES, *RULE_KEYS]}")
        glob = _checked(data.get("global", {}), GLOBAL_KEYS, "global", source)
        budget = _checked(data.get("budget", {}), BUDGET_KEYS, "budget", source)
        uplift = _checked(data.get("uplift", {}), UPLIFT_KEYS, "uplift", source)
        tier_order = tuple(glob["tier_order"])
        rules = []
        for name in RULE_KEYS:
            if name not in data:
                continue
            spec = {**COMMON_KEYS, "template": ("str", name), **RULE_KEYS[name]}
            values = _checked(data[name], spec, name, source)
            where = f"{source}: [{name}]"
            if not 0 <= values["holdout_share"] < 1:
                raise ValueError(f"{where} holdout_share: must be in [0, 1), got {values['holdout_share']}")
            if values["window_days"] < 1:
                raise ValueError(f"{where} window_days: must be at least 1, got {values['window_days']}")
            for key in ("cooldown_days", "review_days", "review_within_days", "grace_days", "days"):
                value = values.get(key)
                if isinstance(value, int) and value < 0:
                    raise ValueError(f"{where} {key}: must be at least 0, got {value}")
            if "max_amount" in values and not values["max_amount"] > 0:
                raise ValueError(f"{where} max_amount: must be above 0, got {values['max_amount']}")
            if name == "post_purchase" and any(d < 0 for d in values["days"]):
                raise ValueError(f"{where} days: must be at least 0, got {values['days']}")
            if name == "vip_silent" and values["min_tier"] not in tier_order:
                raise ValueError(f"{where} min_tier: {values['min_tier']!r} is not in "
                                 f"[global] tier_order {list(tier_order)}")
            own = tuple((k, tuple(values[k]) if isinstance(values[k], list) else values[k])
                        for k in RULE_KEYS[name])
            rules.append(Rule(
                name=name, enabled=values["enabled"], priority=values["priority"],
                cooldown_days=values["cooldown_days"], holdout_share=float(values["holdout_share"]),
                template=values["template"], segments=tuple(values["segments"]), tiers=tuple(values["tiers"]),
                min_value_at_risk=float(values["min_value_at_risk"]), window_days=values["window_days"],
                params=own))
        try:
            return cls(tuple(rules), glob["max_per_customer_per_week"], glob["salt"], tier_order,
                       Budget(**budget), UpliftSettings(**uplift))
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None

    def to_dict(self) -> dict:
        """The settings as a rules file holds them (``from_dict(to_dict())`` gives them back)."""
        out: dict = {"global": {"max_per_customer_per_week": self.max_per_customer_per_week,
                                "salt": self.salt, "tier_order": list(self.tier_order)},
                     "budget": {k: getattr(self.budget, k) for k in BUDGET_KEYS},
                     "uplift": {k: getattr(self.uplift, k) for k in UPLIFT_KEYS}}
        for rule in self.rules:
            out[rule.name] = rule.to_dict()
        return out


def _checked(table: Any, spec: dict[str, tuple[str, Any]], name: str, source: str) -> dict:
    """``table`` with defaults filled in, each value of its declared type."""
    if not isinstance(table, dict):
        raise ValueError(f"{source}: [{name}] must be a table, got {type(table).__name__}")
    unknown = [k for k in table if k not in spec]
    if unknown:
        raise ValueError(f"{source}: [{name}] unknown key(s) {unknown}; known: {list(spec)}")
    out = {}
    for key, (kind, default) in spec.items():
        value = table.get(key, default)
        if not _is(value, kind):
            raise ValueError(f"{source}: [{name}] {key}: expected {kind}, got {value!r}")
        out[key] = float(value) if kind == "float" else value
    return out


def _is(value: Any, kind: str) -> bool:
    scalar = {"bool": lambda v: isinstance(v, bool),
              "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
              "str": lambda v: isinstance(v, str)}
    if kind.startswith("list["):
        inner = scalar[kind[5:-1]]
        return isinstance(value, list) and all(inner(v) for v in value)
    return scalar[kind](value)


# -- holdout and keys -----------------------------------------------------------------------------

def holdout_group(customer_ids: pd.Series, rule: str, share: float, salt: str) -> np.ndarray:
    """``"holdout"`` or ``"send"`` per customer: sha256 of ``f"{salt}:{rule}:{customer_id}"``, its
    first 8 bytes as a number in [0, 1), held out when below ``share``. The same customer, rule
    and salt give the same group every day; different rules draw independently."""
    if not 0 <= share < 1:
        raise ValueError(f"holdout share must be in [0, 1), got {share}")
    ids = pd.Series(customer_ids).astype(str).to_numpy()
    u = np.fromiter((int.from_bytes(hashlib.sha256(f"{salt}:{rule}:{c}".encode()).digest()[:8], "big") / 2.0**64
                     for c in ids), dtype=np.float64, count=len(ids))
    return np.where(u < share, "holdout", "send").astype(object)


def idempotency_key(customer_id: Any, rule: str, as_of: Any) -> str:
    """32 hex characters of sha256 over customer, rule and day: one event per customer, rule and
    day, whatever re-runs it."""
    day = pd.Timestamp(as_of).date().isoformat()
    return hashlib.sha256(f"{customer_id}\x1f{rule}\x1f{day}".encode()).hexdigest()[:32]


# -- evaluation -----------------------------------------------------------------------------------

def evaluate(rules: TriggerRules, customers: pd.DataFrame, as_of: dt.date | str | pd.Timestamp,
             past: pd.DataFrame | None = None,
             uplift: Mapping[str, UpliftRanking] | None = None) -> pd.DataFrame:
    """The events the rules fire on ``as_of``, as a frame of :data:`EVENT_COLUMNS`.

    ``customers``: one row per customer, the scorer's output (``customer_id``,
    ``churn_probability``, ``p_alive``, ``value_at_risk``, ``clv_12m``, ``expected_order_value``,
    ``winback_date``, ``segment``, ``tier``, optionally ``reasons`` and ``reasons_zh_tw``) joined
    with the feature columns the rules read (``days_since_last_purchase``, ``last_purchase_date``,
    ``amount_to_next_tier``, ``amount_to_keep_tier``, ``replenish_due_in_days``,
    ``top_category``). Only ``customer_id`` is required: a rule whose column is absent does not
    fire, a filter on an absent column passes nobody. ``past``: earlier events (``customer_id``,
    ``rule``, ``as_of``, ``group``, optionally ``answered``), every group; rows on or after
    ``as_of`` and ``skipped_budget`` rows are ignored. ``uplift``: per rule, how its events are
    valued (:class:`UpliftRanking`); a rule left out gets the prior.

    ``as_of`` is an ISO date string; ``fields`` a JSON object of what made the rule fire and the
    event's value (:data:`VALUE_FIELDS`). ``group`` is ``send``, ``holdout`` or
    ``skipped_budget``. Rows are ordered by customer, priority and rule.
    """
    if "customer_id" not in customers.columns:
        raise ValueError(f"customers lack the column 'customer_id'; columns: {list(customers.columns)}")
    day = pd.Timestamp(as_of).normalize()
    frame = customers.reset_index(drop=True)
    ids = frame["customer_id"].astype(str)
    if ids.duplicated().any():
        raise ValueError(f"customers must have one row per customer; repeated: "
                         f"{sorted(ids[ids.duplicated()].unique())[:5]}")
    history = _past(past, day)
    parts = []
    for rule in rules.rules:
        if not rule.enabled:
            continue
        fires = _CONDITIONS[rule.name](rule, frame, day, rules) & _passes_filters(rule, frame)
        fires &= ~_cooling_down(rule, ids, history, day)
        if rule.name == "winback_due":
            fires &= ~_sent_since_last_purchase(ids, frame, history)
            fires &= ~winback_stopped(rules.budget, ids, frame, history)
        rows = np.flatnonzero(fires)
        if len(rows):
            parts.append(pd.DataFrame({"row": rows, "customer_id": ids.to_numpy()[rows], "rule": rule.name,
                                       "priority": rule.priority, "template": rule.template}))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "priority" else object) for c in EVENT_COLUMNS})
    fired = pd.concat(parts, ignore_index=True).sort_values(["customer_id", "priority", "rule"], kind="mergesort")
    fired = _capped(fired, history, day, rules.max_per_customer_per_week).reset_index(drop=True)
    hashed = np.empty(len(fired), dtype=object)
    for name, at in fired.groupby("rule").indices.items():
        hashed[at] = holdout_group(fired["customer_id"].iloc[at], name, rules[name].holdout_share, rules.salt)
    values = event_values(rules, frame, fired, uplift or {})
    group, rank = within_budget(values, hashed, rules.budget.max_sends_per_day)
    iso = day.date().isoformat()
    return pd.DataFrame({
        "idempotency_key": [idempotency_key(c, r, iso) for c, r in zip(fired["customer_id"], fired["rule"])],
        "customer_id": fired["customer_id"].to_numpy(object), "rule": fired["rule"].to_numpy(object),
        "as_of": iso, "group": group, "template": fired["template"].to_numpy(object),
        "priority": fired["priority"].to_numpy("int64"),
        "fields": [_fields(rules[r], frame.iloc[i], day, {**v, "budget_rank": int(k)})
                   for r, i, v, k in zip(fired["rule"], fired["row"], values.to_dict("records"), rank)],
    }, columns=list(EVENT_COLUMNS))


def event_values(rules: TriggerRules, frame: pd.DataFrame, fired: pd.DataFrame,
                 uplift: Mapping[str, UpliftRanking]) -> pd.DataFrame:
    """Per fired event (rows of ``fired`` point into ``frame``): :data:`VALUE_FIELDS` but the rank,
    and ``value_at_risk``. A model's uplift is clipped to [-1, 1]; a missing value counts as 0."""
    n = len(fired)
    out = pd.DataFrame({"expected_uplift": np.full(n, rules.uplift.prior_uplift), "value_basis": "",
                        "ranking": "value_at_risk", "uplift_model": None, "uplift_note": ""})
    value = np.zeros(n)
    for name, at in fired.groupby("rule").indices.items():
        rows = frame.iloc[fired["row"].to_numpy()[at]]
        basis = VALUE_BASIS.get(name, "expected_order_value")
        value[at] = _column(rows, basis).fillna(0.0).to_numpy(float)
        out.loc[at, "value_basis"] = basis
        choice = uplift.get(name, UpliftRanking())
        if choice.predict is not None:
            predicted = np.asarray(choice.predict(rows.reset_index(drop=True)), dtype=float)
            if predicted.shape != (len(at),):
                raise ValueError(f"the uplift model of {name!r} gave {predicted.shape} predictions for "
                                 f"{len(at)} events")
            out.loc[at, "expected_uplift"] = np.clip(np.nan_to_num(predicted, nan=0.0), -1.0, 1.0)
            out.loc[at, "uplift_model"] = choice.model or "uplift model"
        out.loc[at, "ranking"] = choice.ranking
        out.loc[at, "uplift_note"] = choice.note or (
            f"prior uplift {rules.uplift.prior_uplift:g}: no uplift model chosen for this rule yet; "
            "ranked by value at risk")
    out["expected_incremental_value"] = out["expected_uplift"].to_numpy(float) * value
    out["cost_per_send"] = rules.budget.cost_per_send
    out["net_value"] = out["expected_incremental_value"] - rules.budget.cost_per_send
    at_risk = _column(frame, "value_at_risk").fillna(0.0).to_numpy(float)[fired["row"].to_numpy()]
    out["value_at_risk"] = at_risk
    out["priority"] = fired["priority"].to_numpy()
    out["customer_id"] = fired["customer_id"].to_numpy(object)
    return out


def within_budget(values: pd.DataFrame, hashed: np.ndarray, max_sends: int) -> tuple[np.ndarray, np.ndarray]:
    """Each event's group and its rank (1 = best) by ``net_value``, ``value_at_risk``, priority
    and customer: the holdout hash's group down the ranking until ``max_sends`` send events are
    taken, ``skipped_budget`` after the last of them."""
    order = np.lexsort((values["customer_id"].to_numpy(str), values["priority"].to_numpy(),
                        -values["value_at_risk"].to_numpy(float), -values["net_value"].to_numpy(float)))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(1, len(order) + 1)
    sends = np.cumsum(hashed[order] == "send")
    over = sends > max_sends                      # past the max-th send event, in rank order
    if max_sends == 0:
        over = np.ones(len(order), dtype=bool)
    group = np.asarray(hashed, dtype=object).copy()
    group[order[over]] = SKIPPED
    return group, rank


def winback_stopped(budget: Budget, ids: pd.Series, frame: pd.DataFrame, history: pd.DataFrame) -> np.ndarray:
    """Customers past the win-back stop: P(alive) below the threshold, or at least the allowed
    number of unanswered ``winback_due`` events (see the module docstring)."""
    stopped = (_column(frame, "p_alive") < budget.winback_stop_below_p_alive).to_numpy()
    if budget.winback_stop_after_unanswered <= 0:
        return stopped
    sent = history[history["rule"] == "winback_due"]
    if sent.empty:
        return stopped
    last = pd.Series(_dates(frame, "last_purchase_date").to_numpy(), index=ids.to_numpy())
    since = sent["customer_id"].map(last)
    answered = (since.notna() & (since > sent["day"])).to_numpy()
    if "answered" in sent:
        given = sent["answered"].to_numpy(object)
        known = pd.notna(given)
        answered[known] = given[known].astype(bool)
    unanswered = sent[~answered].groupby("customer_id").size()
    return stopped | (ids.map(unanswered).fillna(0).to_numpy() >= budget.winback_stop_after_unanswered)


def _past(past: pd.DataFrame | None, day: pd.Timestamp) -> pd.DataFrame:
    """Past events before ``day`` that reached a group (not ``skipped_budget``): customer_id and
    rule as text, ``day`` as a Timestamp, ``answered`` when given."""
    if past is None or len(past) == 0:
        return pd.DataFrame({"customer_id": pd.Series(dtype=object), "rule": pd.Series(dtype=object),
                             "day": pd.Series(dtype="datetime64[ns]")})
    missing = [c for c in ("customer_id", "rule", "as_of") if c not in past.columns]
    if missing:
        raise ValueError(f"past events lack the column(s) {missing}; expected {list(PAST_COLUMNS)}")
    out = pd.DataFrame({"customer_id": past["customer_id"].astype(str).to_numpy(),
                        "rule": past["rule"].astype(str).to_numpy(),
                        "day": pd.to_datetime(past["as_of"]).dt.normalize().to_numpy()})
    if "answered" in past.columns:
        out["answered"] = past["answered"].to_numpy(object)
    keep = out["day"] < day
    if "group" in past.columns:
        keep &= (past["group"].astype(str) != SKIPPED).to_numpy()
    return out[keep]


def _column(frame: pd.DataFrame, name: str, numeric: bool = True) -> pd.Series:
    if name not in frame.columns:
        return pd.Series(np.nan if numeric else None, index=frame.index, dtype=float if numeric else object)
    return pd.to_numeric(frame[name], errors="coerce") if numeric else frame[name]


def _dates(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame.columns:
        return pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
    return pd.to_datetime(frame[name]).dt.normalize()


def _winback_due(rule: Rule, frame: pd.DataFrame, day: pd.Timestamp, rules: TriggerRules) -> np.ndarray:
    return (_dates(frame, "winback_date") <= day).to_numpy()


def _tier_keep(rule: Rule, frame: pd.DataFrame, day: pd.Timestamp, rules: TriggerRules) -> np.ndarray:
    amount = _column(frame, "amount_to_keep_tier")
    in_reach = (amount > 0) & (amount <= rule.param("max_amount"))
    return (in_reach & (rule.param("review_days") <= rule.param("review_within_days"))).to_numpy()


def _tier_upgrade(rule: Rule, frame: pd.DataFrame, day: pd.Timestamp, rules: TriggerRules) -> np.ndarray:
    amount = _column(frame, "amount_to_next_tier")
    return ((amount > 0) & (amount <= rule.param("max_amount"))).to_numpy()


def _replenishment_due(rule: Rule, frame: pd.DataFrame, day: pd.Timestamp, rules: TriggerRules) -> np.ndarray:
    due = _column(frame, "replenish_due_in_days")
    return ((due <= rule.param("lead_days")) & (due > -rule.param("grace_days"))).to_numpy()


def _vip_silent(rule: Rule, frame: pd.DataFrame, day: pd.Timestamp, rules: TriggerRules) -> np.ndarray:
    rank = {t: i for i, t in enumerate(rules.tier_order)}
    tier_rank = _column(frame, "tier", numeric=False).map(rank).fillna(-1)
    silent = _column(frame, "days_since_last_purchase") == rule.param("days")
    return ((tier_rank >= rank[rule.param("min_tier")]) & silent).to_numpy()


def _post_purchase(rule: Rule, frame: pd.DataFrame, day: pd.Timestamp, rules: TriggerRules) -> np.ndarray:
    return _column(frame, "days_since_last_purchase").isin([float(d) for d in rule.param("days")]).to_numpy()


_CONDITIONS: dict[str, Callable[[Rule, pd.DataFrame, pd.Timestamp, TriggerRules], np.ndarray]] = {
    "winback_due": _winback_due, "tier_keep": _tier_keep, "tier_upgrade": _tier_upgrade,
    "replenishment_due": _replenishment_due, "vip_silent": _vip_silent, "post_purchase": _post_purchase,
}

#: What each rule's event carries beside the common fields.
_RULE_FIELDS = {
    "winback_due": ("winback_date", "last_purchase_date", "days_since_last_purchase"),
    "tier_keep": ("amount_to_keep_tier",),
    "tier_upgrade": ("amount_to_next_tier",),
    "replenishment_due": ("replenish_due_in_days", "top_category"),
    "vip_silent": ("days_since_last_purchase", "top_category"),
    "post_purchase": ("days_since_last_purchase", "top_category"),
}
_COMMON_FIELDS = ("churn_probability", "p_alive", "value_at_risk", "clv_12m", "expected_order_value", "segment",
                  "tier", "reasons", "reasons_zh_tw")


def _passes_filters(rule: Rule, frame: pd.DataFrame) -> np.ndarray:
    keep = np.ones(len(frame), dtype=bool)
    if rule.segments:
        keep &= _column(frame, "segment", numeric=False).isin(rule.segments).to_numpy()
    if rule.tiers:
        keep &= _column(frame, "tier", numeric=False).isin(rule.tiers).to_numpy()
    if rule.min_value_at_risk > 0:
        keep &= (_column(frame, "value_at_risk").fillna(0.0) >= rule.min_value_at_risk).to_numpy()
    return keep


def _cooling_down(rule: Rule, ids: pd.Series, history: pd.DataFrame, day: pd.Timestamp) -> np.ndarray:
    if rule.cooldown_days <= 0:
        return np.zeros(len(ids), dtype=bool)
    recent = history[(history["rule"] == rule.name) & (history["day"] > day - pd.Timedelta(days=rule.cooldown_days))]
    return ids.isin(set(recent["customer_id"])).to_numpy()


def _sent_since_last_purchase(ids: pd.Series, frame: pd.DataFrame, history: pd.DataFrame) -> np.ndarray:
    """A ``winback_due`` event on or after the customer's last purchase (any, without one)."""
    sent = history[history["rule"] == "winback_due"].groupby("customer_id")["day"].max()
    latest = ids.map(sent)
    last = _dates(frame, "last_purchase_date")
    return (latest.notna() & (last.isna() | (latest >= last))).to_numpy()


def _capped(fired: pd.DataFrame, history: pd.DataFrame, day: pd.Timestamp, cap: int) -> pd.DataFrame:
    """The first ``cap`` minus last six days' events of each customer (``fired`` is in priority order)."""
    week = history[history["day"] > day - pd.Timedelta(days=7)]
    used = fired["customer_id"].map(week.groupby("customer_id").size()).fillna(0).to_numpy(int)
    rank = fired.groupby("customer_id").cumcount().to_numpy()
    return fired[rank < cap - used]


def _fields(rule: Rule, row: pd.Series, day: pd.Timestamp, value: dict) -> str:
    out = {}
    for name in (*_COMMON_FIELDS, *_RULE_FIELDS[rule.name]):
        if name in row.index:
            out[name] = _plain(row[name])
    if rule.name == "tier_keep":
        out["review_date"] = (day + pd.Timedelta(days=rule.param("review_days"))).date().isoformat()
    out["window_days"] = rule.window_days
    for name in VALUE_FIELDS:
        out[name] = _plain(value[name])
    for name in ("expected_uplift", "expected_incremental_value", "net_value"):
        out[name] = round(float(out[name]), 6)
    return json.dumps(out, ensure_ascii=False, sort_keys=True)


def _plain(value: Any) -> Any:
    """A JSON-ready value: dates as ISO days, NaN/NaT as null, arrays as lists."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, (pd.Timestamp, dt.datetime, np.datetime64)):
        return pd.Timestamp(value).date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value
