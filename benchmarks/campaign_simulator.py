"""A seeded campaign simulator: months of `triggers run` and their outcomes, with a known effect (issue #21).

Usage::

    .venv/bin/python benchmarks/campaign_simulator.py --customers 6000 --months 6 --seed 0
    .venv/bin/python benchmarks/campaign_simulator.py --no-effect --seeds 400 --customers 1500 --months 3 \\
        --min-treated 50 --min-holdout 50                       # the A/A check, as the test's 20 seeds

The process, every piece seeded by ``seed``:

1. **Customers** come from the synthetic generator (:mod:`synthetic`, its defaults, no refunds):
   a log 2024-01-01 .. 2025-12-31. What the generator wrote after a campaign day is what the
   customer would have bought without a message (the baseline).
2. **A day of `triggers run`** every ``step_days`` from ``first_day``, ``months`` times: features
   as of the day (:func:`features.build_features` on the log as it stands, messages' effects
   included), a purchase model (MBG/NBD, fitted that day) for ``p_alive``, the churn probability
   1 - P(purchase in 90 days), ``clv_12m`` = E[purchases in 365 days] x the mean order value and
   the win-back date (:class:`models.policy.winback.WinbackPolicy`); then the real rules engine
   (:func:`crm.rules.evaluate`) with only ``winback_due`` on, the budget, the stop rule (past
   win-backs marked answered from the log as of the day) and the rankings of
   :func:`crm.learn.rankings_for` (an uplift model learned on the matured events once
   ``learn_from_month`` months have run and it beat both baselines, else the prior).
3. **The true effect** of a sent message depends on the customer's features that day:

   * ``lost`` (``days_since_last_purchase`` > ``lost_after_days``, 150): **zero**;
   * ``frequent`` (``frequency`` >= ``frequent_after``, 10 repeat purchases, and not lost): **negative**
     (``harm`` = -0.25): with that probability the customer's purchases in the window are removed
     (annoyed by one more message; their P(purchase) falls by 0.25 x their baseline P);
   * the **middle band** (the rest): **positive** (``lift`` = +0.35): with that probability one
     purchase of the customer's mean order value is added on a uniform day of the window
     (P(purchase) rises by 0.35 x (1 - baseline P)).

   Held-out and skipped events change nothing. ``effect=False`` makes every effect zero (A/A).
4. **Judging**: after the last day's window has ended, :func:`crm.learn.learn_rule` fits the
   X-learner on the earlier event days and judges it on the later ones against churn risk and
   value at risk (Qini, AUUC, the intervals of :func:`crm.uplift_metrics.compare_rankings`).

Churn risk puts the lost first (no effect); value at risk favours the frequent, high-value
customers (a negative effect); the middle band is what an uplift model has to find (Ascarza 2018).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import synthetic  # noqa: E402  (benchmarks/ is not a package)

from crm.learn import LearnResult, learn_rule, rankings_for, training_frame  # noqa: E402
from crm.rules import TriggerRules, UpliftRanking, evaluate  # noqa: E402
from features import build_features  # noqa: E402
from features.settings import ColumnMap  # noqa: E402
from features.transactions import TransactionLog  # noqa: E402
from models.clv.modified_beta_geo import ModifiedBetaGeoModel  # noqa: E402
from models.policy.winback import WinbackPolicy  # noqa: E402

COLUMNS = ColumnMap(customer_id="customer_id", timestamp="timestamp", amount="amount", order_id="order_id")


@dataclass(frozen=True)
class CampaignConfig:
    """The simulated campaign (see the module docstring)."""

    customers: int = 6000
    seed: int = 0
    first_day: str = "2025-01-31"
    months: int = 6
    step_days: int = 30
    effect: bool = True
    lift: float = 0.35
    harm: float = -0.25
    lost_after_days: int = 150
    frequent_after: int = 10
    holdout_share: float = 0.5
    window_days: int = 30
    max_sends_per_day: int = 100_000
    cost_per_send: float = 0.0
    stop_after_unanswered: int = 3
    stop_below_p_alive: float = 0.1
    min_treated: int = 300
    min_holdout: int = 300
    learn_from_month: int | None = None
    n_boot: int = 200

    def rules(self) -> TriggerRules:
        data = TriggerRules.from_toml().to_dict()
        data["global"].update(salt=f"campaign-sim-{self.seed}", max_per_customer_per_week=1)
        for name in list(data):
            if name not in ("global", "budget", "uplift"):
                data[name]["enabled"] = name == "winback_due"
        data["winback_due"].update(holdout_share=self.holdout_share, window_days=self.window_days)
        data["budget"].update(max_sends_per_day=self.max_sends_per_day, cost_per_send=self.cost_per_send,
                              winback_stop_after_unanswered=self.stop_after_unanswered,
                              winback_stop_below_p_alive=self.stop_below_p_alive)
        data["uplift"].update(min_treated=self.min_treated, min_holdout=self.min_holdout)
        return TriggerRules.from_dict(data, source="campaign simulator")


@dataclass
class CampaignResult:
    """Every event, the final log, the customers table of each day and the judgement."""

    config: CampaignConfig
    events: pd.DataFrame
    log: pd.DataFrame
    days: list[pd.Timestamp]
    customers: dict[pd.Timestamp, pd.DataFrame] = field(default_factory=dict)
    judged: LearnResult | None = None
    rankings: dict[pd.Timestamp, str] = field(default_factory=dict)

    def sends_per_day(self) -> pd.Series:
        return self.events[self.events["group"] == "send"].groupby("as_of").size()


def true_effect(frame: pd.DataFrame, config: CampaignConfig) -> np.ndarray:
    """The effect a sent message has, per customer row (see the module docstring)."""
    if not config.effect:
        return np.zeros(len(frame))
    silent = frame["days_since_last_purchase"].to_numpy(float)
    frequent = frame["frequency"].to_numpy(float) >= config.frequent_after
    lost = silent > config.lost_after_days
    return np.where(lost, 0.0, np.where(frequent, config.harm, config.lift))


def scored_customers(log: pd.DataFrame, day: pd.Timestamp) -> pd.DataFrame:
    """Features as of ``day`` and the scores the rules read (see the module docstring)."""
    table = build_features(log[log["timestamp"] < day + pd.Timedelta(days=1)], day.date().isoformat())
    model = ModifiedBetaGeoModel().fit(table)
    churn = 1.0 - model.predict_prob_purchase_within(table, 90)
    order_value = table["avg_order_value"].to_numpy(float)
    clv = model.predict_expected_purchases(table, 365) * order_value
    decided = WinbackPolicy().decide(model, table, churn, clv, day)
    return table.assign(p_alive=model.predict_p_alive(table), churn_probability=churn, clv_12m=clv,
                        expected_order_value=order_value, value_at_risk=decided["value_at_risk"].to_numpy(),
                        winback_date=decided["winback_date"].to_numpy())


def _apply_effects(log: pd.DataFrame, sent: pd.DataFrame, rows: pd.DataFrame, day: pd.Timestamp,
                   config: CampaignConfig, rng: np.random.Generator) -> pd.DataFrame:
    """The log after the day's sent messages took effect."""
    if sent.empty:
        return log
    chosen = rows.set_index("customer_id").loc[sent["customer_id"]]
    tau = true_effect(chosen, config)
    hit = rng.random(len(tau)) < np.abs(tau)
    window_end = day + pd.Timedelta(days=config.window_days + 1)
    harmed = set(chosen.index[hit & (tau < 0)])
    if harmed:
        inside = (log["timestamp"] >= day + pd.Timedelta(days=1)) & (log["timestamp"] < window_end)
        log = log[~(inside & log["customer_id"].isin(harmed))]
    helped = chosen[hit & (tau > 0)]
    if len(helped):
        offsets = rng.integers(1, config.window_days + 1, len(helped))
        added = pd.DataFrame({
            "customer_id": helped.index.to_numpy(object),
            "order_id": [f"S{day:%Y%m%d}{i:07d}" for i in range(len(helped))],
            "timestamp": (day + pd.to_timedelta(offsets, unit="D") + pd.Timedelta(hours=12)).to_numpy(),
            "amount": np.round(helped["avg_order_value"].to_numpy(float), 2)})
        log = pd.concat([log, added], ignore_index=True)
    return log


def simulate(config: CampaignConfig = CampaignConfig(), judge: bool = True) -> CampaignResult:
    """Run the campaign (see the module docstring); ``judge`` fits and judges the uplift model
    once every window has ended."""
    rng = np.random.default_rng(config.seed)
    log = pd.concat(list(synthetic.generate_transactions(config.customers, seed=config.seed, refunds=False,
                                                         channel=False, arrow_strings=False)), ignore_index=True)
    log = log[["customer_id", "order_id", "timestamp", "amount"]]
    rules = config.rules()
    first = pd.Timestamp(config.first_day)
    days = [first + pd.Timedelta(days=config.step_days * m) for m in range(config.months)]
    events = pd.DataFrame(columns=["idempotency_key", "customer_id", "rule", "as_of", "group", "template",
                                   "priority", "fields"])
    result = CampaignResult(config, events, log, days)
    model_for: dict[str, UpliftRanking] = {}
    for month, day in enumerate(days):
        rows = scored_customers(log, day)
        result.customers[day] = rows
        tx = TransactionLog.from_frame(log[log["timestamp"] < day + pd.Timedelta(days=1)], COLUMNS, threads=1)
        past = _answered(events, rules, tx, day)
        if config.learn_from_month is not None and month >= config.learn_from_month:
            model_for = _learned_rankings(events, tx, rules, result, day, config)
        uplift = {**rankings_for(rules, events, day, load=lambda rule: None), **model_for}
        result.rankings[day] = uplift["winback_due"].note
        fired = evaluate(rules, rows, day, past, uplift)
        events = pd.concat([events, fired], ignore_index=True)
        log = _apply_effects(log, fired[fired["group"] == "send"], rows, day, config, rng)
    result.events, result.log = events.reset_index(drop=True), log.reset_index(drop=True)
    if judge:
        end = days[-1] + pd.Timedelta(days=config.window_days)
        tx = TransactionLog.from_frame(log[log["timestamp"] < end + pd.Timedelta(days=1)], COLUMNS, threads=1)
        frame = training_frame(result.events, tx, rules, lambda d: result.customers[d], end)
        result.judged = learn_rule(frame, "winback_due", rules, n_boot=config.n_boot, seed=config.seed)
    return result


def _answered(events: pd.DataFrame, rules: TriggerRules, tx: TransactionLog, day: pd.Timestamp) -> pd.DataFrame:
    from crm.job import answered_past

    past = events[["customer_id", "rule", "as_of", "group"]]
    return answered_past(past, rules, tx, day) if len(past) else past


def _learned_rankings(events, tx, rules, result, day, config) -> dict[str, UpliftRanking]:
    frame = training_frame(events, tx, rules, lambda d: result.customers[d], day)
    if frame.empty or frame["as_of"].nunique() < 2:
        return {}
    learned = learn_rule(frame, "winback_due", rules, n_boot=config.n_boot, seed=config.seed)
    if not learned.beats:
        return {}
    return {"winback_due": UpliftRanking(predict=learned.model.predict_frame, model="simulated x_learner",
                                         note=learned.verdict)}


def qini_table(result: CampaignResult) -> pd.DataFrame:
    """The judgement's comparison: learned vs churn risk vs value at risk (see compare_rankings)."""
    return result.judged.comparison if result.judged is not None else pd.DataFrame()


def aa_false_positive_share(seeds: range | list[int], **overrides) -> tuple[float, float, pd.DataFrame]:
    """With no true effect, per seed: the learned model's Qini interval and whether it excluded 0
    (two-sided) or claimed to beat both baselines; the two shares and the per-seed table."""
    rows = []
    for seed in seeds:
        config = dataclasses.replace(CampaignConfig(), seed=seed, effect=False, **overrides)
        judged = simulate(config).judged
        if judged.comparison.empty:
            raise ValueError(f"seed {seed}: {judged.verdict}; give the A/A check more customers or months")
        own = judged.comparison.set_index("ranking").loc["uplift_model"]
        rows.append({"seed": seed, "events": judged.n_treated + judged.n_holdout, "qini": own["qini"],
                     "qini_low": own["qini_low"], "qini_high": own["qini_high"],
                     "excludes_zero": not (own["qini_low"] <= 0 <= own["qini_high"]), "beats": judged.beats,
                     "verdict": judged.verdict})
    table = pd.DataFrame(rows)
    return float(table["excludes_zero"].mean()), float(table["beats"].mean()), table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=6000)
    parser.add_argument("--months", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=0, help="with --no-effect: the A/A check over this many seeds")
    parser.add_argument("--no-effect", action="store_true")
    parser.add_argument("--max-sends-per-day", type=int, default=100_000)
    parser.add_argument("--min-treated", type=int, default=300, help="sent outcomes a rule needs to learn")
    parser.add_argument("--min-holdout", type=int, default=300, help="held-out outcomes a rule needs to learn")
    args = parser.parse_args(argv)
    base = dict(customers=args.customers, months=args.months, max_sends_per_day=args.max_sends_per_day,
                min_treated=args.min_treated, min_holdout=args.min_holdout)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    if args.seeds:
        two_sided, beats, table = aa_false_positive_share(range(args.seeds), **base)
        print(table.to_string(index=False))
        print(f"A/A over {args.seeds} seeds: Qini interval excludes 0 in {two_sided:.1%} "
              f"({int(round(two_sided * args.seeds))} of {args.seeds}), 'beats both baselines' in {beats:.1%}; "
              f"load average {os.getloadavg()[0]:.2f} at the end")
        return 0
    result = simulate(CampaignConfig(seed=args.seed, effect=not args.no_effect, **base))
    print(f"events: {len(result.events):,}; sends per day: {result.sends_per_day().to_dict()}")
    print(qini_table(result).to_string(index=False))
    print(result.judged.verdict)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
