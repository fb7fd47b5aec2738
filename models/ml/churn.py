"""Churn probability: P(no purchase within the horizon), LightGBM with calibrated output.

The classifier sees the feature table and the classical models' outputs. Where the direction
of an effect is known, a monotone constraint enforces it (more days since the last purchase
never lowers the risk, all else equal; a higher P(alive) never raises it). The raw scores are
calibrated by isotonic regression on a later cutoff than the ones the trees were fit on, so a
predicted 30 % churns about 30 % of the time out of time.

The trees are small and strongly regularised and their number is fixed (chosen by the scorer's
time-series cross-validation, which validates on customers the trees never saw), not found by
early stopping on the calibration cutoff: that cutoff holds the same customers as the training
origins, with overlapping label windows, so early stopping there rewards trees that memorise
customers (measured on CDNOW: +0.03 AUC in such a validation, +0.001 out of time).
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.isotonic import IsotonicRegression

from models.ml.forest import CompiledTrees, feature_matrix, forest_for, sample_positions
from models.ml.selection import ordered_probability

#: Rows the trees are fit on at most (a uniform random subsample above it). Measured on the 1M-customer
#: synthetic log (3 origins, 3M rows): trees fit on 1M of the rows rank the later calibration origin
#: with AUC 0.9005, on all 3M 0.9006, in a third of the time (7.6 s vs 22.4 s).
MAX_FIT_ROWS = 1_000_000
#: Rows per prediction call on a large table (about 80 MB of float64 features at a time).
PREDICT_CHUNK_ROWS = 1 << 18

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


def monotone_direction(feature: str) -> int:
    """+1, -1 or 0 for a feature, from :data:`MONOTONE_DIRECTIONS`; a classical model's output
    named ``<model>_<output>`` takes the direction of ``<output>``."""
    if feature in MONOTONE_DIRECTIONS:
        return MONOTONE_DIRECTIONS[feature]
    for output in ("p_alive", "expected_purchases_horizon", "prob_purchase_horizon"):
        if feature.endswith("_" + output):
            return MONOTONE_DIRECTIONS[output]
    return 0


class ChurnModel(CompiledTrees, BaseEstimator):
    """LightGBM churn classifier with isotonic calibration.

    Parameters
    ----------
    n_estimators, learning_rate, num_leaves, max_depth, min_child_samples, reg_lambda : LightGBM
        settings (defaults measured on CDNOW: small trees, strong L2).
    monotone : apply :data:`MONOTONE_DIRECTIONS` to the features present (also to classical
        features named ``<model>_p_alive``, ``<model>_expected_purchases_horizon``, ...).
    early_stopping_rounds : None (default) fits exactly ``n_estimators`` trees; a number stops
        early on the calibration set's AUC (see the module docstring for why that is not the
        default).
    random_state : seed for LightGBM and for the subsample of rows.
    num_threads : LightGBM threads (0: LightGBM's default, all cores).
    max_rows : fit the trees on a uniform random subsample of this many rows when given more
        (None: always all; default :data:`MAX_FIT_ROWS`). No weights are needed: every row is
        equally likely to be kept, so the churn rate and the calibration (fitted on the
        calibration set, never subsampled) stay as they are.
    categorical_features : features holding category codes (customer attributes), split by
        LightGBM's categorical splits; a missing or unseen code takes the rest-of-categories side.
    """

    def __init__(self, n_estimators: int = 90, learning_rate: float = 0.03, num_leaves: int = 7,
                 max_depth: int = -1, min_child_samples: int = 400, monotone: bool = True,
                 early_stopping_rounds: int | None = None, random_state: int = 0,
                 reg_lambda: float = 10.0, num_threads: int = 0,
                 max_rows: int | None = MAX_FIT_ROWS, categorical_features: tuple[str, ...] = ()) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.max_depth = max_depth
        self.min_child_samples = min_child_samples
        self.monotone = monotone
        self.early_stopping_rounds = early_stopping_rounds
        self.random_state = random_state
        self.reg_lambda = reg_lambda
        self.num_threads = num_threads
        self.max_rows = max_rows
        self.categorical_features = categorical_features

    def fit(self, X: pd.DataFrame | lgb.Dataset, churned: NDArray, X_calibration: pd.DataFrame,
            churned_calibration: NDArray) -> "ChurnModel":
        """Fit the trees on ``X`` and the calibration map on the later ``X_calibration``.

        ``X`` is a feature table, or the :meth:`dataset` built from one with these labels
        (``churned``), e.g. one already binned for cross-validating the number of trees.
        """
        data = X if isinstance(X, lgb.Dataset) else self.dataset(X, churned)
        # the booster lets go of its binned training rows: prediction never reads them
        self.booster_ = self.fit_trees(self._subsample(data), X_calibration, churned_calibration).free_dataset()
        self.feature_names_ = list(data.feature_name)
        raw = self._raw(X_calibration)
        self.calibrator_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip",
                                              increasing=True).fit(raw, np.asarray(churned_calibration, float))
        return self

    def dataset(self, X: pd.DataFrame, churned: NDArray, features: list[str] | None = None,
                rows: NDArray[np.integer] | None = None) -> lgb.Dataset:
        """``X``'s ``features`` (default: every column) and the labels as a LightGBM dataset,
        of the rows at positions ``rows`` only when given (``churned`` is for all of ``X``).

        The values go in as float32 (half the memory of float64; LightGBM bins them anyway)
        and are freed once binned. Its :meth:`lightgbm.Dataset.subset` s share the bins, so
        one binning serves the tree-count cross-validation and the final fit.
        """
        names = list(X.columns) if features is None else list(features)
        categorical = [c for c in self.categorical_features if c in names]
        labels = np.asarray(churned, dtype=np.float32)
        if rows is not None and len(rows) == len(X):
            rows = None                                   # all of them: no gather
        return lgb.Dataset(feature_matrix(X, names, np.float32, rows=rows), labels if rows is None else labels[rows],
                           feature_name=names, params=self._params(names), free_raw_data=True,
                           categorical_feature=categorical or "auto")

    def _subsample(self, data: lgb.Dataset) -> lgb.Dataset:
        """``data``, or a uniform random subset of :attr:`max_rows` of its rows (sharing its bins)."""
        rows = sample_positions(data.construct().num_data(), self.max_rows, self.random_state)
        return data if rows is None else data.subset(rows)  # type: ignore[arg-type]  # any int array

    def _params(self, names: list[str]) -> dict:
        constraints = [monotone_direction(c) if self.monotone else 0 for c in names]
        return {"objective": "binary", "metric": "auc", "learning_rate": self.learning_rate,
                "num_leaves": self.num_leaves, "max_depth": self.max_depth,
                "min_child_samples": self.min_child_samples, "lambda_l2": self.reg_lambda,
                "monotone_constraints": constraints, "monotone_constraints_method": "intermediate",
                "seed": self.random_state, "deterministic": True, "force_col_wise": True,
                "num_threads": self.num_threads, "verbose": -1}

    def fit_trees(self, data: lgb.Dataset, X_valid: pd.DataFrame | None = None,
                  churned_valid: NDArray | None = None) -> lgb.Booster:
        """The boosted trees alone (no calibration) on a :meth:`dataset` or a subset of one,
        e.g. for cross-validating their number."""
        names = list(data.feature_name)
        params = self._params(names)
        if self.early_stopping_rounds is None or X_valid is None:
            return lgb.train(params, data, num_boost_round=self.n_estimators)
        later = lgb.Dataset(feature_matrix(X_valid, names, np.float32),
                            np.asarray(churned_valid, dtype=np.float32), reference=data)
        return lgb.train(params, data, num_boost_round=self.n_estimators, valid_sets=[later],
                         callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)])

    def _check_fitted(self) -> None:
        if not hasattr(self, "booster_"):
            raise NotFittedError("ChurnModel is not fitted yet; call fit first")

    def _raw(self, X: pd.DataFrame) -> NDArray[np.float64]:
        """The trees' probability, :data:`PREDICT_CHUNK_ROWS` rows at a time: the float64 matrix
        LightGBM reads exists for one chunk, not for the whole table (10M rows: 3 GiB)."""
        forest = forest_for(self, self.booster_, self.num_threads)
        n = len(X)
        if n <= PREDICT_CHUNK_ROWS:
            return forest.predict(feature_matrix(X, self.feature_names_))
        out = np.empty(n)
        for start in range(0, n, PREDICT_CHUNK_ROWS):
            part = X.iloc[start:start + PREDICT_CHUNK_ROWS]
            out[start:start + len(part)] = forest.predict(feature_matrix(part, self.feature_names_), batch_rows=n)
        return out

    def predict_raw(self, X: pd.DataFrame) -> NDArray[np.float64]:
        """The trees' uncalibrated probability (monotone in each constrained feature)."""
        self._check_fitted()
        return self._raw(X)

    def predict_proba(self, X: pd.DataFrame) -> NDArray[np.float64]:
        """Calibrated churn probability per row.

        The isotonic map is a step function; customers on one step are ordered by the raw
        score (:func:`models.ml.selection.ordered_probability`), so calibration costs no ranking
        (ROC AUC), not even on the steps at 0 and 1, and the probabilities move by about a
        millionth.
        """
        self._check_fitted()
        raw = self._raw(X)
        return ordered_probability(self.calibrator_.predict(raw), raw - 0.5)

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """Each feature's contribution to the raw log-odds (TreeSHAP), one column per feature."""
        self._check_fitted()
        values = np.asarray(self.booster_.predict(X[self.feature_names_].to_numpy(dtype=np.float64),
                                                  pred_contrib=True, num_threads=self.num_threads))
        return pd.DataFrame(values[:, :-1], columns=self.feature_names_, index=X.index)

    def to_dict(self) -> dict:
        """Hyperparameters, LightGBM model text and the isotonic map's knots."""
        self._check_fitted()
        return {**self.get_params(), "feature_names": self.feature_names_, "booster": self.booster_.model_to_string(),
                "calibration_x": self.calibrator_.X_thresholds_.tolist(),
                "calibration_y": self.calibrator_.y_thresholds_.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "ChurnModel":
        """The model :meth:`to_dict` wrote, ready to predict."""
        model = cls(**{k: data[k] for k in cls().get_params() if k in data})
        model.feature_names_ = list(data["feature_names"])
        model.booster_ = lgb.Booster(model_str=data["booster"])
        x, y = np.asarray(data["calibration_x"]), np.asarray(data["calibration_y"])
        model.calibrator_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(x, y)
        return model
