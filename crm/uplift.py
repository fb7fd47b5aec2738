"""Uplift models: the change a message makes to P(purchase within the rule's window) (issue #21).

Meta-learners on a shared base (causalml's ``inference/meta`` layout: one learner per class,
the fitting of the outcome models shared), each on LightGBM with small, regularised trees:

``TLearner``
    Two outcome models, mu1 on the sent events and mu0 on the held-out ones;
    tau(x) = mu1(x) - mu0(x).
``XLearner`` (Kuenzel et al. 2019), the default
    The T-learner's outcome models, then the imputed effects D1 = y - mu0(x) on the sent events
    and D0 = mu1(x) - y on the held-out ones, each regressed on x (tau1, tau0), combined with the
    propensity g: tau(x) = g tau0(x) + (1 - g) tau1(x). Winback's holdout is a salted hash, so the
    propensity is known and constant (the share sent); X-learners suit this imbalance (a 10 %
    holdout), because each group's effect model is fitted on the other group's outcome model.

The features are behavioural columns of the feature table as of each event's day
(:data:`UPLIFT_FEATURES`), nothing a scorer computed: the champion that serves today was trained
on data that covers old events' outcome windows. Saved, a learner is JSON: its settings, the
feature names and the LightGBM model text (no pickle).

References
----------
Kuenzel, S. R., Sekhon, J. S., Bickel, P. J., Yu, B. (2019). Metalearners for estimating
heterogeneous treatment effects using machine learning. *PNAS* 116(10), 4156-4165.
Ascarza, E. (2018). Retention futility: targeting high-risk customers might be ineffective.
*Journal of Marketing Research* 55(1), 80-98.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.exceptions import NotFittedError

#: Feature-table columns an uplift model reads (those present are used; missing ones are NaN).
UPLIFT_FEATURES = (
    "days_since_last_purchase", "frequency", "recency", "T", "monetary_value", "orders", "total_spend",
    "avg_order_value", "mean_gap_days", "last_gap_days", "overdue_ratio", "orders_90d", "spend_90d",
    "orders_365d", "spend_365d", "spend_trend", "tenure_days",
)
FORMAT = 1


def feature_matrix(frame: pd.DataFrame, names: tuple[str, ...] = UPLIFT_FEATURES) -> pd.DataFrame:
    """``names`` from ``frame`` as floats, a missing column as NaN (LightGBM's missing value)."""
    return pd.DataFrame({n: (pd.to_numeric(frame[n], errors="coerce").astype(float) if n in frame.columns
                             else np.full(len(frame), np.nan)) for n in names}, index=frame.index)


class MetaLearner:
    """Shared base: hyperparameters in ``__init__``, ``fit(X, treatment, y) -> self``,
    ``predict(X)`` the uplift; learned state ``feature_names_``, ``propensity_``, ``boosters_``."""

    kind: ClassVar[str] = ""

    def __init__(self, n_estimators: int = 150, learning_rate: float = 0.05, num_leaves: int = 7,
                 min_child_samples: int = 40, reg_lambda: float = 10.0, random_state: int = 0) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.reg_lambda = reg_lambda
        self.random_state = random_state

    def get_params(self) -> dict[str, Any]:
        """The learner's settings (scikit-learn's ``get_params``)."""
        return {k: getattr(self, k) for k in ("n_estimators", "learning_rate", "num_leaves",
                                              "min_child_samples", "reg_lambda", "random_state")}

    # -- fitting ------------------------------------------------------------------------------

    def fit(self, X: pd.DataFrame, treatment: np.ndarray, y: np.ndarray) -> "MetaLearner":
        """Fit on features ``X``, the 0/1 ``treatment`` and the 0/1 outcome ``y``; returns self."""
        X, t, y = self._checked(X, treatment, y)
        self.feature_names_ = tuple(X.columns)
        self.propensity_ = float(t.mean())
        self.boosters_ = self._fit(X.to_numpy(float), t, y)
        return self

    def _fit(self, X: np.ndarray, t: np.ndarray, y: np.ndarray) -> dict[str, lgb.Booster]:
        raise NotImplementedError

    def _outcome_models(self, X: np.ndarray, t: np.ndarray, y: np.ndarray) -> dict[str, lgb.Booster]:
        return {"mu1": self._booster(X[t], y[t], "binary"), "mu0": self._booster(X[~t], y[~t], "binary")}

    def _booster(self, X: np.ndarray, y: np.ndarray, objective: str) -> lgb.Booster:
        params = {"objective": objective, "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
                  "min_data_in_leaf": min(self.min_child_samples, max(len(y) // 4, 1)),
                  "lambda_l2": self.reg_lambda, "seed": self.random_state, "deterministic": True,
                  "num_threads": 1, "verbose": -1, "feature_pre_filter": False}
        return lgb.train(params, lgb.Dataset(X, label=y.astype(float)), num_boost_round=self.n_estimators)

    # -- predicting ---------------------------------------------------------------------------

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """The uplift per row: P(purchase | sent) - P(purchase | held out)."""
        if not hasattr(self, "boosters_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")
        return self._predict(feature_matrix(X, self.feature_names_).to_numpy(float))

    def predict_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """:meth:`predict` on a customers or feature frame (its :data:`UPLIFT_FEATURES`)."""
        return self.predict(feature_matrix(frame, self.feature_names_))

    def _predict(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- persistence --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The fitted learner as plain JSON: its kind, settings and LightGBM model texts."""
        if not hasattr(self, "boosters_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")
        return {"format": FORMAT, "kind": self.kind, "params": self.get_params(),
                "feature_names": list(self.feature_names_), "propensity": self.propensity_,
                "boosters": {k: b.model_to_string() for k, b in self.boosters_.items()}}

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict())

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "MetaLearner":
        """A fitted learner from :meth:`to_dict`."""
        if data.get("format") != FORMAT or data.get("kind") not in LEARNERS:
            raise ValueError(f"not an uplift model this code reads (format {data.get('format')!r}, "
                             f"kind {data.get('kind')!r}); expected format {FORMAT}, kind one of {list(LEARNERS)}")
        model = LEARNERS[data["kind"]](**data["params"])
        model.feature_names_ = tuple(data["feature_names"])
        model.propensity_ = float(data["propensity"])
        model.boosters_ = {k: lgb.Booster(model_str=v) for k, v in data["boosters"].items()}
        return model

    @staticmethod
    def from_json(text: str) -> "MetaLearner":
        """A fitted learner from :meth:`to_json`."""
        return MetaLearner.from_dict(json.loads(text))

    # -- checks -------------------------------------------------------------------------------

    @staticmethod
    def _checked(X: pd.DataFrame, treatment, y) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        t = np.asarray(treatment)
        if t.dtype != bool:
            if not np.isin(t, (0, 1)).all():
                raise ValueError("treatment must be 0/1 or boolean (1 = sent, 0 = held out)")
            t = t.astype(bool)
        y = np.asarray(y, dtype=float)
        if not np.isin(y, (0.0, 1.0)).all():
            raise ValueError("y must be 0/1: whether the customer purchased within the window")
        if not (len(X) == len(t) == len(y)):
            raise ValueError(f"X, treatment and y differ in length: {len(X)}, {len(t)}, {len(y)}")
        if t.all() or not t.any():
            raise ValueError("an uplift model needs both sent and held-out events")
        return pd.DataFrame(X).astype(float), t, y


class TLearner(MetaLearner):
    """tau(x) = mu1(x) - mu0(x), one outcome model per group."""

    kind = "t_learner"

    def _fit(self, X, t, y):
        return self._outcome_models(X, t, y)

    def _predict(self, X):
        return self.boosters_["mu1"].predict(X) - self.boosters_["mu0"].predict(X)


class XLearner(MetaLearner):
    """Kuenzel et al.'s X-learner with a known, constant propensity (the share sent)."""

    kind = "x_learner"

    def _fit(self, X, t, y):
        boosters = self._outcome_models(X, t, y)
        d1 = y[t] - boosters["mu0"].predict(X[t])
        d0 = boosters["mu1"].predict(X[~t]) - y[~t]
        boosters["tau1"] = self._booster(X[t], d1, "regression")
        boosters["tau0"] = self._booster(X[~t], d0, "regression")
        return boosters

    def _predict(self, X):
        g = self.propensity_
        return g * self.boosters_["tau0"].predict(X) + (1 - g) * self.boosters_["tau1"].predict(X)


LEARNERS: dict[str, type[MetaLearner]] = {"t_learner": TLearner, "x_learner": XLearner}
