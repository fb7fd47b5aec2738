"""One scorer: transactions or features in, every per-customer score out.

:class:`WinbackScorer` bundles the classical models (BG/NBD for P(alive) and purchase counts,
Gamma-Gamma for order value and CLV), the LightGBM churn model, the next-purchase model and the
win-back policy. It computes features with :func:`features.build_features`, the same code
training uses, so training and serving cannot drift; a saved scorer records the feature schema
it was trained on and refuses to load against code whose features differ.

A saved scorer is a directory of plain files: ``scorer.json`` (configuration, parameters,
schema, reference statistics, isotonic knots) and LightGBM model text files. No pickles.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from functools import partial
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from features import FeatureReference, FeatureSettings, TransactionLog, build_features
from features.build import parse_cutoff
from features.output import atomic_path
from features.side import SideData
from models.clv.base import PurchaseModel
from models.clv.beta_geo import BetaGeoModel
from models.clv.gamma_gamma import GammaGammaModel, fit_spend_model
from models.clv.mbg_cnbd import MBGCNBDModel
from models.clv.modified_beta_geo import ModifiedBetaGeoModel
from models.clv.pareto_nbd import ParetoNBDModel
from models.metrics import brier_scores, concordance_index, integrated_brier
from models.ml.churn import ChurnModel
from models.ml.forest import feature_matrix
from models.ml.next_purchase import (
    DEFAULT_GRID_DAYS,
    ClassicalNextPurchase,
    HazardNextPurchaseModel,
    grid_for_horizon,
    restricted_mean_days,
    summarize_distribution,
)
from models.ml.rows import RowLimits, RowSampler, TrainingRows
from models.ml.selection import (
    LEARNED_CHURN,
    ChurnStack,
    ScoreCalibrator,
    Selection,
    choose_churn,
    choose_next_purchase,
    classical_churn_scores,
    signed_score,
    stack_inputs,
)
from models.policy.reasons import top_reasons
from models.policy.winback import WinbackPolicy

#: 4: the served churn and next-purchase scores are chosen among candidates (:mod:`models.ml.selection`),
#: with the record of that choice. (3: the feature reference holds settings, time zone and freq; the
#: purchase model is named; extra classical models feed the churn model.)
FORMAT_VERSION = 4

#: The classical model behind P(alive), expected purchases and the policy. BG/NBD cannot let a
#: customer without a repeat purchase drop out (P(alive) = 1 for them, half of CDNOW), so the
#: default is MBG/NBD: the same closed forms, a dropout chance after the first purchase too,
#: and as fast to fit (0.3 s on CDNOW vs 2.4 s for Pareto/NBD, which ranks churn about as well).
PURCHASE_MODELS: dict[str, type[PurchaseModel]] = {
    "bgnbd": BetaGeoModel, "mbgnbd": ModifiedBetaGeoModel, "pareto_nbd": ParetoNBDModel,
    "mbgcnbd": MBGCNBDModel}
#: The model of regular buyers (Erlang-k gaps), used where the log shows regularity (k > 1).
REGULARITY_MODEL = "mbgcnbd"

#: Feature-table columns the churn model reads. Left out: labels, names and dates; gap
#: statistics, whose direction is ambiguous (a later last purchase lengthens the mean gap);
#: and the customer's age (T, tenure), on which trees extrapolate badly from training origins
#: to a later cutoff where every customer is older. The BG/NBD outputs carry age correctly.
CHURN_FEATURES = (
    "frequency", "recency", "monetary_value", "days_since_last_purchase", "purchase_days",
    "orders", "total_spend", "avg_order_value", "first_purchase_value",
    "r_score", "f_score", "m_score", "overdue_ratio", "orders_30d", "spend_30d", "orders_90d",
    "spend_90d", "orders_180d", "spend_180d", "orders_365d", "spend_365d", "spend_trend",
    "tier_spend", "replenish_interval_days", "replenish_due_in_days",
    "p_alive", "expected_purchases_horizon", "prob_purchase_horizon", "expected_order_value",
    "clv_12m",
)
#: The next-purchase hazard model also reads the customer's gap statistics.
HAZARD_FEATURES = CHURN_FEATURES + ("mean_gap_days", "median_gap_days", "std_gap_days", "last_gap_days")
#: What each extra classical model adds to the churn features, as ``<model>_<output>``.
EXTRA_OUTPUTS = ("p_alive", "expected_purchases_horizon", "prob_purchase_horizon")
#: What the classical models add to every row (the rest of :data:`CHURN_FEATURES`).
CLASSICAL_OUTPUTS = ("p_alive", "expected_purchases_horizon", "prob_purchase_horizon",
                     "expected_order_value", "clv_12m")
#: The feature table's segment and tier labels, passed through to the scores.
SEGMENT_COLUMNS = ("r_score", "f_score", "m_score", "segment", "segment_zh_tw", "tier", "tier_zh_tw")
#: Labels :meth:`WinbackScorer.fit` reads (from :func:`features.labelled_features`).
LABEL_COLUMNS = ("purchased", "days_to_next_purchase", "next_purchase_censored")
#: Every column :meth:`WinbackScorer.fit` reads from a labelled feature table, besides
#: ``customer_id`` and ``origin``: the classical models' inputs, the learned models' feature
#: columns and the labels. Training asks DuckDB for these alone (``labelled_features(...,
#: columns=TRAINING_COLUMNS)``), not for the whole table with its names, dates and labels.
TRAINING_COLUMNS = tuple(dict.fromkeys(
    ("frequency", "recency", "T", "monetary_value", "litt")
    + tuple(c for c in HAZARD_FEATURES if c not in CLASSICAL_OUTPUTS) + LABEL_COLUMNS))

#: Feature columns only the learned models read, not the classical models, the policy or the
#: labels: training may hold them as float32 (:func:`training.pipeline.training_frame`), half the
#: memory; the trees bin them anyway.
LEARNED_ONLY_COLUMNS = tuple(c for c in TRAINING_COLUMNS if c in HAZARD_FEATURES
                             and c not in ("frequency", "recency", "T", "monetary_value", "litt"))

#: A progress report: what is being done, and when a step ends, how many customer rows it
#: covered and in how many seconds (``None`` while it starts).
Progress = Callable[[str, int | None, float | None], None]


def _no_progress(task: str, rows: int | None = None, seconds: float | None = None) -> None:
    return None


class SchemaMismatchError(ValueError):
    """A saved scorer was trained on features this code no longer builds (or the reverse)."""


def feature_schema(settings: FeatureSettings = FeatureSettings()) -> list[list[str]]:
    """Column names and dtypes :func:`build_features` produces, from a two-row probe log."""
    probe = pd.DataFrame({"customer_id": ["a", "a"], "amount": [1.0, 2.0],
                          "timestamp": pd.to_datetime(["2020-01-01", "2020-02-01"])})
    table = build_features(probe, "2020-03-01", settings=settings)
    return [[c, str(t)] for c, t in table.dtypes.items()]


class WinbackScorer:
    """Churn, next purchase, value and win-back timing for every customer, in one table.

    Parameters
    ----------
    horizon_days : the churn horizon: churn means no purchase within this many days.
    next_purchase : "auto" serves the hazard model only where it beats every classical F(t) by
        C-index in the time-series cross-validation, else the best classical model
        (:mod:`models.ml.selection`); or force one: "hazard", "classical" (the purchase model) or
        a classical model's name.
    churn_score : "auto" serves the LightGBM model or the stack only where it beats the best
        calibrated classical score in that cross-validation, else that score; or force a
        candidate ("lightgbm", "stack", "pareto_nbd_expected_purchases", ...: see
        :func:`models.ml.selection.classical_churn_scores`).
    chosen : the record of the cross-validation behind a forced ``churn_score`` and
        ``next_purchase`` (a refit keeps the backtest's choice and its record, as it keeps the
        tree count); kept as :attr:`selection_`.
    purchase_model : the classical model behind ``p_alive``, expected purchases and the
        policy: "mbgnbd" (default), "pareto_nbd" or "bgnbd" (see :data:`PURCHASE_MODELS`).
    extra_classical : more classical models (names in :data:`PURCHASE_MODELS`) fitted per origin
        whose P(alive), expected purchases and P(purchase) in the horizon are churn features
        (``<name>_p_alive``, ...): default Pareto/NBD, whose P(alive) ranks churn best of the three.
    regularity : True fits MBG/CNBD-k on the calibration origin, its k chosen by likelihood;
        where the log shows regularity (k > 1) it joins the extra classical models with that k
        (its outputs feed the churn and next-purchase models, and its F(t) is a next-purchase
        candidate). On CDNOW k = 1 and nothing changes. A number fixes k (a refit keeps the
        backtest's); False never uses it. :attr:`regularity_k_` says what was found.
    churn_tree_candidates : tree counts the time-series cross-validation chooses from (see
        :meth:`fit`); empty keeps the churn model's ``n_estimators``.
    policy : the win-back timing policy.
    churn : the churn classifier's settings (an unfitted :class:`ChurnModel`).
    hazard_estimators : boosting rounds of the next-purchase hazard model.
    random_state : seed for the learned models.
    num_threads : LightGBM threads of the hazard model, and of the churn model when ``churn``
        is not given (0: LightGBM's default, one per core).
    """

    def __init__(self, horizon_days: int = 90, next_purchase: str = "auto",
                 purchase_model: str = "mbgnbd", policy: WinbackPolicy = WinbackPolicy(),
                 churn: ChurnModel | None = None, hazard_estimators: int = 80,
                 random_state: int = 0, extra_classical: tuple[str, ...] = ("pareto_nbd",),
                 churn_tree_candidates: tuple[int, ...] = (30, 60, 90, 150, 250),
                 num_threads: int = 0, churn_score: str = "auto", chosen: dict | None = None,
                 regularity: bool | int = True) -> None:
        self.horizon_days = horizon_days
        self.next_purchase = next_purchase
        self.purchase_model = purchase_model
        self.extra_classical = extra_classical
        self.churn_tree_candidates = churn_tree_candidates
        self.policy = policy
        self.churn = churn
        self.hazard_estimators = hazard_estimators
        self.random_state = random_state
        self.num_threads = num_threads
        self.churn_score = churn_score
        self.chosen = chosen
        self.regularity = regularity

    # ------------------------------------------------------------------ fitting

    def fit(self, train: pd.DataFrame | Sequence[Callable[[], pd.DataFrame]], calibration: pd.DataFrame,
            reference: FeatureReference, progress: Progress | None = None) -> "WinbackScorer":
        """Fit on labelled feature tables.

        ``train`` holds one or more origins (column ``origin``, as
        :func:`features.labelled_features` builds them), or is a sequence of functions that
        each return one origin's table, oldest first (then only one origin is in memory at a
        time: see :mod:`models.ml.rows`). ``calibration`` is one later origin whose labels lie
        after every training label. Classical models are fit per origin for the training rows
        (no origin sees another's future) and on ``calibration`` for scoring; of each training
        origin only the rows the learned models read are kept (:class:`models.ml.rows.RowSampler`).
        ``reference`` is the feature contract every table was built with; the scorer keeps it
        and builds every later feature table with it. The tables need only ``customer_id``,
        ``origin`` and :data:`TRAINING_COLUMNS`. ``progress`` is told when each fit starts and
        ends, with the rows it covered and its seconds (see :data:`Progress`).
        """
        report = progress or _no_progress
        classical_names = (self.purchase_model, *self.extra_classical, REGULARITY_MODEL)
        if self.next_purchase not in ("auto", "hazard", "classical", *classical_names):
            raise ValueError(f"next_purchase must be auto, hazard, classical or one of "
                             f"{', '.join(classical_names)}, got {self.next_purchase!r}")
        scores = classical_churn_scores(self.purchase_model, (*self.extra_classical, REGULARITY_MODEL))
        if self.churn_score not in ("auto", *LEARNED_CHURN, *scores):
            raise ValueError(f"churn_score must be auto or one of {', '.join((*LEARNED_CHURN, *scores))}, "
                             f"got {self.churn_score!r}")
        if self.purchase_model not in PURCHASE_MODELS:
            raise ValueError(f"purchase_model must be one of {', '.join(PURCHASE_MODELS)}, "
                             f"got {self.purchase_model!r}")
        if reference.freq != "D":
            raise ValueError("the scorer needs daily features (a reference with freq='D')")
        if isinstance(train, pd.DataFrame) and calibration["origin"].min() <= train["origin"].max():
            raise ValueError("the calibration origin must come after every training origin")
        unknown = [m for m in self.extra_classical if m not in PURCHASE_MODELS]
        if unknown:
            raise ValueError(f"extra_classical: unknown model(s) {unknown}; one of {', '.join(PURCHASE_MODELS)}")
        self.reference_ = reference
        self._find_regularity(calibration, report)
        churn = (clone(self.churn) if self.churn is not None
                 else ChurnModel(random_state=self.random_state, num_threads=self.num_threads))
        limits = RowLimits(fit=churn.max_rows, hazard=self._hazard_model(()).max_customers)
        sample, latest = self._with_classical_by_origin(train, calibration, limits, report)
        X_train, rows = sample.frame, sample.positions
        with _step(report, f"classical models, calibration origin {_day(calibration)}", len(calibration)):
            fitted = self._fit_classical(calibration)
        self.purchase_model_, self.spend_model_ = fitted["purchase"], fitted["spend"]
        self.spend_fallback_ = fitted["spend"].fallback_
        self.extra_models_ = fitted["extra"]
        X_cal = self._with_classical(calibration, fitted)
        self.churn_features_ = list(CHURN_FEATURES) + [
            f"{name}_{out}" for name in self.extra_classical_ for out in EXTRA_OUTPUTS] + list(reference.side_columns)
        columns = self.churn_features_
        churn.set_params(categorical_features=tuple(self._categorical_attributes()))
        churned = ~X_train["purchased"].to_numpy(bool)
        split = self._cv_split(X_train, sample) if self.churn_tree_candidates else None
        # one binning for every churn fit: the rows of the served trees and of the cross-validation's
        binned = np.union1d(rows["fit"], rows["cv_fit"]) if split is not None else rows["fit"]
        with _step(report, "churn dataset, binned once for every churn fit", len(binned)):
            data = churn.dataset(X_train, churned, columns, rows=binned).construct()
        self.churn_tuning_: dict = {}
        if split is not None:
            with _step(report, "churn trees: time-series cross-validation of their number", len(binned)):
                positions = np.searchsorted(binned, split[0])
                self.churn_tuning_, margin = self._choose_trees(churn, data.subset(positions),  # type: ignore[arg-type]
                                                                X_train, columns, split)
        if self.churn_tuning_:
            churn.set_params(n_estimators=self.churn_tuning_["chosen"])
        served = (data if len(rows["fit"]) == len(binned)
                  else data.subset(np.searchsorted(binned, rows["fit"])))  # type: ignore[arg-type]  # any int array
        with _step(report, "churn model", len(rows["fit"])):
            self.churn_model_ = churn.fit(served, churned, _columns(X_cal, columns), ~X_cal["purchased"].to_numpy(bool))
        del data, served
        self.selection_ = dict(self.chosen or {})
        if self.churn_tuning_ and split is not None and self.churn_score == "auto":
            with _step(report, "churn: learned model vs calibrated formulas, cross-validated", len(split[1])):
                self.selection_["churn"] = self._select_churn(X_train, split, margin).to_dict()
        self.churn_score_ = (self.selection_["churn"]["served"]
                             if self.churn_score == "auto" and "churn" in self.selection_
                             else "lightgbm" if self.churn_score == "auto" else self.churn_score)
        self._fit_churn_output(X_cal)
        with _step(report, "next-purchase models", len(rows["hazard"])):
            self._fit_next_purchase(X_train, X_cal, split, latest, rows)
        self.feature_schema_ = feature_schema(reference.settings)
        last_origin = pd.Timestamp(calibration["origin"].max())
        self.trained_until_ = str((last_origin + pd.Timedelta(days=self.horizon_days)).date())
        return self

    @property
    def feature_settings(self) -> FeatureSettings:
        """Windows and tiers of the features this scorer reads (its reference's)."""
        self._check_fitted()
        return self.reference_.settings

    def _cv_split(self, X_train: pd.DataFrame, sample: TrainingRows) -> tuple[np.ndarray, np.ndarray] | None:
        """The time-series cross-validation's rows (positions in ``X_train``, the kept rows of
        ``sample``): fit on the earlier training origins and one half of the customers (by a
        hash of their id), validate on the latest training origin and the other half, each at
        most its limit (:mod:`models.ml.rows`). None with fewer than two origins, or when the
        validation rows hold only churners or only buyers."""
        if len(sample.origins) < 2:
            return None
        fit_rows, valid_rows = sample.positions["cv_fit"], sample.positions["valid"]
        churned = ~X_train["purchased"].to_numpy(bool)[valid_rows]
        if churned.all() or not churned.any():
            return None
        return fit_rows, valid_rows

    def _choose_trees(self, churn: ChurnModel, data: lgb.Dataset, X_train: pd.DataFrame,
                      columns: list[str], split: tuple[np.ndarray, np.ndarray]) -> tuple[dict, np.ndarray]:
        """Time-series cross-validation of the number of trees, on training origins only.

        The latest training origin validates; the trees are fit on the earlier origins. Customers
        are split in two by a hash of their id: the trees see one half, the validation the other,
        because an origin's customers reappear at every origin with overlapping label windows and
        trees would otherwise be rewarded for memorising them. ``data`` is the churn model's
        dataset of the split's fit rows (a subset of the one :meth:`ChurnModel.dataset` binned for
        every churn fit, sharing its bins). Returns the validation AUC per candidate and the chosen count, and the
        validation rows' raw margin with the chosen count (for :meth:`_select_churn`).
        """
        from sklearn.metrics import roc_auc_score

        _, valid_rows = split
        churned = ~X_train["purchased"].to_numpy(bool)
        trees = clone(churn).set_params(n_estimators=max(self.churn_tree_candidates), early_stopping_rounds=None)
        booster = trees.fit_trees(data)
        valid = feature_matrix(X_train, columns, np.float32, rows=valid_rows)
        auc, raw, done, margins = {}, np.zeros(len(valid_rows)), 0, {}
        for k in sorted(self.churn_tree_candidates):     # each tree once: add the next ones' raw score
            raw += booster.predict(valid, start_iteration=done, num_iteration=k - done, raw_score=True)
            auc[int(k)], done = float(roc_auc_score(churned[valid_rows], raw)), k
            margins[int(k)] = raw.copy()
        best = max(auc.values())
        chosen = min(k for k, v in auc.items() if v >= best - 0.0005)     # fewest trees within noise
        origin = X_train["origin"].iloc[valid_rows[0]]
        return ({"validation_origin": str(pd.Timestamp(origin).date()), "auc": auc, "chosen": chosen},
                margins[chosen])

    def _classical_scores(self) -> dict[str, tuple[str, int]]:
        return classical_churn_scores(self.purchase_model, self.extra_classical_)

    def _select_churn(self, X_train: pd.DataFrame, split: tuple[np.ndarray, np.ndarray],
                      margin: np.ndarray) -> Selection:
        """Every churn candidate's validation AUC and the served one (:mod:`models.ml.selection`).

        The trees' figure is their margin with the chosen count, fit on the other rows; the
        classical scores need no fit on these rows (isotonic calibration keeps their ranking);
        the stack is fit and scored by 2-fold cross-fitting on the validation rows (a second
        bit of the customer hash), so no customer is scored by a stack that saw them.
        """
        _, rows = split
        scores = self._classical_scores()
        valid = _columns(X_train, list(dict.fromkeys(
            ["customer_id", "purchased", *(column for column, _ in scores.values())]))).take(rows)
        churned = ~valid["purchased"].to_numpy(bool)
        candidates = {"lightgbm": margin}
        candidates.update({name: signed_score(valid, column, sign) for name, (column, sign) in scores.items()})
        inputs = stack_inputs(margin, valid, scores)
        fold = (customer_hash(valid["customer_id"]) >> np.uint64(1)) % np.uint64(2) == 0
        stacked = np.empty(len(valid))
        for part in (fold, ~fold):
            if churned[~part].all() or not churned[~part].any():
                stacked[part] = margin[part]
                continue
            stacked[part] = ChurnStack().fit(inputs[~part], churned[~part]).predict_proba(inputs[part])
        candidates["stack"] = stacked
        return choose_churn(churned, candidates, self.random_state,
                            {"origin": self.churn_tuning_["validation_origin"], "customers": int(len(rows))})

    def _fit_churn_output(self, X_cal: pd.DataFrame) -> None:
        """Calibrate the served churn score on the calibration origin: the trees keep their
        isotonic map; a classical score gets its own (:class:`~models.ml.selection.ScoreCalibrator`);
        the stack is a logistic regression fit there."""
        churned = ~X_cal["purchased"].to_numpy(bool)
        self.churn_calibrator_, self.churn_stack_ = None, None
        if self.churn_score_ == "stack":
            inputs = stack_inputs(self._margin(X_cal), X_cal, self._classical_scores())
            self.churn_stack_ = ChurnStack().fit(inputs, churned)
        elif self.churn_score_ != "lightgbm":
            column, sign = self._classical_scores()[self.churn_score_]
            self.churn_calibrator_ = ScoreCalibrator().fit(signed_score(X_cal, column, sign), churned)

    def _margin(self, X: pd.DataFrame) -> np.ndarray:
        """The trees' raw log-odds."""
        p = np.clip(self.churn_model_.predict_raw(X), 1e-12, 1 - 1e-12)
        return np.log(p / (1 - p))

    def predict_churn(self, X: pd.DataFrame) -> np.ndarray:
        """The served churn probability for rows of :meth:`model_input`: the calibrated trees,
        the stack or a calibrated classical score, as the cross-validation chose."""
        self._check_fitted()
        if self.churn_score_ == "lightgbm":
            return self.churn_model_.predict_proba(X)
        if self.churn_score_ == "stack":
            assert self.churn_stack_ is not None                 # fit or loaded with the stack served
            return self.churn_stack_.predict_proba(stack_inputs(self._margin(X), X, self._classical_scores()))
        column, sign = self._classical_scores()[self.churn_score_]
        assert self.churn_calibrator_ is not None            # fit or loaded with a formula served
        return self.churn_calibrator_.predict(signed_score(X, column, sign))

    def _find_regularity(self, calibration: pd.DataFrame, report: Progress) -> None:
        """Choose MBG/CNBD-k's k on the calibration origin and, where k > 1, add the model to
        the extra classical models (:attr:`extra_classical_`) with that k fixed for every origin."""
        extra = tuple(m for m in self.extra_classical if m != REGULARITY_MODEL)
        self.regularity_k_ = None
        if self.regularity is not True and self.regularity is not False:
            self.regularity_k_ = int(self.regularity)
        elif self.regularity or REGULARITY_MODEL in self.extra_classical:
            with _step(report, "regularity: MBG/CNBD-k's k by likelihood, calibration origin", len(calibration)):
                self.regularity_k_ = int(MBGCNBDModel(time_unit_days=1.0).fit(calibration).k_)
        regular = self.regularity_k_ is not None and (self.regularity_k_ > 1
                                                      or REGULARITY_MODEL in self.extra_classical)
        adds_regularity = regular and self.purchase_model != REGULARITY_MODEL
        self.extra_classical_ = extra + ((REGULARITY_MODEL,) if adds_regularity else ())

    def _classical_estimator(self, name: str) -> PurchaseModel:
        """An unfitted classical model of ``name`` (MBG/CNBD-k with the k found on the calibration origin)."""
        if name == REGULARITY_MODEL and self.regularity_k_ is not None:
            return MBGCNBDModel(k=self.regularity_k_, time_unit_days=1.0)
        return PURCHASE_MODELS[name](time_unit_days=1.0)

    def _fit_classical(self, frame: pd.DataFrame) -> dict:
        """The purchase model, Gamma-Gamma and the extra classical models, fit on one origin."""
        purchase = self._classical_estimator(self.purchase_model).fit(frame)
        extra = {name: self._classical_estimator(name).fit(frame) for name in self.extra_classical_}
        return {"purchase": purchase, "spend": fit_spend_model(frame), "extra": extra}

    def _with_classical_by_origin(self, train: pd.DataFrame | Sequence[Callable[[], pd.DataFrame]],
                                  calibration: pd.DataFrame, limits: RowLimits,
                                  report: Progress) -> tuple[TrainingRows, dict]:
        """The training rows the learned models read, with each origin's classical outputs from
        models fit on that origin alone, and the models fit on the latest origin (the
        cross-validation's validation origin).

        The origins are read one at a time (``train`` split by origin, or its functions called
        in turn); each origin's table is dropped once its classical models are fit and the
        rows the learned fits may read are kept (:class:`~models.ml.rows.RowSampler`).
        """
        loaders: list[Callable[[], pd.DataFrame]]
        if isinstance(train, pd.DataFrame):
            groups = sorted(train.groupby("origin", sort=True).indices.items())
            loaders = [partial(train.take, rows) for _, rows in groups]
        else:
            loaders = list(train)
        if not loaders:
            raise ValueError("no training origin given")
        sampler = RowSampler(limits, len(loaders), self.random_state)
        fitted: dict = {}
        first_calibration = calibration["origin"].min()
        for load in loaders:
            frame = load()
            origin = pd.Timestamp(frame["origin"].iloc[0])
            if (frame["origin"] >= first_calibration).any():
                raise ValueError("the calibration origin must come after every training origin")
            with _step(report, f"classical models, origin {origin.date()}", len(frame)):
                fitted = self._fit_classical(frame)                  # on every row of the origin
                rows = frame.take(sampler.select(customer_hash(frame["customer_id"]), origin))
                del frame
                sampler.keep(self._with_classical(rows, fitted))      # outputs for the kept rows only
            del rows
        return sampler.result(), fitted

    def _classical_outputs(self, frame: pd.DataFrame, fitted: dict) -> dict[str, np.ndarray]:
        """The classical models' outputs for ``frame``'s rows, by column name."""
        purchase, spend = fitted["purchase"], fitted["spend"]
        out = {
            "p_alive": purchase.predict_p_alive(frame),
            "expected_purchases_horizon": purchase.predict_expected_purchases(frame, self.horizon_days),
            "prob_purchase_horizon": purchase.predict_prob_purchase_within(frame, self.horizon_days),
            "expected_order_value": spend.predict_expected_order_value(frame),
            "clv_12m": spend.predict_clv(purchase, frame, months=12),
        }
        for name, model in fitted["extra"].items():
            out[f"{name}_p_alive"] = model.predict_p_alive(frame)
            out[f"{name}_expected_purchases_horizon"] = model.predict_expected_purchases(frame, self.horizon_days)
            out[f"{name}_prob_purchase_horizon"] = model.predict_prob_purchase_within(frame, self.horizon_days)
        return {**{name: np.asarray(values, dtype=np.float64) for name, values in out.items()},
                **self._side_codes(frame)}

    def _with_classical(self, frame: pd.DataFrame, fitted: dict) -> pd.DataFrame:
        return _joined(frame, self._classical_outputs(frame, fitted))

    def _hazard_columns(self) -> list[str]:
        """What the hazard model reads: :data:`HAZARD_FEATURES` and the reference's side columns
        (customer attributes, engagement events; a categorical attribute as its category code)."""
        return list(HAZARD_FEATURES) + list(self.reference_.side_columns)

    def _categorical_attributes(self) -> list[str]:
        return [spec.feature for spec in self.reference_.attributes if spec.kind == "categorical"]

    def _side_codes(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Each categorical attribute as the code of its category in the reference (NaN for a
        missing value or a category the model never saw), what LightGBM's categorical splits read."""
        out = {}
        for spec in self.reference_.attributes:
            if spec.kind == "categorical" and spec.feature in frame:
                values = frame[spec.feature]
                if not pd.api.types.is_numeric_dtype(values):
                    codes = pd.Categorical(values.astype(object), categories=list(spec.categories)).codes
                    out[spec.feature] = np.where(codes < 0, np.nan, codes).astype(np.float64)
        return out

    def _classical_model(self, name: str, fitted: dict | None = None) -> PurchaseModel:
        """The classical model ``name`` of ``fitted`` (default: this scorer's, fit on the
        calibration origin)."""
        fitted = fitted or {"purchase": self.purchase_model_, "extra": self.extra_models_}
        return fitted["purchase"] if name == self.purchase_model else fitted["extra"][name]

    def _next_purchase_grid(self, method: str) -> tuple[int, ...]:
        """The days a method answers F(t) on: the hazard model's intervals up to the horizon,
        the classical models' wider grid (they also answer beyond the horizon)."""
        grid = grid_for_horizon(self.horizon_days)
        return grid if method == "hazard" else tuple(sorted(set(DEFAULT_GRID_DAYS) | {grid[-1]}))

    def _fit_next_purchase(self, train: pd.DataFrame, calibration: pd.DataFrame,
                           split: tuple[np.ndarray, np.ndarray] | None, latest: dict,
                           rows: dict[str, np.ndarray]) -> None:
        """Fit the hazard model and choose the served next-purchase model.

        With "auto" and a cross-validation split, the hazard model (refit on the split's fit
        rows) and each classical F(t) (fit on the validation origin) are compared by C-index
        on the validation rows, and the hazard model is served only where it beats the best
        classical model (:func:`models.ml.selection.choose_next_purchase`). Every candidate's
        integrated Brier score and C-index on the calibration origin are recorded too
        (``next_purchase_evaluation_``); without a split, "auto" keeps the lowest integrated
        Brier score there. ``rows`` are the positions in ``train`` each fit reads
        (:class:`~models.ml.rows.TrainingRows`).
        """
        columns = self._hazard_columns()
        grid = grid_for_horizon(self.horizon_days)
        names = list(dict.fromkeys((self.purchase_model, *self.extra_classical_)))
        hazard = self._hazard(train, columns, grid, rows["hazard"])
        days = calibration["days_to_next_purchase"].to_numpy(float)
        event = ~calibration["next_purchase_censored"].to_numpy(bool)
        bought_by = event[:, None] & (days[:, None] <= np.asarray(grid)[None, :])
        self.next_purchase_evaluation_ = {}
        for name in ("hazard", *names):               # one F(t) table at a time
            cdf = (hazard.predict_cdf(_columns(calibration, columns)) if name == "hazard"
                   else ClassicalNextPurchase(self._classical_model(name), grid).predict_cdf(calibration))
            self.next_purchase_evaluation_[name] = {
                "integrated_brier": integrated_brier(grid, brier_scores(bought_by, cdf)),
                "cindex": concordance_index(days, event, restricted_mean_days(cdf, grid))}
            del cdf
        chosen = {"classical": self.purchase_model}.get(self.next_purchase, self.next_purchase)
        if chosen == "auto" and split is not None:
            self.selection_["next_purchase"] = self._select_next_purchase(
                train, split, latest, names, rows["cv_hazard"]).to_dict()
        if chosen == "auto" and "next_purchase" in self.selection_:
            chosen = self.selection_["next_purchase"]["served"]
        elif chosen == "auto":
            ev = self.next_purchase_evaluation_
            chosen = min(ev, key=lambda k: ev[k]["integrated_brier"])
        self.next_purchase_method_ = chosen
        self.hazard_model_ = hazard if chosen == "hazard" else None
        self.grid_days_ = self._next_purchase_grid(chosen)

    def _hazard_model(self, grid: tuple[int, ...]) -> HazardNextPurchaseModel:
        return HazardNextPurchaseModel(grid_days=grid, n_estimators=self.hazard_estimators,
                                       random_state=self.random_state, num_threads=self.num_threads)

    def _hazard(self, frame: pd.DataFrame, columns: list[str], grid: tuple[int, ...],
                rows: np.ndarray) -> HazardNextPurchaseModel:
        """The hazard model fit on ``frame``'s rows at positions ``rows`` (all of them: no copy)."""
        labels = ["days_to_next_purchase", "next_purchase_censored"]
        part = _columns(frame, list(dict.fromkeys(columns + labels)))
        if len(rows) < len(frame):
            part = part.take(rows)
        return self._hazard_model(grid).fit(_columns(part, columns), part["days_to_next_purchase"].to_numpy(),
                                            part["next_purchase_censored"].to_numpy(bool))

    def _select_next_purchase(self, train: pd.DataFrame, split: tuple[np.ndarray, np.ndarray],
                              latest: dict, names: list[str], fit_rows: np.ndarray) -> Selection:
        """Every next-purchase candidate's validation C-index (of the expected days each would
        serve) and the served one; their integrated Brier scores up to the horizon beside. The
        hazard model is fit on ``fit_rows`` (the split's fit rows, at most its customer limit)."""
        _, rows = split
        columns = self._hazard_columns()
        grid = grid_for_horizon(self.horizon_days)
        valid = _columns(train, [c for c in dict.fromkeys(
            ["origin", "frequency", "recency", "T", "monetary_value", "litt", "days_to_next_purchase",
             "next_purchase_censored", *columns]) if c in train]).take(rows)
        days = valid["days_to_next_purchase"].to_numpy(float)
        event = ~valid["next_purchase_censored"].to_numpy(bool)
        bought_by = event[:, None] & (days[:, None] <= np.asarray(grid)[None, :])
        hazard = self._hazard(train, columns, grid, fit_rows)
        expected, brier = {}, {}
        for name in ("hazard", *names):
            served_grid = self._next_purchase_grid(name)
            model = (hazard if name == "hazard"
                     else ClassicalNextPurchase(self._classical_model(name, latest), served_grid))
            cdf = model.predict_cdf(_columns(valid, columns) if name == "hazard" else valid)
            expected[name] = restricted_mean_days(cdf, served_grid)
            at_grid = (cdf if name == "hazard"
                       else ClassicalNextPurchase(self._classical_model(name, latest), grid).predict_cdf(valid))
            brier[name] = float(integrated_brier(grid, brier_scores(bought_by, at_grid)))
        return choose_next_purchase(days, event, expected, self.random_state,
                                    {"origin": str(pd.Timestamp(valid["origin"].iloc[0]).date()),
                                     "customers": int(len(rows))}, brier)

    def next_purchase_cdf(self, X: pd.DataFrame) -> np.ndarray:
        """F(t) on :attr:`grid_days_` of the served next-purchase model, for rows of :meth:`model_input`."""
        self._check_fitted()
        if self.next_purchase_method_ == "hazard":
            assert self.hazard_model_ is not None                # fit or loaded with the hazard served
            return self.hazard_model_.predict_cdf(X)
        return ClassicalNextPurchase(self._classical_model(self.next_purchase_method_), self.grid_days_).predict_cdf(X)

    # ------------------------------------------------------------------ scoring

    def _check_fitted(self) -> None:
        if not hasattr(self, "churn_model_"):
            raise NotFittedError("WinbackScorer is not fitted yet; call fit or load a saved scorer")

    def features_for(self, data: TransactionLog | pd.DataFrame, as_of: dt.date | str | None = None,
                     side: SideData | None = None) -> tuple[pd.DataFrame, pd.Timestamp]:
        """The feature table to score: built from transactions (with ``side``'s attributes and
        events, when the model reads them), or checked if already one."""
        self._check_fitted()
        if isinstance(data, TransactionLog) or "timestamp" in data.columns:
            if as_of is None:
                raise ValueError("as_of is required when scoring transactions")
            day = parse_cutoff(as_of)
            return build_features(data, day, reference=self.reference_, side=side), day
        missing = [c for c, _ in self.feature_schema_ if c not in data.columns]
        missing += [c for c in self.reference_.side_columns if c not in data.columns]
        if missing:
            raise SchemaMismatchError(
                f"the feature table lacks column(s) {', '.join(missing)}; build it with "
                "features.build_features (freq='D') or pass transactions")
        if as_of is None:
            raise ValueError("as_of (the feature table's cutoff) is required when scoring features")
        return data, parse_cutoff(as_of)

    def score(self, data: TransactionLog | pd.DataFrame, as_of: dt.date | str | None = None,
              reasons: bool | int = True, side: SideData | None = None) -> pd.DataFrame:
        """Every score for every customer, one row each, sorted as the features are.

        ``data`` is a transaction log (then ``as_of`` is the cutoff to build features at) or
        a feature table from :func:`features.build_features` with ``freq="D"`` as of ``as_of``.
        ``reasons``: True explains every customer, a number N only the N first by priority
        (the rest get empty lists), False none. Explaining costs far more than scoring
        (TreeSHAP), so bulk jobs explain only what a person will read. ``side``: the customer
        attributes and engagement events of a log, for a model trained with them.
        """
        features, day = self.features_for(data, as_of, side)
        X = self.model_input(features)
        churn = self.predict_churn(X)
        nxt = summarize_distribution(self.next_purchase_cdf(X), self.grid_days_)
        purchase = self.purchase_model_
        clv = X["clv_12m"].to_numpy()
        decided = self.policy.decide(purchase, X, churn, clv, day)
        # one table built from arrays in one go: no joins, no re-indexing copies
        columns = {
            "customer_id": _values(X["customer_id"]), "as_of": day,
            "churn_probability": churn, "p_alive": X["p_alive"].to_numpy(),
            "expected_purchases_30d": purchase.predict_expected_purchases(X, 30),
            "expected_purchases_90d": purchase.predict_expected_purchases(X, 90),
            "expected_purchases_365d": purchase.predict_expected_purchases(X, 365),
            "p_purchase_7d": nxt["p_purchase_7d"].to_numpy(), "p_purchase_30d": nxt["p_purchase_30d"].to_numpy(),
            "p_purchase_90d": nxt["p_purchase_90d"].to_numpy(),
            "next_purchase_date": _dates(day, nxt["next_purchase_days"]),
            "next_purchase_low": _dates(day, nxt["next_purchase_low_days"]),
            "next_purchase_high": _dates(day, nxt["next_purchase_high_days"]),
            "expected_days_to_purchase": nxt["expected_days_to_purchase"].to_numpy(),
            "expected_order_value": X["expected_order_value"].to_numpy(), "clv_12m": clv,
            **{c: decided[c].to_numpy() for c in decided.columns},
            **{c: _values(X[c]) for c in SEGMENT_COLUMNS},
        }
        out = pd.DataFrame(columns, index=pd.RangeIndex(len(X)))
        if reasons is not False and not X.index.equals(out.index):
            X = X.reset_index(drop=True)                   # _explain pairs rows by index
        return self._explain(out, X, reasons)

    def model_input(self, features: pd.DataFrame) -> pd.DataFrame:
        """Feature rows with the classical models' outputs added: what the learned models read."""
        self._check_fitted()
        return self._with_classical(features, {"purchase": self.purchase_model_, "spend": self.spend_model_,
                                               "extra": self.extra_models_})

    def explain(self, values: pd.DataFrame) -> pd.DataFrame:
        """``reasons`` and ``reasons_zh_tw`` for rows of :meth:`model_input` (TreeSHAP)."""
        self._check_fitted()
        return top_reasons(self.churn_model_.contributions(values), values)

    def _explain(self, out: pd.DataFrame, values: pd.DataFrame, reasons: bool | int) -> pd.DataFrame:
        if reasons is False:
            return out
        chosen = out.index if reasons is True else out.index[out["priority"].to_numpy() <= int(reasons)]
        explained = self.explain(values.loc[chosen])
        empty = pd.Series([[] for _ in range(len(out))], index=out.index, dtype=object)
        out["reasons"] = empty.copy()
        out["reasons_zh_tw"] = empty
        out.loc[chosen, "reasons"] = explained["reasons"]
        out.loc[chosen, "reasons_zh_tw"] = explained["reasons_zh_tw"]
        return out

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> Path:
        """Write the scorer as plain files into ``directory`` (created; files replaced atomically)."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        churn = self.churn_model_.to_dict()
        churn_text = churn.pop("booster")
        files = {"churn_model.txt": churn_text}
        hazard = None
        if self.hazard_model_ is not None:
            hazard = self.hazard_model_.to_dict()
            files["next_purchase_model.txt"] = hazard.pop("booster")
        state = {
            "format_version": FORMAT_VERSION,
            "config": {"horizon_days": self.horizon_days, "next_purchase": self.next_purchase,
                       "purchase_model": self.purchase_model,
                       "extra_classical": list(self.extra_classical),
                       "churn_tree_candidates": list(self.churn_tree_candidates),
                       "churn_score": self.churn_score, "chosen": self.chosen,
                       "regularity": self.regularity,
                       "policy": asdict(self.policy), "random_state": self.random_state,
                       "hazard_estimators": self.hazard_estimators},
            "purchase_model": self.purchase_model_.to_dict(),
            "spend_model": self.spend_model_.to_dict(),
            "extra_models": {name: m.to_dict() for name, m in self.extra_models_.items()},
            "churn_features": self.churn_features_, "churn_tuning": self.churn_tuning_,
            "spend_fallback": self.spend_fallback_,
            "churn_model": churn, "hazard_model": hazard,
            "churn_score": self.churn_score_, "selection": self.selection_,
            "extra_classical": list(self.extra_classical_), "regularity_k": self.regularity_k_,
            "churn_calibrator": None if self.churn_calibrator_ is None else self.churn_calibrator_.to_dict(),
            "churn_stack": None if self.churn_stack_ is None else self.churn_stack_.to_dict(),
            "next_purchase_method": self.next_purchase_method_,
            "next_purchase_evaluation": self.next_purchase_evaluation_,
            "grid_days": list(self.grid_days_),
            "reference": self.reference_.to_dict(),
            "feature_schema": self.feature_schema_,
            "trained_until": self.trained_until_,
        }
        files["scorer.json"] = json.dumps(state, indent=1, ensure_ascii=False)
        for name, text in files.items():
            with atomic_path(directory / name) as tmp:
                tmp.write_text(text, encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "WinbackScorer":
        """Read a saved scorer; raise :class:`SchemaMismatchError` if features have changed."""
        directory = Path(directory)
        state = json.loads((directory / "scorer.json").read_text(encoding="utf-8"))
        if state.get("format_version") != FORMAT_VERSION:
            raise SchemaMismatchError(f"{directory}: scorer format {state.get('format_version')} "
                                      f"is not {FORMAT_VERSION}")
        config = state["config"]
        reference = FeatureReference.from_dict(state["reference"])
        current = feature_schema(reference.settings)
        if state["feature_schema"] != current:
            saved = {c for c, _ in state["feature_schema"]}
            now = {c for c, _ in current}
            raise SchemaMismatchError(
                f"{directory}: trained on a different feature schema (only in the saved scorer: "
                f"{sorted(saved - now) or 'none'}; only in this code: {sorted(now - saved) or 'none'}; "
                "or column types differ). Retrain the scorer.")
        scorer = cls(config["horizon_days"], config["next_purchase"], config["purchase_model"],
                     WinbackPolicy(**config["policy"]), hazard_estimators=config["hazard_estimators"],
                     random_state=config["random_state"], extra_classical=tuple(config["extra_classical"]),
                     churn_tree_candidates=tuple(config["churn_tree_candidates"]),
                     churn_score=config["churn_score"], chosen=config["chosen"], regularity=config["regularity"])
        scorer.purchase_model_ = PURCHASE_MODELS[config["purchase_model"]].from_dict(state["purchase_model"])
        scorer.spend_model_ = GammaGammaModel.from_dict(state["spend_model"])
        scorer.extra_models_ = {name: PURCHASE_MODELS[name].from_dict(data)
                                for name, data in state["extra_models"].items()}
        scorer.churn_features_ = list(state["churn_features"])
        scorer.churn_tuning_ = state["churn_tuning"]
        scorer.spend_fallback_ = state.get("spend_fallback")
        churn = dict(state["churn_model"], booster=(directory / "churn_model.txt").read_text())
        scorer.churn_model_ = ChurnModel.from_dict(churn)
        scorer.churn_score_, scorer.selection_ = state["churn_score"], state["selection"]
        scorer.extra_classical_, scorer.regularity_k_ = tuple(state["extra_classical"]), state["regularity_k"]
        scorer.churn_calibrator_ = (None if state["churn_calibrator"] is None
                                    else ScoreCalibrator.from_dict(state["churn_calibrator"]))
        scorer.churn_stack_ = None if state["churn_stack"] is None else ChurnStack.from_dict(state["churn_stack"])
        scorer.next_purchase_method_ = state["next_purchase_method"]
        scorer.next_purchase_evaluation_ = state["next_purchase_evaluation"]
        scorer.grid_days_ = tuple(state["grid_days"])
        scorer.hazard_model_ = None
        if state["hazard_model"] is not None:
            hazard = dict(state["hazard_model"], booster=(directory / "next_purchase_model.txt").read_text())
            scorer.hazard_model_ = HazardNextPurchaseModel.from_dict(hazard)
        scorer.reference_ = reference
        scorer.feature_schema_ = state["feature_schema"]
        scorer.trained_until_ = state["trained_until"]
        return scorer

    def use_threads(self, num_threads: int) -> "WinbackScorer":
        """Predict with ``num_threads`` LightGBM threads (0: every core) instead of the count
        saved with the model, which is the training machine's."""
        self._check_fitted()
        self.num_threads = num_threads
        for model in (self.churn_model_, self.hazard_model_):
            if model is not None:
                model.num_threads = num_threads
        return self

    def compile_trees(self) -> bool:
        """Compile the LightGBM trees with lleaves now (:mod:`models.ml.forest`), for a batch job
        that scores many customers; True if every model compiled. Scoring compiles by itself
        on its first large batch; the service does not call this (its lookups are precomputed)."""
        self._check_fitted()
        models = [self.churn_model_] + ([self.hazard_model_] if self.hazard_model_ is not None else [])
        return all([model.compile_trees() for model in models])


def customer_hash(ids: pd.Series, chunk: int = 1 << 20) -> np.ndarray:
    """Pandas' 64-bit hash of each id (``hash_pandas_object(ids, index=False)``), a chunk at a
    time, so ids held as Arrow strings become Python objects only ``chunk`` at a time."""
    return np.concatenate([pd.util.hash_array(ids.iloc[i:i + chunk].to_numpy(dtype=object))
                           for i in range(0, len(ids), chunk)] or [np.empty(0, np.uint64)])


def _values(column: pd.Series) -> np.ndarray | pd.api.extensions.ExtensionArray:
    """A column's values for the scores: Arrow strings and categoricals as they are (a compact
    feature table's ids and segment names, :mod:`features.compact`; as Python objects they
    would take several GiB at 10M customers), anything else as a numpy array."""
    if isinstance(column.dtype, (pd.ArrowDtype, pd.CategoricalDtype, pd.StringDtype)):
        return column.array
    return column.to_numpy()


def _columns(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """``frame[names]`` sharing ``frame``'s column arrays (``frame[names]`` copies them all: at
    3M training rows, half a GiB for the hazard model's features)."""
    return pd.DataFrame({name: frame[name] for name in names}, index=frame.index, copy=False)


def _joined(frame: pd.DataFrame, added: dict[str, np.ndarray]) -> pd.DataFrame:
    """``frame`` with the ``added`` columns (replacing any of the same name), without copying
    ``frame``'s own columns: the result shares them, and nothing here writes to them.

    Columns are set one by one on a shallow copy: ``pd.concat(axis=1)`` would consolidate
    every float column of a wide frame into one new block, a copy of the whole training table.
    """
    out = (frame.drop(columns=[c for c in added if c in frame.columns]) if frame.columns.isin(list(added)).any()
           else frame.copy(deep=False))
    for name, values in added.items():
        out[name] = values
    return out


@contextmanager
def _step(report: Progress, task: str, rows: int):
    """Tell ``report`` a fit starts, then that it ended, with its rows and seconds."""
    report(task, None, None)
    start = time.perf_counter()
    yield
    report(task, rows, time.perf_counter() - start)


def _day(frame: pd.DataFrame) -> str:
    return str(pd.Timestamp(frame["origin"].max()).date())


def _dates(day: pd.Timestamp, days: pd.Series) -> pd.DatetimeIndex:
    """as-of + days, rounded up to whole days; NaT where no date is expected."""
    return day + pd.to_timedelta(np.ceil(days.to_numpy(float)), unit="D")
