"""Out-of-time evaluation: the scorer and the baselines a user would otherwise pick, side by side.

Everything is measured on one evaluation set: features as of the cutoff C, outcomes in
(C, C+H]. The baselines are fitted on the same features (so only on data up to C).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from models.beta_geo import BetaGeoModel
from models.metrics import concordance_index, expected_calibration_error
from models.pareto_nbd import ParetoNBDModel


@dataclass(frozen=True)
class Evaluation:
    """Metrics (MLflow keys), the baselines' churn AUCs, and the tables the plots need."""

    metrics: dict[str, float]
    baselines: dict[str, float]
    scored: pd.DataFrame           # scores joined with labels, one row per customer


def lift_top_decile(y: np.ndarray, score: np.ndarray) -> float:
    """Churn rate among the 10 % with the highest score, over the overall rate."""
    k = max(1, len(y) // 10)
    top = np.argsort(-score, kind="stable")[:k]
    return float(y[top].mean() / y.mean()) if y.mean() > 0 else float("nan")


def normalized_gini(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Gini of ``actual`` ordered by ``predicted``, over the Gini of the perfect order (1 = perfect)."""
    def gini(order_by: np.ndarray) -> float:
        ordered = actual[np.argsort(-order_by, kind="stable")]
        cumulative = np.cumsum(ordered) / ordered.sum()
        return float((cumulative - np.arange(1, len(actual) + 1) / len(actual)).sum() / len(actual))
    return gini(predicted) / gini(actual) if actual.sum() > 0 else float("nan")


def decile_mape(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Mean absolute percentage error of total value per predicted decile (Wang, Liu & Miao 2019)."""
    order = np.argsort(-predicted, kind="stable")
    errors = [abs(predicted[d].sum() - actual[d].sum()) / actual[d].sum()
              for d in np.array_split(order, 10) if actual[d].sum() > 0]
    return float(np.mean(errors)) if errors else float("nan")


def _churn_metrics(prefix: str, churned: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    return {f"{prefix}_auc": roc_auc_score(churned, probability),
            f"{prefix}_pr_auc": average_precision_score(churned, probability),
            f"{prefix}_brier": brier_score_loss(churned, probability),
            f"{prefix}_ece": expected_calibration_error(churned, probability),
            f"{prefix}_lift_top_decile": lift_top_decile(churned, probability)}


def _next_purchase_metrics(scored: pd.DataFrame, as_of: pd.Timestamp, horizon_days: int) -> dict[str, float]:
    """C-index of the expected days, MAE of the median date where a purchase came, 80 %
    interval coverage, and the Brier score of P(purchase within 30 days)."""
    actual = scored["days_to_next_purchase"].to_numpy(float)
    event = ~scored["next_purchase_censored"].to_numpy(bool)
    days = lambda col: (scored[col] - as_of).dt.days.to_numpy(float)   # NaN where no date
    median, low, high = days("next_purchase_date"), days("next_purchase_low"), days("next_purchase_high")
    dated = event & ~np.isnan(median)
    high_or_inf = np.where(np.isnan(high), np.inf, high)
    covered = np.where(event, (np.nan_to_num(low, nan=np.inf) <= actual) & (actual <= high_or_inf),
                       high_or_inf > horizon_days)
    return {
        "next_purchase_cindex": concordance_index(actual, event, scored["expected_days_to_purchase"]),
        "next_purchase_mae_days": float(np.abs(median[dated] - actual[dated]).mean()) if dated.any() else float("nan"),
        "next_purchase_coverage80": float(covered.mean()),
        "next_purchase_brier_30d": brier_score_loss(event & (actual <= 30), scored["p_purchase_30d"]),
    }


def _classical_metrics(features: pd.DataFrame, labels: pd.DataFrame, horizon_days: int,
                       bgnbd: BetaGeoModel, pareto: ParetoNBDModel) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    expected = {"bgnbd": bgnbd.predict_expected_purchases(features, horizon_days),
                "pareto_nbd": pareto.predict_expected_purchases(features, horizon_days)}
    actual = labels["horizon_purchase_days"].to_numpy(float)
    metrics = {}
    for name, e in expected.items():
        metrics[f"{name}_forecast_purchases"] = float(e.sum())
        metrics[f"{name}_forecast_error"] = float(e.sum() / actual.sum() - 1)
        metrics[f"{name}_correlation"] = float(np.corrcoef(e, actual)[0, 1])
    metrics["actual_purchases"] = float(actual.sum())
    return metrics, expected


def evaluate(scored: pd.DataFrame, features: pd.DataFrame, labels: pd.DataFrame,
             as_of: pd.Timestamp, horizon_days: int) -> Evaluation:
    """Compare the scorer's output with the outcomes and with the baselines.

    ``scored``: the scorer's output at ``as_of``; ``features`` and ``labels``: the feature table
    at ``as_of`` and the labels of the following ``horizon_days``, all for the same customers.
    """
    joined = scored.merge(labels, on="customer_id", validate="one_to_one")
    feats = features.set_index("customer_id").loc[joined["customer_id"]].reset_index()
    churned = ~joined["purchased"].to_numpy(bool)
    metrics = _churn_metrics("churn", churned, joined["churn_probability"].to_numpy())
    metrics.update(_next_purchase_metrics(joined, as_of, horizon_days))

    bgnbd = BetaGeoModel().fit(feats)
    pareto = ParetoNBDModel().fit(feats)
    classical, expected = _classical_metrics(feats, joined, horizon_days, bgnbd, pareto)
    metrics.update(classical)

    overdue = feats["overdue_ratio"].fillna(feats["days_since_last_purchase"] / horizon_days)
    baselines = {
        "recency_gap": feats["days_since_last_purchase"].to_numpy(float),
        "bgnbd_expected_purchases": -expected["bgnbd"],
        "pareto_nbd_expected_purchases": -expected["pareto_nbd"],
        "bgnbd_p_alive": -bgnbd.predict_p_alive(feats),
        "pareto_nbd_p_alive": -pareto.predict_p_alive(feats),
        "mean_gap_due_date": overdue.to_numpy(float),
    }
    baseline_auc = {name: float(roc_auc_score(churned, s)) for name, s in baselines.items()}
    metrics.update({f"baseline_{name}_churn_auc": auc for name, auc in baseline_auc.items()})
    best = max(baseline_auc.values())
    metrics["churn_auc_over_best_baseline"] = metrics["churn_auc"] - best

    predicted_value = joined["expected_order_value"].to_numpy() * expected["bgnbd"]
    actual_value = joined["horizon_spend"].to_numpy(float)
    metrics["value_gini"] = normalized_gini(actual_value, predicted_value)
    metrics["value_decile_mape"] = decile_mape(actual_value, predicted_value)
    joined["bgnbd_expected_purchases"] = expected["bgnbd"]
    joined["days_since_last_purchase"] = feats["days_since_last_purchase"].to_numpy()
    joined["tenure_days"] = feats["tenure_days"].to_numpy()
    return Evaluation({k: float(v) for k, v in metrics.items()}, baseline_auc, joined)


def comparison_table(candidate: Evaluation, champion: Evaluation | None) -> pd.DataFrame:
    """Churn AUC of the candidate, the champion (same data) and every baseline, best first."""
    rows = [("winback (this run)", candidate.metrics["churn_auc"])]
    if champion is not None:
        rows.append(("winback (current champion)", champion.metrics["churn_auc"]))
    rows += [(f"baseline: {name}", auc) for name, auc in candidate.baselines.items()]
    table = pd.DataFrame(rows, columns=["model", "churn_auc"]).sort_values("churn_auc", ascending=False)
    table["vs this run"] = table["churn_auc"] - candidate.metrics["churn_auc"]
    return table.reset_index(drop=True)
