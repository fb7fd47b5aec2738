"""When will a customer buy next: a distribution over the days after the as-of date.

Both models here answer with the same thing, F(t) = P(next purchase within t days) on a grid
of days, so they can be compared and swapped:

* :class:`ClassicalNextPurchase` reads F(t) = 1 − P(no purchase in (T, T+t]) off a fitted
  BG/NBD-family model (closed form, any t);
* :class:`HazardNextPurchaseModel` learns a discrete-time hazard with LightGBM on the feature
  table: one row per customer and grid interval they were still waiting at, so customers who
  never bought again are kept as censored at the horizon, not dropped.

:func:`summarize_distribution` turns F on the grid into the quantities a CRM team uses: the
median date, an 80 % interval and P(purchase within 7 / 30 / 90 days).
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from models.base import PurchaseModel

DEFAULT_GRID_DAYS = (1, 7, 14, 30, 60, 90, 120, 180, 270, 365)
#: The hazard model's intervals: each one is a LightGBM prediction per customer at scoring
#: time, so fewer and wider (hazard constant within one) than the classical model's grid.
HAZARD_GRID_DAYS = (7, 30, 60, 90, 180, 270, 365)


def grid_for_horizon(horizon_days: int, grid: tuple[int, ...] = HAZARD_GRID_DAYS) -> tuple[int, ...]:
    """``grid`` cut at the horizon, with the horizon itself as the last point."""
    return tuple(d for d in grid if d < horizon_days) + (int(horizon_days),)


class ClassicalNextPurchase:
    """F(t) from a fitted purchase model (BG/NBD, MBG/NBD or Pareto/NBD)."""

    def __init__(self, purchase_model: PurchaseModel, grid_days: tuple[int, ...]) -> None:
        self.purchase_model = purchase_model
        self.grid_days = tuple(grid_days)

    def predict_cdf(self, summary: pd.DataFrame) -> NDArray[np.float64]:
        """F on the grid, shape (customers, grid points), non-decreasing along each row."""
        cdf = np.column_stack([self.purchase_model.predict_prob_purchase_within(summary, d)
                               for d in self.grid_days])
        return np.maximum.accumulate(cdf, axis=1)


class HazardNextPurchaseModel(BaseEstimator):
    """Discrete-time hazard of the next purchase, learned with LightGBM.

    Interval j is (g_{j-1}, g_j] days after the as-of date (g_0 = 0). Each training customer
    contributes one row per interval they entered without a purchase: event 1 in the interval
    holding their next purchase, 0 before it; a customer censored at the horizon contributes
    zeros for every interval. The interval index is a feature, so one model learns all hazards.

    Parameters
    ----------
    grid_days : the interval ends, increasing, the last one the label horizon.
    n_estimators, learning_rate, num_leaves, min_child_samples : LightGBM settings.
    random_state : seed for LightGBM.
    """

    def __init__(self, grid_days: tuple[int, ...] = HAZARD_GRID_DAYS, n_estimators: int = 80,
                 learning_rate: float = 0.1, num_leaves: int = 15, min_child_samples: int = 100,
                 random_state: int = 0) -> None:
        self.grid_days = grid_days
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.random_state = random_state

    def fit(self, X: pd.DataFrame, days_to_next: NDArray, censored: NDArray) -> "HazardNextPurchaseModel":
        """Learn the hazards from features, days to the next purchase and censoring flags."""
        grid = np.asarray(self.grid_days, dtype=float)
        days = np.asarray(days_to_next, dtype=float)
        event = ~np.asarray(censored, dtype=bool)
        if (event & (days > grid[-1])).any():
            raise ValueError("an observed purchase lies beyond the last grid point (the horizon)")
        starts = np.concatenate([[0.0], grid[:-1]])
        # interval holding each event (or len(grid) for censored customers: never)
        event_interval = np.where(event, np.searchsorted(grid, days, side="left"), len(grid))
        at_risk = starts[None, :] < np.where(event, days, np.inf)[:, None]
        at_risk &= np.arange(len(grid))[None, :] <= event_interval[:, None]
        rows, intervals = np.nonzero(at_risk)
        y = (intervals == event_interval[rows]).astype(np.float64)
        self.feature_names_ = list(X.columns)
        expanded = self._design(X.to_numpy(dtype=np.float64)[rows], intervals)
        params = {"objective": "binary", "learning_rate": self.learning_rate,
                  "num_leaves": self.num_leaves, "min_child_samples": self.min_child_samples,
                  "seed": self.random_state, "deterministic": True, "force_col_wise": True, "num_threads": 2, "verbose": -1}
        data = lgb.Dataset(expanded, y, feature_name=self.feature_names_ + ["_interval", "_interval_days"])
        self.booster_ = lgb.train(params, data, num_boost_round=self.n_estimators)
        return self

    def _design(self, X: NDArray[np.float64], intervals: NDArray) -> NDArray[np.float64]:
        grid = np.asarray(self.grid_days, dtype=np.float64)
        return np.column_stack([X, intervals.astype(np.float64), grid[intervals]])

    def predict_cdf(self, X: pd.DataFrame) -> NDArray[np.float64]:
        """F on the grid, shape (customers, grid points)."""
        if not hasattr(self, "booster_"):
            raise NotFittedError("HazardNextPurchaseModel is not fitted yet; call fit first")
        n, k = len(X), len(self.grid_days)
        rows = np.repeat(np.arange(n), k)
        intervals = np.tile(np.arange(k), n)
        values = X[self.feature_names_].to_numpy(dtype=np.float64)
        hazard = self.booster_.predict(self._design(values[rows], intervals), num_threads=2)
        survival = np.cumprod(1.0 - hazard.reshape(n, k), axis=1)
        return 1.0 - survival

    def to_dict(self) -> dict:
        """Hyperparameters and the LightGBM model as text."""
        return {"grid_days": list(self.grid_days), "n_estimators": self.n_estimators,
                "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
                "min_child_samples": self.min_child_samples, "random_state": self.random_state,
                "feature_names": self.feature_names_, "booster": self.booster_.model_to_string()}

    @classmethod
    def from_dict(cls, data: dict) -> "HazardNextPurchaseModel":
        model = cls(tuple(data["grid_days"]), data["n_estimators"], data["learning_rate"],
                    data["num_leaves"], data["min_child_samples"], data["random_state"])
        model.feature_names_ = list(data["feature_names"])
        model.booster_ = lgb.Booster(model_str=data["booster"])
        return model


def interpolate_cdf(cdf: NDArray[np.float64], grid_days: tuple[int, ...],
                    days: float) -> NDArray[np.float64]:
    """F at ``days``: log-survival is linear between grid points (constant hazard within one).

    Beyond the last grid point F is not known and NaN is returned.
    """
    grid = np.concatenate([[0.0], np.asarray(grid_days, dtype=float)])
    if days > grid[-1]:
        return np.full(len(cdf), np.nan)
    log_s = np.log(np.clip(1.0 - np.column_stack([np.zeros(len(cdf)), cdf]), 1e-300, 1.0))
    j = min(int(np.searchsorted(grid, days, side="left")), len(grid) - 1)
    if grid[j] == days or j == 0:
        return 1.0 - np.exp(log_s[:, j])
    w = (days - grid[j - 1]) / (grid[j] - grid[j - 1])
    return 1.0 - np.exp((1 - w) * log_s[:, j - 1] + w * log_s[:, j])


def quantile_days(cdf: NDArray[np.float64], grid_days: tuple[int, ...], q: float) -> NDArray[np.float64]:
    """The day F first reaches ``q``, interpolating log-survival; NaN if not within the grid."""
    grid = np.concatenate([[0.0], np.asarray(grid_days, dtype=float)])
    full = np.column_stack([np.zeros(len(cdf)), cdf])
    reached = full >= q
    j = np.argmax(reached, axis=1)                      # first grid index with F >= q
    found = reached.any(axis=1) & (j > 0)
    jj = np.clip(j, 1, len(grid) - 1)
    rows = np.arange(len(cdf))
    log_lo = np.log(np.clip(1 - full[rows, jj - 1], 1e-300, 1))
    log_hi = np.log(np.clip(1 - full[rows, jj], 1e-300, 1))
    target = np.log(1 - q)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(log_hi < log_lo, (target - log_lo) / (log_hi - log_lo), 1.0)
    days = grid[jj - 1] + np.clip(w, 0, 1) * (grid[jj] - grid[jj - 1])
    return np.where(found, days, np.nan)


def conditional_quantile_days(cdf: NDArray[np.float64], grid_days: tuple[int, ...],
                              q: float) -> NDArray[np.float64]:
    """The day F reaches ``q`` · F(horizon): the q-quantile among those who buy within the grid.

    NaN where F(horizon) is 0 (no purchase expected at all).
    """
    last = cdf[:, -1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.where(last > 0, cdf / last, 0.0)
    days = quantile_days(np.minimum(scaled, 1.0), grid_days, q)
    return np.where(last[:, 0] > 0, days, np.nan)


def restricted_mean_days(cdf: NDArray[np.float64], grid_days: tuple[int, ...]) -> NDArray[np.float64]:
    """Expected days to the next purchase, capped at the last grid point: ∫ S(t) dt (trapezoid)."""
    grid = np.concatenate([[0.0], np.asarray(grid_days, dtype=float)])
    survival = 1.0 - np.column_stack([np.zeros(len(cdf)), cdf])
    return np.trapezoid(survival, grid, axis=1)


def summarize_distribution(cdf: NDArray[np.float64], grid_days: tuple[int, ...],
                           interval: float = 0.8) -> pd.DataFrame:
    """Median, central interval and short-horizon probabilities from F on the grid.

    The median (and the interval ends) are NaN where F does not reach them within the grid:
    a customer whose probability of buying within the horizon is under one half has no
    expected next-purchase date ("not expected").
    """
    tail = (1 - interval) / 2
    out = {f"p_purchase_{d}d": interpolate_cdf(cdf, grid_days, d) for d in (7, 30, 90)}
    out["p_purchase_horizon"] = cdf[:, -1]
    out["next_purchase_days"] = quantile_days(cdf, grid_days, 0.5)
    out["next_purchase_low_days"] = quantile_days(cdf, grid_days, tail)
    out["next_purchase_high_days"] = quantile_days(cdf, grid_days, 1 - tail)
    out["expected_days_to_purchase"] = restricted_mean_days(cdf, grid_days)
    return pd.DataFrame(out)
