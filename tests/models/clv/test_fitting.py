"""How the models are fit and predicted at scale: our likelihood maximiser against lifetimes,
the distinct-row collapse, the lean person-period fit and the compiled trees against LightGBM."""

from __future__ import annotations

import importlib.resources

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from lifetimes import BetaGeoFitter, ModifiedBetaGeoFitter
from scipy.optimize import approx_fprime

import models.clv.fitting as fitting
import models.ml.next_purchase as next_purchase
from models.clv.beta_geo import BetaGeoModel, beta_geo_log_likelihood
from models.clv.data import Histories, distinct_rows, history_arrays
from models.clv.modified_beta_geo import ModifiedBetaGeoModel
from models.clv.pareto_nbd import ParetoNBDModel
from models.ml.churn import ChurnModel
from models.ml.forest import Forest, feature_matrix, sample_positions
from models.ml.next_purchase import HazardNextPurchaseModel, design_matrix

WEEK = 7.0


@pytest.fixture(scope="module")
def cdnow_summary() -> pd.DataFrame:
    return pd.read_csv(importlib.resources.files("lifetimes") / "datasets" / "cdnow_customers_summary.csv")


@pytest.fixture(scope="module")
def cdnow_histories(cdnow_summary) -> Histories:
    rows, weights = distinct_rows(dict(zip(("x", "t_x", "T"), history_arrays(cdnow_summary))))
    return Histories(rows["x"], rows["t_x"], rows["T"], weights)


# ---------------------------------------------------------------------- classical fits


@pytest.mark.parametrize("extra_toss", [0, 1])
def test_analytic_gradient_equals_finite_differences(cdnow_histories, extra_toss):
    params = np.array([0.4, 0.3, 0.9, 2.1])
    analytic = beta_geo_log_likelihood(params, cdnow_histories, extra_toss)[1]
    numeric = approx_fprime(params, lambda p: beta_geo_log_likelihood(p, cdnow_histories, extra_toss)[0], 1e-7)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5)


@pytest.mark.parametrize("cls,fitter", [(BetaGeoModel, BetaGeoFitter), (ModifiedBetaGeoModel, ModifiedBetaGeoFitter)])
def test_penalised_fit_equals_lifetimes_with_the_same_penalizer(cls, fitter, cdnow_summary):
    """Same objective (mean log-likelihood, L2 on the parameters on lifetimes' time scale)."""
    ours = cls(penalizer_coef=0.05, time_unit_days=WEEK).fit(cdnow_summary)
    theirs = fitter(penalizer_coef=0.05).fit(*(cdnow_summary[c] for c in ("frequency", "recency", "T")))
    assert ours.params_ == pytest.approx(dict(theirs.params_), rel=1e-5)


@pytest.mark.parametrize("cls", [BetaGeoModel, ModifiedBetaGeoModel, ParetoNBDModel])
def test_warm_start_on_a_sample_reaches_the_same_maximum(cls, cdnow_summary, monkeypatch):
    cold = cls(time_unit_days=WEEK).fit(cdnow_summary)
    monkeypatch.setattr(fitting, "WARM_START_CUSTOMERS", 300)
    warm = cls(time_unit_days=WEEK).fit(cdnow_summary)
    tolerance = 1e-4 if cls is ParetoNBDModel else 1e-6   # forward differences stop at ~1e-5
    assert warm.params_ == pytest.approx(cold.params_, rel=tolerance)


def test_whole_number_collapse_equals_pandas_value_counts():
    rng = np.random.default_rng(3)
    columns = {"x": rng.integers(0, 20, 5000).astype(float), "t_x": rng.integers(0, 50, 5000).astype(float),
               "T": rng.integers(0, 60, 5000).astype(float)}
    rows, weights = distinct_rows(columns)
    counts = pd.DataFrame(columns).value_counts().sort_index()
    np.testing.assert_array_equal(weights, counts.to_numpy())
    for name in columns:
        np.testing.assert_array_equal(rows[name], counts.index.get_level_values(name))
    fractional = {**columns, "T": columns["T"] + 0.5}
    rows, weights = distinct_rows(fractional)          # pandas path, same counts
    assert weights.sum() == 5000 and len(weights) == len(counts)


# ---------------------------------------------------------------------- hazard model


def _hazard_data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 5)), columns=[f"f{i}" for i in range(5)])
    days = rng.exponential(60 * np.exp(X["f1"].to_numpy() / 2))
    censored = days > 90
    return X, np.where(censored, 90, np.ceil(days)), censored


def test_lean_fit_builds_the_trees_of_a_fit_on_the_whole_expanded_matrix():
    """Above LightGBM's 200,000-row bin sample, so the sampled rows must match too."""
    X, days, censored = _hazard_data(80_000)
    model = HazardNextPurchaseModel((7, 30, 60, 90), n_estimators=3, num_threads=1).fit(X, days, censored)
    grid = np.array([7.0, 30, 60, 90])
    starts = np.concatenate([[0.0], grid[:-1]])
    event = ~censored
    event_interval = np.where(event, np.searchsorted(grid, days, side="left"), len(grid))
    at_risk = (starts[None, :] < np.where(event, days, np.inf)[:, None]) & (
        np.arange(4)[None, :] <= event_interval[:, None])
    rows, intervals = np.nonzero(at_risk)
    assert len(rows) > 200_000
    expanded = design_matrix(X.to_numpy()[rows], intervals, grid)
    labels = (intervals == event_interval[rows]).astype(float)
    reference = lgb.train(model._lightgbm_params(), lgb.Dataset(expanded, labels), num_boost_round=3)

    def trees(booster):
        text = booster.model_to_string()
        return text[text.index("Tree=0"):text.index("end of trees")]

    assert trees(model.booster_) == trees(reference)


def test_chunked_prediction_equals_one_call(monkeypatch):
    X, days, censored = _hazard_data(3000)
    model = HazardNextPurchaseModel((7, 30, 60, 90), n_estimators=10, num_threads=1).fit(X, days, censored)
    whole = model.predict_cdf(X)
    monkeypatch.setattr(next_purchase, "PREDICT_CHUNK_ROWS", 1000)
    np.testing.assert_array_equal(model.predict_cdf(X), whole)
    values = X.to_numpy()
    rows, intervals = np.repeat(np.arange(len(X)), 4), np.tile(np.arange(4), len(X))
    hazard = model.booster_.predict(design_matrix(values[rows], intervals, np.array([7.0, 30, 60, 90])))
    np.testing.assert_allclose(whole, 1 - np.cumprod(1 - hazard.reshape(-1, 4), axis=1), rtol=0, atol=1e-15)


def test_a_capped_hazard_fit_is_the_fit_on_the_sampled_customers():
    X, days, censored = _hazard_data(3000)
    capped = HazardNextPurchaseModel((7, 30, 60, 90), n_estimators=3, num_threads=1, max_customers=1000,
                                     random_state=5).fit(X, days, censored)
    kept = sample_positions(3000, 1000, 5)
    alone = HazardNextPurchaseModel((7, 30, 60, 90), n_estimators=3, num_threads=1, max_customers=None).fit(
        X.iloc[kept], days[kept], censored[kept])
    whole = HazardNextPurchaseModel((7, 30, 60, 90), n_estimators=3, num_threads=1, max_customers=None).fit(
        X, days, censored)
    assert _trees(capped) == _trees(alone)
    assert _trees(capped) != _trees(whole)


def _trees(model) -> str:
    text = model.booster_.model_to_string()
    return text[text.index("Tree=0"):text.index("end of trees")]


def test_sample_positions_are_a_sorted_seeded_draw_without_replacement():
    assert sample_positions(10, None, 0) is None and sample_positions(10, 10, 0) is None
    drawn = sample_positions(1000, 100, 3)
    assert len(np.unique(drawn)) == 100 and (np.diff(drawn) > 0).all() and drawn.max() < 1000
    np.testing.assert_array_equal(drawn, sample_positions(1000, 100, 3))
    assert not np.array_equal(drawn, sample_positions(1000, 100, 4))


def _churn_data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"days_since_last_purchase": rng.exponential(50, n), "p_alive": rng.random(n),
                      "noise": rng.normal(size=n)})
    churned = (X["days_since_last_purchase"].to_numpy() / 100 - X["p_alive"].to_numpy()
               + rng.normal(size=n) * 0.3 > 0)
    return X, churned


def test_a_capped_churn_fit_is_the_fit_on_a_subset_of_the_same_bins():
    X, churned = _churn_data(4000)
    capped = ChurnModel(n_estimators=5, num_threads=1, max_rows=1000, random_state=2).fit(X, churned, X, churned)
    full = ChurnModel(n_estimators=5, num_threads=1, max_rows=None, random_state=2)
    data = full.dataset(X, churned).construct()
    alone = full.fit(data.subset(sample_positions(4000, 1000, 2)), churned, X, churned)
    assert _trees(capped) == _trees(alone)
    assert _trees(capped) != _trees(ChurnModel(n_estimators=5, num_threads=1, max_rows=None,
                                               random_state=2).fit(X, churned, X, churned))


def test_a_churn_fit_on_its_dataset_equals_one_on_the_frame():
    X, churned = _churn_data(3000)
    model = ChurnModel(n_estimators=5, num_threads=1)
    from_frame = model.fit(X, churned, X, churned)
    frame_trees, frame_scores = _trees(from_frame), from_frame.predict_proba(X)
    from_data = ChurnModel(n_estimators=5, num_threads=1).fit(model.dataset(X, churned), churned, X, churned)
    assert _trees(from_data) == frame_trees
    np.testing.assert_array_equal(from_data.predict_proba(X), frame_scores)


def test_threads_setting_round_trips():
    X, days, censored = _hazard_data(500)
    model = HazardNextPurchaseModel((7, 30, 60, 90), n_estimators=2, num_threads=1).fit(X, days, censored)
    assert HazardNextPurchaseModel.from_dict(model.to_dict()).num_threads == 1


# ---------------------------------------------------------------------- compiled trees


def test_compiled_trees_predict_what_lightgbm_predicts():
    pytest.importorskip("lleaves")
    X, days, censored = _hazard_data(3000)
    model = HazardNextPurchaseModel((7, 30, 60, 90), n_estimators=20, num_threads=1).fit(X, days, censored)
    matrix = design_matrix(X.to_numpy(), np.zeros(len(X), dtype=int), np.array([7.0, 30, 60, 90]))
    forest = Forest(model.booster_, num_threads=2)
    assert forest.compile()
    np.testing.assert_allclose(forest.predict(matrix), model.booster_.predict(matrix), rtol=0, atol=1e-12)


def test_feature_matrix_equals_pandas_to_numpy():
    frame = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, np.nan, 2.0], "c": ["x", "y", "z"], "d": [True, False, True]})
    np.testing.assert_array_equal(feature_matrix(frame, ["d", "b", "a"]),
                                  frame[["d", "b", "a"]].to_numpy(dtype=np.float64))

