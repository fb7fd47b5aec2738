"""`winback triggers run` and `winback daily`: the day's scores become CRM events, exactly once.

One day's run: score every customer with the champion as of the day (features built with the
model's reference), evaluate the rules (:mod:`crm.rules`), commit the new events to the
outbox (:mod:`crm.outbox`) in one transaction, then deliver what is pending: files per rule
and day, and signed webhook batches. Because events are committed before any delivery and keyed
by an idempotency key, a re-run of the same day adds nothing, and a run killed at any moment is
completed by the next one without duplicates or losses.

Issue #21: with the log at hand, every past ``winback_due`` event is marked ``answered`` (a
purchase within the rule's window, seen up to the day) for the win-back stop; ``uplift`` says per
rule which ranking values its events (:func:`crm.learn.rankings_for`: a registered uplift
model once the rule has enough matured outcomes and a model beat both baselines, else the prior).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from crm.outbox import Outbox
from crm.rules import TriggerRules, UpliftRanking, evaluate
from crm.uplift import UPLIFT_FEATURES
from features import build_features
from features.build import parse_cutoff
from models.scorer import WinbackScorer

#: Feature columns the rules read beside the scorer's output.
RULE_FEATURES = ("days_since_last_purchase", "last_purchase_date", "amount_to_next_tier",
                 "amount_to_keep_tier", "replenish_due_in_days", "top_category")


@dataclass(frozen=True)
class TriggerRun:
    """What a day's run did."""

    as_of: str
    new_events: int
    counts: dict[tuple[str, str], int] = field(default_factory=dict)   # (rule, group) -> events of the day
    files: list[Path] = field(default_factory=list)
    webhook: dict | None = None
    rankings: dict[str, str] = field(default_factory=dict)             # rule -> ranking and why
    max_sends_per_day: int | None = None


def model_features(scorer: WinbackScorer, log, as_of: str) -> pd.DataFrame:
    """The feature table as of ``as_of`` exactly as the scorer defines it (its reference)."""
    return build_features(log, parse_cutoff(as_of), reference=scorer.reference_)


def customers_for_rules(scorer: WinbackScorer, features: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """The scorer's output joined with the feature columns the rules read, one row a customer."""
    scores = scorer.score(features, as_of, reasons=False)
    extra = [c for c in dict.fromkeys([*RULE_FEATURES, *UPLIFT_FEATURES])
             if c in features.columns and c not in scores.columns]
    return scores.merge(features[["customer_id", *extra]], on="customer_id", how="left", validate="one_to_one")


def explain_fired(scorer: WinbackScorer, features: pd.DataFrame, customers: pd.DataFrame,
                  ids: set[str]) -> pd.DataFrame:
    """``customers`` with reasons (English and zh-TW) for ``ids``, empty lists for the rest:
    explaining costs about a millisecond a customer, so only those an event goes to."""
    out = customers.copy()
    out["reasons"] = [[] for _ in range(len(out))]
    out["reasons_zh_tw"] = [[] for _ in range(len(out))]
    if ids:
        chosen = features[features["customer_id"].isin(ids)]
        explained = scorer.explain(scorer.model_input(chosen)).set_index(chosen["customer_id"].to_numpy())
        where = out["customer_id"].isin(ids).to_numpy()
        out.loc[where, "reasons"] = pd.Series(explained.loc[out.loc[where, "customer_id"], "reasons"].to_numpy(),
                                             index=out.index[where])
        out.loc[where, "reasons_zh_tw"] = pd.Series(
            explained.loc[out.loc[where, "customer_id"], "reasons_zh_tw"].to_numpy(), index=out.index[where])
    return out


def run_triggers(scorer: WinbackScorer, features: pd.DataFrame, as_of: str, rules: TriggerRules,
                 outbox: Outbox, out_dir: Path | None = None, webhook_url: str | None = None,
                 secret: str | None = None, step: Callable[[str], None] = lambda _: None, log=None,
                 uplift: dict[str, UpliftRanking] | None = None) -> TriggerRun:
    """Evaluate the rules on ``features`` (as of ``as_of``, built with the scorer's reference:
    :func:`model_features`), record the new events, deliver what is pending.

    ``log`` (the transactions) lets the win-back stop know which past win-backs were answered;
    without it a purchase since the event answers it. ``uplift``: per rule, how its events are
    valued (default: the prior for every rule)."""
    day = parse_cutoff(as_of)
    step(f"scoring as of {day.date()}")
    customers = customers_for_rules(scorer, features, day)
    past = answered_past(outbox.past(), rules, log, day) if log is not None else outbox.past()
    fired = evaluate(rules, customers, day.date(), past, uplift)
    customers = explain_fired(scorer, features, customers, set(fired["customer_id"]))
    events = evaluate(rules, customers, day.date(), past, uplift)
    step(f"recording {len(events):,} events")
    new = outbox.record(events)
    today = outbox.events(as_of=str(day.date()))
    counts = {(r, g): int(n) for (r, g), n in today.groupby(["rule", "group"]).size().items()}
    files = outbox.deliver_files(out_dir, str(day.date())) if out_dir is not None else []
    sent = None
    if webhook_url:
        if not secret:
            raise ValueError("a webhook needs its signing secret (WINBACK_WEBHOOK_SECRET)")
        step("delivering to the webhook")
        sent = outbox.deliver_webhook(webhook_url, secret)        # also what an earlier crashed day left
    notes = {r.name: (uplift or {}).get(r.name, UpliftRanking()).note or
             f"{(uplift or {}).get(r.name, UpliftRanking()).ranking}: prior uplift {rules.uplift.prior_uplift:g}"
             for r in rules.rules if r.enabled}
    return TriggerRun(str(day.date()), new, counts, files, sent, notes, rules.budget.max_sends_per_day)


def answered_past(past: pd.DataFrame, rules: TriggerRules, log, day: pd.Timestamp) -> pd.DataFrame:
    """``past`` with ``answered`` for its ``winback_due`` events: a purchase within the rule's
    window, seen up to ``day`` (other rows: missing)."""
    from crm.lift import event_outcomes

    out = past.assign(answered=pd.Series([None] * len(past), index=past.index, dtype=object))
    names = [r.name for r in rules.rules]
    mask = (past["rule"] == "winback_due") & (pd.to_datetime(past["as_of"]) < day) if len(past) else past["rule"] == ""
    if "winback_due" not in names or not mask.any():
        return out
    seen = event_outcomes(past[mask], log, rules["winback_due"].window_days, observation_end=day)
    out.loc[mask, "answered"] = seen["purchased"].to_numpy(object)
    return out


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` or fail at once: two daily runs never overlap.
    The lock is the kernel's (flock), so a killed run releases it."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"another `winback daily` holds {lock_path}; it is still running") from None
        handle.write(f"{dt.datetime.now(dt.UTC).isoformat()}\n")
        handle.flush()
        yield
