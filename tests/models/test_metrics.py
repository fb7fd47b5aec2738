"""Metrics: hand-computed values, scikit-survival / scikit-learn as oracles, and models that
must score badly (a metric that cannot fail measures nothing)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, roc_auc_score
from sksurv.metrics import concordance_index_censored, integrated_brier_score
from sksurv.util import Surv

from models.metrics import (
    bootstrap_auc_difference,
    bootstrap_brier_difference,
    bootstrap_cindex_difference,
    brier_at_days,
    concordance_index,
    expected_calibration_error,
    integrated_brier,
    interval_coverage,
    paired_bootstrap_difference,
    verdict,
)

# --------------------------------------------------------------------------- concordance

def test_concordance_by_hand():
    # pairs: (t=1 vs t=2) predicted 1 < 3 concordant, (t=1 vs t=3) 1 < 2 concordant,
    # (t=2 vs censored t=3) 3 > 2 discordant
    assert concordance_index([1, 2, 3], [True, True, False], [1, 3, 2]) == pytest.approx(2 / 3)


def test_concordance_tie_rules_by_hand():
    # two events at t=2 are not comparable; event vs censored at t=2 is; predicted tie counts ½
    time, event, predicted = [2, 2, 2], [True, True, False], [5, 1, 5]
    # comparable: (0, 2) tie -> 0.5, (1, 2) 1 < 5 concordant -> 1
    assert concordance_index(time, event, predicted) == pytest.approx(1.5 / 2)


def test_concordance_equals_sksurv_on_random_data_with_ties():
    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(2, 80))
        time = rng.integers(1, 8, n).astype(float)
        event = rng.random(n) < 0.6
        predicted = rng.integers(0, 6, n).astype(float)
        if not event.any() or (event.all() and len(set(time)) == 1):
            continue
        try:
            expected = concordance_index_censored(event, time, -predicted)[0]
        except Exception:            # no comparable pair
            expected = float("nan")
        assert concordance_index(time, event, predicted) == pytest.approx(expected, nan_ok=True)


def test_concordance_equals_sksurv_on_horizon_censored_labels():
    rng = np.random.default_rng(3)
    n = 3000
    event = rng.random(n) < 0.3
    time = np.where(event, rng.integers(1, 91, n), 90).astype(float)   # some buy on day 90 too
    predicted = np.round(rng.gamma(2, 30, n), 1)
    assert concordance_index(time, event, predicted) == pytest.approx(
        concordance_index_censored(event, time, -predicted)[0], abs=1e-12)


def test_constant_prediction_has_cindex_one_half():
    rng = np.random.default_rng(0)
    event = rng.random(500) < 0.7
    time = np.where(event, rng.integers(1, 60, 500), 60)
    assert concordance_index(time, event, np.full(500, 60.0)) == 0.5


def test_perfect_and_reversed_predictions():
    time = np.arange(1, 11, dtype=float)
    event = np.ones(10, dtype=bool)
    assert concordance_index(time, event, time) == 1.0
    assert concordance_index(time, event, -time) == 0.0


def test_concordance_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same length"):
        concordance_index([1, 2], [True], [1, 2])


# --------------------------------------------------------------------------- Brier

def test_integrated_brier_weights_by_time():
    # trapezoid over (7, 30, 90): (0.15·23 + 0.25·60) / 83, not the plain mean 0.2
    value = integrated_brier([7, 30, 90], [0.1, 0.2, 0.3])
    assert value == pytest.approx((0.15 * 23 + 0.25 * 60) / 83)
    assert value != pytest.approx(0.2)
    assert integrated_brier([7], [0.12]) == 0.12
    assert np.isnan(integrated_brier([], []))


def test_integrated_brier_equals_sksurv_when_every_label_is_known():
    rng = np.random.default_rng(5)
    n, horizon = 400, 100
    event = rng.random(n) < 0.5
    days = np.where(event, rng.integers(1, horizon + 1, n), horizon).astype(float)
    grid = np.array([7.0, 30.0, 60.0, 90.0])
    cdf = np.sort(rng.random((n, len(grid))), axis=1)              # F non-decreasing
    ours = integrated_brier(grid, brier_at_days(days, event, cdf, grid))
    y = Surv.from_arrays(event, days)
    assert ours == pytest.approx(integrated_brier_score(y, y, 1.0 - cdf, grid), rel=1e-12)


def test_brier_at_days_by_hand():
    days, event = np.array([3.0, 20.0, 30.0]), np.array([True, True, False])
    prob = np.array([[0.5, 1.0], [0.0, 0.5], [0.5, 0.5]])           # P(within 7), P(within 30)
    # within 7: outcomes 1, 0, 0 -> (0.25 + 0 + 0.25) / 3; within 30: 1, 1, 0 -> (0 + 0.25 + 0.25) / 3
    assert brier_at_days(days, event, prob, [7, 30]) == pytest.approx([0.5 / 3, 0.5 / 3])


def test_brier_at_days_refuses_unknown_outcomes():
    with pytest.raises(ValueError, match="censored at day 10"):
        brier_at_days([10.0], [False], np.array([[0.5]]), [30])


# --------------------------------------------------------------------------- calibration

def test_expected_calibration_error_by_hand():
    # two quantile bins: {0.1, 0.3} observed 0 (gap 0.2), {0.6, 0.8} observed 1 (gap 0.3)
    assert expected_calibration_error([0, 0, 1, 1], [0.1, 0.3, 0.6, 0.8], bins=2) == pytest.approx(0.25)


def test_expected_calibration_error_uses_sklearn_bins():
    rng = np.random.default_rng(2)
    prob = rng.random(1000)
    y = rng.random(1000) < prob ** 2                                # miscalibrated
    true, pred = calibration_curve(y, prob, n_bins=10, strategy="quantile")
    assert expected_calibration_error(y, prob) == pytest.approx(np.mean(np.abs(true - pred)), rel=1e-6)
    assert expected_calibration_error(y, prob) > 0.1
    p = rng.random(20000)
    assert expected_calibration_error(rng.random(20000) < p, p) < 0.03     # calibrated


# --------------------------------------------------------------------------- coverage

def test_interval_coverage_by_hand():
    days = np.array([5.0, 20.0, 40.0, 30.0, 30.0, 30.0])
    event = np.array([True, True, True, False, False, False])
    low = np.array([3.0, 25.0, np.nan, 40.0, 10.0, np.nan])
    high = np.array([10.0, 50.0, np.nan, 90.0, np.nan, np.nan])
    # buyers: 5 in [3, 10] yes; 20 < 25 no; NaN low = beyond the horizon: no.
    # non-buyers (H = 30): low 40 > 30 yes; low 10 no; NaN low (not expected) yes.
    assert interval_coverage(days, event, low, high, 30) == pytest.approx(3 / 6)


def test_a_model_that_never_expects_a_purchase_covers_no_buyer():
    rng = np.random.default_rng(1)
    n = 1000
    event = rng.random(n) < 0.8                                     # most customers buy
    days = np.where(event, rng.integers(1, 91, n), 90).astype(float)
    nothing = np.full(n, np.nan)
    coverage = interval_coverage(days, event, nothing, nothing, 90)
    assert coverage == pytest.approx((~event).mean()) and coverage < 0.3
    assert interval_coverage(days[event], event[event], nothing[event], nothing[event], 90) == 0.0


def test_interval_coverage_rewards_a_correct_interval():
    rng = np.random.default_rng(4)
    n = 2000
    true_day = rng.exponential(40, n)
    event = true_day <= 90
    days = np.where(event, np.ceil(true_day), 90)
    low, high = np.full(n, 40 * -np.log(0.9)), np.full(n, 40 * -np.log(0.1))   # true 10 % / 90 %
    buyers = interval_coverage(days[event], event[event], low[event], high[event], 90)
    assert 0.75 < buyers < 0.95


# --------------------------------------------------------------------------- bootstrap

def _two_scores(n: int, rng: np.random.Generator, shift_a: float = 1.0, shift_b: float = 0.5):
    y = rng.random(n) < 0.5
    return y, y * shift_a + rng.normal(size=n), y * shift_b + rng.normal(size=n)


def test_vectorised_auc_bootstrap_equals_the_generic_one():
    y, a, b = _two_scores(500, np.random.default_rng(0))
    fast = bootstrap_auc_difference(y, a, b, n_boot=150, seed=3)
    slow = paired_bootstrap_difference(roc_auc_score, (y,), a, b, n_boot=150, seed=3)
    assert fast == pytest.approx(slow, abs=1e-12)


def test_vectorised_brier_bootstrap_equals_the_generic_one():
    rng = np.random.default_rng(6)
    y = rng.random(400) < 0.4
    a, b = np.clip(y * 0.5 + rng.random(400) * 0.5, 0, 1), rng.random(400)
    fast = bootstrap_brier_difference(y, a, b, n_boot=120, seed=4)
    slow = paired_bootstrap_difference(brier_score_loss, (y,), a, b, n_boot=120, seed=4)
    assert fast == pytest.approx(slow, abs=1e-12)
    assert verdict(*fast[1:], higher_is_better=False) == "beats"


def test_cindex_bootstrap_equals_the_generic_one():
    rng = np.random.default_rng(1)
    event = rng.random(300) < 0.6
    time = np.where(event, rng.integers(1, 30, 300), 30).astype(float)
    a, b = time + rng.normal(0, 5, 300), rng.random(300)
    fast = bootstrap_cindex_difference(time, event, a, b, n_boot=50, seed=2)
    slow = paired_bootstrap_difference(concordance_index, (time, event), a, b, n_boot=50, seed=2)
    assert fast == pytest.approx(slow, abs=1e-12)


def test_random_churn_score_ties_one_half_and_loses_to_a_good_baseline():
    rng = np.random.default_rng(11)
    y = rng.random(3000) < 0.3
    useless, good = rng.random(3000), y + rng.normal(0, 0.7, 3000)
    assert roc_auc_score(y, useless) == pytest.approx(0.5, abs=0.03)
    difference, low, high = bootstrap_auc_difference(y, useless, good)
    assert high < 0 and verdict(low, high) == "loses"
    assert verdict(*bootstrap_auc_difference(y, good, useless)[1:]) == "beats"


def test_auc_bootstrap_interval_covers_the_true_difference_and_shrinks_with_n():
    true = norm.cdf(1.0 / np.sqrt(2)) - norm.cdf(0.5 / np.sqrt(2))   # binormal AUCs
    rng = np.random.default_rng(8)
    hits, widths = 0, {}
    for n in (500, 2000):
        width = []
        for _ in range(20):
            _, low, high = bootstrap_auc_difference(*_two_scores(n, rng), n_boot=300, seed=int(rng.integers(1e6)))
            hits += low <= true <= high
            width.append(high - low)
        widths[n] = np.mean(width)
    assert hits >= 34                                                  # of 40, nominal 38
    assert widths[2000] < 0.6 * widths[500]                            # ≈ 1/2 in theory


def test_verdict_comes_from_the_interval():
    assert verdict(0.001, 0.02) == "beats"
    assert verdict(-0.02, 0.03) == "ties"
    assert verdict(-0.03, -0.001) == "loses"
    assert verdict(-0.003, -0.001, higher_is_better=False) == "beats"   # e.g. Brier: lower is better
    assert verdict(float("nan"), float("nan")) == "ties"
