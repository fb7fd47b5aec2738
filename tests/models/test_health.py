"""The health statistics: PSI and its sample-size-aware threshold, CBPE, realized metrics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from models.health import (
    DriftCalculator,
    auc_floor,
    auc_standard_error,
    estimated_auc,
    estimated_churn_metrics,
    main_features,
    psi,
    psi_threshold,
    realized_churn_metrics,
)


def _brute_force_auc(p, s):
    num = den = 0.0
    for i in range(len(p)):
        for j in range(len(p)):
            if i != j:
                w = p[i] * (1 - p[j])
                den += w
                num += w * ((s[i] > s[j]) + 0.5 * (s[i] == s[j]))
    return num / den


def test_estimated_auc_is_the_probability_weighted_pair_count_with_ties():
    rng = np.random.default_rng(0)
    p = rng.beta(2, 3, 150)
    p[:60] = np.round(p[:60], 1)                     # many ties
    assert estimated_auc(p) == pytest.approx(_brute_force_auc(p, p), abs=1e-12)
    s = np.round(rng.random(150), 1)                 # another ranking score, tied too
    assert estimated_auc(p, s) == pytest.approx(_brute_force_auc(p, s), abs=1e-12)


def test_estimated_auc_matches_the_mean_realized_auc_of_calibrated_probabilities():
    """CBPE: outcomes drawn from the probabilities themselves give, on average, the estimate."""
    rng = np.random.default_rng(1)
    p = rng.beta(1.5, 2.5, 4000)
    realized = [roc_auc_score(rng.random(len(p)) < p, p) for _ in range(60)]
    assert np.mean(realized) == pytest.approx(estimated_auc(p), abs=0.003)
    brier = estimated_churn_metrics(p)["estimated_churn_brier"]
    draws = [np.mean(((rng.random(len(p)) < p) - p) ** 2) for _ in range(60)]
    assert np.mean(draws) == pytest.approx(brier, abs=0.002)


def test_a_useless_model_is_estimated_and_realized_at_chance():
    rng = np.random.default_rng(2)
    assert estimated_auc(np.full(500, 0.3)) == pytest.approx(0.5)
    p = rng.beta(2, 2, 5000)
    churned = rng.random(5000) < p
    good = realized_churn_metrics(churned, p)
    useless = realized_churn_metrics(churned, rng.permutation(p))     # right shares, wrong customers
    assert good["realized_churn_auc"] > 0.7
    assert abs(useless["realized_churn_auc"] - 0.5) < 0.03
    assert useless["realized_churn_brier"] > good["realized_churn_brier"] + 0.03
    assert useless["realized_churn_ece"] > good["realized_churn_ece"]
    # the floor a backtest's AUC sets is far above chance
    assert auc_floor(0.8, churned.sum(), (~churned).sum()) > useless["realized_churn_auc"] + 0.25


def test_psi_of_equal_counts_is_zero_and_grows_with_the_shift():
    counts = np.array([100, 200, 300, 400])
    assert psi(counts, counts) == pytest.approx(0.0, abs=1e-15)
    assert psi(counts, counts * 7) == pytest.approx(0.0, abs=1e-3)      # shares, not counts
    assert 0 < psi(counts, [150, 200, 300, 350]) < psi(counts, [400, 300, 200, 100])
    assert np.isfinite(psi(counts, [0, 0, 0, 1000]))                    # empty bins: smoothed


def test_the_threshold_holds_the_false_alarm_rate_at_small_samples():
    """Without the practical floor, two samples of one distribution drift at about ``alpha``."""
    rng = np.random.default_rng(3)
    alarms = 0
    trials = 400
    for _ in range(trials):
        calc = DriftCalculator(numeric=("x",), alpha=0.05, floor=0.0).fit(pd.DataFrame({"x": rng.gamma(2, size=300)}))
        alarms += bool(calc.calculate(pd.DataFrame({"x": rng.gamma(2, size=200)}))["drifted"].iloc[0])
    assert 0.02 <= alarms / trials <= 0.09
    # the same test finds a real shift of a quarter standard deviation at n = 2,000
    found = 0
    for _ in range(40):
        calc = DriftCalculator(numeric=("x",), alpha=0.05, floor=0.0).fit(pd.DataFrame({"x": rng.normal(size=2000)}))
        found += bool(calc.calculate(pd.DataFrame({"x": rng.normal(0.25, size=2000)}))["drifted"].iloc[0])
    assert found >= 38


def test_the_threshold_shrinks_with_sample_size_down_to_the_floor():
    small, large = psi_threshold(200, 200, 10, 0.001, 0.0), psi_threshold(20_000, 20_000, 10, 0.001, 0.0)
    assert small == pytest.approx(100 * large, rel=1e-9)
    assert psi_threshold(20_000, 20_000, 10) == 0.1
    assert psi_threshold(100, 100, 10) > 0.5


def test_drift_calculator_flags_missing_values_ranges_and_new_categories():
    rng = np.random.default_rng(4)
    ref = pd.DataFrame({"x": rng.normal(size=5000), "c": rng.choice(["web", "app", "store"], 5000)})
    calc = DriftCalculator(numeric=("x",), categorical=("c",)).fit(ref)
    same = calc.calculate(pd.DataFrame({"x": rng.normal(size=4000), "c": rng.choice(["web", "app", "store"], 4000)}))
    assert not same[["drifted", "missing_flag", "range_flag"]].to_numpy().any()
    x = rng.normal(size=4000)
    x[:400] = np.nan                                  # 10 % missing
    x[400:500] = 50.0                                 # 2.5 % beyond the reference's range
    c = rng.choice(["web", "app", "kiosk"], 4000)     # store gone, kiosk new
    bad = calc.calculate(pd.DataFrame({"x": x, "c": c})).set_index("column")
    assert bad.loc["x", "missing_flag"] and bad.loc["x", "range_flag"]
    assert bad.loc["x", "missing"] == pytest.approx(0.1)
    assert bad.loc["c", "drifted"] and bad.loc["c", "range_flag"]
    # the profile survives JSON
    again = DriftCalculator.from_dict(json.loads(json.dumps(calc.to_dict())))
    pd.testing.assert_frame_equal(again.calculate(pd.DataFrame({"x": x, "c": c})).set_index("column"), bad)


def test_hanley_mcneil_standard_error_matches_the_bootstrap():
    rng = np.random.default_rng(5)
    p = rng.beta(2, 3, 1500)
    y = rng.random(1500) < p
    auc = roc_auc_score(y, p)
    boot = []
    for _ in range(300):
        i = rng.integers(0, len(p), len(p))
        boot.append(roc_auc_score(y[i], p[i]))
    assert auc_standard_error(auc, y.sum(), (~y).sum()) == pytest.approx(np.std(boot), rel=0.2)


def test_main_features_are_the_fewest_carrying_the_share_of_gain():
    names = ["a", "b", "c", "d"]
    assert main_features(names, [10, 60, 25, 5], 0.8) == ["b", "c"]
    assert main_features(names, [10, 60, 25, 5], 0.6) == ["b"]
    assert main_features(names, [0, 0, 0, 0]) == []
