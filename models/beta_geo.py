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
from scipy.special import betaln, gammaln, hyp2f1

from models.base import FloatArray, PurchaseModel


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
