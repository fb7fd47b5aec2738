"""Never worse than a formula: the served score is chosen among candidates by cross-validation.

Unit behaviour of :mod:`models.ml.selection` on known scores, then the scorer on real CDNOW data:
every candidate is recorded, the served one is never below the best formula in the
cross-validation, a useless learned model is never served, and a forced classical choice scores
through every path (save/load, ``score``) the same.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from models.ml.churn import ChurnModel
from models.ml.selection import ChurnStack, ScoreCalibrator, choose_churn, classical_churn_scores, signed_score
from models.scorer import WinbackScorer

HORIZON = 60          # as in conftest.fitted_scorer
AS_OF = "1998-01-31"


def _outcomes(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A risk score and churn drawn from it: P(churn) = sigmoid(2 * risk)."""
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    return risk, rng.random(n) < 1 / (1 + np.exp(-2 * risk))


def test_calibration_keeps_the_ranking_and_matches_the_rate():
    risk, churned = _outcomes()
    coarse = np.round(risk, 1)                      # ties the isotonic steps will share
    calibrator = ScoreCalibrator().fit(coarse, churned)
    p = calibrator.predict(risk)
    assert (np.diff(p[np.argsort(risk)]) > 0).all()       # strictly increasing: no ties added
    assert roc_auc_score(churned, p) == pytest.approx(roc_auc_score(churned, risk), abs=1e-12)
    assert p.mean() == pytest.approx(churned.mean(), abs=0.01) and p.min() >= 0 and p.max() <= 1
    again = ScoreCalibrator.from_dict(calibrator.to_dict())
    np.testing.assert_array_equal(again.predict(risk), p)


def test_the_stack_learns_the_direction_and_round_trips():
    risk, churned = _outcomes()
    inputs = np.column_stack([risk, np.random.default_rng(1).normal(size=len(risk))])
    stack = ChurnStack().fit(inputs, churned)
    assert stack.coef_[0] > 0 and abs(stack.coef_[1]) < 0.1 * stack.coef_[0]
    np.testing.assert_allclose(ChurnStack.from_dict(stack.to_dict()).predict_proba(inputs),
                               stack.predict_proba(inputs))


def test_a_useless_learned_model_is_never_served():
    risk, churned = _outcomes()
    noise = np.random.default_rng(2).normal(size=len(risk))
    chosen = choose_churn(churned, {"lightgbm": noise, "stack": noise + 0.01 * risk, "recency_gap": risk},
                          seed=0, validation={})
    assert chosen.served == "recency_gap" and chosen.best_learned == "stack"
    assert chosen.high < 0 and "does not beat" in chosen.reason


def test_a_learned_model_that_beats_the_formula_is_served():
    risk, churned = _outcomes(8000)
    partial = risk + np.random.default_rng(3).normal(scale=1.5, size=len(risk))   # a blurred formula
    chosen = choose_churn(churned, {"lightgbm": risk, "stack": risk * 0.5, "recency_gap": partial},
                          seed=0, validation={})
    assert chosen.served == "lightgbm" and chosen.low > 0 and "beats" in chosen.reason


def test_a_tie_serves_the_formula():
    risk, churned = _outcomes()
    chosen = choose_churn(churned, {"lightgbm": risk + 1e-9, "stack": risk, "recency_gap": risk},
                          seed=0, validation={})
    assert chosen.served == "recency_gap"


def test_the_candidate_names_match_the_backtest_baselines():
    scores = classical_churn_scores("mbgnbd", ("pareto_nbd",))
    assert scores["pareto_nbd_expected_purchases"] == ("pareto_nbd_expected_purchases_horizon", -1)
    assert scores["mbgnbd_p_alive"] == ("p_alive", -1) and scores["recency_gap"] == ("days_since_last_purchase", 1)
    frame = pd.DataFrame({"p_alive": [0.9, np.nan]})
    np.testing.assert_array_equal(signed_score(frame, "p_alive", -1), [-0.9, -0.0])


def test_the_scorer_records_every_candidate_and_serves_no_worse_than_a_formula(fitted_scorer):
    churn, nxt = fitted_scorer.selection_["churn"], fitted_scorer.selection_["next_purchase"]
    assert {"lightgbm", "stack", "pareto_nbd_expected_purchases", "recency_gap"} <= set(churn["figures"])
    assert set(nxt["figures"]) == {"hazard", "mbgnbd", "pareto_nbd"}
    for chosen in (churn, nxt):
        served, best = chosen["figures"][chosen["served"]], chosen["figures"][chosen["best_classical"]]
        assert served >= best                       # never worse than the best formula, in CV
        assert (chosen["served"] == chosen["best_learned"]) == (chosen["low"] > 0)
    assert fitted_scorer.churn_score_ == churn["served"]
    assert fitted_scorer.next_purchase_method_ == nxt["served"]


@pytest.fixture(scope="module")
def formula_scorer(fitted_scorer, cdnow_slice):
    """The conftest recipe with the churn score forced to Pareto/NBD's expected purchases and
    the next purchase to Pareto/NBD's F(t), as a refit takes a backtest's choice."""
    from features import labelled_features

    reference = fitted_scorer.reference_
    train = pd.concat([labelled_features(cdnow_slice, c, HORIZON, reference) for c in ("1997-05-31", "1997-06-30")])
    calibration = labelled_features(cdnow_slice, "1997-09-30", HORIZON, reference)
    return WinbackScorer(horizon_days=HORIZON, churn=ChurnModel(n_estimators=80, learning_rate=0.08),
                         hazard_estimators=40, churn_score="pareto_nbd_expected_purchases",
                         next_purchase="pareto_nbd", chosen=fitted_scorer.selection_).fit(train, calibration, reference)


def test_a_served_formula_scores_the_same_through_save_and_load(formula_scorer, cdnow_slice, tmp_path):
    scores = formula_scorer.score(cdnow_slice, AS_OF, reasons=False)
    X = formula_scorer.model_input(formula_scorer.features_for(cdnow_slice, AS_OF)[0])
    raw = -X["pareto_nbd_expected_purchases_horizon"].to_numpy()
    p = scores["churn_probability"].to_numpy()
    assert formula_scorer.churn_calibrator_ is not None and formula_scorer.next_purchase_method_ == "pareto_nbd"
    assert np.corrcoef(np.argsort(np.argsort(p)), np.argsort(np.argsort(raw)))[0, 1] > 0.999999
    assert formula_scorer.selection_ == formula_scorer.chosen           # the record travels with the refit
    loaded = WinbackScorer.load(formula_scorer.save(tmp_path / "s"))
    pd.testing.assert_frame_equal(loaded.score(cdnow_slice, AS_OF, reasons=False), scores)


def test_an_unknown_candidate_is_refused(fitted_scorer):
    with pytest.raises(ValueError, match="churn_score must be"):
        WinbackScorer(churn_score="magic").fit(pd.DataFrame({"origin": [1]}), pd.DataFrame({"origin": [2]}),
                                               fitted_scorer.reference_)
