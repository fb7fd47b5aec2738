"""Maximum likelihood for the classical models: our L-BFGS-B maximiser and the guarded call
into ``lifetimes`` (Gamma-Gamma's fit, and the oracle of tests and benchmarks)."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from models.clv.data import FloatArray, Histories


class ConvergenceError(ValueError):
    """The optimiser behind a fit did not reach a usable maximum of the likelihood."""


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


