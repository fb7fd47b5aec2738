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

This module holds what the models share: summary validation, distinct-row weighting, the
likelihood maximiser, the guarded call into ``lifetimes``, the not-fitted check, JSON persistence and the purchase-model
prediction methods that only depend on a model's likelihood.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
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

    When every column holds whole numbers >= 0 (a daily summary), the rows are packed into
    one int64 key and counted with ``numpy.unique`` (about 20x faster than a pandas
    ``value_counts`` at 10 million rows); otherwise pandas counts them.

    Parameters
    ----------
    columns : mapping of str to numpy.ndarray
        Equal-length columns.

    Returns
    -------
    distinct : dict of str to numpy.ndarray
        The distinct rows, column by column (sorted by the columns, in order, on the
        whole-number path; in pandas' order otherwise).
    weights : numpy.ndarray
        Number of original rows equal to each distinct row (float64).
    """
    arrays = {name: np.asarray(values, dtype=np.float64) for name, values in columns.items()}
    packed = _pack_whole_numbers(list(arrays.values()))
    if packed is None:
        counts = pd.DataFrame(arrays).value_counts(sort=False)
        distinct = {
            name: counts.index.get_level_values(name).to_numpy(dtype=np.float64) for name in arrays
        }
        return distinct, counts.to_numpy(dtype=np.float64)
    key, sizes = packed
    keys, counts = np.unique(key, return_counts=True)
    decoded = []
    for size in reversed(sizes):
        keys, digit = np.divmod(keys, size)
        decoded.append(digit.astype(np.float64))
    return dict(zip(arrays, reversed(decoded))), counts.astype(np.float64)


def _pack_whole_numbers(arrays: list[FloatArray]) -> tuple[NDArray[np.int64], list[int]] | None:
    """Mixed-radix int64 key of equal-length whole-number columns, with each column's radix.

    ``None`` if a column holds a fraction, a negative or non-finite value, or the key would
    not fit in 62 bits.
    """
    if not arrays or arrays[0].size == 0:
        return None
    sizes = []
    for values in arrays:
        low, high = values.min(), values.max()
        if not (np.isfinite(low) and np.isfinite(high) and low >= 0 and high < 2**31):
            return None
        if not np.array_equal(values, np.floor(values)):
            return None
        sizes.append(int(high) + 1)
    if np.sum(np.log2(sizes)) > 62:
        return None
    key = arrays[0].astype(np.int64)
    for values, size in zip(arrays[1:], sizes[1:]):
        key *= size
        key += values.astype(np.int64)
    return key, sizes


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


# --------------------------------------------------------------------------- likelihood fits


class Histories:
    """Distinct histories on a rescaled time axis, as the purchase models' likelihoods read them.

    Rows are split into first-time buyers (``x == 0``, whose ``t_x`` is 0) and repeat buyers;
    repeat rows also carry the position of their frequency in ``x_values``, so that terms that
    depend on the frequency alone (gamma functions) are evaluated once per distinct frequency
    and weighted by ``x_weights``, the customers having it.

    ``T`` and ``t_x`` also carry the position of their value among the distinct ones: a daily
    summary has a few hundred ages, so ``log(alpha + T)`` is computed per age and gathered.

    Time is divided by the largest ``T`` (``lifetimes``' scaling), which keeps the optimiser's
    start (all parameters 1) reasonable for daily and weekly summaries alike.
    """

    def __init__(self, x: FloatArray, t_x: FloatArray, T: FloatArray, weights: FloatArray,
                 scale: float | None = None) -> None:
        self.scale = 1.0 / float(T.max()) if scale is None else scale
        self._rows = (x, t_x, T, weights)
        first = x == 0
        self.first_T = T[first] * self.scale
        self.first_weights = weights[first]
        repeat = ~first
        self.x, self.weights = x[repeat], weights[repeat]
        self.t_x, self.T = t_x[repeat] * self.scale, T[repeat] * self.scale
        self.x_values, self.x_index = np.unique(self.x, return_inverse=True)
        self.T_values, self.T_index = np.unique(self.T, return_inverse=True)
        self.t_x_values, self.t_x_index = np.unique(self.t_x, return_inverse=True)
        self.x_weights = np.bincount(self.x_index, self.weights, minlength=self.x_values.size)
        self.total = float(weights.sum())
        self.first_total = float(self.first_weights.sum())
        self._pairs: dict[int, tuple[NDArray[np.intp], FloatArray, FloatArray]] = {}

    def thinned(self, customers: int, seed: int = 0) -> Histories:
        """The histories of about ``customers`` customers drawn at random (binomial thinning
        of the weights), on the same time scale: a cheap problem whose maximum is close."""
        x, t_x, T, weights = self._rows
        kept = np.random.default_rng(seed).binomial(weights.astype(np.int64), min(1.0, customers / self.total))
        keep = kept > 0
        return Histories(x[keep], t_x[keep], T[keep], kept[keep].astype(np.float64), self.scale)

    def pairs(self, y: FloatArray) -> tuple[NDArray[np.intp], FloatArray, FloatArray]:
        """Distinct ``(x, y)`` pairs of the repeat rows (``y`` is ``t_x`` or ``T``), cached.

        Returns each row's pair code and the pairs' ``x`` and ``y``: terms costly to evaluate
        (hypergeometric functions) are computed once per pair.
        """
        key = id(y)
        if key not in self._pairs:
            codes, _ = pd.factorize(self.x + 1j * y)
            first = np.empty(codes.max() + 1 if codes.size else 0, dtype=np.int64)
            first[codes[::-1]] = np.arange(codes.size - 1, -1, -1)
            self._pairs[key] = (codes, self.x[first], y[first])
        return self._pairs[key]

    def by_frequency(self, values: FloatArray) -> FloatArray:
        """Sum of ``values`` (one per repeat row) within each distinct frequency."""
        return np.bincount(self.x_index, values, minlength=self.x_values.size)


LogLikelihood = Callable[[FloatArray, Histories], tuple[float, FloatArray | None]]
"""``(params, histories) -> (total log-likelihood, its gradient in params or None)``."""


WARM_START_CUSTOMERS = 100_000
"""Above this many distinct histories, the fit first finds the maximum on this many customers
drawn at random and starts the full fit there."""


def maximize_likelihood(
    log_likelihood: LogLikelihood, histories: Histories, penalizer_coef: float, name: str
) -> FloatArray:
    """Maximum-likelihood parameters, warm-started on a random subset when the data are large.

    The maximum on :data:`WARM_START_CUSTOMERS` customers drawn at random is close to the full
    one, so the full data (the costly part) need only a few steps from there; the answer
    is the full-data maximum either way (the warm start changes the path, not the optimum).
    """
    start = np.zeros(4)
    if histories.weights.size + histories.first_weights.size > WARM_START_CUSTOMERS:
        sample = histories.thinned(WARM_START_CUSTOMERS)
        with contextlib.suppress(ConvergenceError):     # then the full fit starts from ones
            start = np.log(_maximize(log_likelihood, sample, penalizer_coef, name, start))
    return _maximize(log_likelihood, histories, penalizer_coef, name, start)


def _maximize(
    log_likelihood: LogLikelihood, histories: Histories, penalizer_coef: float, name: str,
    start: FloatArray,
) -> FloatArray:
    """Maximum-likelihood parameters (on the histories' scaled time axis) by L-BFGS-B.

    Minimises ``lifetimes``' objective, ``-log_likelihood / customers + penalizer_coef *
    sum(params ** 2)``, over log-parameters from ``start`` (all ones: ``log(params) = 0``).
    With an analytic gradient (BG/NBD, MBG/NBD) every step is exact; where the model returns
    ``None`` for the gradient (Pareto/NBD) forward differences are used.

    Raises
    ------
    ConvergenceError
        If the optimiser ends without a small gradient or with unusable parameters.
    """
    from scipy.optimize import minimize
    from threadpoolctl import threadpool_limits

    count = histories.total

    def objective(log_params: FloatArray) -> float:
        params = np.exp(log_params)
        with np.errstate(all="ignore"):
            value, _ = log_likelihood(params, histories)
        return -value / count + penalizer_coef * float(params @ params)

    def objective_and_gradient(log_params: FloatArray) -> tuple[float, FloatArray]:
        params = np.exp(log_params)
        with np.errstate(all="ignore"):
            value, gradient = log_likelihood(params, histories)
        if gradient is None:
            penalized = _forward_gradient(objective, log_params, -value / count
                                          + penalizer_coef * float(params @ params))
        else:
            penalized = (-gradient / count + 2 * penalizer_coef * params) * params
        total = -value / count + penalizer_coef * float(params @ params)
        if not np.isfinite(total):
            return np.inf, np.zeros_like(log_params)
        return total, penalized

    # BLAS threads only add contention to 4-parameter steps and dot products (measured 5x
    # slower on a busy 2-core machine), so the optimisation runs single-threaded.
    with threadpool_limits(limits=1, user_api="blas"):
        with np.errstate(all="ignore"):
            analytic = log_likelihood(np.exp(start), histories)[1] is not None
        # a forward-difference gradient is only good to about 1e-7: asking for less stalls
        # the line search (measured at 3M customers: 72 instead of 12 objective calls)
        tolerances = {"ftol": 1e-15, "gtol": 1e-10} if analytic else {"ftol": 1e-13, "gtol": 1e-6}
        result = minimize(objective_and_gradient, start, jac=True, method="L-BFGS-B",
                          options={"maxiter": 2000, "maxcor": 20, **tolerances})
        _, gradient = objective_and_gradient(result.x)
    params = np.exp(result.x)
    steepest = np.abs(gradient).max()
    # a stop on a relative change of the objective below 1e-15 with a gradient of 1e-3 or
    # less is a flat maximum, not a failure; larger is a parameter running off to a bound
    if not (np.all(np.isfinite(params) & (params > 0))
            and (steepest < 1e-5 or (result.success and steepest < 1e-3))):
        raise ConvergenceError(
            f"{name}: the likelihood maximisation did not converge (penalizer_coef={penalizer_coef}, "
            f"optimiser: {result.message}); a larger penalizer_coef may help"
        )
    return params


def _forward_gradient(function: Callable[[FloatArray], float], point: FloatArray, value: float) -> FloatArray:
    """Forward-difference gradient of a scalar function at ``point`` (where it is ``value``).

    Step 1e-7 in log-parameters: truncation and rounding errors both near 1e-7 relative,
    far below what moves the estimates at the precision they are compared at.
    """
    step = 1e-7
    gradient = np.empty_like(point)
    for i in range(point.size):
        shifted = point.copy()
        shifted[i] += step
        gradient[i] = (function(shifted) - value) / step
    return gradient


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
