"""Uplift learners and their metrics (issue #21): the Qini coefficient by hand and against its
definition (Radcliffe 2007), learners that recover a known heterogeneous effect, JSON round trips."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from crm.uplift import UPLIFT_FEATURES, MetaLearner, TLearner, XLearner, feature_matrix
from crm.uplift_metrics import auuc, compare_rankings, qini_coefficient, qini_curve


def randomised(n: int = 6000, seed: int = 0, effect: bool = True, share: float = 0.5):
    """Customers with a known effect: +0.3 where x > 0, -0.2 below, on a base rate of 0.3."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    noise = rng.normal(size=n)
    t = rng.random(n) < share
    tau = np.where(x > 0, 0.3, -0.2) if effect else np.zeros(n)
    y = (rng.random(n) < 0.3 + t * tau).astype(int)
    X = pd.DataFrame({"days_since_last_purchase": x, "frequency": noise})
    return X, t, y, tau


# -- metrics -------------------------------------------------------------------------------------

def test_qini_curve_by_hand():
    # ranked: (t=1, y=1), (t=0, y=0), (t=1, y=0), (t=0, y=1)
    score = np.array([4.0, 3.0, 2.0, 1.0])
    t, y = np.array([1, 0, 1, 0]), np.array([1, 0, 0, 1])
    curve = qini_curve(score, t, y)
    # Q(k) = Y1(k) - Y0(k) N1(k)/N0(k), per event (N = 4); no held-out event yet at k = 1: 0
    assert np.allclose(curve["qini"], np.array([0, 0, 1 - 0, 1 - 0, 1 - 1 * 2 / 2]) / 4)
    assert curve["share_targeted"].iloc[-1] == 1 and curve["random"].iloc[-1] == curve["qini"].iloc[-1]
    expected = np.mean(np.array([0, 1, 1, 0]) / 4 - np.arange(1, 5) / 4 * 0)
    assert qini_coefficient(score, t, y) == pytest.approx(expected)


def test_the_true_effect_ranks_best_its_reverse_worst_and_a_constant_near_zero():
    X, t, y, tau = randomised()
    best = qini_coefficient(tau, t, y)
    assert best > 0.02
    assert qini_coefficient(-tau, t, y) < -0.02
    constant = [qini_coefficient(np.zeros(len(t)), t, y, seed=s) for s in range(20)]
    assert abs(np.mean(constant)) < 0.003                     # ties shuffled: a random ranking
    assert auuc(tau, t, y) > auuc(-tau, t, y)


def test_compare_rankings_pairs_the_differences_with_the_reference():
    X, t, y, tau = randomised(3000)
    table = compare_rankings({"truth": tau, "noise": X["frequency"].to_numpy()}, t, y, n_boot=100)
    rows = table.set_index("ranking")
    assert np.isnan(rows.loc["truth", "qini_diff"])
    assert rows.loc["noise", "qini_diff_low"] > 0            # the truth beats noise, paired
    assert rows.loc["truth", "qini_low"] < rows.loc["truth", "qini"] < rows.loc["truth", "qini_high"]
    clusters = np.arange(len(t)) // 2 * 2 + t                # pairs of events in one group
    clustered = compare_rankings({"truth": tau}, t, y, n_boot=50, clusters=clusters)
    assert clustered["qini_low"].iloc[0] < clustered["qini"].iloc[0]
    with pytest.raises(ValueError, match="both groups"):
        compare_rankings({"truth": tau}, t, y, n_boot=5, clusters=np.zeros(len(t)))
    with pytest.raises(ValueError, match="both sent and held-out"):
        qini_coefficient(tau, np.ones(len(t)), y)


# -- learners ------------------------------------------------------------------------------------

@pytest.mark.parametrize("learner", [TLearner, XLearner])
def test_learners_recover_the_sign_of_a_heterogeneous_effect(learner):
    X, t, y, tau = randomised(6000)
    model = learner(n_estimators=100).fit(X, t, y)
    test_X, test_t, test_y, test_tau = randomised(4000, seed=1)
    predicted = model.predict(test_X)
    assert np.corrcoef(predicted, test_tau)[0, 1] > 0.6
    assert predicted[test_tau > 0].mean() > 0.15 and predicted[test_tau < 0].mean() < -0.05
    assert qini_coefficient(predicted, test_t, test_y) > 0.8 * qini_coefficient(test_tau, test_t, test_y)


def test_x_learner_handles_a_ten_percent_holdout():
    X, t, y, tau = randomised(8000, share=0.9)
    predicted = XLearner(n_estimators=100).fit(X, t, y).predict(randomised(3000, seed=2)[0])
    truth = randomised(3000, seed=2)[3]
    assert np.corrcoef(predicted, truth)[0, 1] > 0.5


def test_a_learner_is_json_and_reads_the_feature_table():
    X, t, y, _ = randomised(2000)
    model = XLearner(n_estimators=30).fit(feature_matrix(X), t, y)
    assert model.feature_names_ == UPLIFT_FEATURES               # every uplift feature, missing as NaN
    again = MetaLearner.from_json(model.to_json())
    assert type(again) is XLearner and again.propensity_ == pytest.approx(t.mean())
    assert np.allclose(again.predict_frame(X), model.predict_frame(X))
    with pytest.raises(ValueError, match="not an uplift model"):
        MetaLearner.from_dict({"format": 99, "kind": "x_learner"})


def test_learner_errors_name_the_problem():
    X, t, y, _ = randomised(200)
    with pytest.raises(NotFittedError):
        XLearner().predict(X)
    with pytest.raises(ValueError, match="both sent and held-out"):
        XLearner().fit(X, np.ones(len(t)), y)
    with pytest.raises(ValueError, match="y must be 0/1"):
        TLearner().fit(X, t, y * 2.5)
    with pytest.raises(ValueError, match="treatment must be 0/1"):
        TLearner().fit(X, t * 3, y)
