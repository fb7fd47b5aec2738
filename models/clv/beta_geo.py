"""BG/NBD: the beta-geometric / negative binomial distribution model.

References
----------
Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005), "'Counting Your Customers' the Easy Way:
An Alternative to the Pareto/NBD Model", *Marketing Science* 24(2), 275-284.

Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2008), "Computing P(alive) Using the BG/NBD
Model", http://brucehardie.com/notes/021/.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1

from models.clv.base import PurchaseModel
from models.clv.data import FloatArray, Histories


def prob_purchase_if_alive(
    r: float, alpha: float, x: FloatArray, T: FloatArray, t: float
) -> FloatArray:
    """P(at least one purchase in ``(T, T + t]``) for a customer alive at ``T``.

    In the BG/NBD and MBG/NBD an active customer can only drop out right after a purchase,
    so no purchase in ``(T, T + t]`` means no Poisson event, and given the history and being
    alive the purchase rate is Gamma(r + x, alpha + T):
    ``1 - ((alpha + T) / (alpha + T + t)) ** (r + x)``.
    """
    return -np.expm1((r + x) * np.log((alpha + T) / (alpha + T + t)))


def _alive_or_dead(
    weights: FloatArray, u: FloatArray, alpha: float, T: tuple[FloatArray, NDArray[np.intp]],
    t_x: tuple[FloatArray, NDArray[np.intp]], log_dead_factor: FloatArray,
) -> tuple[float, float, float, FloatArray]:
    """Sum of ``weights * logaddexp(-u log(alpha+T), log_dead_factor - u log(alpha+t_x))``.

    ``T`` and ``t_x`` are given as (distinct values, each row's position among them).
    Returns the sum, its derivatives in ``r`` (through ``u = r + x``) and ``alpha``, and
    each row's weighted posterior weight of the dropped-out term (``weights * P(dead)``),
    from which the caller takes the derivatives of ``log_dead_factor``.
    """
    log_T, log_t = (np.log(alpha + values)[index] for values, index in (T, t_x))
    inverse_T, inverse_t = ((1.0 / (alpha + values))[index] for values, index in (T, t_x))
    log_ratio = log_t - log_T
    difference = log_dead_factor - u * log_ratio
    dead = weights * expit(difference)
    total = _dot(weights, np.logaddexp(0.0, difference) - u * log_T)
    d_r = -_dot(weights, log_T) - _dot(dead, log_ratio)
    d_alpha = -_dot(weights - dead, u * inverse_T) - _dot(dead, u * inverse_t)
    return total, d_r, d_alpha, dead


def _dot(a: FloatArray, b: FloatArray) -> float:
    return float(np.dot(a, b))


def beta_geo_log_likelihood(
    params: FloatArray, histories: Histories, extra_toss: int
) -> tuple[float, FloatArray]:
    """Total BG/NBD (``extra_toss=0``) or MBG/NBD (``extra_toss=1``) log-likelihood and gradient.

    Per customer, ``log L = log Gamma(r+x)/Gamma(r) + r log alpha + log B(a, b+x+k)/B(a, b)
    + logaddexp(-(r+x) log(alpha+T), log(a/(b+x+k-1)) - (r+x) log(alpha+t_x))`` with
    ``k = extra_toss``; the dropped-out term is absent for BG/NBD customers with x = 0. The
    gamma-function terms are summed per distinct frequency; only the last term is per row.
    The gradient is in ``(r, alpha, a, b)``.
    """
    r, alpha, a, b = params
    h, k = histories, extra_toss
    xv, xw = h.x_values, h.x_weights
    n = h.total
    total = float(xw @ (gammaln(r + xv) + gammaln(b + xv + k) - gammaln(a + b + xv + k)))
    total += n * (r * np.log(alpha) - gammaln(r) + gammaln(a + b) - gammaln(b))
    total += h.first_total * (gammaln(r) + gammaln(b + k) - gammaln(a + b + k))
    d_r = float(xw @ digamma(r + xv)) + h.first_total * digamma(r) + n * (np.log(alpha) - digamma(r))
    d_alpha = n * r / alpha
    d_a_common = -float(xw @ digamma(a + b + xv + k)) - h.first_total * digamma(a + b + k)
    d_a = d_a_common + n * digamma(a + b)
    d_b = (float(xw @ digamma(b + xv + k)) + h.first_total * digamma(b + k)
           + d_a_common + n * (digamma(a + b) - digamma(b)))

    u = r + h.x
    part, p_r, p_alpha, dead = _alive_or_dead(
        h.weights, u, alpha, (h.T_values, h.T_index), (h.t_x_values, h.t_x_index),
        np.log(a / (b + xv + k - 1))[h.x_index])
    total += part
    d_r, d_alpha = d_r + p_r, d_alpha + p_alpha
    dead_by_x = h.by_frequency(dead)
    d_a += dead_by_x.sum() / a
    d_b -= float(dead_by_x @ (1.0 / (b + xv + k - 1)))
    if k == 0:      # BG/NBD: a customer without repeat purchase is alive
        log_T = np.log(alpha + h.first_T)
        total -= r * float(h.first_weights @ log_T)
        d_r -= float(h.first_weights @ log_T)
        d_alpha -= r * float(h.first_weights @ (1.0 / (alpha + h.first_T)))
    else:
        zeros = np.zeros_like(h.first_T)
        rows = np.arange(zeros.size)
        part, p_r, p_alpha, dead = _alive_or_dead(
            h.first_weights, zeros + r, alpha, (h.first_T, rows), (zeros, rows),
            np.full_like(zeros, np.log(a / b)))
        total += part
        d_r, d_alpha = d_r + p_r, d_alpha + p_alpha
        d_a += dead.sum() / a
        d_b -= dead.sum() / b
    return total, np.array([d_r, d_alpha, d_a, d_b])


class BetaGeoModel(PurchaseModel):
    """BG/NBD model of repeat purchasing (Fader, Hardie & Lee 2005).

    While active a customer buys as a Poisson process with rate lambda ~ Gamma(r, alpha);
    after each repeat purchase she drops out with probability p ~ Beta(a, b).

    Parameters
    ----------
    penalizer_coef : float, default 0.0
        L2 penalty on the parameters during the fit.
    time_unit_days : float, default 1.0
        Days in one unit of the summary's ``recency`` and ``T`` (7 for a weekly summary).

    Attributes
    ----------
    params_ : dict of str to float
        ``r``, ``alpha`` (in summary time units), ``a``, ``b``.
    log_likelihood_ : float
        Total log-likelihood (FHL 2005, eq. 6) of the fitted summary.
    n_customers_ : int
        Customers in the fitted summary.

    Notes
    -----
    ``P(alive)`` is 1 for every customer without repeat purchase (x = 0): in this model
    dropout happens only after a repeat purchase. On CDNOW the published estimates are
    r = 0.243, alpha = 4.414, a = 0.793, b = 2.426 (weeks), log-likelihood -9582.4.
    """

    _fitter_name = "BetaGeoFitter"
    _param_names = ("r", "alpha", "a", "b")

    def _scaled_log_likelihood(self, params: FloatArray, histories: Histories) -> tuple[float, FloatArray]:
        return beta_geo_log_likelihood(params, histories, extra_toss=0)

    def _log_common(self, x: FloatArray) -> FloatArray:
        r, alpha, a, b = self._params()
        return gammaln(r + x) - gammaln(r) + r * np.log(alpha) + betaln(a, b + x) - betaln(a, b)

    def _log_likelihood_parts(
        self, x: FloatArray, t_x: FloatArray, T: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """FHL (2005) eq. 6, split into the alive-at-T and the dropped-out terms."""
        r, alpha, a, b = self._params()
        log_alive = -(r + x) * np.log(alpha + T)
        log_dead = np.log(a / (b + np.maximum(x, 1) - 1)) - (r + x) * np.log(alpha + t_x)
        return log_alive, np.where(x > 0, log_dead, -np.inf)

    def _expected_purchases_if_alive(self, x: FloatArray, T: FloatArray, t: FloatArray) -> FloatArray:
        """FHL (2005) eq. 10 divided by P(alive).

        The hypergeometric term is rewritten with Euler's transformation,
        ``w**(r+x) 2F1(r+x, b+x; c; z) = w**(a-1) 2F1(a+b-1-r, a-1; c; z)`` with
        ``c = a+b+x-1``, ``z = t/(alpha+T+t)``, ``w = 1-z``; it keeps the series parameters
        small for heavy buyers (large x), where the original form overflows.
        """
        r, alpha, a, b = self._params()
        c = a + b + x - 1
        z = t / (alpha + T + t)
        w = (alpha + T) / (alpha + T + t)
        return c / (a - 1) * (1 - w ** (a - 1) * hyp2f1(a + b - 1 - r, a - 1, c, z))

    def _prob_purchase_within(
        self, x: FloatArray, t_x: FloatArray, T: FloatArray, t: float
    ) -> FloatArray:
        """P(alive) * (1 - ((alpha+T)/(alpha+T+t))**(r+x)); equals the likelihood ratio form."""
        r, alpha, _, _ = self._params()
        return self._p_alive(x, t_x, T) * prob_purchase_if_alive(r, alpha, x, T, t)
