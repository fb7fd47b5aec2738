"""Classical buy-till-you-die models against published CDNOW results, lifetimes and simulation.

Data: the CDNOW 1/10 sample summaries shipped with ``lifetimes`` (2,357 customers, weeks
1-39), read with importlib.resources (``lifetimes.datasets`` needs pkg_resources).
"""

from __future__ import annotations

import importlib.resources
import json

import numpy as np
import pandas as pd
import pytest
from lifetimes import BetaGeoFitter, GammaGammaFitter, ModifiedBetaGeoFitter, ParetoNBDFitter
from sklearn.exceptions import NotFittedError

from models.clv import (
    BetaGeoModel,
    GammaGammaModel,
    ModifiedBetaGeoModel,
    ParetoNBDModel,
    load_model,
)
from models.clv.base import PurchaseModel
from models.clv.gamma_gamma import DAYS_PER_MONTH

WEEK = 7.0
PURCHASE_MODELS = (BetaGeoModel, ModifiedBetaGeoModel, ParetoNBDModel)
LIFETIMES_FITTERS = {
    BetaGeoModel: BetaGeoFitter,
    ModifiedBetaGeoModel: ModifiedBetaGeoFitter,
    ParetoNBDModel: ParetoNBDFitter,
}
PAPER_CUSTOMER = {"frequency": 2, "recency": 30.43, "T": 38.86}  # FHL (2005), section 5


def _dataset(name: str) -> pd.DataFrame:
    return pd.read_csv(importlib.resources.files("lifetimes") / "datasets" / name)


@pytest.fixture(scope="module")
def cdnow_summary() -> pd.DataFrame:
    return _dataset("cdnow_customers_summary.csv")


@pytest.fixture(scope="module")
def cdnow_spend() -> pd.DataFrame:
    """All 2,357 customers with frequency, recency, T (weeks) and monetary_value (mean repeat spend)."""
    columns = {"x": "frequency", "t_x": "recency", "zbar": "monetary_value"}
    return _dataset("cdnow_customers_summary_with_transactions.csv").rename(columns=columns)


@pytest.fixture(scope="module")
def fitted(cdnow_summary: pd.DataFrame, cdnow_spend: pd.DataFrame) -> dict[type, object]:
    models = {cls: cls(time_unit_days=WEEK).fit(cdnow_summary) for cls in PURCHASE_MODELS}
    models[GammaGammaModel] = GammaGammaModel().fit(cdnow_spend)
    return models


def _one(**history: float) -> pd.DataFrame:
    return pd.DataFrame({name: [value] for name, value in history.items()})


def _lifetimes_twin(model: PurchaseModel):
    """A lifetimes fitter carrying our parameters, to use its prediction formulas as oracle."""
    fitter = LIFETIMES_FITTERS[type(model)]()
    fitter.params_ = pd.Series(model.params_)
    fitter.predict = fitter.conditional_expected_number_of_purchases_up_to_time
    return fitter


# --------------------------------------------------------------------------- published values


def test_bg_nbd_reproduces_fader_hardie_lee_2005_cdnow_estimates(fitted):
    model = fitted[BetaGeoModel]
    expected = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    assert model.params_ == pytest.approx(expected, abs=1e-3)
    assert model.log_likelihood_ == pytest.approx(-9582.4, abs=0.1)
    assert model.n_customers_ == 2357


def test_pareto_nbd_reproduces_fader_hardie_lee_2005_cdnow_estimates(fitted):
    model = fitted[ParetoNBDModel]
    expected = {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}
    assert model.params_ == pytest.approx(expected, abs=1e-2)
    assert model.log_likelihood_ == pytest.approx(-9595.0, abs=0.1)


def test_mbg_nbd_reproduces_batislam_2007_cdnow_estimates_as_in_btydplus(fitted):
    expected = {"r": 0.525, "alpha": 6.183, "a": 0.891, "b": 1.614}
    assert fitted[ModifiedBetaGeoModel].params_ == pytest.approx(expected, abs=1e-3)


def test_gamma_gamma_reproduces_fader_hardie_2013_on_946_repeat_buyers(fitted, cdnow_spend):
    # The published p, q, gamma are fit on the 946 customers with x > 0 (mean zbar $35.08):
    # exactly the rows of cdnow_customers_summary_with_transactions.csv the model keeps by
    # itself (frequency > 0); the 1,411 others have zbar = 0 and no spend information.
    repeat = cdnow_spend[cdnow_spend["frequency"] > 0]
    assert len(repeat) == 946
    assert repeat["monetary_value"].mean() == pytest.approx(35.08, abs=0.005)
    model = fitted[GammaGammaModel]
    assert model.params_ == pytest.approx({"p": 6.25, "q": 3.74, "gamma": 15.44}, abs=1e-2)
    assert model.n_customers_ == 946


def test_bg_nbd_expected_purchases_match_fader_hardie_lee_2005_point_checks(fitted):
    model = fitted[BetaGeoModel]
    # Published with the paper's own estimates; ours differ in the 4th digit (1.85797).
    assert model.expected_purchases_unconditional(78 * WEEK) == pytest.approx(1.8576, abs=1e-3)
    conditional = model.predict_expected_purchases(_one(**PAPER_CUSTOMER), 39 * WEEK)
    assert conditional[0] == pytest.approx(1.226, abs=1e-3)


# --------------------------------------------------------------------------- lifetimes as oracle


@pytest.mark.parametrize("cls", PURCHASE_MODELS)
def test_distinct_row_weighted_fit_equals_lifetimes_fit_on_every_row(cls, cdnow_summary, fitted):
    options = {"initial_params": np.ones(4)} if cls is ParetoNBDModel else {}
    columns = (cdnow_summary[name] for name in ("frequency", "recency", "T"))
    fitter = LIFETIMES_FITTERS[cls]().fit(*columns, **options)
    tolerance = 1e-3 if cls is ParetoNBDModel else 1e-6  # Nelder-Mead stops less precisely
    assert fitted[cls].params_ == pytest.approx(dict(fitter.params_), rel=tolerance)


def test_gamma_gamma_weighted_fit_equals_lifetimes_fit_on_every_repeat_buyer(cdnow_spend, fitted):
    # lifetimes stops at tol=1e-7, a little short of the maximum: equal to 1e-4, and our
    # weighted fit's objective (lifetimes' own, on every row) at least as good as its fit's
    repeat = cdnow_spend[cdnow_spend["frequency"] > 0]
    x, m = (repeat[c].to_numpy(float) for c in ("frequency", "monetary_value"))
    fitter = GammaGammaFitter().fit(x, m, q_constraint=True)
    expected = {"p": fitter.params_["p"], "q": fitter.params_["q"], "gamma": fitter.params_["v"]}
    ours = fitted[GammaGammaModel].params_
    assert ours == pytest.approx(expected, rel=1e-4)
    objective = lambda p: GammaGammaFitter._negative_log_likelihood(
        np.log([p["p"], p["q"], p["gamma"]]), x, m, np.ones_like(x), 0.0)
    assert objective(ours) <= objective(expected) + 1e-14


@pytest.mark.parametrize("cls", PURCHASE_MODELS)
def test_predictions_equal_lifetimes_formulas(cls, cdnow_summary, fitted):
    model, twin = fitted[cls], _lifetimes_twin(fitted[cls])
    x, t_x, T = (cdnow_summary[name].to_numpy() for name in ("frequency", "recency", "T"))
    np.testing.assert_allclose(
        model.predict_p_alive(cdnow_summary), twin.conditional_probability_alive(x, t_x, T), rtol=1e-10
    )
    np.testing.assert_allclose(
        model.predict_expected_purchases(cdnow_summary, 39 * WEEK),
        twin.conditional_expected_number_of_purchases_up_to_time(39, x, t_x, T),
        rtol=1e-9,
    )
    assert model.expected_purchases_unconditional(78 * WEEK) == pytest.approx(
        twin.expected_number_of_purchases_up_to_time(78), rel=1e-10
    )


def test_pareto_nbd_prob_purchase_within_equals_lifetimes_conditional_pmf_at_zero(fitted):
    model, twin = fitted[ParetoNBDModel], _lifetimes_twin(fitted[ParetoNBDModel])
    histories = pd.DataFrame(
        {"frequency": [0, 1, 2, 7], "recency": [0.0, 5.0, 30.43, 35.0], "T": [30.0, 38.0, 38.86, 36.0]}
    )
    expected = [
        1 - twin.conditional_probability_of_n_purchases_up_to_time(0, 13, *row)
        for row in histories.itertuples(index=False)
    ]
    np.testing.assert_allclose(model.predict_prob_purchase_within(histories, 13 * WEEK), expected, rtol=1e-8)


def test_clv_equals_lifetimes_customer_lifetime_value_with_its_conventions(cdnow_spend, fitted):
    # lifetimes: a month is 4.345 units of a weekly summary, discount_rate is monthly.
    # Ours with time_unit_days = 30.4375 / 4.345 and the equivalent annual rate is the same sum.
    description = fitted[BetaGeoModel].to_dict()
    description["hyperparameters"]["time_unit_days"] = DAYS_PER_MONTH / 4.345
    purchases = BetaGeoModel.from_dict(description)
    spend = fitted[GammaGammaModel]
    ours = spend.predict_clv(purchases, cdnow_spend, months=12, annual_discount_rate=1.01**12 - 1)
    gamma_gamma = GammaGammaFitter()
    gamma_gamma.params_ = pd.Series(
        {"p": spend.params_["p"], "q": spend.params_["q"], "v": spend.params_["gamma"]}
    )
    columns = [cdnow_spend[name] for name in ("frequency", "recency", "T", "monetary_value")]
    theirs = gamma_gamma.customer_lifetime_value(
        _lifetimes_twin(purchases), *columns, time=12, discount_rate=0.01, freq="W"
    )
    np.testing.assert_allclose(ours, theirs.to_numpy(), rtol=1e-9)


# --------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("cls", (BetaGeoModel, ModifiedBetaGeoModel))
def test_closed_form_prob_purchase_within_equals_likelihood_ratio(cls, cdnow_summary, fitted):
    model = fitted[cls]
    x, t_x, T = (cdnow_summary[name].to_numpy(dtype=float) for name in ("frequency", "recency", "T"))
    closed_form = model.predict_prob_purchase_within(cdnow_summary, 10 * WEEK)
    ratio = PurchaseModel._prob_purchase_within(model, x, t_x, T, 10.0)
    np.testing.assert_allclose(closed_form, ratio, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("cls", PURCHASE_MODELS)
def test_prob_purchase_within_grows_with_the_horizon_and_stays_a_probability(cls, cdnow_summary, fitted):
    model = fitted[cls]
    horizons = [0, 1, 7, 30, 90, 365, 3650]
    probabilities = np.column_stack([model.predict_prob_purchase_within(cdnow_summary, d) for d in horizons])
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    assert np.all(probabilities[:, 0] == 0)
    assert np.all(np.diff(probabilities, axis=1) >= -1e-12)
    assert np.all(np.diff(probabilities[:, 1:], axis=1).sum(axis=1) > 0)


@pytest.mark.parametrize("cls", PURCHASE_MODELS)
@pytest.mark.parametrize("T", [0.0, 38.0])
def test_one_purchase_customer_gets_finite_predictions(cls, T, fitted):
    model = fitted[cls]
    customers = pd.DataFrame({"frequency": [0, 500], "recency": [0.0, T], "T": [T, T]})
    p_alive = model.predict_p_alive(customers)
    within = model.predict_prob_purchase_within(customers, 30)
    expected = model.predict_expected_purchases(customers, 30)
    assert np.all(np.isfinite(expected) & (expected >= 0))
    for probabilities in (p_alive, within):
        assert np.all(np.isfinite(probabilities) & (probabilities >= 0) & (probabilities <= 1))
    customers["monetary_value"] = [0.0, 20.0]
    assert np.all(np.isfinite(fitted[GammaGammaModel].predict_clv(model, customers)))


def test_expected_order_value_without_repeat_purchase_is_the_population_mean(fitted):
    model = fitted[GammaGammaModel]
    p, q, gamma = model.params_["p"], model.params_["q"], model.params_["gamma"]
    value = model.predict_expected_order_value(_one(frequency=0, monetary_value=0.0))
    assert value[0] == pytest.approx(p * gamma / (q - 1))
    shrunk = model.predict_expected_order_value(_one(frequency=3, monetary_value=100.0))[0]
    assert p * gamma / (q - 1) < shrunk < 100.0


def test_undiscounted_clv_is_a_year_of_expected_purchases_times_order_value(cdnow_spend, fitted):
    purchases, spend = fitted[ParetoNBDModel], fitted[GammaGammaModel]
    clv = spend.predict_clv(purchases, cdnow_spend, months=12, annual_discount_rate=0.0)
    year = purchases.predict_expected_purchases(cdnow_spend, 365.25)
    np.testing.assert_allclose(clv, year * spend.predict_expected_order_value(cdnow_spend), rtol=1e-10)
    discounted = spend.predict_clv(purchases, cdnow_spend)
    assert np.all(discounted <= clv) and np.all(discounted >= clv / 1.1)


@pytest.mark.parametrize("cls", [*PURCHASE_MODELS, GammaGammaModel])
def test_save_and_load_round_trip_predicts_identically(cls, cdnow_spend, fitted, tmp_path):
    model = fitted[cls]
    path = model.save(tmp_path / "model.json")
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]
    assert json.loads(path.read_text())["model"] == cls.__name__
    for loaded in (cls.load(path), load_model(path)):
        assert type(loaded) is cls and loaded.get_params() == model.get_params()
        assert loaded.params_ == model.params_ and loaded.n_customers_ == model.n_customers_
        if cls is GammaGammaModel:
            same = [m.predict_clv(fitted[BetaGeoModel], cdnow_spend) for m in (model, loaded)]
        else:
            same = [m.predict_prob_purchase_within(cdnow_spend, 30) for m in (model, loaded)]
        np.testing.assert_array_equal(*same)


def test_loading_another_models_file_is_refused(fitted, tmp_path):
    path = fitted[BetaGeoModel].save(tmp_path / "bg.json")
    with pytest.raises(ValueError, match="BetaGeoModel"):
        ParetoNBDModel.load(path)


@pytest.mark.parametrize("cls", PURCHASE_MODELS)
def test_predicting_before_fit_raises_not_fitted(cls, cdnow_summary):
    model = cls()
    for predict in (
        lambda: model.predict_p_alive(cdnow_summary),
        lambda: model.predict_expected_purchases(cdnow_summary, 30),
        lambda: model.predict_prob_purchase_within(cdnow_summary, 30),
        lambda: model.expected_purchases_unconditional(30),
        lambda: model.to_dict(),
    ):
        with pytest.raises(NotFittedError):
            predict()


def test_gamma_gamma_before_fit_raises_not_fitted(cdnow_spend, fitted):
    with pytest.raises(NotFittedError):
        GammaGammaModel().predict_expected_order_value(cdnow_spend)
    with pytest.raises(NotFittedError):
        GammaGammaModel().predict_clv(fitted[BetaGeoModel], cdnow_spend)
    with pytest.raises(NotFittedError):
        fitted[GammaGammaModel].predict_clv(BetaGeoModel(), cdnow_spend)


@pytest.mark.parametrize("missing", ["frequency", "recency", "T"])
def test_missing_column_error_names_the_column(missing, cdnow_summary, fitted):
    with pytest.raises(ValueError, match=f"missing column.*'{missing}'"):
        BetaGeoModel().fit(cdnow_summary.drop(columns=missing))
    with pytest.raises(ValueError, match=f"missing column.*'{missing}'"):
        fitted[ParetoNBDModel].predict_p_alive(cdnow_summary.drop(columns=missing))


def test_gamma_gamma_missing_monetary_value_is_named(cdnow_summary):
    with pytest.raises(ValueError, match="'monetary_value'"):
        GammaGammaModel().fit(cdnow_summary)


def test_impossible_history_error_names_column_and_row(fitted):
    customers = pd.DataFrame(
        {"frequency": [1, 2], "recency": [3.0, 9.0], "T": [5.0, 8.0]}, index=["c1", "c2"]
    )
    with pytest.raises(ValueError, match=r"'recency' must be <= T; 1 row\(s\) are not \(first at row 'c2'\)"):
        fitted[BetaGeoModel].predict_p_alive(customers)


def test_fit_is_deterministic_and_leaves_input_untouched(cdnow_summary):
    before = cdnow_summary.copy()
    first, second = (ParetoNBDModel(time_unit_days=WEEK).fit(cdnow_summary) for _ in range(2))
    assert first.params_ == second.params_
    pd.testing.assert_frame_equal(cdnow_summary, before)


# --------------------------------------------------------------------------- Monte Carlo


def _draw_rates(model: PurchaseModel, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Purchase rate lambda and dropout probability p (BG, MBG) or death rate mu (Pareto)."""
    params = model.params_
    rate = rng.gamma(params["r"], 1 / params["alpha"], n)
    if isinstance(model, ParetoNBDModel):
        return rate, rng.gamma(params["s"], 1 / params["beta"], n)
    return rate, np.clip(rng.beta(params["a"], params["b"], n), 1e-12, 1.0)


def _future_purchases(model, rate, churn, alive, t, rng) -> np.ndarray:
    """Purchases in (T, T + t] of customers alive at T, simulated from the process itself."""
    if isinstance(model, ParetoNBDModel):
        remaining_life = rng.exponential(1 / churn)
        return np.where(alive, rng.poisson(rate * np.minimum(remaining_life, t)), 0)
    # BG and MBG: Poisson purchases, each followed by a dropout toss with probability p.
    purchases_before_dropout = rng.geometric(churn)
    return np.where(alive, np.minimum(rng.poisson(rate * t), purchases_before_dropout), 0)


def _mean_and_standard_error(values: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    mean = float(np.sum(weights * values) / np.sum(weights))
    return mean, float(np.sqrt(np.sum(weights**2 * (values - mean) ** 2)) / np.sum(weights))


def _assert_close_to_simulation(exact: float, values: np.ndarray, weights: np.ndarray) -> None:
    mean, error = _mean_and_standard_error(values.astype(float), weights)
    assert abs(exact - mean) <= 4 * error + 1e-4, (exact, mean, error)


@pytest.mark.parametrize("cls", PURCHASE_MODELS)
@pytest.mark.parametrize("T", [0.0, 20.0])
def test_simulated_customers_without_repeat_purchase_match_predictions(cls, T, fitted):
    """Simulate customers from first purchase to T + t; keep those with no repeat purchase by T."""
    model, t, n = fitted[cls], 13.0, 1_000_000
    rng = np.random.default_rng(20050401)
    rate, churn = _draw_rates(model, n, rng)
    if cls is ParetoNBDModel:
        death = rng.exponential(1 / churn)
        silent = rng.poisson(rate * np.minimum(death, T)) == 0
        alive = death > T
        future = np.where(alive, rng.poisson(rate * np.clip(np.minimum(death, T + t) - T, 0, None)), 0)
    else:
        # BG: no dropout before a repeat purchase; MBG: a dropout toss right after the first.
        alive = rng.random(n) >= churn if cls is ModifiedBetaGeoModel else np.ones(n, dtype=bool)
        silent = ~alive | (rng.poisson(rate * T) == 0)
        future = _future_purchases(model, rate, churn, alive, t, rng)
    history = _one(frequency=0, recency=0.0, T=T)
    kept = np.ones(int(silent.sum()))
    _assert_close_to_simulation(model.predict_p_alive(history)[0], alive[silent], kept)
    within = model.predict_prob_purchase_within(history, t * WEEK)[0]
    _assert_close_to_simulation(within, future[silent] > 0, kept)
    _assert_close_to_simulation(model.predict_expected_purchases(history, t * WEEK)[0], future[silent], kept)


def _log_likelihood_parts(model, rate, churn, x, t_x, T) -> tuple[np.ndarray, np.ndarray]:
    """Individual-level log-likelihood of (x, t_x, T) given the rates: alive part, dead part."""
    purchases = x * np.log(rate)
    if isinstance(model, ParetoNBDModel):
        total = rate + churn
        alive = purchases - total * T
        dead = purchases + np.log(churn / total) + np.log(np.exp(-total * t_x) - np.exp(-total * T))
        return alive, dead
    survived = x + 1 if isinstance(model, ModifiedBetaGeoModel) else x
    alive = purchases - rate * T + survived * np.log1p(-churn)
    dead = purchases - rate * t_x + np.log(churn) + (survived - 1) * np.log1p(-churn)
    return alive, dead


@pytest.mark.parametrize("cls", PURCHASE_MODELS)
def test_simulated_posterior_of_the_paper_customer_matches_predictions(cls, fitted):
    """Importance-sample (rates, alive) given x=2, t_x=30.43, T=38.86, then simulate 39 weeks."""
    model, t, n = fitted[cls], 39.0, 1_000_000
    rng = np.random.default_rng(20050402)
    rate, churn = _draw_rates(model, n, rng)
    log_alive, log_dead = _log_likelihood_parts(model, rate, churn, 2, 30.43, 38.86)
    scale = np.maximum(log_alive, log_dead).max()
    weights = np.exp(log_alive - scale) + np.exp(log_dead - scale)
    alive = rng.random(n) < np.exp(log_alive - scale) / weights
    future = _future_purchases(model, rate, churn, alive, t, rng)
    history = _one(**PAPER_CUSTOMER)
    _assert_close_to_simulation(model.predict_p_alive(history)[0], alive, weights)
    _assert_close_to_simulation(model.predict_prob_purchase_within(history, t * WEEK)[0], future > 0, weights)
    _assert_close_to_simulation(model.predict_expected_purchases(history, t * WEEK)[0], future, weights)


def test_gamma_gamma_warm_started_fit_reaches_the_cold_fits_maximum():
    from models.clv.fitting import WARM_START_CUSTOMERS
    from models.clv.gamma_gamma import _maximize_spend, fit_spend

    rng = np.random.default_rng(7)
    n = WARM_START_CUSTOMERS + 50_000                     # above the warm-start threshold
    x = rng.integers(1, 20, n).astype(float)
    nu = rng.gamma(3.7, 1 / 15.4, n)                      # Gamma-Gamma data: q=3.7, gamma=15.4, and the
    m = rng.gamma(6.0 * x, 1 / (nu * x))                  # mean of x Gamma(p=6, nu) spends
    weights = np.ones(n)
    warm = fit_spend(x, m, weights)
    cold = _maximize_spend(x, m, weights, 0.0, np.full(3, 0.1))
    assert warm == pytest.approx(cold, rel=1e-6)
    assert warm == pytest.approx({"p": 6.0, "q": 3.7, "v": 15.4}, rel=0.05)
    fitter = GammaGammaFitter().fit(x, m, q_constraint=True)
    objective = lambda p: GammaGammaFitter._negative_log_likelihood(
        np.log([p["p"], p["q"], p["v"]]), x, m, weights, 0.0)
    assert objective(warm) <= objective(dict(fitter.params_)) + 1e-14
