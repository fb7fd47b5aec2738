"""MBG/CNBD-k: the MBG/NBD with Erlang-k inter-purchase times, for customers who buy regularly.

While active, a customer's inter-purchase times are Erlang-k with rate lambda ~ Gamma(r, alpha)
(k = 1: exponential, the MBG/NBD); after every purchase, the first one included, she drops out
with probability p ~ Beta(a, b). The regularity ``k`` is an integer chosen by likelihood, for
which the summary needs ``litt``, the sum of the logs of the customer's inter-purchase times.
Only the R package BTYDplus had the model; this module also holds its data generator
(:func:`simulate_mbgcnbd`), as BTYDplus keeps ``mbgcnbd.GenerateData`` beside the model.

An Erlang-k renewal process is a Poisson process with rate lambda in which every k-th event is
a purchase. Given the history and being alive at T, the customer is in phase j (j Poisson events
since the last purchase, 0 <= j < k) with lambda ~ Gamma(r + kx + j, alpha + T), the phases
weighted as the terms of the likelihood's alive part; every prediction is exact given that
mixture (see :meth:`MBGCNBDModel._expected_purchases_combination`). For k = 1 the model is the
MBG/NBD, and the MBG/NBD's closed forms are used.

References
----------
Reutterer, T., Platzer, M. and Schröder, N. (2021), "Leveraging purchase regularity for
predicting customer behavior the easy way", *International Journal of Research in Marketing*
38(1), 194-215, doi:10.1016/j.ijresmar.2020.09.002.

Platzer, M. and Reutterer, T., BTYDplus (R package), ``R/mbg-cnbd-k.R``.

Batislam, E. P., Denizel, M. and Filiztekin, A. (2007), "Empirical validation and comparison
of models for customer base analysis", *International Journal of Research in Marketing* 24(3),
201-209 (the MBG/NBD, k = 1).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any, Self

import numpy as np
import pandas as pd
from scipy.special import betainc, betaln, digamma, gammaln

from models.clv.base import PurchaseModel
from models.clv.beta_geo import beta_geo_log_likelihood
from models.clv.data import (
    FloatArray,
    Histories,
    distinct_rows,
    history_arrays,
    on_distinct_pairs,
    reject_rows,
    require_columns,
)
from models.clv.fitting import ConvergenceError, maximize_likelihood
from models.clv.modified_beta_geo import ModifiedBetaGeoModel

LITT = "litt"
"""Summary column: sum over the repeat purchases of log(time since the purchase before)."""

SERIES_TOLERANCE = 1e-12
"""Relative bound on the truncated tail of the expected-purchases series."""

SERIES_BATCH = 8192
"""Rows summed together in :func:`expected_purchases_in_phase` (bounds its memory)."""


# --------------------------------------------------------------------------- formulas


def _log_terms(params: tuple[float, ...] | FloatArray, k: int, x: FloatArray, t_x: FloatArray,
               T: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The individual likelihood as ``exp(common) * (sum_j exp(alive[..., j]) + exp(dead))``.

    ``common = log Gamma(r+kx)/Gamma(r) + r log alpha + log B(a, b+x+1)/B(a, b)`` (without the
    terms in ``litt``, constant in the parameters); ``alive[..., j] = log[(r+kx)_j (T-t_x)^j /
    j!] - (r+kx+j) log(alpha+T)``, the customer alive at T and j Poisson events into the next
    inter-purchase time; ``dead = log(a/(b+x)) - (r+kx) log(alpha+t_x)``, dropped out right
    after the last purchase (Reutterer, Platzer & Schröder 2021, eq. 8; BTYDplus ``xbgcnbd.LL``).
    """
    r, alpha, a, b = params
    s0 = r + k * x
    common = gammaln(s0) - gammaln(r) + r * np.log(alpha) + betaln(a, b + x + 1) - betaln(a, b)
    dead = np.log(a / (b + x)) - s0 * np.log(alpha + t_x)
    alive = _alive_terms(s0, alpha, k, T - t_x, T)
    return common, alive, dead


def _alive_terms(s0: FloatArray, alpha: float, k: int, since: FloatArray, T: FloatArray) -> FloatArray:
    """``log[(s0)_j since^j / j!] - (s0+j) log(alpha+T)`` for j = 0..k-1, on a last axis."""
    s0, since, T = np.broadcast_arrays(np.asarray(s0, float), np.asarray(since, float), np.asarray(T, float))
    j = np.arange(k, dtype=np.float64)
    rising = np.zeros(s0.shape + (k,))
    if k > 1:   # log of the rising factorial (s0)_j = s0 (s0+1) ... (s0+j-1)
        rising[..., 1:] = np.cumsum(np.log(s0[..., None] + j[:-1]), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_since = np.log(since)[..., None]
        powers = np.where(j == 0, 0.0, j * log_since)      # since^0 = 1 even when since = 0
    return rising - gammaln(j + 1) + powers - (s0[..., None] + j) * np.log(alpha + T)[..., None]


def _logsumexp(values: FloatArray) -> FloatArray:
    """log(sum(exp(values))) over the last axis (a single term is returned unchanged)."""
    top = values.max(axis=-1)
    return top + np.log(np.exp(values - top[..., None]).sum(axis=-1))


def regular_log_likelihood(params: FloatArray, histories: Histories, k: int) -> tuple[float, FloatArray]:
    """Total MBG/CNBD-k log-likelihood of distinct histories (without ``litt`` terms) and its
    gradient in ``(r, alpha, a, b)``, for any k >= 1.

    Terms in the frequency alone are summed once per distinct frequency; the rest is a
    log-sum-exp over the k alive terms and the dropped-out term per row, whose derivatives are
    the terms' posterior weights times their own derivatives.
    """
    r, alpha, a, b = params
    h = histories
    xv = np.concatenate([[0.0], h.x_values])
    xw = np.concatenate([[h.first_total], h.x_weights])
    n = h.total
    s0v = r + k * xv
    total = float(xw @ (gammaln(s0v) + betaln(a, b + xv + 1))) + n * (r * np.log(alpha) - gammaln(r) - betaln(a, b))
    d_r = float(xw @ digamma(s0v)) + n * (np.log(alpha) - digamma(r))
    d_alpha = n * r / alpha
    d_a = float(xw @ (digamma(a + b) - digamma(a + b + xv + 1)))
    d_b = float(xw @ (digamma(b + xv + 1) - digamma(a + b + xv + 1))) + n * (digamma(a + b) - digamma(b))

    zeros = np.zeros_like(h.first_T)
    x = np.concatenate([zeros, h.x])
    t_x = np.concatenate([zeros, h.t_x])
    T = np.concatenate([h.first_T, h.T])
    w = np.concatenate([h.first_weights, h.weights])
    s0 = r + k * x
    alive = _alive_terms(s0, alpha, k, T - t_x, T)
    dead = np.log(a / (b + x)) - s0 * np.log(alpha + t_x)
    terms = np.concatenate([alive, dead[:, None]], axis=1)
    lse = _logsumexp(terms)
    total += float(w @ lse)
    weight = np.exp(terms - lse[:, None]) * w[:, None]      # posterior weight of each term
    j = np.arange(k, dtype=np.float64)
    harmonic = np.zeros((x.size, k))
    if k > 1:
        harmonic[:, 1:] = np.cumsum(1.0 / (s0[:, None] + j[:-1]), axis=1)
    log_T, log_t = np.log(alpha + T), np.log(alpha + t_x)
    d_r += float(np.sum(weight[:, :k] * (harmonic - log_T[:, None])) - weight[:, k] @ log_t)
    d_alpha -= float(np.sum(weight[:, :k] * (s0[:, None] + j) / (alpha + T)[:, None])
                     + weight[:, k] @ (s0 / (alpha + t_x)))
    d_a += float(weight[:, k].sum()) / a
    d_b -= float(weight[:, k] @ (1.0 / (b + x)))
    return total, np.array([d_r, d_alpha, d_a, d_b])


def cnbd_log_likelihood(params: FloatArray, histories: Histories, k: int) -> tuple[float, FloatArray]:
    """:func:`regular_log_likelihood`, through the MBG/NBD's own code for k = 1 (same path, same
    optimum to the last digit)."""
    if k == 1:
        return beta_geo_log_likelihood(params, histories, extra_toss=1)
    return regular_log_likelihood(params, histories, k)


def expected_purchases_in_phase(
    params: tuple[float, ...], k: int, x: FloatArray, T: FloatArray, t: FloatArray, j: int
) -> FloatArray:
    """E[purchases in (T, T+t]] of a customer alive at T in phase j, given (x, T).

    Given the phase, lambda ~ Gamma(s, alpha + T) with s = r + kx + j and p ~ Beta(a, b+x+1).
    The n-th future purchase is the (nk - j)-th Poisson event, which comes by T + t with
    probability ``S(nk - j) = P(Y >= nk - j)``, Y ~ NegBin(s, z = t/(alpha+T+t)) (the gamma-mixed
    Poisson count), and is made if the customer survived the n - 1 dropout tosses before it,
    ``c_n = B(a, b+x+n) / B(a, b+x+1)``. So ``E = sum_n c_n S(nk - j)``: ``S`` at the first
    term is a regularized incomplete beta function, the next ones follow by subtracting
    negative-binomial probabilities (computed by their ratio recursion), and the series is
    summed until a bound on its tail (geometric, from the probabilities' ratio) is below
    :data:`SERIES_TOLERANCE` of the sum. Deterministic and vectorised over rows.
    """
    x, T, t = (np.asarray(v, dtype=np.float64).ravel() for v in np.broadcast_arrays(x, T, t))
    out = np.zeros(x.size)
    live = np.flatnonzero(t > 0)
    for start in range(0, live.size, SERIES_BATCH):
        rows = live[start:start + SERIES_BATCH]
        out[rows] = _phase_series(params, k, x[rows], T[rows], t[rows], j)
    return out


def _phase_series(params: tuple[float, ...], k: int, x: FloatArray, T: FloatArray, t: FloatArray,
                  j: int) -> FloatArray:
    """The series of :func:`expected_purchases_in_phase` for rows with ``t > 0``."""
    r, alpha, a, b = params
    live = np.arange(x.size)
    s = r + k * x[live] + j
    z = t[live] / (alpha + T[live] + t[live])
    y = b + x[live]
    m = np.full(live.size, float(k - j))                    # Poisson events needed: first purchase
    survival = betainc(m, s, z)                             # P(Y >= m)
    log_pmf = gammaln(m + s) - gammaln(s) - gammaln(m + 1) + m * np.log(z) + s * np.log1p(-z)
    log_c = np.zeros(live.size)                             # log c_n, n = 1
    n = np.ones(live.size)
    total = np.zeros(live.size)
    rows = np.arange(live.size)
    steps = 32                                              # purchases per vectorised block
    offsets = np.arange(steps * k, dtype=np.float64)
    while rows.size:
        sr, zr, yr, mr = s[rows], z[rows], y[rows], m[rows]
        # NB probabilities P(Y = m), ..., P(Y = m + steps*k - 1) by p(i+1)/p(i) = z (i+s)/(i+1)
        ratios = np.log(zr)[:, None] + np.log(mr[:, None] + offsets[:-1] + sr[:, None]) \
            - np.log(mr[:, None] + offsets[:-1] + 1)
        pmf = np.exp(log_pmf[rows][:, None]
                     + np.concatenate([np.zeros((rows.size, 1)), np.cumsum(ratios, axis=1)], axis=1))
        used = np.cumsum(pmf, axis=1)[:, k - 1::k]          # mass at m .. m + ik - 1, i = 1..steps
        surv = np.concatenate([survival[rows][:, None], survival[rows][:, None] - used], axis=1)
        surv = np.maximum(surv, 0.0)                        # S at the purchases n .. n + steps
        nn = n[rows][:, None] + np.arange(steps + 1)
        steps_c = np.log((yr[:, None] + nn[:, :-1]) / (a + yr[:, None] + nn[:, :-1]))
        log_cs = log_c[rows][:, None] + np.concatenate([np.zeros((rows.size, 1)), np.cumsum(steps_c, axis=1)], axis=1)
        total[rows] += np.sum(np.exp(log_cs[:, :-1]) * surv[:, :-1], axis=1)
        # state at the next purchase, n + steps
        m_next = mr + steps * k
        survival[rows] = surv[:, -1]
        log_c[rows] = log_cs[:, -1]
        n[rows] += steps
        log_pmf[rows] = log_pmf[rows] + np.sum(ratios, axis=1) + np.log(zr) + np.log(m_next - 1 + sr) - np.log(m_next)
        m[rows] = m_next
        # tail bound: S(i+1) <= rho S(i) for i >= m, rho = z max(1, (m+s)/(m+1))
        rho = zr * np.maximum(1.0, (m_next + sr) / (m_next + 1))
        tail = np.exp(log_c[rows]) * survival[rows] * (1 + rho / np.maximum(1 - rho, 1e-300) / k)
        done = (rho < 1) & (tail <= SERIES_TOLERANCE * total[rows] + 1e-300)
        rows = rows[~done]
    return total


def phase_weights(params: tuple[float, ...], k: int, x: FloatArray, t_x: FloatArray, T: FloatArray) -> FloatArray:
    """P(phase j | alive at T, history), j = 0..k-1, on a last axis (the alive terms normalised)."""
    r, alpha, _, _ = params
    alive = _alive_terms(r + k * x, alpha, k, T - t_x, T)
    return np.exp(alive - _logsumexp(alive)[..., None])


# --------------------------------------------------------------------------- estimator


class MBGCNBDModel(PurchaseModel):
    """MBG/CNBD-k model of repeat purchasing (Reutterer, Platzer & Schröder 2021).

    The MBG/NBD with Erlang-k inter-purchase times: lambda ~ Gamma(r, alpha) is the rate of
    the Poisson process of which every k-th event is a purchase; after each purchase (the first
    included) the customer drops out with probability p ~ Beta(a, b). Regular buyers (k > 1)
    who are late are more likely to have dropped out than irregular ones.

    Parameters
    ----------
    k : int or None, default None
        The regularity. ``None`` chooses it by likelihood over 1..``max_k`` as BTYDplus'
        ``mbgcnbd.EstimateParameters`` does: the model is fit for k = 1, 2, ... and the search
        stops after the likelihood fell twice in a row (or a fit failed); the k with the
        highest likelihood wins. Choosing k needs the summary's ``litt``.
    max_k : int, default 12
        Largest k tried when ``k`` is None.
    penalizer_coef : float, default 0.0
        L2 penalty on the parameters during the fit (``lifetimes``' convention).
    time_unit_days : float, default 1.0
        Days in one unit of the summary's ``recency``, ``T`` and ``litt`` (7 for a weekly one).

    Attributes
    ----------
    params_ : dict of str to float
        ``r``, ``alpha`` (in summary time units), ``a``, ``b``.
    k_ : int
        The regularity fitted (``k``, or the one chosen).
    log_likelihood_ : float
        Total log-likelihood of the fitted summary at ``k_``, ``litt`` terms included (the
        value the k are compared on; without ``litt``, k = 1, it is the MBG/NBD's).
    log_likelihood_by_k_ : dict of int to float
        The maximised log-likelihood of each k tried.
    n_customers_ : int
        Customers in the fitted summary.

    Notes
    -----
    ``litt`` only enters the likelihood through ``(k-1) litt - x log((k-1)!)``, constant in the
    parameters: the estimates for a given k and all predictions need frequency, recency and T
    only. For k = 1 every prediction is the MBG/NBD's closed form; for k > 1 P(alive) is
    closed-form (BTYDplus' ``xbgcnbd.PAlive``) and the expected purchases are an exact series
    (:func:`expected_purchases_in_phase`) where BTYDplus uses a BG/NBD-based approximation
    rescaled by the unconditional expectation. P(purchase in t), the next-purchase
    distribution F(t), is ``1 - L(x, t_x, T+t) / L(x, t_x, T)``.

    Choose k on a daily summary. A weekly one has no gap shorter than a week (purchases in one
    week are one), which looks more regular than the purchases were: on CDNOW as of 1997-09-30
    the daily summary gives k = 1 (as Reutterer et al. find), the weekly one k = 2. BTYDplus
    measures its weeks from the days, which is the daily summary in other units (the choice of
    k does not depend on the unit).
    """

    _fitter_name = "ModifiedBetaGeoFitter"   # the lifetimes twin of k = 1
    _param_names = ("r", "alpha", "a", "b")

    def __init__(self, k: int | None = None, max_k: int = 12, penalizer_coef: float = 0.0,
                 time_unit_days: float = 1.0) -> None:
        self.k = k
        self.max_k = max_k
        self.penalizer_coef = penalizer_coef
        self.time_unit_days = time_unit_days

    # -- fitting

    def _candidates(self) -> list[int]:
        if self.k is not None:
            if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
                raise ValueError(f"k must be a whole number >= 1 or None, got {self.k!r}")
            return [int(self.k)]
        if isinstance(self.max_k, bool) or not isinstance(self.max_k, (int, np.integer)) or self.max_k < 1:
            raise ValueError(f"max_k must be a whole number >= 1, got {self.max_k!r}")
        return list(range(1, int(self.max_k) + 1))

    def fit(self, summary: pd.DataFrame) -> Self:
        """Fit the model by maximum likelihood, choosing k unless it is given.

        For each k the summary is collapsed to its distinct ``(frequency, recency, T)`` rows
        with their counts and the likelihood maximised by L-BFGS-B over log-parameters with its
        analytic gradient (:func:`cnbd_log_likelihood`); the ``litt`` terms add the same
        constant to every parameter value of one k, so they only enter the comparison of k.

        Parameters
        ----------
        summary : pandas.DataFrame
            Columns ``frequency``, ``recency``, ``T`` and, to choose k or fit a k > 1,
            ``litt`` (units: ``time_unit_days`` days; :mod:`features.summary` computes it).

        Returns
        -------
        self

        Raises
        ------
        ValueError
            If a column is missing (``litt`` is named when k is to be chosen) or a value or
            setting is impossible.
        ConvergenceError
            If the fit of the first k tried (or of the given k) does not converge.
        """
        self._check_penalizer()
        self._days_to_units(0.0)  # validates time_unit_days
        candidates = self._candidates()
        x, t_x, T = history_arrays(summary)
        if not (T > 0).any():
            raise ValueError("column 'T' must be > 0 for at least one customer to fit a model")
        litt_total = 0.0
        if candidates != [1]:
            if LITT not in summary:
                needed = "to choose k" if self.k is None else f"for k={self.k}"
                raise ValueError(
                    f"summary is missing column {LITT!r} (sum of log inter-purchase times), needed {needed}; "
                    "features.build_features computes it, or give k=1 (the MBG/NBD)")
            require_columns(summary, (LITT,))
            try:
                litt = np.asarray(summary[LITT], dtype=np.float64)
            except (TypeError, ValueError) as error:
                raise ValueError(f"column {LITT!r} must be numeric") from error
            reject_rows(summary, ~np.isfinite(litt), LITT, "finite")
            reject_rows(summary, (x == 0) & (litt != 0), LITT, "0 when frequency is 0")
            litt_total = float(litt.sum())
        rows, weights = distinct_rows({"frequency": x, "recency": t_x, "T": T})
        histories = Histories(rows["frequency"], rows["recency"], rows["T"], weights)
        repeat_purchases = float(x.sum())
        fits: dict[int, tuple[dict[str, float], float]] = {}
        for k in candidates:
            try:
                fitted = maximize_likelihood(
                    functools.partial(cnbd_log_likelihood, k=k), histories,
                    self.penalizer_coef, f"{type(self).__name__}(k={k})")
            except ConvergenceError:
                if not fits:
                    raise
                break       # as BTYDplus: a k that cannot be fit ends the search
            params = dict(zip(self._param_names, (float(v) for v in fitted)))
            params["alpha"] /= histories.scale
            terms = _log_terms(tuple(params.values()), k, rows["frequency"], rows["recency"], rows["T"])
            log_likelihood = float(weights @ (terms[0] + np.logaddexp(_logsumexp(terms[1]), terms[2])))
            log_likelihood += (k - 1) * litt_total - repeat_purchases * math.lgamma(k)
            fits[k] = (params, log_likelihood)
            lls = [fits[i][1] for i in sorted(fits)]
            if len(lls) > 2 and lls[-1] < lls[-2] < lls[-3]:
                break       # the likelihood fell twice in a row: past its maximum
        best = max(fits, key=lambda k: fits[k][1])
        self.params_, self.log_likelihood_ = fits[best]
        self.k_ = best
        self.log_likelihood_by_k_ = {k: ll for k, (_, ll) in fits.items()}
        self.n_customers_ = int(x.size)
        return self

    # -- formulas

    def _mbgnbd(self) -> ModifiedBetaGeoModel:
        """The MBG/NBD with these parameters: the model at k = 1."""
        model = ModifiedBetaGeoModel(self.penalizer_coef, self.time_unit_days)
        model.params_ = dict(self.params_)
        return model

    def _log_common(self, x: FloatArray) -> FloatArray:
        r, alpha, a, b = self._params()
        k = self.k_
        return gammaln(r + k * x) - gammaln(r) + r * np.log(alpha) + betaln(a, b + x + 1) - betaln(a, b)

    def _log_likelihood_parts(
        self, x: FloatArray, t_x: FloatArray, T: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Alive: survived x + 1 tosses and no k-th Poisson event since t_x; dead: dropped out
        at the toss after the purchase at t_x."""
        _, alive, dead = _log_terms(self._params(), self.k_, x, t_x, T)
        return _logsumexp(alive), dead

    def _expected_purchases_if_alive(self, x: FloatArray, T: FloatArray, t: FloatArray) -> FloatArray:
        """Only defined for k = 1 (for k > 1 it also depends on t_x, through the phase)."""
        if self.k_ != 1:
            raise NotImplementedError("for k > 1 use _expected_purchases_combination")
        return self._mbgnbd()._expected_purchases_if_alive(x, T, t)

    def _expected_purchases_combination(
        self, x: FloatArray, t_x: FloatArray, T: FloatArray, t: Any, coefficients: Any
    ) -> FloatArray:
        """``sum_j coefficients[j] * E[purchases in (T, T + t[j]] | history]`` per customer.

        ``E = P(alive) * sum_phase P(phase | alive) * E[... | alive, phase]``: the phase
        weights are closed-form per row (:func:`phase_weights`), the expectation per phase
        (:func:`expected_purchases_in_phase`) depends on (x, T) only and is computed once per
        distinct pair and horizon. k = 1: the MBG/NBD's closed form.
        """
        self._check_fitted()
        if self.k_ == 1:
            return self._mbgnbd()._expected_purchases_combination(x, t_x, T, t, coefficients)
        params, k = self._params(), self.k_
        horizons = np.asarray(t, dtype=np.float64).ravel()
        weights = np.asarray(coefficients, dtype=np.float64).ravel()

        def by_phase(x: FloatArray, T: FloatArray) -> FloatArray:
            out = np.zeros((x.size, k))
            for j in range(k):
                for horizon, weight in zip(horizons, weights):
                    out[:, j] += weight * expected_purchases_in_phase(params, k, x, T, np.full(x.size, horizon), j)
            return out

        x, t_x, T = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
        per_phase = on_distinct_pairs(by_phase, x, T)
        return self._p_alive(x, t_x, T) * np.sum(phase_weights(params, k, x, t_x, T) * per_phase, axis=-1)

    def _prob_purchase_within(
        self, x: FloatArray, t_x: FloatArray, T: FloatArray, t: float
    ) -> FloatArray:
        """K = 1: the MBG/NBD's closed form; k > 1: ``1 - L(x, t_x, T+t) / L(x, t_x, T)``."""
        if self.k_ == 1:
            return self._mbgnbd()._prob_purchase_within(x, t_x, T, t)
        return super()._prob_purchase_within(x, t_x, T, t)

    # -- persistence

    def to_dict(self) -> dict[str, Any]:
        """:meth:`ClassicalModel.to_dict` with ``k`` and the log-likelihood of each k tried."""
        data = super().to_dict()
        data["k"] = int(self.k_)
        data["log_likelihood_by_k"] = {str(k): float(v) for k, v in self.log_likelihood_by_k_.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Rebuild a fitted model from :meth:`to_dict` output (``k`` included)."""
        model = super().from_dict(data)
        k = data.get("k")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"{cls.__name__} needs a whole number k >= 1, got {k!r}")
        model.k_ = k
        model.log_likelihood_by_k_ = {int(i): float(v) for i, v in data.get("log_likelihood_by_k", {}).items()}
        return model


# --------------------------------------------------------------------------- simulation


def simulate_mbgcnbd(n: int, T_cal: float | Any, T_star: float, params: Mapping[str, float], k: int,
                     seed: int = 0) -> pd.DataFrame:
    """Customers drawn from the MBG/CNBD-k, as BTYDplus' ``mbgcnbd.GenerateData`` draws them.

    Each customer gets lambda ~ Gamma(r, alpha), p ~ Beta(a, b) (at least 1e-5) and a number of
    repeat purchases before dropping out, Geometric(p) - 1 (the first toss right after the first
    purchase); inter-purchase times are Erlang-k with rate lambda. Time runs from each
    customer's first purchase (at 0): calibration (0, T_cal], holdout (T_cal, T_cal + T_star].

    Parameters
    ----------
    n : int
        Customers.
    T_cal : float or array_like
        Calibration length of each customer (one value, or n), in the time unit of ``params``.
    T_star : float
        Holdout length.
    params : mapping
        ``r``, ``alpha``, ``a``, ``b``.
    k : int
        Regularity (Erlang shape).
    seed : int, default 0
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    pandas.DataFrame
        One row per customer: the calibration summary ``frequency``, ``recency``, ``T``,
        ``litt``; ``holdout_purchases`` in the holdout; ``alive``, whether she has purchases
        left at the end of calibration (BTYDplus' definition); and the drawn ``lambda``, ``p``.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a whole number >= 1, got {k!r}")
    rng = np.random.default_rng(seed)
    T_cal = np.broadcast_to(np.asarray(T_cal, dtype=np.float64), (n,)).copy()
    horizon = T_cal + float(T_star)
    lam = np.maximum(rng.gamma(params["r"], 1.0 / params["alpha"], n), 1e-12)
    p = np.maximum(rng.beta(params["a"], params["b"], n), 1e-5)
    lifetime = rng.geometric(p) - 1                         # repeat purchases before dropout
    now = np.zeros(n)
    made = np.zeros(n, dtype=np.int64)
    x = np.zeros(n)
    t_x = np.zeros(n)
    litt = np.zeros(n)
    holdout = np.zeros(n)
    active = np.flatnonzero(lifetime > 0)
    while active.size:
        gap = rng.gamma(k, 1.0 / lam[active])
        now[active] += gap
        made[active] += 1
        calibration = now[active] <= T_cal[active]
        inside = now[active] <= horizon[active]
        cal = active[calibration]
        x[cal] += 1
        t_x[cal] = now[cal]
        litt[cal] += np.log(gap[calibration])
        holdout[active[inside & ~calibration]] += 1
        active = active[inside & (made[active] < lifetime[active])]
    return pd.DataFrame({"frequency": x, "recency": t_x, "T": T_cal, "litt": litt,
                         "holdout_purchases": holdout, "alive": lifetime > x, "lambda": lam, "p": p})
