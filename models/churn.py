"""Churn probability: P(no purchase within the horizon), LightGBM with calibrated output.

The classifier sees the feature table and the classical models' outputs. Where the direction
of an effect is known, a monotone constraint enforces it (more days since the last purchase
never lowers the risk, all else equal; a higher P(alive) never raises it). The number of trees is
chosen by early stopping (on ROC AUC) on a later cutoff than the ones the trees were fit on, and the raw
scores are calibrated by isotonic regression on that later cutoff, so a predicted 30 % churns
about 30 % of the time out of time.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.isotonic import IsotonicRegression

#: feature -> +1 (raises churn risk) or -1 (lowers it), all else equal. Together they cover
#: every feature that moves when a customer's last purchase moves later, all in the direction
#: of lower risk, so a more recent purchase never raises the churn probability.
MONOTONE_DIRECTIONS = {
    "days_since_last_purchase": +1,
    "overdue_ratio": +1,
    "r_score": -1,
    "recency": -1,              # at fixed T, a later last purchase
    "p_alive": -1,
    "expected_purchases_horizon": -1,
    "prob_purchase_horizon": -1,
    "clv_12m": -1,
    "spend_trend": -1,
    "replenish_due_in_days": -1,
    **{f"{kind}_{n}d": -1 for kind in ("orders", "spend") for n in (30, 90, 180, 365)},
}


class ChurnModel(BaseEstimator):
    """LightGBM churn classifier with isotonic calibration.

    Parameters
    ----------
    n_estimators, learning_rate, num_leaves, min_child_samples : LightGBM settings.
    monotone : apply :data:`MONOTONE_DIRECTIONS` to the features present.
    random_state : seed for LightGBM.
    """

    def __init__(self, n_estimators: int = 100, learning_rate: float = 0.03, num_leaves: int = 15,
                 max_depth: int = 5, min_child_samples: int = 100, monotone: bool = True,
                 early_stopping_rounds: int = 30, random_state: int = 0) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.max_depth = max_depth
        self.min_child_samples = min_child_samples
        self.monotone = monotone
        self.early_stopping_rounds = early_stopping_rounds
        self.random_state = random_state

    def fit(self, X: pd.DataFrame, churned: NDArray, X_calibration: pd.DataFrame,
            churned_calibration: NDArray) -> "ChurnModel":
        """Fit the trees on ``X`` and the calibration map on the later ``X_calibration``."""
        self.feature_names_ = list(X.columns)
        constraints = [MONOTONE_DIRECTIONS.get(c, 0) if self.monotone else 0 for c in self.feature_names_]
        params = {"objective": "binary", "metric": "auc", "learning_rate": self.learning_rate,
                  "num_leaves": self.num_leaves, "max_depth": self.max_depth,
                  "min_child_samples": self.min_child_samples, "monotone_constraints": constraints, "monotone_constraints_method": "intermediate",
                  "seed": self.random_state, "deterministic": True, "force_col_wise": True, "num_threads": 2, "verbose": -1}
        data = lgb.Dataset(X.to_numpy(dtype=np.float64), np.asarray(churned, dtype=float),
                           feature_name=self.feature_names_)
        later = lgb.Dataset(X_calibration[self.feature_names_].to_numpy(dtype=np.float64),
                            np.asarray(churned_calibration, dtype=float), reference=data)
        self.booster_ = lgb.train(params, data, num_boost_round=self.n_estimators, valid_sets=[later],
                                  callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)])
        raw = self._raw(X_calibration)
        self.calibrator_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip",
                                              increasing=True).fit(raw, np.asarray(churned_calibration, float))
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "booster_"):
            raise NotFittedError("ChurnModel is not fitted yet; call fit first")

    def _raw(self, X: pd.DataFrame) -> NDArray[np.float64]:
        return self.booster_.predict(X[self.feature_names_].to_numpy(dtype=np.float64), num_threads=2)

    def predict_raw(self, X: pd.DataFrame) -> NDArray[np.float64]:
        """The trees' uncalibrated probability (monotone in each constrained feature)."""
        self._check_fitted()
        return self._raw(X)

    def predict_proba(self, X: pd.DataFrame) -> NDArray[np.float64]:
        """Calibrated churn probability per row.

        The isotonic map is a step function; customers on one step are ordered by the raw
        score through a 1e-6 nudge, so calibration costs no ranking (ROC AUC) and the
        probabilities move by at most a millionth.
        """
        self._check_fitted()
        raw = self._raw(X)
        return np.clip(self.calibrator_.predict(raw) + 1e-6 * (raw - 0.5), 0.0, 1.0)

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """Each feature's contribution to the raw log-odds (TreeSHAP), one column per feature."""
        self._check_fitted()
        values = self.booster_.predict(X[self.feature_names_].to_numpy(dtype=np.float64),
                                       pred_contrib=True, num_threads=2)
        return pd.DataFrame(values[:, :-1], columns=self.feature_names_, index=X.index)

    def to_dict(self) -> dict:
        """Hyperparameters, LightGBM model text and the isotonic map's knots."""
        self._check_fitted()
        return {"n_estimators": self.n_estimators, "learning_rate": self.learning_rate,
                "num_leaves": self.num_leaves, "max_depth": self.max_depth,
                "min_child_samples": self.min_child_samples, "monotone": self.monotone,
                "early_stopping_rounds": self.early_stopping_rounds, "random_state": self.random_state,
                "feature_names": self.feature_names_, "booster": self.booster_.model_to_string(),
                "calibration_x": self.calibrator_.X_thresholds_.tolist(),
                "calibration_y": self.calibrator_.y_thresholds_.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "ChurnModel":
        model = cls(data["n_estimators"], data["learning_rate"], data["num_leaves"], data["max_depth"],
                    data["min_child_samples"], data["monotone"], data["early_stopping_rounds"],
                    data["random_state"])
        model.feature_names_ = list(data["feature_names"])
        model.booster_ = lgb.Booster(model_str=data["booster"])
        x, y = np.asarray(data["calibration_x"]), np.asarray(data["calibration_y"])
        model.calibrator_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(x, y)
        return model
