"""Pareto/NBD: Poisson purchasing with an exponential, gamma-mixed lifetime.

References
----------
Schmittlein, D. C., Morrison, D. G. and Colombo, R. (1987), "Counting Your Customers: Who Are
They and What Will They Do Next?", *Management Science* 33(1), 1-24.

Fader, P. S. and Hardie, B. G. S. (2005), "A Note on Deriving the Pareto/NBD Model and Related
Expressions", http://brucehardie.com/notes/009/.

Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005), "'Counting Your Customers' the Easy Way",
*Marketing Science* 24(2), 275-284 (Pareto/NBD estimates on CDNOW).
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, hyp2f1

from models.clv.base import PurchaseModel, one_minus_power_over
from models.clv.data import FloatArray, Histories, on_distinct_pairs


def log_f(params: tuple[float, ...] | FloatArray, x: FloatArray, y: FloatArray) -> FloatArray:
    """Log F(y) of the Fader & Hardie (2005) note, eqs. 19-20, for A_0 = F(t_x) - F(T).

    ``F(y) = 2F1(r+s+x, k; r+s+x+1; |alpha-beta|/(m+y)) / (m+y)^(r+s+x)`` with
    ``m = max(alpha, beta)`` and ``k = s+1`` if alpha >= beta else ``r+x``; the 2F1 is
    evaluated through Euler's transformation, ``2F1(c-1, k; c; z) = (1-z)^(1-k)
    2F1(1, c-k; c; z)``, which does not overflow for heavy buyers.
    """
    r, alpha, s, beta = params
    m = max(alpha, beta)
    rsx = r + s + x
    k = s + 1 if alpha >= beta else r + x
    z = abs(alpha - beta) / (m + y)
    return (1 - k) * np.log1p(-z) + np.log(hyp2f1(1, rsx + 1 - k, rsx + 1, z)) - rsx * np.log(m + y)


def log_a0(log_f_tx: FloatArray, log_f_T: FloatArray) -> FloatArray:
    """Log A_0 = log(F(t_x) - F(T)) = log[(r+s+x) * integral over (t_x, T] of
    (alpha+y)^-(r+x) (beta+y)^-(s+1) dy]; ``-inf`` where ``t_x == T``."""
    with np.errstate(divide="ignore"):
        return log_f_tx + np.log(-np.expm1(np.minimum(log_f_T - log_f_tx, 0.0)))


def pareto_nbd_log_likelihood(params: FloatArray, histories: Histories) -> float:
    """Total Pareto/NBD log-likelihood (eq. 18 of the note) of distinct ``histories``.

    Per customer ``log L = log Gamma(r+x)/Gamma(r) + r log alpha + s log beta
    + logaddexp(log L_alive(x, T), log(s/(r+s+x)) + log A_0)``, ``A_0 = F(t_x) - F(T)``.
    The gamma terms are summed per distinct frequency; ``L_alive`` and ``F(T)`` are
    evaluated once per distinct ``(x, T)`` pair, ``F(t_x)`` once per distinct ``(x, t_x)``
    pair (customers without repeat purchase: once per distinct ``T``); only the final
    log-sum is per row.
    """
    r, alpha, s, beta = params
    h = histories
    total = float(h.x_weights @ gammaln(r + h.x_values)) + h.first_total * gammaln(r)
    total += h.total * (r * np.log(alpha) + s * np.log(beta) - gammaln(r))
    (tx_codes, tx_x, tx_y), (T_codes, T_x, T_y) = h.pairs(h.t_x), h.pairs(h.T)
    log_f_tx = log_f(params, tx_x, tx_y)
    repeat = _log_sum(_log_alive(params, T_x, T_y)[T_codes], log_f(params, T_x, T_y)[T_codes],
                      log_f_tx[tx_codes], (np.log(s / (r + s + tx_x)) + log_f_tx)[tx_codes])
    zeros = np.zeros_like(h.first_T)
    log_f_0 = log_f(params, zeros[:1], zeros[:1])
    first = _log_sum(_log_alive(params, zeros, h.first_T), log_f(params, zeros, h.first_T),
                     log_f_0, np.log(s / (r + s)) + log_f_0)
    return total + float(h.weights @ repeat) + float(h.first_weights @ first)


def _log_alive(params: FloatArray, x: FloatArray, T: FloatArray) -> FloatArray:
    """Log L_alive without the frequency-only factor: no death by T."""
    r, alpha, s, beta = params
    return -(r + x) * np.log(alpha + T) - s * np.log(beta + T)


def _log_sum(log_alive: FloatArray, log_f_T: FloatArray, log_f_tx: FloatArray,
             log_dead_at_tx: FloatArray) -> FloatArray:
    """Per row ``log(L_alive + L_dead)`` with ``log L_dead = log(s/(r+s+x)) + log A_0``,
    ``A_0 = F(t_x) - F(T)``; ``log_dead_at_tx`` is ``log(s/(r+s+x)) + log F(t_x)``."""
    return np.logaddexp(log_alive, log_dead_at_tx - log_f_tx + log_a0(log_f_tx, log_f_T))


class ParetoNBDModel(PurchaseModel):
    """Pareto/NBD model of repeat purchasing (Schmittlein, Morrison & Colombo 1987).

    While alive a customer buys as a Poisson process with rate lambda ~ Gamma(r, alpha); her
    lifetime is exponential with rate mu ~ Gamma(s, beta), independent of lambda.

    Parameters
    ----------
    penalizer_coef : float, default 0.0
        L2 penalty on the parameters during the fit.
    time_unit_days : float, default 1.0
        Days in one unit of the summary's ``recency`` and ``T`` (7 for a weekly summary).

    Attributes
    ----------
    params_ : dict of str to float
        ``r``, ``alpha``, ``s``, ``beta`` (``alpha`` and ``beta`` in summary time units).
    log_likelihood_ : float
        Total log-likelihood (Fader & Hardie 2005 note, eq. 18) of the fitted summary.
    n_customers_ : int
        Customers in the fitted summary.

    Notes
    -----
    ``lifetimes`` maximises this likelihood with Nelder-Mead from a random start; we use
    L-BFGS-B from fixed values (all ones, on ``lifetimes``' rescaled time axis), with a
    central-difference gradient, so that a fit is reproducible and reaches the maximum
    more precisely. On CDNOW the published estimates are r = 0.553, alpha = 10.578,
    s = 0.606, beta = 11.669 (weeks), log-likelihood -9595.0.
    """

    _fitter_name = "ParetoNBDFitter"
    _param_names = ("r", "alpha", "s", "beta")

    _time_params = ("alpha", "beta")

    def _scaled_log_likelihood(self, params: FloatArray, histories: Histories) -> tuple[float, None]:
        return pareto_nbd_log_likelihood(params, histories), None

    def _log_A_0(self, x: FloatArray, t_x: FloatArray, T: FloatArray) -> FloatArray:
        """Log A_0 (see :func:`log_a0`) at the fitted parameters."""
        params = self._params()
        log_f_tx = on_distinct_pairs(lambda x, y: log_f(params, x, y), x, t_x)
        log_f_T = on_distinct_pairs(lambda x, y: log_f(params, x, y), x, T)
        return log_a0(log_f_tx, log_f_T)

    def _log_common(self, x: FloatArray) -> FloatArray:
        r, alpha, s, beta = self._params()
        return gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)

    def _log_likelihood_parts(
        self, x: FloatArray, t_x: FloatArray, T: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Eq. 18 of the note: alive at T, or died in (t_x, T] without buying again."""
        r, alpha, s, beta = self._params()
        log_alive = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
        log_dead = np.log(s / (r + s + x)) + self._log_A_0(x, t_x, T)
        return log_alive, log_dead

    def _expected_purchases_if_alive(self, x: FloatArray, T: FloatArray, t: FloatArray) -> FloatArray:
        """Eq. 41 of the note divided by P(alive).

        Given alive, lambda ~ Gamma(r+x, alpha+T) and mu ~ Gamma(s, beta+T):
        ``(r+x)/(alpha+T) * (beta+T)/(s-1) * (1 - ((beta+T)/(beta+T+t))**(s-1))``, with the
        limit ``(r+x)/(alpha+T) * (beta+T) * log((beta+T+t)/(beta+T))`` at s = 1.
        """
        r, alpha, s, beta = self._params()
        log_u = np.log((beta + T) / (beta + T + t))
        return (r + x) / (alpha + T) * (beta + T) * one_minus_power_over(s - 1, log_u)
