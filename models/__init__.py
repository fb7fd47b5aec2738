"""From a customer's features to every score: the models, split as pymc-marketing's ``clv/`` is.

- :mod:`models.clv`: the classical customer-base models (BG/NBD, MBG/NBD, MBG/CNBD-k,
  Pareto/NBD, Gamma-Gamma), fitted by maximum likelihood and saved as JSON;
- :mod:`models.ml`: the LightGBM churn and next-purchase models and the choice of the served
  score (a learned model only where it beats the formulas);
- :mod:`models.policy`: win-back timing, ranking and reasons;
- :mod:`models.scorer`: the one scorer bundling them, :mod:`models.pyfunc` its MLflow wrapper;
- :mod:`models.metrics` and :mod:`models.health`: how a model is judged before and after labels.
"""
