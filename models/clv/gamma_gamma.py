"""Gamma-Gamma model of spend per transaction, and the customer lifetime value built on it.

References
----------
Fader, P. S. and Hardie, B. G. S. (2013), "The Gamma-Gamma Model of Monetary Value",
http://brucehardie.com/notes/025/.

Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005), "RFM and CLV: Using Iso-Value Curves
for Customer Base Analysis", *Journal of Marketing Research* 42(4), 415-430.
"""

from __future__ import annotations

from typing import Self

import numpy as np
import pandas as pd
from scipy.special import digamma, gammaln

from models.clv.base import ClassicalModel, PurchaseModel
from models.clv.data import FloatArray, column_values, distinct_rows, history_arrays, reject_rows, require_columns
from models.clv.fitting import WARM_START_CUSTOMERS, ConvergenceError

DAYS_PER_MONTH = 365.25 / 12
"""Length of a CLV month in days (30.4375)."""

SPEND_COLUMNS = ("frequency", "monetary_value")


def spend_arrays(summary: pd.DataFrame) -> tuple[FloatArray, FloatArray]:
    """Validated ``frequency`` and ``monetary_value`` arrays.

    ``monetary_value`` is the mean value of the customer's repeat transactions, 0 (or any
    non-negative value, it is ignored) for customers without repeat transaction, as in
    ``lifetimes.utils.summary_data_from_transaction_data``.
    """
    require_columns(summary, SPEND_COLUMNS)
    x, m = (column_values(summary, name) for name in SPEND_COLUMNS)
    reject_rows(summary, x != np.floor(x), "frequency", "a whole number of repeat purchases")
    return x, m


def fit_spend(x: FloatArray, m: FloatArray, weights: FloatArray, penalizer_coef: float = 0.0) -> dict[str, float]:
    """Maximum-likelihood ``p``, ``q``, ``v`` of the Gamma-Gamma model, with ``q >= 1``.

    The objective is ``lifetimes``' (``GammaGammaFitter.fit(..., q_constraint=True)``): the
    weighted mean negative log-likelihood plus ``penalizer_coef * sum(params ** 2)`` over
    log-parameters from 0.1, here by L-BFGS-B with an analytic gradient and no Hessian
    afterwards (``lifetimes`` differentiates automatically, then builds one). Above
    :data:`~models.clv.base.WARM_START_CUSTOMERS` rows the fit starts from the maximum on that many
    rows drawn at random, so the full data need only a few steps to the same optimum.
    """
    start = np.full(3, 0.1)
    if x.size > WARM_START_CUSTOMERS:
        sample = np.random.default_rng(0).choice(x.size, WARM_START_CUSTOMERS, replace=False)
        warm = fit_spend(x[sample], m[sample], weights[sample], penalizer_coef)
        start = np.log([warm["p"], warm["q"], warm["v"]])
    return _maximize_spend(x, m, weights, penalizer_coef, start)


def _maximize_spend(x: FloatArray, m: FloatArray, weights: FloatArray, penalizer_coef: float,
                    start: FloatArray) -> dict[str, float]:
    """L-BFGS-B from ``start`` (log-parameters) on :func:`fit_spend`'s objective."""
    from scipy.optimize import minimize

    total = float(weights.sum())
    log_m, log_x = np.log(m), np.log(x)

    def objective(log_params: FloatArray) -> tuple[float, FloatArray]:
        p, q, v = params = np.exp(log_params)
        px = p * x
        log_xmv = np.log(x * m + v)
        both = digamma(px + q)
        value = weights @ (gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(v)
                           + (px - 1) * log_m + px * log_x - (px + q) * log_xmv)
        if not np.isfinite(value):
            return np.inf, np.zeros(3)
        gradient = np.array([weights @ (x * (both - digamma(px) + log_m + log_x - log_xmv)),
                             weights @ (both - digamma(q) + np.log(v) - log_xmv),
                             weights @ (q / v - (px + q) / (x * m + v))])
        penalty = penalizer_coef * float(params @ params)
        return -value / total + penalty, (-gradient / total + 2 * penalizer_coef * params) * params

    with np.errstate(all="ignore"):
        result = minimize(objective, start, jac=True, method="L-BFGS-B",
                          bounds=[(None, None), (0, None), (None, None)],    # q >= 1
                          options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9})
    params = np.exp(result.x)
    if not (np.all(np.isfinite(params)) and (result.success or np.abs(result.jac).max() < 1e-6)):
        raise ConvergenceError(f"Gamma-Gamma: the likelihood maximisation did not converge "
                               f"(penalizer_coef={penalizer_coef}, optimiser: {result.message}); "
                               "a larger penalizer_coef may help")
    return dict(zip(("p", "q", "v"), map(float, params)))


class GammaGammaModel(ClassicalModel):
    """Gamma-Gamma model of average transaction value (Fader & Hardie 2013).

    A customer's transaction values are Gamma(p, nu) with her own scale nu ~ Gamma(q, gamma);
    the spend process is assumed independent of the purchase process.

    Parameters
    ----------
    penalizer_coef : float, default 0.0
        L2 penalty on the parameters during the fit.

    Attributes
    ----------
    params_ : dict of str to float
        ``p``, ``q`` (> 1, so that expected spend is finite) and ``gamma`` (``v`` in
        ``lifetimes``).
    log_likelihood_ : float
        Total log-likelihood of the repeat buyers' average spend.
    n_customers_ : int
        Repeat buyers (frequency > 0) the model was fit on.

    Notes
    -----
    On the 946 CDNOW repeat buyers the published estimates are p = 6.25, q = 3.74,
    gamma = 15.44.
    """

    _param_names = ("p", "q", "gamma")

    def __init__(self, penalizer_coef: float = 0.0) -> None:
        self.penalizer_coef = penalizer_coef

    def fit(self, summary: pd.DataFrame) -> Self:
        """Fit on the customers with at least one repeat transaction.

        Distinct ``(frequency, monetary_value)`` rows are weighted by their counts; ``q`` is
        constrained to ``q >= 1`` (``lifetimes``' ``q_constraint``) and a fit ending on the
        bound is rejected, since the population mean spend ``p * gamma / (q - 1)`` must be
        finite.

        Parameters
        ----------
        summary : pandas.DataFrame
            Columns ``frequency`` and ``monetary_value`` (mean repeat transaction value).

        Returns
        -------
        self
        """
        self._check_penalizer()
        x, m = spend_arrays(summary)
        repeat = x > 0
        if not repeat.any():
            raise ValueError("Gamma-Gamma needs customers with frequency > 0; the summary has none")
        reject_rows(summary, repeat & (m <= 0), "monetary_value", "> 0 when frequency > 0")
        rows, weights = distinct_rows({"frequency": x[repeat], "monetary_value": m[repeat]})
        fitted = fit_spend(rows["frequency"], rows["monetary_value"], weights, self.penalizer_coef)
        if fitted["q"] <= 1 + 1e-9:
            raise ValueError(
                f"Gamma-Gamma fit reached q = {fitted['q']:.6g} (bound 1): expected spend is "
                "not finite for this data"
            )
        self.params_ = {"p": fitted["p"], "q": fitted["q"], "gamma": fitted["v"]}
        log_likelihood = self._log_likelihood(rows["frequency"], rows["monetary_value"])
        self.log_likelihood_ = float(weights @ log_likelihood)
        self.n_customers_ = int(repeat.sum())
        return self

    def _log_likelihood(self, x: FloatArray, m: FloatArray) -> FloatArray:
        """Log density of the average spend m of x transactions (Fader & Hardie 2013, eq. 1)."""
        p, q, gamma = self._params()
        px = p * x
        return (
            gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(gamma)
            + (px - 1) * np.log(m) + px * np.log(x) - (px + q) * np.log(gamma + x * m)
        )

    def _expected_order_value(self, x: FloatArray, m: FloatArray) -> FloatArray:
        """E[Z | x, m] = (p * (gamma + x * m)) / (p * x + q - 1) (Fader & Hardie 2013, eq. 5)."""
        p, q, gamma = self._params()
        return p * (gamma + x * m) / (p * x + q - 1)

    def population_mean_order_value(self) -> float:
        """Mean transaction value of a random customer, ``p * gamma / (q - 1)``."""
        p, q, gamma = self._params()
        return p * gamma / (q - 1)

    def predict_expected_order_value(self, summary: pd.DataFrame) -> FloatArray:
        """Conditional expected average transaction value of each customer.

        A weighted mean of the customer's observed average ``monetary_value`` and the
        population mean, the observed value weighing more as ``frequency`` grows; customers
        with ``frequency`` 0 get the population mean ``p * gamma / (q - 1)``.

        Parameters
        ----------
        summary : pandas.DataFrame
            Columns ``frequency`` and ``monetary_value``.

        Returns
        -------
        numpy.ndarray
            One expected order value per row of ``summary``.
        """
        self._check_fitted()
        return self._expected_order_value(*spend_arrays(summary))

    def predict_clv(
        self,
        purchase_model: PurchaseModel,
        summary: pd.DataFrame,
        months: int = 12,
        annual_discount_rate: float = 0.10,
    ) -> FloatArray:
        """Discounted expected revenue over the next ``months`` months.

        ``CLV = sum_{m=1..months} E[purchases in month m | history] * E[order value]
        / (1 + d) ** m`` with

        * month m the interval ``(T + (m-1) M, T + m M]``, ``M = 30.4375`` days (a twelfth of
          a Julian year), converted to model units with ``purchase_model.time_unit_days``;
          the purchases in it are the difference of the purchase model's cumulative
          conditional expectations;
        * each month's revenue discounted at its end (as ``lifetimes``), at the monthly rate
          ``d = (1 + annual_discount_rate) ** (1/12) - 1`` equivalent to the annual one;
        * the expected order value from this model; spend and purchase count are
          independent in the Gamma-Gamma model, so the product is the expected revenue.

        It is revenue, not margin: multiply by a margin rate for profit.

        Parameters
        ----------
        purchase_model : PurchaseModel
            A fitted BG/NBD, MBG/NBD or Pareto/NBD model.
        summary : pandas.DataFrame
            Columns ``frequency``, ``recency``, ``T`` (units of ``purchase_model``) and
            ``monetary_value``.
        months : int, default 12
            Horizon in months.
        annual_discount_rate : float, default 0.10
            Yearly discount rate.

        Returns
        -------
        numpy.ndarray
            One CLV per row of ``summary``, in the currency of ``monetary_value``.
        """
        self._check_fitted()
        if not isinstance(purchase_model, PurchaseModel):
            raise TypeError(f"purchase_model must be a PurchaseModel, got {type(purchase_model).__name__}")
        purchase_model._check_fitted()
        if int(months) != months or months < 1:
            raise ValueError(f"months must be a whole number >= 1, got {months!r}")
        if not (np.isfinite(annual_discount_rate) and annual_discount_rate > -1):
            raise ValueError(f"annual_discount_rate must be > -1, got {annual_discount_rate!r}")
        x, t_x, T = history_arrays(summary)
        order_value = self._expected_order_value(*spend_arrays(summary))
        month_ends = np.arange(1, int(months) + 1)
        horizons = [purchase_model._days_to_units(DAYS_PER_MONTH * m) for m in month_ends]
        discount = (1 + annual_discount_rate) ** (-month_ends / 12)
        # sum_m (C_m - C_(m-1)) d_m = sum_m C_m (d_m - d_(m+1)) with C_0 = 0, d_(months+1) = 0,
        # C_m the cumulative expected purchases to the end of month m.
        coefficients = discount - np.append(discount[1:], 0.0)
        expected = purchase_model._expected_purchases_combination(x, t_x, T, horizons, coefficients)
        return order_value * expected


def fit_spend_model(summary: pd.DataFrame) -> GammaGammaModel:
    """Gamma-Gamma fitted on ``summary``, or, where spend carries no information, its limit
    that values every order at the mean order value.

    A log whose amounts are all equal (visits, a subscription box, a shop that exports no
    prices) has nothing for Gamma-Gamma to learn and its fit does not converge. Then the model
    returned has ``p`` so large that no customer is shrunk: a repeat buyer's expected order
    value is their own mean (all equal here) and anyone else's the population mean. The
    returned model's ``fallback_`` says which happened, so a run can report it.
    """
    from models.clv.fitting import ConvergenceError

    repeat = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
    spends = repeat["monetary_value"].to_numpy(float)
    if len(spends) and np.ptp(spends) > 1e-9 * max(1.0, abs(spends).max()):
        try:
            model = GammaGammaModel().fit(repeat)
            model.fallback_ = None
            return model
        except (ConvergenceError, ValueError) as exc:
            reason = f"Gamma-Gamma did not fit ({str(exc).splitlines()[0][:120]})"
    else:
        reason = "every repeat buyer spends the same per order"
    mean = float(spends.mean()) if len(spends) else float(summary["monetary_value"].mean() or 0.0)
    model = GammaGammaModel()
    p = 1e6
    model.params_ = {"p": p, "q": 2.0, "gamma": max(mean, 1e-12) / p}   # population mean p·γ/(q−1) = mean
    model.log_likelihood_, model.n_customers_ = float("nan"), int(len(spends))
    model.fallback_ = f"{reason}: orders valued at the mean order value {mean:.4g}"
    return model
