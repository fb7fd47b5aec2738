"""MBG/NBD: the modified BG/NBD model, where a customer may drop out right after the first purchase.

References
----------
Batislam, E. P., Denizel, M. and Filiztekin, A. (2007), "Empirical validation and comparison
of models for customer base analysis", *International Journal of Research in Marketing* 24(3),
201-209.

Wagner, U. and Hoppe, D. (2008), "Erratum on the MBG/NBD Model", *International Journal of
Research in Marketing* 25(3), 225-226.
"""

from __future__ import annotations

import numpy as np
from scipy.special import betaln, gammaln, hyp2f1

from models.clv.base import PurchaseModel
from models.clv.beta_geo import beta_geo_log_likelihood, prob_purchase_if_alive
from models.clv.data import FloatArray, Histories


class ModifiedBetaGeoModel(PurchaseModel):
    """MBG/NBD model of repeat purchasing (Batislam, Denizel & Filiztekin 2007).

    As the BG/NBD (purchase rate lambda ~ Gamma(r, alpha), dropout probability
    p ~ Beta(a, b) after each purchase) except that the dropout coin is also tossed right
    after the first purchase, so a customer without repeat purchase can be inactive.

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
        Total log-likelihood of the fitted summary.
    n_customers_ : int
        Customers in the fitted summary.

    Notes
    -----
    On CDNOW the estimates are r = 0.525, alpha = 6.183, a = 0.891, b = 1.614 (weeks), as
    reported for the R package BTYDplus.
    """

    _fitter_name = "ModifiedBetaGeoFitter"
    _param_names = ("r", "alpha", "a", "b")

    def _scaled_log_likelihood(self, params: FloatArray, histories: Histories) -> tuple[float, FloatArray]:
        return beta_geo_log_likelihood(params, histories, extra_toss=1)

    def _log_common(self, x: FloatArray) -> FloatArray:
        r, alpha, a, b = self._params()
        return gammaln(r + x) - gammaln(r) + r * np.log(alpha) + betaln(a, b + x + 1) - betaln(a, b)

    def _log_likelihood_parts(
        self, x: FloatArray, t_x: FloatArray, T: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Alive: survived x + 1 dropout tosses; dead: dropped out at the toss after t_x."""
        r, alpha, a, b = self._params()
        log_alive = -(r + x) * np.log(alpha + T)
        log_dead = np.log(a / (b + x)) - (r + x) * np.log(alpha + t_x)
        return log_alive, log_dead

    def _expected_purchases_if_alive(self, x: FloatArray, T: FloatArray, t: FloatArray) -> FloatArray:
        """Given alive, p ~ Beta(a, b + x + 1) and lambda ~ Gamma(r + x, alpha + T).

        ``(a+b+x)/(a-1) * (1 - w**(r+x) 2F1(r+x, b+x+1; a+b+x; z))``, written with Euler's
        transformation as ``1 - w**(a-1) 2F1(a+b-r, a-1; a+b+x; z)``, ``z = t/(alpha+T+t)``.
        """
        r, alpha, a, b = self._params()
        c = a + b + x
        z = t / (alpha + T + t)
        w = (alpha + T) / (alpha + T + t)
        return c / (a - 1) * (1 - w ** (a - 1) * hyp2f1(a + b - r, a - 1, c, z))

    def _prob_purchase_within(
        self, x: FloatArray, t_x: FloatArray, T: FloatArray, t: float
    ) -> FloatArray:
        """P(alive) * (1 - ((alpha+T)/(alpha+T+t))**(r+x)), as for the BG/NBD."""
        r, alpha, _, _ = self._params()
        return self._p_alive(x, t_x, T) * prob_purchase_if_alive(r, alpha, x, T, t)
