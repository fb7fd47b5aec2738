"""`winback triggers learn` (issue #21): outcomes and features as of each event's day (no
leakage), the matured-outcome thresholds, the out-of-time judgement, and the registry gate."""

from __future__ import annotations

import functools
import json

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from crm.learn import UPLIFT_MODEL, learn, matured_counts, rankings_for, training_frame
from crm.lift import event_outcomes
from crm.rules import TriggerRules, holdout_group, idempotency_key
from features import build_features
from features.settings import ColumnMap
from features.transactions import TransactionLog
from training.uplift_registry import register_uplift, registered_model

DAYS = [pd.Timestamp("2025-03-01"), pd.Timestamp("2025-03-11"), pd.Timestamp("2025-03-21"),
        pd.Timestamp("2025-03-31")]
COLUMNS = ColumnMap(customer_id="customer_id", timestamp="timestamp", amount="amount")


def rules(min_treated: int = 200, min_holdout: int = 200) -> TriggerRules:
    data = TriggerRules.from_toml().to_dict()
    for name in list(data):
        if name not in ("global", "budget", "uplift"):
            data[name]["enabled"] = name == "winback_due"
    data["winback_due"].update(holdout_share=0.5, window_days=30)
    data["uplift"].update(min_treated=min_treated, min_holdout=min_holdout)
    return TriggerRules.from_dict(data)


def experiment(n: int = 900, effect: bool = True, seed: int = 0):
    """``n`` customers a day on four days, half held out; sent customers silent under 60 days
    buy within the window with P 0.6 instead of 0.2 (``effect``), the rest 0.2 either way."""
    rng = np.random.default_rng(seed)
    trules = rules()
    history, outcomes, events = [], [], []
    for d, day in enumerate(DAYS):
        ids = [f"d{d}c{i:04d}" for i in range(n)]
        silent = rng.integers(10, 200, n)
        history.append(pd.DataFrame({"customer_id": ids, "timestamp": day - pd.to_timedelta(silent, unit="D"),
                                     "amount": 20.0}))
        group = holdout_group(pd.Series(ids), "winback_due", 0.5, trules.salt)
        p = np.where((group == "send") & (silent < 60) & effect, 0.6, 0.2)
        bought = rng.random(n) < p
        outcomes.append(pd.DataFrame({"customer_id": np.array(ids)[bought], "amount": 25.0,
                                      "timestamp": day + pd.to_timedelta(rng.integers(1, 31, bought.sum()), unit="D")}))
        events.append(pd.DataFrame({
            "idempotency_key": [idempotency_key(c, "winback_due", day) for c in ids], "customer_id": ids,
            "rule": "winback_due", "as_of": day.date().isoformat(), "group": group, "template": "t",
            "priority": 10, "fields": [json.dumps({"churn_probability": float(rng.random()),
                                                   "value_at_risk": float(100 * rng.random())}) for _ in ids]}))
    log = pd.concat(history + outcomes, ignore_index=True)
    return pd.concat(events, ignore_index=True), log, trules


def features_by_day(log: pd.DataFrame, calls: list | None = None):
    cache = {}

    def features_for_day(day):
        if calls is not None:
            calls.append(day)
        if day not in cache:
            cache[day] = build_features(log, day.date().isoformat())
        return cache[day]
    return features_for_day


def test_outcomes_are_seen_up_to_the_day_and_features_are_those_of_the_event_day():
    events, log, trules = experiment(200)
    end = DAYS[-1] + pd.Timedelta(days=30)
    tx = TransactionLog.from_frame(log, COLUMNS, threads=1)
    calls = []
    frame = training_frame(events, tx, trules, features_by_day(log, calls), end)
    assert sorted(set(calls)) == DAYS                            # features only as of the events' days
    first = frame[frame["as_of"] == DAYS[0].date().isoformat()].set_index("customer_id")
    as_of_day = build_features(log[log["timestamp"] < DAYS[0] + pd.Timedelta(days=1)], "2025-03-01")
    as_of_day = as_of_day.set_index("customer_id").loc[first.index]
    # the outcome purchases after the day change nothing in the event's features
    assert (first["days_since_last_purchase"] == as_of_day["days_since_last_purchase"]).all()
    assert (first["frequency"] == as_of_day["frequency"]).all()
    assert first["y"].sum() > 0
    # seen up to a day: a later purchase is not yet an outcome, and that event is not matured
    early = event_outcomes(events, tx, 30, observation_end=DAYS[0] + pd.Timedelta(days=10))
    full = event_outcomes(events, tx, 30, observation_end=end)
    assert (early["purchased"] <= full["purchased"]).all() and early["purchased"].sum() < full["purchased"].sum()
    assert not early["observed"].any() and full["observed"].all()


def test_matured_counts_and_the_prior_until_enough_outcomes():
    events, log, trules = experiment(300)
    day = DAYS[1] + pd.Timedelta(days=30)                        # two days' windows have ended
    sent, held = matured_counts(events, trules, day)["winback_due"]
    assert sent + held == 600 and sent > 200 and held > 200
    none = rankings_for(rules(min_treated=1000), events, day, load=lambda rule: pytest.fail("loaded"))
    assert none["winback_due"].predict is None and "of 1,000 sent" in none["winback_due"].note
    missing = rankings_for(trules, events, day, load=lambda rule: None)
    assert missing["winback_due"].ranking == "value_at_risk" and "no uplift model" in missing["winback_due"].note


def test_learn_registers_a_model_that_beats_both_and_run_uses_it(tmp_path):
    events, log, trules = experiment(900)
    end = DAYS[-1] + pd.Timedelta(days=30)
    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    tx = TransactionLog.from_frame(log, COLUMNS, threads=1)
    register = functools.partial(register_uplift, tracking_uri=store)
    [result] = learn(events, tx, trules, features_by_day(log), end, register, n_boot=100)
    assert result.beats, result.comparison
    assert result.alias == "winback_due" and result.version == "1"
    rows = result.comparison.set_index("ranking")
    assert rows.loc["uplift_model", "qini_low"] > 0
    client = MlflowClient(store)
    assert str(client.get_model_version_by_alias(UPLIFT_MODEL, "winback_due").version) == "1"
    model, name = registered_model("winback_due", store)
    assert name == f"{UPLIFT_MODEL}/1"
    chosen = rankings_for(trules, events, end, lambda rule: registered_model(rule, store))["winback_due"]
    assert chosen.ranking == "uplift_model" and chosen.model == name
    frame = build_features(log, "2025-03-31")
    assert np.allclose(chosen.predict(frame), model.predict_frame(frame))

    # no true effect: registered, but only as the challenger; the alias stays
    null_events, null_log, _ = experiment(900, effect=False, seed=1)
    null_tx = TransactionLog.from_frame(null_log, COLUMNS, threads=1)
    [null] = learn(null_events, null_tx, trules, features_by_day(null_log), end, register, n_boot=100)
    assert not null.beats and null.alias == "winback_due-challenger"
    assert "no uplift found" in null.verdict or "does not beat" in null.verdict
    assert str(client.get_model_version_by_alias(UPLIFT_MODEL, "winback_due").version) == "1"
