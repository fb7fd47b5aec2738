"""Learned models earn their place where the data says more, and cost nothing where it does not.

On the seeded synthetic shop (:func:`benchmarks.synthetic.synthetic_shop`: dropout shifted by the
customers' channel and age, engagement that fades before dropout, Erlang-3 gaps between
purchases) the recipe is fit with the customers file and the events log, and judged out of
time against every classical baseline. With the attributes and events shuffled across customers
(the same values, no information) the learned model's edge must disappear and the formula be
served. On CDNOW the same guard is checked by ``test_pipeline``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.synthetic import synthetic_shop
from features import ColumnMap, TransactionLog, build_features, build_labels
from features.attributes import CustomerAttributes
from features.events import EngagementLog
from features.side import SideData
from training.evaluate import evaluate
from training.pipeline import TrainConfig, fit_recipe, plan_origins, scored_for_evaluation

CUSTOMERS = 4000
CUTOFF, HORIZON = "2025-09-30", 90


@pytest.fixture(scope="module")
def shop():
    return synthetic_shop(CUSTOMERS, seed=0)


def _backtest(shop, shuffle: bool):
    """Fit on training origins before the cutoff, score as of it, evaluate on (C, C + H]."""
    transactions, customers, events = shop
    if shuffle:
        rng = np.random.default_rng(0)
        ids = customers["customer_id"].to_numpy()
        customers = customers.assign(**{c: rng.permutation(customers[c].to_numpy())
                                        for c in customers.columns if c != "customer_id"})
        events = events.assign(customer_id=events["customer_id"].map(dict(zip(ids, rng.permutation(ids)))))
    log = TransactionLog.from_frame(transactions, ColumnMap())
    side = SideData(CustomerAttributes.from_frame(customers), EngagementLog.from_frame(events))
    config = TrainConfig(cutoff=CUTOFF, horizon_days=HORIZON)
    cutoff = pd.Timestamp(CUTOFF)
    origins, calibration = plan_origins(cutoff, HORIZON, config.origins, config.origin_step_days,
                                        log.report.first_timestamp.normalize())
    scorer = fit_recipe(log, config, origins, calibration, side=side)
    features = build_features(log, cutoff, reference=scorer.reference_, side=side)
    scored = scored_for_evaluation(scorer, features, cutoff)
    return scorer, evaluate(scored, features, build_labels(log, cutoff, HORIZON), cutoff, HORIZON, n_boot=300,
                            n_boot_cindex=100)


@pytest.fixture(scope="module")
def informative(shop):
    return _backtest(shop, shuffle=False)


@pytest.fixture(scope="module")
def shuffled(shop):
    return _backtest(shop, shuffle=True)


def test_the_shop_is_regular_and_the_scorer_sees_it(informative):
    scorer, evaluation = informative
    assert scorer.regularity_k_ > 1 and "mbgcnbd" in scorer.extra_classical_
    assert evaluation.metrics["mbgcnbd_k"] > 1
    assert {"attr_channel", "attr_age"} <= set(scorer.churn_features_)


def test_with_attributes_and_events_the_learned_model_is_served_and_beats_every_formula(informative):
    scorer, evaluation = informative
    assert scorer.churn_score_ in ("lightgbm", "stack")
    churn = next(c for c in evaluation.comparisons if c.metric == "churn AUC")
    assert churn.difference >= 0.01 and churn.low > 0, churn.line()
    assert scorer.next_purchase_method_ == "hazard"


def test_with_the_attributes_shuffled_the_gain_disappears_and_a_formula_is_served(informative, shuffled):
    scorer, evaluation = shuffled
    assert scorer.churn_score_ not in ("lightgbm", "stack"), scorer.selection_["churn"]["reason"]
    gain = scorer.selection_["churn"]["figures"]["lightgbm"] - scorer.selection_["churn"]["figures"][
        scorer.selection_["churn"]["best_classical"]]
    assert gain < 0.005
    informed = informative[1].metrics["churn_auc"]
    assert evaluation.metrics["churn_auc"] < informed - 0.005
    # never worse than a formula: the served formula is the best baseline or within its interval
    churn = next(c for c in evaluation.comparisons if c.metric == "churn AUC")
    assert churn.difference >= -(churn.high - churn.low)
