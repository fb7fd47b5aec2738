"""When the next purchase comes: the grid, F(t) interpolation and its inverse, the summaries a
CRM team reads, the classical F(t) and the LightGBM hazard model on data whose hazard is known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from models.clv.published import MODELS, PUBLISHED, cdnow_sample_summary
from models.ml.next_purchase import (
    DEFAULT_GRID_DAYS,
    HAZARD_GRID_DAYS,
    ClassicalNextPurchase,
    HazardNextPurchaseModel,
    conditional_quantile_days,
    grid_for_horizon,
    interpolate_cdf,
    quantile_days,
    restricted_mean_days,
    summarize_distribution,
)

GRID = (7, 30, 60, 90)
RATES = np.array([0.002, 0.01, 0.05, 0.3])          # constant daily hazards, one customer each


def exponential_cdf(rates: np.ndarray, days) -> np.ndarray:
    """F(t) = 1 - exp(-rate t): a constant hazard, the case log-linear interpolation gets exactly."""
    return -np.expm1(-np.outer(rates, np.asarray(days, dtype=float)))


# ---------------------------------------------------------------------- grid_for_horizon


@pytest.mark.parametrize("horizon,expected", [
    (60, (7, 30, 60)), (45, (7, 30, 45)), (90, (7, 30, 60, 90)), (7, (7,)), (5, (5,)),
    (365, HAZARD_GRID_DAYS), (400, (*HAZARD_GRID_DAYS, 400)),
])
def test_grid_is_cut_at_the_horizon_which_ends_it(horizon, expected):
    assert grid_for_horizon(horizon) == expected


def test_grid_for_another_grid():
    assert grid_for_horizon(100, DEFAULT_GRID_DAYS) == (1, 7, 14, 30, 60, 90, 100)
    assert all(isinstance(d, int) for d in grid_for_horizon(np.int64(60)))


# ---------------------------------------------------------------------- interpolate_cdf


def test_interpolation_is_exact_at_grid_points():
    cdf = np.array([[0.1, 0.25, 0.5, 0.6], [0.0, 0.0, 0.3, 0.3], [0.9, 0.99, 1.0, 1.0]])
    for j, day in enumerate(GRID):
        np.testing.assert_allclose(interpolate_cdf(cdf, GRID, day), cdf[:, j], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(interpolate_cdf(cdf, GRID, 0), 0.0)


@pytest.mark.parametrize("day", [0.5, 1, 3.5, 7.25, 12, 29.9, 45, 59, 61, 89.99])
def test_interpolation_keeps_the_hazard_constant_between_grid_points(day):
    """With a constant hazard, F between grid points is 1 - exp(-rate t) exactly; linear
    interpolation of F itself would be off by up to 0.1 here."""
    cdf = exponential_cdf(RATES, GRID)
    np.testing.assert_allclose(interpolate_cdf(cdf, GRID, day), exponential_cdf(RATES, [day])[:, 0], rtol=1e-12)


def test_interpolation_between_two_different_hazards():
    cdf = np.array([[0.2, 0.5, 0.5, 0.5]])            # S: 0.8 at day 7, 0.5 at day 30
    got = interpolate_cdf(cdf, GRID, 18.5)            # half way from 7 to 30: S = sqrt(0.8 * 0.5)
    np.testing.assert_allclose(got, [1 - np.sqrt(0.4)], rtol=1e-12)
    assert got[0] > 0.35                              # F interpolated linearly would give 0.35


def test_interpolation_beyond_the_grid_is_unknown():
    cdf = exponential_cdf(RATES, GRID)
    assert np.isnan(interpolate_cdf(cdf, GRID, 90.001)).all()
    assert np.isnan(interpolate_cdf(cdf, GRID, 365)).all()
    assert not np.isnan(interpolate_cdf(cdf, GRID, 90)).any()


# ---------------------------------------------------------------------- quantile_days


@pytest.mark.parametrize("q", [0.01, 0.1, 0.25, 0.5, 0.75, 0.9])
def test_quantile_is_the_inverse_of_the_interpolated_cdf(q):
    cdf = exponential_cdf(RATES, GRID)
    days = quantile_days(cdf, GRID, q)
    reached = cdf[:, -1] >= q
    assert np.isnan(days[~reached]).all()
    for i in np.flatnonzero(reached):
        assert 0 < days[i] <= GRID[-1]
        np.testing.assert_allclose(interpolate_cdf(cdf[i:i + 1], GRID, days[i]), [q], rtol=1e-9)
    # and for a constant hazard the quantile is known: -log(1 - q) / rate
    np.testing.assert_allclose(days[reached], -np.log1p(-q) / RATES[reached], rtol=1e-9)


def test_quantile_is_the_first_day_f_reaches_it():
    cdf = np.array([[0.3, 0.3, 0.3, 0.6],               # flat after day 7
                    [0.0, 0.5, 0.5, 0.5],               # exactly q at a grid point
                    [0.0, 0.0, 0.0, 0.0],               # never buys
                    [0.6, 0.7, 0.8, 0.9]])              # reached inside the first interval
    days = quantile_days(cdf, GRID, 0.3)
    np.testing.assert_allclose(days[:2], [7.0, 7 + 23 * np.log(0.7) / np.log(0.5)], rtol=1e-12)
    assert np.isnan(days[2])
    np.testing.assert_allclose(days[3], 7 * np.log(0.7) / np.log(0.4), rtol=1e-12)
    np.testing.assert_allclose(quantile_days(cdf[1:2], GRID, 0.5), [30.0])


# ---------------------------------------------------------------------- conditional_quantile_days


def test_conditional_quantile_is_among_those_who_buy_within_the_grid():
    cdf = np.array([[0.1, 0.2, 0.4, 0.4],               # 40 % buy; half of them by day 30
                    [0.0, 0.0, 0.0, 0.0],               # nobody: no date
                    [0.5, 0.9, 0.99, 1.0]])             # everyone: the plain quantile
    np.testing.assert_allclose(conditional_quantile_days(cdf[:1], GRID, 0.5), [30.0], rtol=1e-12)
    np.testing.assert_allclose(conditional_quantile_days(cdf[:1], GRID, 0.25), [7.0], rtol=1e-12)
    assert np.isnan(quantile_days(cdf[:1], GRID, 0.5)).all()      # unconditional: never half
    got = conditional_quantile_days(cdf, GRID, 0.5)
    assert np.isnan(got[1])
    np.testing.assert_allclose(got[2], quantile_days(cdf[2:], GRID, 0.5)[0], rtol=1e-12)


def test_conditional_quantile_of_a_constant_hazard():
    cdf = exponential_cdf(RATES, GRID)
    got = conditional_quantile_days(cdf, GRID, 0.5)
    np.testing.assert_allclose(got, quantile_days(cdf / cdf[:, -1:], GRID, 0.5), rtol=1e-12)
    assert (got <= GRID[-1]).all() and (np.diff(got) < 0).all()    # a higher hazard, sooner


# ---------------------------------------------------------------------- restricted_mean_days


def test_restricted_mean_of_a_constant_hazard():
    """E[min(T, H)] = (1 - exp(-rate H)) / rate; on a daily grid the trapezoid's relative error
    is about rate² / 12: under 0.03 % for rates up to 0.05 a day."""
    grid, rates = tuple(range(1, 366)), RATES[:3]
    got = restricted_mean_days(exponential_cdf(rates, grid), grid)
    np.testing.assert_allclose(got, -np.expm1(-rates * 365) / rates, rtol=3e-4)


def test_restricted_mean_limits():
    cdf = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_allclose(restricted_mean_days(cdf, GRID), [90.0, 3.5, 60 + 15])


# ---------------------------------------------------------------------- summarize_distribution


def test_summary_of_constant_hazards():
    rates = np.array([0.05, 0.005])                     # F(90): 0.989 and 0.362
    cdf = exponential_cdf(rates, GRID)
    got = summarize_distribution(cdf, GRID)
    assert list(got.columns) == ["p_purchase_7d", "p_purchase_30d", "p_purchase_90d", "p_purchase_horizon",
                                 "next_purchase_days", "next_purchase_low_days", "next_purchase_high_days",
                                 "expected_days_to_purchase"]
    for d in (7, 30, 90):
        np.testing.assert_allclose(got[f"p_purchase_{d}d"], exponential_cdf(rates, [d])[:, 0], rtol=1e-12)
    np.testing.assert_array_equal(got["p_purchase_horizon"], cdf[:, -1])
    np.testing.assert_allclose(got["next_purchase_days"], [np.log(2) / 0.05, np.nan], rtol=1e-9)
    np.testing.assert_allclose(got["next_purchase_low_days"], -np.log(0.9) / rates, rtol=1e-9)
    np.testing.assert_allclose(got["next_purchase_high_days"], [-np.log(0.1) / 0.05, np.nan], rtol=1e-9)
    np.testing.assert_allclose(got["expected_days_to_purchase"], restricted_mean_days(cdf, GRID))
    assert got["expected_days_to_purchase"].iloc[0] < got["expected_days_to_purchase"].iloc[1] < 90


def test_summary_interval_width_and_short_grid():
    cdf = exponential_cdf(np.array([0.05]), (7, 30, 60))
    got = summarize_distribution(cdf, (7, 30, 60), interval=0.5)
    np.testing.assert_allclose(got[["next_purchase_low_days", "next_purchase_high_days"]].iloc[0],
                               [-np.log(0.75) / 0.05, -np.log(0.25) / 0.05], rtol=1e-9)
    assert np.isnan(got["p_purchase_90d"].iloc[0])       # beyond the 60-day grid: not extrapolated
    np.testing.assert_allclose(got["p_purchase_horizon"], cdf[:, -1])


# ---------------------------------------------------------------------- ClassicalNextPurchase


def _published(name: str, time_unit_days: float = 7.0, scale: float = 1.0):
    """The model with its published CDNOW parameters (weeks), rate scales in ``scale`` units."""
    model = MODELS[name](time_unit_days=time_unit_days)
    model.params_ = {p: v * (scale if p in ("alpha", "beta") else 1.0) for p, v in PUBLISHED[name].items()}
    return model


@pytest.mark.parametrize("name", ["BG/NBD", "MBG/NBD", "Pareto/NBD"])
def test_classical_cdf_is_the_models_probability_of_a_purchase_within_t(name):
    summary = cdnow_sample_summary()
    model = _published(name)
    cdf = ClassicalNextPurchase(model, DEFAULT_GRID_DAYS).predict_cdf(summary)
    assert cdf.shape == (len(summary), len(DEFAULT_GRID_DAYS))
    direct = np.column_stack([model.predict_prob_purchase_within(summary, d) for d in DEFAULT_GRID_DAYS])
    np.testing.assert_allclose(cdf, direct, rtol=0, atol=1e-12)
    assert (np.diff(cdf, axis=1) >= 0).all() and (cdf >= 0).all()
    assert (cdf[:, -1] <= model.predict_p_alive(summary) + 1e-12).all()   # only the living buy
    assert (cdf[:, -1] > cdf[:, 0]).any()


@pytest.mark.parametrize("name", ["BG/NBD", "MBG/NBD", "Pareto/NBD"])
def test_classical_grid_is_in_days_whatever_the_models_unit(name):
    """The same model in days (rates per day = per week / 7) gives the same F on a day grid."""
    weekly = cdnow_sample_summary()
    daily = weekly.assign(recency=weekly["recency"] * 7, T=weekly["T"] * 7)
    a = ClassicalNextPurchase(_published(name), DEFAULT_GRID_DAYS).predict_cdf(weekly)
    b = ClassicalNextPurchase(_published(name, 1.0, scale=7.0), DEFAULT_GRID_DAYS).predict_cdf(daily)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_classical_cdf_never_decreases_even_if_the_model_wobbles():
    class Wobbly:
        def predict_prob_purchase_within(self, summary, days):
            return np.full(len(summary), {1: 0.2, 7: 0.1, 30: 0.3}[days])

    cdf = ClassicalNextPurchase(Wobbly(), (1, 7, 30)).predict_cdf(pd.DataFrame({"x": [0, 1]}))
    np.testing.assert_array_equal(cdf, [[0.2, 0.2, 0.3]] * 2)


# ---------------------------------------------------------------------- HazardNextPurchaseModel

HAZARDS = (0.05, 0.3)            # per grid interval, for customers with group 0 and group 1


def synthetic_waits(n_per_group: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Customers whose next purchase falls in each interval of GRID with a known hazard.

    The interval is the first success of one Bernoulli(hazard) trial per interval; the day is
    uniform over the interval's whole days (its end included); no success means censored at
    the horizon. Beside ``group`` the features hold pure noise.
    """
    rng = np.random.default_rng(seed)
    group = np.repeat([0, 1], n_per_group)
    hazard = np.asarray(HAZARDS)[group]
    success = rng.random((len(group), len(GRID))) < hazard[:, None]
    bought = success.any(axis=1)
    interval = success.argmax(axis=1)
    starts, ends = np.array([0, *GRID[:-1]]), np.array(GRID)
    days = np.where(bought, rng.integers(starts[interval] + 1, ends[interval] + 1), GRID[-1])
    X = pd.DataFrame({"group": group.astype(float), "noise": rng.normal(size=len(group))})
    return X, days, ~bought


def true_cdf(group: np.ndarray) -> np.ndarray:
    hazard = np.asarray(HAZARDS)[group]
    return 1 - (1 - hazard[:, None]) ** np.arange(1, len(GRID) + 1)[None, :]


@pytest.fixture(scope="module")
def waits():
    return synthetic_waits(3000)


@pytest.fixture(scope="module")
def hazard_model(waits) -> HazardNextPurchaseModel:
    X, days, censored = waits
    return HazardNextPurchaseModel(grid_days=GRID).fit(X, days, censored)


def test_hazard_model_recovers_known_hazards(waits, hazard_model):
    X, _, _ = waits
    cdf = hazard_model.predict_cdf(X)
    group = X["group"].to_numpy(int)
    truth = true_cdf(np.array([0, 1]))                 # 0.05 .. 0.185 and 0.3 .. 0.760
    for g in (0, 1):                                   # measured: within 0.012 of the truth
        np.testing.assert_allclose(cdf[group == g].mean(axis=0), truth[g], atol=0.03)
    # the noise feature spreads each group (measured F(90): 0.09-0.33 and 0.59-0.91), never across
    assert (cdf[group == 1].min(axis=0) > cdf[group == 0].max(axis=0)).all()
    assert (np.diff(cdf, axis=1) >= 0).all() and ((cdf > 0) & (cdf < 1)).all()


def test_hazard_model_keeps_the_censored_customers(waits, hazard_model):
    """Of the low-hazard group 81 % never buy within the horizon: a model fit on the buyers
    alone would call nearly all of them buyers by day 90. The fitted F(90) stays at the truth."""
    X, days, censored = waits
    low = X["group"].to_numpy() == 0
    kept = hazard_model.predict_cdf(X[low])[:, -1].mean()
    bought = ~censored
    dropped = HazardNextPurchaseModel(grid_days=GRID).fit(X[bought], days[bought], censored[bought])
    overestimate = dropped.predict_cdf(X[low])[:, -1].mean()
    assert abs(kept - true_cdf(np.array([0]))[0, -1]) < 0.03
    assert overestimate > kept + 0.5


def test_hazard_model_counts_a_purchase_on_a_grid_day_in_the_interval_it_ends():
    """Intervals are (g_{j-1}, g_j]: buying on day 7 is buying within 7 days."""
    n = 2000
    X = pd.DataFrame({"x": np.zeros(n)})
    days = np.where(np.arange(n) % 2 == 0, 7, GRID[-1])
    model = HazardNextPurchaseModel(grid_days=GRID).fit(X, days, days == GRID[-1])
    # measured 0.496 .. 0.501; with day 7 counted in (7, 30] the purchases would vanish: F near 0
    np.testing.assert_allclose(model.predict_cdf(X.iloc[:1])[0], [0.5] * len(GRID), atol=0.02)


def test_hazard_model_reads_features_by_name(waits, hazard_model):
    X, _, _ = waits
    shuffled = X[["noise", "group"]].assign(other=1.0).iloc[::-1]
    np.testing.assert_array_equal(hazard_model.predict_cdf(shuffled), hazard_model.predict_cdf(X)[::-1])


def test_hazard_model_round_trips_through_json(waits, hazard_model):
    X, _, _ = waits
    state = json.loads(json.dumps(hazard_model.to_dict()))
    loaded = HazardNextPurchaseModel.from_dict(state)
    assert loaded.get_params() == hazard_model.get_params() and loaded.feature_names_ == ["group", "noise"]
    np.testing.assert_array_equal(loaded.predict_cdf(X), hazard_model.predict_cdf(X))


def test_hazard_model_fit_is_reproducible_and_returns_itself(waits, hazard_model):
    X, days, censored = waits
    model = HazardNextPurchaseModel(grid_days=GRID)
    assert model.fit(X, days, censored) is model
    np.testing.assert_array_equal(model.predict_cdf(X), hazard_model.predict_cdf(X))


def test_hazard_model_refuses_what_it_cannot_do():
    X = pd.DataFrame({"x": [0.0, 1.0]})
    with pytest.raises(NotFittedError):
        HazardNextPurchaseModel(grid_days=GRID).predict_cdf(X)
    with pytest.raises(ValueError, match="beyond the last grid point"):
        HazardNextPurchaseModel(grid_days=GRID).fit(X, np.array([10, 91]), np.array([False, False]))
    # a censored customer's days may say anything: they are not read
    HazardNextPurchaseModel(grid_days=GRID, n_estimators=1, min_child_samples=1).fit(
        X, np.array([10, 500]), np.array([False, True]))
