"""`winback triggers learn`: an uplift model per rule from our own holdouts (issue #21).

Every recorded ``send`` and ``holdout`` event is a randomised experiment: the holdout group is a
salted hash of customer and rule. Once a rule's windows have matured for enough of them
(``[uplift] min_treated`` sent, ``min_holdout`` held out), :func:`learn_rule`

1. builds the training frame: each event's outcome (a purchase within the rule's
   ``window_days``, :func:`crm.lift.event_outcomes`, seen up to the day of
   learning) and the features **as of the event's own day** (``features_for_day(day)``,
   :func:`features.build_features` with a cutoff of that day, so nothing after the event is read);
2. splits it out of time: the latest event days (``test_share`` of the events) are judged, the
   earlier ones fit an X-learner (:mod:`crm.uplift`);
3. judges it on the later days by the Qini coefficient and AUUC with intervals (the wider of the
   bootstrap and the randomisation interval, :mod:`crm.uplift_metrics`) against ranking by churn
   risk and by value at risk, the scores each event recorded when it fired; the model **beats** a
   baseline when the paired interval of the Qini difference lies above 0;
4. refits the same recipe on every matured event.

:func:`learn` hands each rule's result to a ``register`` callback; ``winback triggers learn``
passes :func:`training.uplift_registry.register_uplift`, which logs the run to MLflow (experiment
``winback-uplift``) and registers the refit model as a version of ``winback-uplift``. The alias
named after the rule (``winback_due``) moves to it only if it beat both baselines, and, when the
alias already points at a model, if it is at least as good as that model on the same judged
events (the churn model's gate, applied per rule); otherwise the version is tagged
``challenger``. :func:`rankings_for` is what `triggers run` reads: per rule, the aliased model
once the rule has enough matured outcomes, else the prior.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from crm.rules import GROUPS, TriggerRules, UpliftRanking
from crm.uplift import LEARNERS, UPLIFT_FEATURES, MetaLearner, feature_matrix
from crm.uplift_metrics import compare_rankings, qini_curve

UPLIFT_MODEL = "winback-uplift"
EXPERIMENT = "winback-uplift"
BASELINES = ("churn_risk", "value_at_risk")
LEARNED = "uplift_model"


@dataclass(frozen=True)
class LearnResult:
    """What learning one rule found."""

    rule: str
    n_treated: int
    n_holdout: int
    status: str                     # "too_few_outcomes", "no_uplift_found", "beats_baselines"
    verdict: str                    # one sentence for people
    comparison: pd.DataFrame = field(default_factory=pd.DataFrame)   # out of time, see compare_rankings
    curve: pd.DataFrame = field(default_factory=pd.DataFrame)        # the learned ranking's Qini curve
    model: MetaLearner | None = None                                 # refit on every matured event
    split_day: str | None = None
    version: str | None = None
    alias: str | None = None

    @property
    def beats(self) -> bool:
        """Whether the learned ranking beat churn risk and value at risk out of time."""
        return self.status == "beats_baselines"


#: Records a rule's result (``result, the rule's training frame, the day``), returning it with
#: its version and alias.
Register = Callable[[LearnResult, pd.DataFrame, pd.Timestamp], LearnResult]


def matured(events: pd.DataFrame, rules: TriggerRules, day) -> pd.DataFrame:
    """The randomised events (``send``, ``holdout``) of enabled rules whose window ended by ``day``."""
    day = pd.Timestamp(day).normalize()
    windows = {r.name: r.window_days for r in rules.rules if r.enabled}
    frame = events[events["group"].isin(GROUPS) & events["rule"].isin(list(windows))]
    ends = pd.to_datetime(frame["as_of"]) + pd.to_timedelta(frame["rule"].map(windows), unit="D")
    return frame[(ends <= day).to_numpy()]


def matured_counts(events: pd.DataFrame, rules: TriggerRules, day) -> dict[str, tuple[int, int]]:
    """Per enabled rule: (sent, held out) events whose window ended by ``day``."""
    ripe = matured(events, rules, day)
    counts = {r.name: (0, 0) for r in rules.rules if r.enabled}
    for (rule, group), n in ripe.groupby(["rule", "group"]).size().items():
        sent, held = counts[rule]
        counts[rule] = (sent + int(n), held) if group == "send" else (sent, held + int(n))
    return counts


def training_frame(events: pd.DataFrame, log, rules: TriggerRules,
                   features_for_day: Callable[[pd.Timestamp], pd.DataFrame], day) -> pd.DataFrame:
    """The matured randomised events with ``treatment`` (1 sent), ``y`` (purchased within the
    window, seen up to ``day``), ``churn_risk`` and ``value_at_risk`` (from each event's fields)
    and :data:`UPLIFT_FEATURES` as of each event's day."""
    from crm.lift import event_outcomes

    ripe = matured(events, rules, day).reset_index(drop=True)
    if ripe.empty:
        return ripe.assign(treatment=pd.Series(dtype=int), y=pd.Series(dtype=int))
    windows = ripe["rule"].map({r.name: r.window_days for r in rules.rules}).to_numpy()
    seen = event_outcomes(ripe, log, windows, observation_end=pd.Timestamp(day))
    fields = [json.loads(f) if isinstance(f, str) and f else {} for f in ripe["fields"]]
    out = seen.assign(treatment=(ripe["group"] == "send").astype(int).to_numpy(),
                      y=seen["purchased"].astype(int).to_numpy(),
                      churn_risk=[f.get("churn_probability") for f in fields],
                      value_at_risk=[f.get("value_at_risk") for f in fields])
    parts = []
    for as_of, rows in out.groupby("as_of", sort=True):
        table = features_for_day(pd.Timestamp(as_of))
        cols = ["customer_id", *[c for c in UPLIFT_FEATURES if c in table.columns]]
        feats = table[cols].assign(customer_id=table["customer_id"].astype(str))
        parts.append(rows.merge(feats, on="customer_id", how="left", validate="many_to_one"))
    frame = pd.concat(parts, ignore_index=True)
    for name in ("churn_risk", "value_at_risk"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    return frame


def out_of_time_split(frame: pd.DataFrame, test_share: float = 0.3) -> tuple[np.ndarray, str]:
    """A mask of the events judged (the latest days, about ``test_share`` of the events) and
    the first judged day."""
    days = pd.to_datetime(frame["as_of"])
    per_day = days.value_counts().sort_index()
    if len(per_day) < 2:
        raise ValueError("an out-of-time judgement needs events on at least two days")
    from_end = per_day[::-1].cumsum()[::-1]              # events on or after each day
    later = from_end[from_end >= test_share * len(frame)]
    split = later.index[-1] if later.index[-1] != per_day.index[0] else per_day.index[1]
    return (days >= split).to_numpy(), split.date().isoformat()


def learn_rule(frame: pd.DataFrame, rule: str, rules: TriggerRules, learner: str = "x_learner",
               test_share: float = 0.3, n_boot: int = 200, seed: int = 0) -> LearnResult:
    """Fit, judge out of time and refit one rule's uplift model (see the module docstring)."""
    if learner not in LEARNERS:
        raise ValueError(f"learner must be one of {', '.join(LEARNERS)}, got {learner!r}")
    mine = frame[frame["rule"] == rule].reset_index(drop=True)
    sent, held = int(mine["treatment"].sum()), int((mine["treatment"] == 0).sum())
    need = rules.uplift
    if sent < need.min_treated or held < need.min_holdout:
        return LearnResult(rule, sent, held, "too_few_outcomes",
                           f"{sent:,} of {need.min_treated:,} sent and {held:,} of {need.min_holdout:,} held-out "
                           "outcomes matured: the prior uplift and value at risk rank this rule")
    test, split = out_of_time_split(mine, test_share)
    train, judged = mine[~test], mine[test]
    if train["treatment"].nunique() < 2 or judged["treatment"].nunique() < 2:
        return LearnResult(rule, sent, held, "too_few_outcomes",
                           "the earlier or the later days lack sent or held-out events: nothing to judge")
    model = LEARNERS[learner](random_state=seed).fit(feature_matrix(train), train["treatment"], train["y"])
    scores = {LEARNED: model.predict(feature_matrix(judged)),
              "churn_risk": judged["churn_risk"].fillna(0).to_numpy(float),
              "value_at_risk": judged["value_at_risk"].fillna(0).to_numpy(float)}
    table = compare_rankings(scores, judged["treatment"], judged["y"], reference=LEARNED, n_boot=n_boot, seed=seed,
                             clusters=judged["customer_id"].to_numpy())
    curve = qini_curve(scores[LEARNED], judged["treatment"], judged["y"], seed=seed)
    rows = table.set_index("ranking")
    beats = all(rows.loc[b, "qini_diff_low"] > 0 for b in BASELINES)
    own = rows.loc[LEARNED]
    if beats:
        status = "beats_baselines"
        verdict = (f"the uplift model beats churn risk and value at risk out of time (Qini {own['qini']:+.4f} "
                   f"[{own['qini_low']:+.4f}, {own['qini_high']:+.4f}] from {split})")
    else:
        covers = own["qini_low"] <= 0 <= own["qini_high"]
        verdict = ((f"no uplift found: the model's Qini interval [{own['qini_low']:+.4f}, {own['qini_high']:+.4f}] "
                    "covers 0" if covers else
                    f"the model's Qini {own['qini']:+.4f} [{own['qini_low']:+.4f}, {own['qini_high']:+.4f}] does not "
                    "beat both baselines") + "; value at risk keeps ranking")
        status = "no_uplift_found"
    refit = LEARNERS[learner](random_state=seed).fit(feature_matrix(mine), mine["treatment"], mine["y"])
    return LearnResult(rule, sent, held, status, verdict, table, curve, refit, split)


def learn(events: pd.DataFrame, log, rules: TriggerRules, features_for_day: Callable[[pd.Timestamp], pd.DataFrame],
          day, register: Register | None = None, learner: str = "x_learner",
          n_boot: int = 200, seed: int = 0) -> list[LearnResult]:
    """:func:`learn_rule` for every enabled rule; each rule with enough outcomes is passed to
    ``register(result, its training frame, day)``, which records it and returns it with its version
    and alias (``winback triggers learn`` registers in MLflow:
    :func:`training.uplift_registry.register_uplift`)."""
    frame = training_frame(events, log, rules, features_for_day, day)
    results = []
    for rule in (r.name for r in rules.rules if r.enabled):
        if frame.empty:
            results.append(LearnResult(rule, 0, 0, "too_few_outcomes", "no matured outcome yet"))
            continue
        result = learn_rule(frame, rule, rules, learner, n_boot=n_boot, seed=seed)
        if register is not None and result.model is not None:
            result = register(result, frame[frame["rule"] == rule], pd.Timestamp(day))
        results.append(result)
    return results


def rankings_for(rules: TriggerRules, events: pd.DataFrame, day,
                 load: Callable[[str], tuple[MetaLearner, str] | None]) -> dict[str, UpliftRanking]:
    """Per enabled rule, how `triggers run` values its events on ``day``: the model ``load(rule)``
    finds (the rule's alias of ``winback-uplift``: :func:`training.uplift_registry.registered_model`)
    once the rule has enough matured outcomes, else the prior (value at risk ranks); the ``note``
    says which and why."""
    counts = matured_counts(events, rules, day) if len(events) else {r.name: (0, 0) for r in rules.rules if r.enabled}
    need = rules.uplift
    out = {}
    for rule, (sent, held) in counts.items():
        if sent < need.min_treated or held < need.min_holdout:
            out[rule] = UpliftRanking(note=(
                f"prior uplift {need.prior_uplift:g}, ranked by value at risk: {sent:,} of {need.min_treated:,} sent "
                f"and {held:,} of {need.min_holdout:,} held-out outcomes matured"))
            continue
        found = load(rule)
        if found is None:
            out[rule] = UpliftRanking(note=(
                f"prior uplift {need.prior_uplift:g}, ranked by value at risk: enough outcomes, but no uplift "
                "model has beaten churn risk and value at risk yet (`winback triggers learn`)"))
            continue
        model, name = found
        out[rule] = UpliftRanking(predict=model.predict_frame, model=name,
                                  note=f"{name} ({model.kind}) beat churn risk and value at risk on Qini out of time")
    return out
