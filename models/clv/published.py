"""Published CDNOW results, and a side-by-side fit for the demo.

Maximum-likelihood estimates on the 2,357-customer CDNOW sample, weeks 1-39 (Fader, Hardie &
Lee 2005; Batislam et al. 2007; Fader & Hardie 2013). ``lifetimes`` ships that sample already
summarised, so our estimators can be checked against the papers on the very same data.
"""

from __future__ import annotations

import importlib.resources

import pandas as pd

from models.clv.base import PurchaseModel
from models.clv.beta_geo import BetaGeoModel
from models.clv.gamma_gamma import GammaGammaModel
from models.clv.modified_beta_geo import ModifiedBetaGeoModel
from models.clv.pareto_nbd import ParetoNBDModel

PUBLISHED = {
    "BG/NBD": {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426},
    "Pareto/NBD": {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669},
    "MBG/NBD": {"r": 0.525, "alpha": 6.183, "a": 0.891, "b": 1.614},
    "Gamma-Gamma": {"p": 6.25, "q": 3.74, "gamma": 15.44},
}
MODELS: dict[str, type[PurchaseModel] | type[GammaGammaModel]] = {
    "BG/NBD": BetaGeoModel, "Pareto/NBD": ParetoNBDModel, "MBG/NBD": ModifiedBetaGeoModel,
    "Gamma-Gamma": GammaGammaModel,
}


def cdnow_sample_summary() -> pd.DataFrame:
    """The papers' 2,357-customer sample (weeks), with the repeat buyers' mean spend."""
    path = importlib.resources.files("lifetimes") / "datasets" / "cdnow_customers_summary_with_transactions.csv"
    return pd.read_csv(path).rename(columns={"x": "frequency", "t_x": "recency", "zbar": "monetary_value"})


def fit_side_by_side(summaries: dict[str, pd.DataFrame], time_unit_days: float = 7.0) -> pd.DataFrame:
    """Fit every classical model on each summary; one row per (model, parameter) with the
    published value beside the fitted ones."""
    rows = []
    for name, cls in MODELS.items():
        fitted = {}
        for label, summary in summaries.items():
            if issubclass(cls, GammaGammaModel):
                model = cls().fit(summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)])
            else:
                model = cls(time_unit_days=time_unit_days).fit(summary)
            fitted[label] = model.params_
        for param, value in PUBLISHED[name].items():
            rows.append({"model": name, "parameter": param, "published": value,
                         **{label: fitted[label][param] for label in summaries}})
    return pd.DataFrame(rows)
