"""Shared machinery for the classical buy-till-you-die estimators.

Every classical model in :mod:`models` is a thin scikit-learn style estimator:

* hyperparameters are stored by ``__init__`` and nothing else happens there;
* ``fit(summary)`` validates the RFM summary, collapses it to its distinct histories with a
  count per history (``weights``), maximises the likelihood on those (the purchase models
  with their own likelihood and gradient, :func:`maximize_likelihood`; Gamma-Gamma through
  ``lifetimes``) and keeps only the learned parameters (``params_``), the total
  log-likelihood (``log_likelihood_``) and the number of customers (``n_customers_``);
* every prediction is a closed-form, vectorised numpy/scipy expression of ``params_``, so a
  model saved as JSON (:meth:`ClassicalModel.save`) predicts exactly like the one that was fit.
  No ``lifetimes`` object is ever kept or pickled.

This module holds the estimators' shared base: the not-fitted check, JSON persistence and the
purchase-model prediction methods that only depend on a model's likelihood. The summary checks
and distinct histories are in :mod:`models.clv.data`, the maximiser and the ``lifetimes`` call
in :mod:`models.clv.fitting`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.special import expit
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from models.clv.data import FloatArray, Histories, distinct_rows, history_arrays, on_distinct_pairs
from models.clv.fitting import maximize_likelihood

FORMAT_VERSION = 1
"""Version of the JSON layout written by :meth:`ClassicalModel.to_dict`."""


def one_minus_power_over(k: float, log_u: FloatArray) -> FloatArray:
    """``(1 - u**k) / k`` computed from ``log(u)``, with its limit ``-log(u)`` at ``k = 0``."""
    if abs(k) < 1e-12:
        return -log_u
    return -np.expm1(k * log_u) / k


# --------------------------------------------------------------------------- estimators


class ClassicalModel(BaseEstimator):
    """Base of the classical models: fitted-state check and JSON persistence.

    Subclasses set ``_param_names`` (the keys of ``params_``) and define ``__init__`` with
    their hyperparameters as keyword arguments, which is all :meth:`to_dict` and
    :meth:`from_dict` need (through scikit-learn's ``get_params``).

    Attributes
    ----------
    params_ : dict of str to float
        Maximum-likelihood parameters.
    log_likelihood_ : float
        Total (not mean) log-likelihood of the fitted data at ``params_``, without penalty.
    n_customers_ : int
        Customers the model was fit on.
    """

    _param_names: ClassVar[tuple[str, ...]] = ()

    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call fit(summary) first."
            )

    def _check_penalizer(self) -> None:
        if not (np.isfinite(self.penalizer_coef) and self.penalizer_coef >= 0):
            raise ValueError(f"penalizer_coef must be finite and >= 0, got {self.penalizer_coef!r}")

    def _params(self) -> tuple[float, ...]:
        """Fitted parameters in the order of ``_param_names``."""
        self._check_fitted()
        return tuple(self.params_[name] for name in self._param_names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description: class name, hyperparameters and learned state."""
        self._check_fitted()
        return {
            "model": type(self).__name__,
            "format_version": FORMAT_VERSION,
            "hyperparameters": self.get_params(),
            "params": {name: float(self.params_[name]) for name in self._param_names},
            "log_likelihood": float(self.log_likelihood_),
            "n_customers": int(self.n_customers_),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Rebuild a fitted model from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            If ``data`` describes another model class, another format version, or does not
            hold exactly this model's parameters.
        """
        if data.get("model") != cls.__name__:
            raise ValueError(f"cannot load a {data.get('model')!r} as {cls.__name__}")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"unsupported format_version {data.get('format_version')!r}; "
                f"expected {FORMAT_VERSION}"
            )
        params = data["params"]
        if set(params) != set(cls._param_names):
            raise ValueError(
                f"{cls.__name__} needs params {', '.join(cls._param_names)}; got {', '.join(params)}"
            )
        model = cls(**data["hyperparameters"])
        model.params_ = {name: float(params[name]) for name in cls._param_names}
        model.log_likelihood_ = float(data["log_likelihood"])
        model.n_customers_ = int(data["n_customers"])
        return model

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` atomically (:func:`features.output.atomic_path`)."""
        from features.output import atomic_path

        path = Path(path)
        with atomic_path(path) as temporary:
            temporary.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Read a model written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


class PurchaseModel(ClassicalModel):
    """Base of the purchase-count models (BG/NBD, MBG/NBD, Pareto/NBD).

    A subclass provides its parameter names, its total log-likelihood on distinct histories
    (:meth:`_scaled_log_likelihood`, with the gradient where it has one) and formulas: the
    individual likelihood as ``exp(common(x)) * (exp(alive) + exp(dead))``
    (:meth:`_log_common`, :meth:`_log_likelihood_parts`), the expected purchases of a customer
    known to be alive (:meth:`_expected_purchases_if_alive`) and, optionally, a faster
    :meth:`_prob_purchase_within`. Everything else is shared.

    Parameters
    ----------
    penalizer_coef : float, default 0.0
        L2 penalty on the parameters during the fit (``lifetimes``' ``penalizer_coef``).
    time_unit_days : float, default 1.0
        Days in one unit of the summary's ``recency`` and ``T`` (1 for a daily summary, 7
        for a weekly one). Prediction horizons are given in days and converted with it.
    """

    _fitter_name: ClassVar[str]
    """The ``lifetimes`` fitter of the same model: the oracle of tests and benchmarks."""
    _time_params: ClassVar[tuple[str, ...]] = ("alpha",)
    """Parameters measured in time units (rescaled back after the fit on scaled time)."""

    def __init__(self, penalizer_coef: float = 0.0, time_unit_days: float = 1.0) -> None:
        self.penalizer_coef = penalizer_coef
        self.time_unit_days = time_unit_days

    # -- fitting

    def fit(self, summary: pd.DataFrame) -> Self:
        """Fit the model by maximum likelihood on an RFM summary.

        The summary is collapsed to its distinct ``(frequency, recency, T)`` rows, each
        weighted by the number of customers sharing it (exact: the likelihood is the same);
        terms that depend on the frequency alone are summed once per distinct frequency.
        The likelihood is maximised by L-BFGS-B over log-parameters with the model's
        gradient, on ``lifetimes``' objective and time scaling, so the estimates equal
        ``lifetimes``' to optimiser precision.

        Parameters
        ----------
        summary : pandas.DataFrame
            Columns ``frequency``, ``recency``, ``T`` (units: ``time_unit_days`` days).

        Returns
        -------
        self
        """
        self._check_penalizer()
        self._days_to_units(0.0)  # validates time_unit_days
        x, t_x, T = history_arrays(summary)
        if not (T > 0).any():
            raise ValueError("column 'T' must be > 0 for at least one customer to fit a model")
        rows, weights = distinct_rows({"frequency": x, "recency": t_x, "T": T})
        histories = Histories(rows["frequency"], rows["recency"], rows["T"], weights)
        fitted = maximize_likelihood(self._scaled_log_likelihood, histories, self.penalizer_coef,
                                     type(self).__name__)
        params = dict(zip(self._param_names, (float(v) for v in fitted)))
        for name in self._time_params:
            params[name] /= histories.scale
        self.params_ = params
        self.log_likelihood_ = float(
            weights @ self._log_likelihood(rows["frequency"], rows["recency"], rows["T"])
        )
        self.n_customers_ = int(x.size)
        return self

    def _scaled_log_likelihood(
        self, params: FloatArray, histories: Histories
    ) -> tuple[float, FloatArray | None]:
        """Total log-likelihood of ``histories`` at ``params`` and its gradient (or None)."""
        raise NotImplementedError

    # -- model formulas (per model)

    def _log_common(self, x: FloatArray) -> FloatArray:
        """Log of the likelihood factor shared by both parts; depends on frequency only."""
        raise NotImplementedError

    def _log_likelihood_parts(
        self, x: FloatArray, t_x: FloatArray, T: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Logs of the two parts of ``L / exp(common(x))``: ``L = L_alive + L_dead``.

        ``L_alive`` is the probability of the history and of being alive at ``T``,
        ``L_dead`` of the history and of having dropped out by ``T``.
        """
        raise NotImplementedError

    def _expected_purchases_if_alive(self, x: FloatArray, T: FloatArray, t: FloatArray) -> FloatArray:
        """Expected purchases in ``(T, T + t]`` of a customer alive at ``T`` (broadcasting)."""
        raise NotImplementedError

    # -- shared formulas

    def _log_likelihood(self, x: FloatArray, t_x: FloatArray, T: FloatArray) -> FloatArray:
        """Individual log-likelihood of each history."""
        return self._log_common(x) + np.logaddexp(*self._log_likelihood_parts(x, t_x, T))

    def _p_alive(self, x: FloatArray, t_x: FloatArray, T: FloatArray) -> FloatArray:
        """P(alive at T | history) = L_alive / (L_alive + L_dead)."""
        log_alive, log_dead = self._log_likelihood_parts(x, t_x, T)
        return expit(log_alive - log_dead)

    def _expected_purchases_combination(
        self, x: FloatArray, t_x: FloatArray, T: FloatArray, t: ArrayLike, coefficients: ArrayLike
    ) -> FloatArray:
        """``sum_j coefficients[j] * E[purchases in (T, T + t[j]] | history]`` per customer.

        E[...] = P(alive) * E[... | alive]; the second factor depends on (x, T) only and is
        evaluated, and combined over horizons, once per distinct (x, T).
        """
        horizons = np.asarray(t, dtype=np.float64)[None, :]
        weights = np.asarray(coefficients, dtype=np.float64)

        def if_alive(x: FloatArray, T: FloatArray) -> FloatArray:
            return self._expected_purchases_if_alive(x[:, None], T[:, None], horizons) @ weights

        return self._p_alive(x, t_x, T) * on_distinct_pairs(if_alive, x, T)

    def _prob_purchase_within(
        self, x: FloatArray, t_x: FloatArray, T: FloatArray, t: float
    ) -> FloatArray:
        """P(at least one purchase in ``(T, T + t]`` | history).

        A customer with history ``(x, t_x, T)`` who makes no purchase in ``(T, T + t]`` has
        the history ``(x, t_x, T + t)``; so P(no purchase) = L(x, t_x, T + t) / L(x, t_x, T)
        for any model whose likelihood depends on the history only through (x, t_x, T).
        """
        later, now = (np.logaddexp(*self._log_likelihood_parts(x, t_x, age)) for age in (T + t, T))
        log_ratio = later - now
        return np.clip(-np.expm1(np.minimum(log_ratio, 0.0)), 0.0, 1.0)

    # -- public predictions

    def _days_to_units(self, days: float) -> float:
        unit = self.time_unit_days
        if not (np.isfinite(unit) and unit > 0):
            raise ValueError(f"time_unit_days must be finite and > 0, got {unit!r}")
        if not (isinstance(days, (int, float, np.number)) and np.isfinite(days) and days >= 0):
            raise ValueError(f"days must be a finite number >= 0, got {days!r}")
        return float(days) / unit

    def predict_p_alive(self, summary: pd.DataFrame) -> FloatArray:
        """Probability that each customer is still alive (not dropped out) at ``T``.

        Parameters
        ----------
        summary : pandas.DataFrame
            Columns ``frequency``, ``recency``, ``T`` in the units the model was fit in.

        Returns
        -------
        numpy.ndarray
            One probability per row of ``summary``.
        """
        self._check_fitted()
        return self._p_alive(*history_arrays(summary))

    def predict_expected_purchases(self, summary: pd.DataFrame, days: float) -> FloatArray:
        """Conditional expected number of purchases in the next ``days`` days.

        Parameters
        ----------
        summary : pandas.DataFrame
            Columns ``frequency``, ``recency``, ``T`` in the units the model was fit in.
        days : float
            Horizon after ``T``, in days (converted with ``time_unit_days``).

        Returns
        -------
        numpy.ndarray
            E[purchases in (T, T + days] | history], one per row of ``summary``.
        """
        self._check_fitted()
        t = self._days_to_units(days)
        return self._expected_purchases_combination(*history_arrays(summary), [t], [1.0])

    def predict_prob_purchase_within(self, summary: pd.DataFrame, days: float) -> FloatArray:
        """Probability of at least one purchase in the next ``days`` days.

        Parameters
        ----------
        summary : pandas.DataFrame
            Columns ``frequency``, ``recency``, ``T`` in the units the model was fit in.
        days : float
            Horizon after ``T``, in days (converted with ``time_unit_days``).

        Returns
        -------
        numpy.ndarray
            P(at least one purchase in (T, T + days] | history), one per row of ``summary``.
        """
        self._check_fitted()
        t = self._days_to_units(days)
        return self._prob_purchase_within(*history_arrays(summary), t)

    def expected_purchases_unconditional(self, days: float | ArrayLike) -> float | FloatArray:
        """E[X(t)]: expected repeat purchases in ``days`` days after a first purchase.

        This is the population-level expectation for a randomly chosen new customer, i.e.
        the conditional expectation for the history x = 0, t_x = 0, T = 0.

        Parameters
        ----------
        days : float or array_like
            Time since the first purchase, in days (converted with ``time_unit_days``).

        Returns
        -------
        float or numpy.ndarray
            Same shape as ``days``.
        """
        self._check_fitted()
        shape = np.shape(days)
        t = np.array([self._days_to_units(d) for d in np.ravel(days)])
        zero = np.zeros(1)
        values = np.array([self._expected_purchases_combination(zero, zero, zero, [h], [1.0])[0] for h in t])
        return float(values[0]) if shape == () else values.reshape(shape)
