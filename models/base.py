"""Shared machinery for the classical buy-till-you-die estimators.

Every classical model in :mod:`models` is a thin scikit-learn style estimator around one
``lifetimes`` fitter:

* hyperparameters are stored by ``__init__`` and nothing else happens there;
* ``fit(summary)`` validates the RFM summary, collapses it to its distinct histories with a
  count per history (``weights``), hands those to ``lifetimes`` and keeps only the learned
  parameters (``params_``), the total log-likelihood (``log_likelihood_``) and the number of
  customers (``n_customers_``);
* every prediction is a closed-form, vectorised numpy/scipy expression of ``params_``, so a
  model saved as JSON (:meth:`ClassicalModel.save`) predicts exactly like the one that was fit.
  No ``lifetimes`` object is ever kept or pickled.

This module holds what the models share: summary validation, distinct-row weighting, the
guarded call into ``lifetimes``, the not-fitted check, JSON persistence and the purchase-model
prediction methods that only depend on a model's likelihood.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

FloatArray = NDArray[np.float64]

HISTORY_COLUMNS = ("frequency", "recency", "T")
"""Columns of an RFM summary: repeat purchases, time of the last one, age (time units)."""

FORMAT_VERSION = 1
"""Version of the JSON layout written by :meth:`ClassicalModel.to_dict`."""


class ConvergenceError(ValueError):
    """The optimiser behind a fit did not reach a usable maximum of the likelihood."""


# --------------------------------------------------------------------------- validation


def require_columns(summary: pd.DataFrame, columns: Iterable[str]) -> None:
    """Raise ``ValueError`` naming every column of ``columns`` missing from ``summary``."""
    columns = tuple(columns)
    missing = [name for name in columns if name not in summary]
    if missing:
        raise ValueError(
            f"summary is missing column(s) {', '.join(repr(m) for m in missing)}; "
            f"expected columns {', '.join(columns)}"
        )


def _row_label(summary: pd.DataFrame, bad: NDArray[np.bool_]) -> Any:
    """Index label (or position) of the first ``True`` in ``bad``."""
    position = int(np.argmax(bad))
    index = getattr(summary, "index", None)
    return index[position] if index is not None else position


def reject_rows(summary: pd.DataFrame, bad: NDArray[np.bool_], column: str, expected: str) -> None:
    """Raise ``ValueError`` if any row is flagged in ``bad``, naming column, count and first row."""
    if bad.any():
        raise ValueError(
            f"column {column!r} must be {expected}; {int(bad.sum())} row(s) are not "
            f"(first at row {_row_label(summary, bad)!r})"
        )


def column_values(summary: pd.DataFrame, column: str) -> FloatArray:
    """Column ``column`` of ``summary`` as a float64 array, checked finite and non-negative."""
    try:
        values = np.asarray(summary[column], dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"column {column!r} must be numeric") from error
    reject_rows(summary, ~(np.isfinite(values) & (values >= 0)), column, "finite and >= 0")
    return values


def history_arrays(summary: pd.DataFrame) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Validated ``frequency``, ``recency`` and ``T`` arrays of an RFM summary.

    Parameters
    ----------
    summary : pandas.DataFrame
        One row per customer with ``frequency`` (repeat purchases, whole number),
        ``recency`` (age at the last purchase, 0 without repeat purchase) and ``T`` (age at
        the cutoff), as produced by ``lifetimes.utils.summary_data_from_transaction_data``.

    Returns
    -------
    tuple of numpy.ndarray
        ``(x, t_x, T)`` as float64 arrays.

    Raises
    ------
    ValueError
        If a column is missing or a value is impossible; the message names the column, the
        number of bad rows and the first bad row's index label.
    """
    require_columns(summary, HISTORY_COLUMNS)
    x, t_x, T = (column_values(summary, name) for name in HISTORY_COLUMNS)
    reject_rows(summary, x != np.floor(x), "frequency", "a whole number of repeat purchases")
    reject_rows(summary, t_x > T, "recency", "<= T")
    reject_rows(summary, (x == 0) & (t_x != 0), "recency", "0 when frequency is 0")
    return x, t_x, T


def distinct_rows(columns: Mapping[str, FloatArray]) -> tuple[dict[str, FloatArray], FloatArray]:
    """Collapse equal rows into one row with a count.

    Fader and Hardie fit their models on the distinct (x, t_x, T) patterns weighted by how
    many customers share each one; the likelihood is the same, the work scales with the
    number of distinct histories instead of customers.

    Parameters
    ----------
    columns : mapping of str to numpy.ndarray
        Equal-length columns.

    Returns
    -------
    distinct : dict of str to numpy.ndarray
        The distinct rows, column by column.
    weights : numpy.ndarray
        Number of original rows equal to each distinct row (float64).
    """
    counts = pd.DataFrame(dict(columns)).value_counts(sort=False)
    distinct = {
        name: counts.index.get_level_values(name).to_numpy(dtype=np.float64) for name in columns
    }
    return distinct, counts.to_numpy(dtype=np.float64)


def on_distinct_pairs(
    function: Callable[[FloatArray, FloatArray], FloatArray], x: FloatArray, y: FloatArray
) -> FloatArray:
    """``function(x, y)`` evaluated once per distinct ``(x, y)`` pair and spread back to every row.

    The costly terms of the purchase models (Gauss hypergeometric functions) depend on two
    columns only, e.g. frequency and T; a customer base has far fewer distinct pairs than
    customers, so this is where scoring time goes down. ``function`` must be elementwise
    along its first axis.
    """
    if x.size == 0:
        return function(x, y)
    codes, _ = pd.factorize(x + 1j * y)
    first = np.empty(codes.max() + 1, dtype=np.int64)
    first[codes[::-1]] = np.arange(codes.size - 1, -1, -1)
    return function(x[first], y[first])[codes]


def one_minus_power_over(k: float, log_u: FloatArray) -> FloatArray:
    """``(1 - u**k) / k`` computed from ``log(u)``, with its limit ``-log(u)`` at ``k = 0``."""
    if abs(k) < 1e-12:
        return -log_u
    return -np.expm1(k * log_u) / k


# --------------------------------------------------------------------------- lifetimes


def fit_lifetimes(
    fitter_name: str, penalizer_coef: float, *data: FloatArray, **fit_kwargs: Any
) -> dict[str, float]:
    """Fit one ``lifetimes`` fitter and return its parameters as plain floats.

    ``lifetimes`` is imported here, not at module import, and run inside
    ``warnings.catch_warnings`` so that its global warning filters and optimiser noise do
    not leak into the caller; what it prints before raising is captured into our error.

    Parameters
    ----------
    fitter_name : str
        Class name in ``lifetimes``, e.g. ``"BetaGeoFitter"``.
    penalizer_coef : float
        L2 penalty passed to the fitter.
    *data : numpy.ndarray
        Positional data arguments of the fitter's ``fit``.
    **fit_kwargs
        Keyword arguments of the fitter's ``fit`` (``weights``, ``initial_params``, ...).

    Returns
    -------
    dict of str to float
        The fitted parameters under the fitter's own names.

    Raises
    ------
    ConvergenceError
        If the optimiser fails or returns a non-finite or non-positive parameter.
    """
    printed = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(printed):
        warnings.simplefilter("ignore", RuntimeWarning)
        import lifetimes
        from lifetimes.utils import ConvergenceError as LifetimesConvergenceError

        fitter = getattr(lifetimes, fitter_name)(penalizer_coef=penalizer_coef)
        try:
            fitter.fit(*data, **fit_kwargs)
        except LifetimesConvergenceError as error:
            raise ConvergenceError(
                f"lifetimes.{fitter_name} did not converge (penalizer_coef={penalizer_coef}); "
                f"a larger penalizer_coef may help. Optimiser output: {printed.getvalue().strip()}"
            ) from error
    params = {str(name): float(value) for name, value in fitter.params_.items()}
    if not all(np.isfinite(v) and v > 0 for v in params.values()):
        raise ConvergenceError(f"lifetimes.{fitter_name} returned unusable parameters {params}")
    return params


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
        """Write :meth:`to_dict` as JSON to ``path`` atomically (temp file + ``os.replace``)."""
        path = Path(path)
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(text)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Read a model written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


class PurchaseModel(ClassicalModel):
    """Base of the purchase-count models (BG/NBD, MBG/NBD, Pareto/NBD).

    A subclass provides its ``lifetimes`` fitter name, parameter names and formulas: the
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

    def __init__(self, penalizer_coef: float = 0.0, time_unit_days: float = 1.0) -> None:
        self.penalizer_coef = penalizer_coef
        self.time_unit_days = time_unit_days

    # -- fitting

    def _fit_options(self) -> dict[str, Any]:
        """Extra keyword arguments for the ``lifetimes`` fitter's ``fit``."""
        return {}

    def fit(self, summary: pd.DataFrame) -> Self:
        """Fit the model by maximum likelihood on an RFM summary.

        The summary is collapsed to its distinct ``(frequency, recency, T)`` rows, each
        weighted by the number of customers sharing it, before ``lifetimes`` maximises the
        likelihood; the result equals the fit on every row.

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
        self.params_ = fit_lifetimes(
            self._fitter_name,
            self.penalizer_coef,
            rows["frequency"],
            rows["recency"],
            rows["T"],
            weights=weights,
            **self._fit_options(),
        )
        self.log_likelihood_ = float(
            weights @ self._log_likelihood(rows["frequency"], rows["recency"], rows["T"])
        )
        self.n_customers_ = int(x.size)
        return self

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
        if not (np.isscalar(days) and np.isfinite(days) and days >= 0):
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
