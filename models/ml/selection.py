"""Which churn and next-purchase score is served: a learned model only where it beats the formulas.

A demanding user compares our scores with what ``lifetimes`` gives in an afternoon: Pareto/NBD's
expected purchases rank CDNOW's churn about as well as any tree model. So the served score is a
*choice* among candidates, made by the scorer's time-series cross-validation on training
origins (trees fit on the earlier origins and one half of the customers, validated on the
latest training origin and the other half, never on the evaluation window):

* churn: the LightGBM model; each classical score (``<model>_expected_purchases``,
  ``<model>_p_alive``, ``<model>_prob_purchase`` for every classical model the scorer fits, and
  ``recency_gap``), each calibrated by isotonic regression on the calibration origin; and a
  simple stack (logistic regression on the trees' margin and the classical scores).
* next purchase: the discrete-time hazard model and each classical model's F(t).

The best learned candidate is served only when its paired-bootstrap 95 % interval over the best
classical candidate lies above zero in that validation (it *beats* it); otherwise the best
classical candidate is served. Above :data:`models.metrics.BOOTSTRAP_CUSTOMERS` validation
customers the interval comes from an m-out-of-n bootstrap (:func:`models.metrics.scaled_bootstrap`),
as the evaluation's do: its cost no longer grows with the shop. :class:`Selection` records every
candidate's figure and why.

Calibration costs no ranking: the isotonic map is a step function, and customers on one step
are ordered by the raw score through a nudge of about a millionth (:func:`ordered_probability`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from models.metrics import bootstrap_auc_difference, bootstrap_cindex_difference, scaled_bootstrap

#: The learned churn candidates (the LightGBM model; a stack of its margin and the formulas).
LEARNED_CHURN = ("lightgbm", "stack")
#: The learned next-purchase candidate.
LEARNED_NEXT_PURCHASE = ("hazard",)
#: A classical churn score: the output column of a purchase model and its direction (+1 means a
#: higher value is a higher churn risk).
CLASSICAL_OUTPUTS = {"expected_purchases": ("expected_purchases_horizon", -1),
                     "p_alive": ("p_alive", -1),
                     "prob_purchase": ("prob_purchase_horizon", -1)}
#: Bootstrap resamples of the validation rows behind a "beats".
N_BOOT = 500


def classical_churn_scores(purchase_model: str, extra: tuple[str, ...]) -> dict[str, tuple[str, int]]:
    """Candidate name -> (model-input column, direction) for every classical churn score.

    The purchase model's outputs are the plain columns (``p_alive``); an extra model's carry its
    name (``pareto_nbd_p_alive``), as :meth:`models.scorer.WinbackScorer.model_input` adds them.
    The names match the backtest's baselines (``pareto_nbd_expected_purchases``, ...).
    """
    out = {"recency_gap": ("days_since_last_purchase", +1)}
    for model in dict.fromkeys((purchase_model, *extra)):
        prefix = "" if model == purchase_model else f"{model}_"
        for output, (column, sign) in CLASSICAL_OUTPUTS.items():
            out[f"{model}_{output}"] = (prefix + column, sign)
    return out


def signed_score(X: pd.DataFrame, column: str, sign: int) -> NDArray[np.float64]:
    """A classical score as "higher = more likely to churn"."""
    return sign * np.nan_to_num(X[column].to_numpy(dtype=np.float64), nan=0.0)


def ordered_probability(step: NDArray, unit: NDArray) -> NDArray[np.float64]:
    """A calibrated step value made strictly increasing in the score it came from.

    ``step`` is an isotonic map's value in [0, 1], ``unit`` a strictly increasing function of
    the score in (−0.5, 0.5). The result ``1e-6 + (1 − 2e-6)·step + 1e-6·unit`` lies in
    (0, 1) and orders customers on one step by their score, so the calibration costs no ranking
    even on the steps at 0 and 1 (clipping there would tie every customer on them: on CDNOW the
    top step held 22.8 % of customers) and moves no probability by more than 1.5e-6.
    """
    return 1e-6 + (1.0 - 2e-6) * np.asarray(step, dtype=np.float64) + 1e-6 * np.asarray(unit, dtype=np.float64)


class ScoreCalibrator:
    """Isotonic calibration of any churn score, keeping its ranking.

    ``fit(score, churned)`` learns a non-decreasing step map to probabilities; ``predict``
    orders the customers on one step by their score (:func:`ordered_probability`, through an
    arctangent of the standardised score), so the calibrated probability ranks as the score does.
    """

    def fit(self, score: NDArray, churned: NDArray) -> "ScoreCalibrator":
        """Learn the step map and the score's centre and spread; returns self."""
        score = np.asarray(score, dtype=np.float64)
        self.center_ = float(np.median(score))
        spread = float(np.subtract(*np.percentile(score, [75, 25])))
        self.scale_ = spread if spread > 0 else 1.0
        self.isotonic_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
            score, np.asarray(churned, dtype=np.float64))
        return self

    def predict(self, score: NDArray) -> NDArray[np.float64]:
        """Calibrated probabilities, ordered within each step as ``score`` is."""
        score = np.asarray(score, dtype=np.float64)
        return ordered_probability(self.isotonic_.predict(score),
                                   np.arctan((score - self.center_) / self.scale_) / np.pi)

    def to_dict(self) -> dict:
        """The fitted state as JSON-ready values (the pyfunc model stores it)."""
        return {"center": self.center_, "scale": self.scale_,
                "x": self.isotonic_.X_thresholds_.tolist(), "y": self.isotonic_.y_thresholds_.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "ScoreCalibrator":
        """The calibrator :meth:`to_dict` wrote."""
        out = cls()
        out.center_, out.scale_ = float(data["center"]), float(data["scale"])
        out.isotonic_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
            np.asarray(data["x"]), np.asarray(data["y"]))
        return out


def stack_inputs(margin: NDArray, X: pd.DataFrame, scores: dict[str, tuple[str, int]]) -> NDArray[np.float64]:
    """The stack's inputs: the trees' raw margin and each classical score, made roughly linear
    in the log-odds (log1p of counts and days, logit of probabilities)."""
    columns = [np.asarray(margin, dtype=np.float64)]
    for column, _ in scores.values():
        values = X[column].to_numpy(dtype=np.float64)
        if column.endswith(("p_alive", "prob_purchase_horizon")):
            p = np.clip(values, 1e-6, 1 - 1e-6)
            values = np.log(p / (1 - p))
        else:
            values = np.log1p(np.clip(values, 0.0, None))
        columns.append(np.nan_to_num(values, nan=0.0))
    return np.column_stack(columns)


class ChurnStack:
    """Logistic regression on the trees' margin and the classical scores (standardised inputs).

    Fitted on the calibration origin, a later cutoff than the trees were fit on, so its
    probabilities are calibrated there as the trees' isotonic map is.
    """

    def __init__(self, C: float = 1.0) -> None:
        self.C = C

    def fit(self, inputs: NDArray, churned: NDArray) -> "ChurnStack":
        """Fit the logistic regression on standardised ``inputs``; returns self."""
        self.mean_ = inputs.mean(axis=0)
        self.scale_ = np.where(inputs.std(axis=0) > 0, inputs.std(axis=0), 1.0)
        model = LogisticRegression(C=self.C, max_iter=1000).fit((inputs - self.mean_) / self.scale_,
                                                                np.asarray(churned, dtype=int))
        self.coef_, self.intercept_ = model.coef_[0], float(model.intercept_[0])
        return self

    def predict_proba(self, inputs: NDArray) -> NDArray[np.float64]:
        """P(churn) for rows of :func:`stack_inputs`."""
        z = ((inputs - self.mean_) / self.scale_) @ self.coef_ + self.intercept_
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict:
        """The fitted state as JSON-ready values (the pyfunc model stores it)."""
        return {"C": self.C, "mean": self.mean_.tolist(), "scale": self.scale_.tolist(),
                "coef": self.coef_.tolist(), "intercept": self.intercept_}

    @classmethod
    def from_dict(cls, data: dict) -> "ChurnStack":
        """The stack :meth:`to_dict` wrote."""
        out = cls(data["C"])
        out.mean_, out.scale_ = np.asarray(data["mean"]), np.asarray(data["scale"])
        out.coef_, out.intercept_ = np.asarray(data["coef"]), float(data["intercept"])
        return out


@dataclass(frozen=True)
class Selection:
    """What the cross-validation found for one target and which candidate is served.

    ``figures`` holds each candidate's validation figure (churn: ROC AUC; next purchase:
    C-index), ``best_classical`` the best formula, ``best_learned`` the best learned candidate
    with its paired-bootstrap difference over the formula, ``served`` the choice and ``reason``
    one line a person reads.
    """

    target: str
    metric: str
    figures: dict[str, float]
    best_classical: str
    best_learned: str
    difference: float
    low: float
    high: float
    served: str
    reason: str
    validation: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The selection as a plain dict (logged to MLflow, kept in the model)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Selection":
        """The selection :meth:`to_dict` wrote."""
        return cls(**data)


def choose(target: str, metric: str, figures: dict[str, float], learned: tuple[str, ...],
           difference: Callable[[str, str], tuple[float, float, float]], validation: dict) -> Selection:
    """Serve the best learned candidate if it beats the best classical one, else the formula.

    ``difference(learned, classical)`` is a learned candidate's paired-bootstrap difference over
    a classical one (point, low, high); it is asked once, for the best of each.
    """
    classical = {k: v for k, v in figures.items() if k not in learned}
    best_classical = max(classical, key=classical.__getitem__)
    best_learned = max((k for k in figures if k in learned), key=figures.__getitem__)
    point, low, high = difference(best_learned, best_classical)
    if low > 0:
        served = best_learned
        reason = (f"{best_learned} beats the best formula {best_classical} in cross-validation: "
                  f"{metric} {figures[best_learned]:.4f} vs {figures[best_classical]:.4f}, "
                  f"{point:+.4f} (95% CI {low:+.4f} to {high:+.4f})")
    else:
        served = best_classical
        reason = (f"{best_learned} does not beat the best formula {best_classical} in cross-validation: "
                  f"{metric} {figures[best_learned]:.4f} vs {figures[best_classical]:.4f}, "
                  f"{point:+.4f} (95% CI {low:+.4f} to {high:+.4f}); the formula is served")
    return Selection(target, metric, {k: float(v) for k, v in figures.items()}, best_classical,
                     best_learned, float(point), float(low), float(high), served, reason, validation)


def choose_churn(churned: NDArray, candidates: dict[str, NDArray], seed: int, validation: dict) -> Selection:
    """:func:`choose` for churn scores ("higher = more risk") by ROC AUC on the validation rows."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(churned, dtype=bool)
    figures = {name: float(roc_auc_score(y, s)) for name, s in candidates.items()}
    return choose("churn", "AUC", figures, LEARNED_CHURN,
                  lambda a, b: scaled_bootstrap(bootstrap_auc_difference, (y, candidates[a], candidates[b]),
                                                figures[a] - figures[b], N_BOOT, seed), validation)


def choose_next_purchase(days: NDArray, event: NDArray, expected_days: dict[str, NDArray], seed: int,
                         validation: dict, extra: dict[str, float] | None = None) -> Selection:
    """:func:`choose` for next-purchase candidates by Harrell's C of their expected days."""
    from models.metrics import concordance_index

    figures = {name: float(concordance_index(days, event, d)) for name, d in expected_days.items()}
    return choose("next_purchase", "C-index", figures, LEARNED_NEXT_PURCHASE,
                  lambda a, b: scaled_bootstrap(bootstrap_cindex_difference,
                                                (days, event, expected_days[a], expected_days[b]),
                                                figures[a] - figures[b], max(100, N_BOOT // 5), seed),
                  {**validation, **({"integrated_brier": extra} if extra else {})})
