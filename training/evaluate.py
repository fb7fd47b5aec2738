"""Out-of-time evaluation: the scorer and the baselines a user would otherwise pick, side by side.

Everything is measured on one evaluation set: features as of the cutoff C, outcomes in
(C, C+H]. The baselines are fitted on the same features (so only on data up to C).

Comparisons with a baseline are paired bootstraps over customers: each resample draws
customers with replacement and scores the model and the baseline on the same ones. The verdict
("beats", "ties", "loses") comes from the 95 % interval of the difference, never from the
point estimate:

* churn AUC against the best baseline by AUC (1,000 resamples);
* next-purchase C-index against Pareto/NBD's expected purchases in 30 days as a ranking
  (200 resamples: each C-index costs about 20 ms at 25,000 customers);
* churn Brier against the best classical churn probability, raw or isotonic-recalibrated.

The classical churn probabilities 1 − P(purchase within H) are also recalibrated with isotonic
regression by 2-fold cross-fitting on the evaluation set itself: each half is mapped by a
calibration learned on the other half, with the outcomes the model is judged on. No production
model could do this; it is the strictest fair comparison for the scorer's Brier score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow.compute as pc
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from models.clv.base import PurchaseModel
from models.clv.beta_geo import BetaGeoModel
from models.clv.mbg_cnbd import MBGCNBDModel
from models.clv.modified_beta_geo import ModifiedBetaGeoModel
from models.clv.pareto_nbd import ParetoNBDModel
from models.metrics import (
    BOOTSTRAP_CUSTOMERS,
    bootstrap_auc_difference,
    bootstrap_brier_difference,
    bootstrap_cindex_difference,
    brier_at_days,
    concordance_index,
    expected_calibration_error,
    integrated_brier,
    interval_coverage,
    scaled_bootstrap,
    verdict,
)

#: Days at which P(purchase within d) is scored (columns ``p_purchase_<d>d``), where d ≤ H.
BRIER_DAYS = (7, 30, 90)
#: The next-purchase baseline: Pareto/NBD expected purchases in this many days, as a ranking.
RANKING_BASELINE_DAYS = 30
#: The feature columns :func:`evaluate` reads (the classical baselines' inputs, the recency and
#: due-date baselines, tenure for the plots): a caller may drop the rest once the scorer has
#: scored them.
EVALUATION_FEATURES = ("customer_id", "frequency", "recency", "T", "monetary_value", "litt",
                       "overdue_ratio", "days_since_last_purchase", "tenure_days")


@dataclass(frozen=True)
class Comparison:
    """A paired-bootstrap comparison of the model with one baseline on one metric."""

    metric: str
    baseline: str
    model_value: float
    baseline_value: float
    difference: float
    low: float
    high: float
    verdict: str

    def line(self) -> str:
        """E.g. ``churn AUC 0.8123 vs best baseline x 0.8037: +0.0086 (95% CI +0.0041 to +0.0130) → beats``."""
        return (f"{self.metric} {self.model_value:.4f} vs {self.baseline} {self.baseline_value:.4f}: "
                f"{self.difference:+.4f} (95% CI {self.low:+.4f} to {self.high:+.4f}) → {self.verdict}")


@dataclass(frozen=True)
class Evaluation:
    """Metrics (MLflow keys, all floats), the baselines' churn AUCs, the tables the plots need,
    the verdicts of the bootstrap comparisons and notes on how values were computed."""

    metrics: dict[str, float]
    baselines: dict[str, float]
    scored: pd.DataFrame           # scores joined with labels, one row per customer
    verdicts: dict[str, str] = field(default_factory=dict)
    comparisons: tuple[Comparison, ...] = ()
    notes: dict[str, str] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        """One human line per bootstrap comparison, for the CLI."""
        return [c.line() for c in self.comparisons]


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


def cross_fitted_isotonic(probability: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
    """Isotonic recalibration of ``probability`` by 2-fold cross-fitting on (probability, y)."""
    folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=seed)
    isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    return cross_val_predict(isotonic, probability, np.asarray(y, dtype=int), cv=folds)


def _churn_metrics(prefix: str, churned: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    return {f"{prefix}_auc": roc_auc_score(churned, probability),
            f"{prefix}_pr_auc": average_precision_score(churned, probability),
            f"{prefix}_brier": brier_score_loss(churned, probability),
            f"{prefix}_ece": expected_calibration_error(churned, probability),
            f"{prefix}_lift_top_decile": lift_top_decile(churned, probability)}


def _next_purchase_metrics(scored: pd.DataFrame, as_of: pd.Timestamp, horizon_days: int) -> dict[str, float]:
    """C-index of the expected days; MAE of the median date among buyers with one, and the
    share of buyers that is; censoring-aware 80 % interval coverage (overall, buyers,
    non-buyers); Brier of P(purchase within d) for d in :data:`BRIER_DAYS` up to H, and their
    time-weighted integral."""
    actual = scored["days_to_next_purchase"].to_numpy(float)
    event = ~scored["next_purchase_censored"].to_numpy(bool)
    days = lambda col: (scored[col] - as_of).dt.days.to_numpy(float)   # NaN where no date
    median, low, high = days("next_purchase_date"), days("next_purchase_low"), days("next_purchase_high")
    dated = event & ~np.isnan(median)
    out = {
        "next_purchase_cindex": concordance_index(actual, event, scored["expected_days_to_purchase"]),
        "next_purchase_mae_days": float(np.abs(median[dated] - actual[dated]).mean()) if dated.any() else float("nan"),
        "next_purchase_mae_share": float(dated.sum() / event.sum()) if event.any() else float("nan"),
        "next_purchase_coverage80": interval_coverage(actual, event, low, high, horizon_days),
        "next_purchase_coverage80_buyers": interval_coverage(actual[event], event[event], low[event],
                                                             high[event], horizon_days),
        "next_purchase_coverage80_nonbuyers": interval_coverage(actual[~event], event[~event], low[~event],
                                                                high[~event], horizon_days),
    }
    points = [d for d in BRIER_DAYS if d <= horizon_days and f"p_purchase_{d}d" in scored]
    if points:
        prob = scored[[f"p_purchase_{d}d" for d in points]].to_numpy(float)
        brier = brier_at_days(actual, event, prob, points)
        out.update({f"next_purchase_brier_{d}d": float(b) for d, b in zip(points, brier)})
        out["next_purchase_ibs"] = integrated_brier(points, brier)
    return out


def _classical_metrics(features: pd.DataFrame, labels: pd.DataFrame, horizon_days: int,
                       models: dict[str, PurchaseModel]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    expected = {name: model.predict_expected_purchases(features, horizon_days)
                for name, model in models.items()}
    actual = labels["horizon_purchase_days"].to_numpy(float)
    metrics = {}
    for name, e in expected.items():
        metrics[f"{name}_forecast_purchases"] = float(e.sum())
        metrics[f"{name}_forecast_error"] = float(e.sum() / actual.sum() - 1)
        metrics[f"{name}_correlation"] = float(np.corrcoef(e, actual)[0, 1])
    metrics["actual_purchases"] = float(actual.sum())
    return metrics, expected


def _classical_churn_probabilities(features: pd.DataFrame, churned: np.ndarray, horizon_days: int,
                                   models: dict[str, PurchaseModel], seed: int) -> dict[str, np.ndarray]:
    """1 − P(purchase within H) per classical model, raw and isotonic-recalibrated (cross-fitted)."""
    out = {}
    for name, model in models.items():
        raw = 1.0 - model.predict_prob_purchase_within(features, horizon_days)
        out[name] = raw
        out[f"{name}_isotonic"] = cross_fitted_isotonic(raw, churned, seed)
    return out


def _value_metrics(joined: pd.DataFrame, horizon_days: int) -> tuple[dict[str, float], str]:
    """Gini of the shipped ``clv_12m`` against horizon spend; decile MAPE of the horizon value."""
    actual = joined["horizon_spend"].to_numpy(float)
    clv = joined["clv_12m"].to_numpy(float)
    if "expected_purchases_horizon" in joined:
        predicted = (joined["expected_order_value"].to_numpy(float)
                     * joined["expected_purchases_horizon"].to_numpy(float))
        basis = "expected_order_value × expected_purchases_horizon"
    else:
        predicted = clv * horizon_days / 365.0
        basis = f"clv_12m × {horizon_days}/365 (no expected_purchases_horizon in scored)"
    return {"value_gini": normalized_gini(actual, clv),
            "value_decile_mape": decile_mape(actual, predicted)}, basis


def _comparison(metric: str, baseline: str, model_value: float, baseline_value: float,
                result: tuple[float, float, float], higher_is_better: bool = True) -> Comparison:
    difference, low, high = result
    return Comparison(metric, baseline, float(model_value), float(baseline_value), difference, low, high,
                      verdict(low, high, higher_is_better))


def _record(metrics: dict[str, float], verdicts: dict[str, str], key: str, verdict_key: str,
            comparison: Comparison) -> None:
    metrics.update({key: comparison.difference, f"{key}_low": comparison.low, f"{key}_high": comparison.high})
    verdicts[verdict_key] = comparison.verdict


def _same_ids(a: pd.Series, b: pd.Series) -> bool:
    """Whether two id columns hold the same ids in the same order. Arrow-backed ids (a compact
    table, :mod:`features.compact`) are compared in Arrow, never as ten million Python strings."""
    if len(a) != len(b):
        return False
    if isinstance(a.dtype, pd.ArrowDtype) and a.dtype == b.dtype:
        return bool(a.array.__arrow_array__().equals(b.array.__arrow_array__()))
    return bool((np.asarray(a, dtype=object) == np.asarray(b, dtype=object)).all())


def _unique_ids(ids: pd.Series) -> bool:
    if isinstance(ids.dtype, pd.ArrowDtype):
        return pc.count_distinct(ids.array.__arrow_array__(), mode="all").as_py() == len(ids)
    return bool(ids.is_unique)


def _aligned(features: pd.DataFrame, customers: pd.Series) -> pd.DataFrame:
    """``features``' rows for ``customers``, in that order; ``features`` itself when it already
    is (the scorer keeps the feature table's order), which spares indexing a million ids."""
    if _same_ids(features["customer_id"], customers):
        return features.reset_index(drop=True)
    return features.set_index("customer_id").loc[customers].reset_index()


def _with_labels(scored: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """``scored`` joined one to one with ``labels`` on ``customer_id``, in ``scored``'s order.

    Scores and labels built from one log come sorted by customer alike; then the labels'
    columns are set beside the scores' without a merge (a merge of 10M rows copies every
    column and hashes every id), else they are merged.
    """
    shared = (set(labels.columns) - {"customer_id"}) & set(scored.columns)      # a merge would suffix them
    if not shared and _same_ids(scored["customer_id"], labels["customer_id"]) and _unique_ids(scored["customer_id"]):
        joined = scored.copy(deep=False)
        joined.index = pd.RangeIndex(len(joined))
        for name in labels.columns:
            if name != "customer_id":
                joined[name] = labels[name].array
        return joined
    return scored.merge(labels, on="customer_id", validate="one_to_one")


def evaluate(scored: pd.DataFrame, features: pd.DataFrame, labels: pd.DataFrame,
             as_of: pd.Timestamp, horizon_days: int, n_boot: int = 1000, n_boot_cindex: int = 200,
             seed: int = 0, max_bootstrap_customers: int | None = BOOTSTRAP_CUSTOMERS) -> Evaluation:
    """Compare the scorer's output with the outcomes and with the baselines.

    ``scored``: the scorer's output at ``as_of`` (optionally with ``expected_purchases_horizon``,
    used for the value forecast over the horizon); ``features`` and ``labels``: the feature
    table at ``as_of`` and the labels of the following ``horizon_days``, all for the same
    customers. ``n_boot`` resamples for the AUC and Brier comparisons, ``n_boot_cindex`` for
    the C-index one; ``seed`` fixes them and the cross-fitting folds. Beyond
    ``max_bootstrap_customers`` the bootstraps run on a subsample and their intervals are
    scaled to the whole set (:func:`scaled_bootstrap`; the notes say so).
    """
    joined = _with_labels(scored, labels)
    feats = _aligned(features, joined["customer_id"])
    churned = ~joined["purchased"].to_numpy(bool)
    probability = joined["churn_probability"].to_numpy(float)
    metrics = _churn_metrics("churn", churned, probability)
    metrics.update(_next_purchase_metrics(joined, as_of, horizon_days))

    models = {"bgnbd": BetaGeoModel().fit(feats), "mbgnbd": ModifiedBetaGeoModel().fit(feats),
              "pareto_nbd": ParetoNBDModel().fit(feats), "mbgcnbd": MBGCNBDModel().fit(feats)}
    classical, expected = _classical_metrics(feats, joined, horizon_days, models)
    metrics.update(classical)
    metrics["mbgcnbd_k"] = float(models["mbgcnbd"].k_)

    overdue = feats["overdue_ratio"].fillna(feats["days_since_last_purchase"] / horizon_days)
    baselines = {
        "recency_gap": feats["days_since_last_purchase"].to_numpy(float),
        "bgnbd_expected_purchases": -expected["bgnbd"],
        "pareto_nbd_expected_purchases": -expected["pareto_nbd"],
        "bgnbd_p_alive": -models["bgnbd"].predict_p_alive(feats),
        "pareto_nbd_p_alive": -models["pareto_nbd"].predict_p_alive(feats),
        "mbgcnbd_expected_purchases": -expected["mbgcnbd"],
        "mean_gap_due_date": overdue.to_numpy(float),
    }
    baseline_auc = {name: float(roc_auc_score(churned, s)) for name, s in baselines.items()}
    metrics.update({f"baseline_{name}_churn_auc": auc for name, auc in baseline_auc.items()})
    best = max(baseline_auc, key=baseline_auc.__getitem__)
    metrics["churn_auc_over_best_baseline"] = metrics["churn_auc"] - baseline_auc[best]

    classical_churn = _classical_churn_probabilities(feats, churned, horizon_days, models, seed)
    baseline_brier = {name: float(brier_score_loss(churned, p)) for name, p in classical_churn.items()}
    metrics.update({f"baseline_{name}_churn_brier": b for name, b in baseline_brier.items()})
    best_brier = min(baseline_brier, key=baseline_brier.__getitem__)
    metrics["churn_brier_over_best_baseline"] = metrics["churn_brier"] - baseline_brier[best_brier]

    actual_days = joined["days_to_next_purchase"].to_numpy(float)
    event = ~joined["next_purchase_censored"].to_numpy(bool)
    ranking = -models["pareto_nbd"].predict_expected_purchases(feats, RANKING_BASELINE_DAYS)
    metrics["baseline_pareto_nbd_ex30_cindex"] = concordance_index(actual_days, event, ranking)

    cap = max_bootstrap_customers
    cindex_diff = metrics["next_purchase_cindex"] - metrics["baseline_pareto_nbd_ex30_cindex"]
    comparisons = (
        _comparison("churn AUC", f"best baseline {best}", metrics["churn_auc"], baseline_auc[best],
                    scaled_bootstrap(bootstrap_auc_difference, (churned, probability, baselines[best]),
                                     metrics["churn_auc"] - baseline_auc[best], n_boot, seed, cap)),
        _comparison("next-purchase C-index", "Pareto/NBD E[X(30)] ranking", metrics["next_purchase_cindex"],
                    metrics["baseline_pareto_nbd_ex30_cindex"],
                    scaled_bootstrap(bootstrap_cindex_difference,
                                     (actual_days, event, joined["expected_days_to_purchase"].to_numpy(float),
                                      ranking), cindex_diff, n_boot_cindex, seed, cap)),
        _comparison("churn Brier", f"best classical {best_brier}", metrics["churn_brier"], baseline_brier[best_brier],
                    scaled_bootstrap(bootstrap_brier_difference,
                                     (churned, probability, classical_churn[best_brier]),
                                     metrics["churn_brier"] - baseline_brier[best_brier], n_boot, seed, cap),
                    higher_is_better=False),
    )
    verdicts: dict[str, str] = {}
    for key, verdict_key, comparison in zip(("churn_auc_diff", "next_purchase_cindex_diff", "churn_brier_diff"),
                                            ("churn_verdict", "next_purchase_verdict", "churn_brier_verdict"),
                                            comparisons):
        _record(metrics, verdicts, key, verdict_key, comparison)

    value, basis = _value_metrics(joined, horizon_days)
    metrics.update(value)
    joined["bgnbd_expected_purchases"] = expected["bgnbd"]
    joined["days_since_last_purchase"] = feats["days_since_last_purchase"].to_numpy()
    joined["tenure_days"] = feats["tenure_days"].to_numpy()
    notes = {"value_decile_mape_basis": basis}
    if cap is not None and len(joined) > cap:
        notes["bootstrap"] = (f"intervals from a random subsample of {cap:,} of {len(joined):,} customers, "
                              f"scaled by sqrt({cap:,}/{len(joined):,}) (m-out-of-n bootstrap)")
    return Evaluation({k: float(v) for k, v in metrics.items()}, baseline_auc, joined, verdicts,
                      comparisons, notes)


def comparison_table(candidate: Evaluation, champion: Evaluation | None) -> pd.DataFrame:
    """Churn AUC of the candidate, the champion (same data) and every baseline, best first."""
    rows = [("winback (this run)", candidate.metrics["churn_auc"])]
    if champion is not None:
        rows.append(("winback (current champion)", champion.metrics["churn_auc"]))
    rows += [(f"baseline: {name}", auc) for name, auc in candidate.baselines.items()]
    table = pd.DataFrame(rows, columns=["model", "churn_auc"]).sort_values("churn_auc", ascending=False)
    table["vs this run"] = table["churn_auc"] - candidate.metrics["churn_auc"]
    return table.reset_index(drop=True)
