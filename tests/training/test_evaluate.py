"""Out-of-time evaluation on a real CDNOW slice: every metric present, none that cannot fail."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import build_features, build_labels, labelled_features, prepare
from models.metrics import VERDICTS, bootstrap_auc_difference, integrated_brier
from models.ml.churn import ChurnModel
from models.scorer import WinbackScorer
from training.evaluate import (
    Evaluation,
    _next_purchase_metrics,
    _value_metrics,
    comparison_table,
    evaluate,
    scaled_bootstrap,
)

CUTOFF = pd.Timestamp("1997-12-31")


def _fit_and_score(log, horizon: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    train = pd.concat([labelled_features(log, c, horizon) for c in ("1997-05-31", "1997-06-30")])
    calibration = labelled_features(log, "1997-09-30", horizon)
    _, _, reference = prepare(log, "1997-09-30")
    scorer = WinbackScorer(horizon_days=horizon, churn=ChurnModel(n_estimators=30),
                           hazard_estimators=10).fit(train, calibration, reference)
    features = build_features(log, CUTOFF, "D", scorer.feature_settings, scorer.reference_)
    return scorer.score(features, CUTOFF, reasons=False), features, build_labels(log, CUTOFF, horizon)


@pytest.fixture(scope="module", params=[20, 90], ids=lambda h: f"H={h}")
def evaluated(request, small_log) -> tuple[int, pd.DataFrame, Evaluation]:
    scored, features, labels = _fit_and_score(small_log, request.param)
    return request.param, scored, evaluate(scored, features, labels, CUTOFF, request.param, n_boot=200,
                                           n_boot_cindex=50)


def test_brier_only_at_days_within_the_horizon(evaluated):
    horizon, _, evaluation = evaluated
    m = evaluation.metrics
    points = [d for d in (7, 30, 90) if d <= horizon]
    assert {k for k in m if k.startswith("next_purchase_brier_")} == {f"next_purchase_brier_{d}d" for d in points}
    assert m["next_purchase_ibs"] == pytest.approx(
        integrated_brier(points, [m[f"next_purchase_brier_{d}d"] for d in points]))


def test_every_metric_is_a_number_and_every_comparison_has_a_verdict(evaluated):
    _, _, evaluation = evaluated
    m = evaluation.metrics
    assert all(isinstance(v, float) for v in m.values())
    for key in ("churn_auc_diff", "next_purchase_cindex_diff", "churn_brier_diff"):
        assert m[f"{key}_low"] <= m[key] <= m[f"{key}_high"]
    assert set(evaluation.verdicts) == {"churn_verdict", "next_purchase_verdict", "churn_brier_verdict"}
    assert set(evaluation.verdicts.values()) <= set(VERDICTS)
    for name in ("bgnbd", "mbgnbd", "pareto_nbd"):
        assert 0 < m[f"baseline_{name}_churn_brier"] < 0.5
        assert 0 < m[f"baseline_{name}_isotonic_churn_brier"] < 0.5
    assert 0.5 < m["baseline_pareto_nbd_ex30_cindex"] < 1
    assert 0 < m["next_purchase_mae_share"] <= 1
    assert m["churn_auc_over_best_baseline"] == pytest.approx(m["churn_auc_diff"])
    lines = evaluation.summary_lines()
    assert len(lines) == 3 and lines[0].startswith("churn AUC ") and "95% CI" in lines[0]
    assert lines[0].endswith(evaluation.verdicts["churn_verdict"])


def test_comparison_table_still_ranks_the_run_and_the_baselines(evaluated):
    _, _, evaluation = evaluated
    table = comparison_table(evaluation, evaluation)
    assert len(table) == 2 + len(evaluation.baselines)
    assert table["churn_auc"].is_monotonic_decreasing


def test_a_model_that_predicts_no_purchase_scores_badly(evaluated):
    horizon, _, evaluation = evaluated
    nothing = evaluation.scored.copy()
    for column in ("next_purchase_date", "next_purchase_low", "next_purchase_high"):
        nothing[column] = pd.NaT
    for column in ("p_purchase_7d", "p_purchase_30d", "p_purchase_90d"):
        nothing[column] = 0.0
    nothing["expected_days_to_purchase"] = float(horizon)
    m = _next_purchase_metrics(nothing, CUTOFF, horizon)
    assert m["next_purchase_cindex"] == 0.5
    assert m["next_purchase_coverage80_buyers"] == 0.0
    assert m["next_purchase_coverage80"] == pytest.approx(nothing["next_purchase_censored"].mean())
    assert np.isnan(m["next_purchase_mae_days"]) and m["next_purchase_mae_share"] == 0.0
    assert m["next_purchase_ibs"] > evaluation.metrics["next_purchase_ibs"]


def test_value_metrics_score_the_shipped_clv(evaluated):
    horizon, _, evaluation = evaluated
    scored = evaluation.scored.copy()
    perfect = scored.assign(clv_12m=scored["horizon_spend"] * 365 / horizon)
    values, basis = _value_metrics(perfect, horizon)
    assert values["value_gini"] == pytest.approx(1.0)
    assert values["value_decile_mape"] == pytest.approx(0.0, abs=1e-12) and basis.startswith("clv_12m")
    values, basis = _value_metrics(scored, horizon)
    assert values["value_gini"] == pytest.approx(evaluation.metrics["value_gini"])
    explicit = scored.assign(expected_order_value=1.0, expected_purchases_horizon=scored["horizon_spend"])
    values, basis = _value_metrics(explicit, horizon)
    assert values["value_decile_mape"] == pytest.approx(0.0, abs=1e-12) and "expected_purchases_horizon" in basis


def test_a_subsampled_bootstrap_scaled_to_the_whole_set_matches_the_full_one():
    """The m-out-of-n interval (scaled by sqrt(m/n)) agrees with the bootstrap on every customer;
    below the cap nothing changes."""
    rng = np.random.default_rng(3)
    n = 40_000
    churned = rng.random(n) < 0.6
    model = rng.normal(size=n) + 0.8 * churned
    baseline = rng.normal(size=n) + 0.7 * churned + 0.3 * rng.normal(size=n)
    arrays = (churned, model, baseline)
    full = bootstrap_auc_difference(*arrays, 300, 0)
    assert scaled_bootstrap(bootstrap_auc_difference, arrays, full[0], 300, 0, None) == full
    assert scaled_bootstrap(bootstrap_auc_difference, arrays, full[0], 300, 0, n) == full
    point, low, high = scaled_bootstrap(bootstrap_auc_difference, arrays, full[0], 300, 0, 8_000)
    assert point == full[0] and low < point < high
    assert (high - low) == pytest.approx(full[2] - full[1], rel=0.25)      # same width, ±25 %
    assert abs((low + high) / 2 - (full[1] + full[2]) / 2) < 0.25 * (full[2] - full[1])


def test_a_large_evaluation_says_its_intervals_come_from_a_subsample(evaluated, small_log):
    horizon, scored, evaluation = evaluated
    features = build_features(small_log, CUTOFF)
    capped = evaluate(scored, features, build_labels(small_log, CUTOFF, horizon), CUTOFF, horizon,
                      n_boot=200, n_boot_cindex=50, max_bootstrap_customers=1_500)
    assert "subsample of 1,500" in capped.notes["bootstrap"] and "bootstrap" not in evaluation.notes
    for a, b in zip(capped.comparisons, evaluation.comparisons):
        assert a.difference == pytest.approx(b.difference) and a.low <= a.difference <= a.high
