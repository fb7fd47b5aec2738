"""`winback train`: rolling-origin training, out-of-time evaluation, MLflow record, gated promotion.

Time layout for an evaluation cutoff C and a horizon of H days::

    ... train origins ... | calibration origin C−H | evaluation cutoff C | C+H
    labels of every origin end by C, so none overlaps the evaluation window (C, C+H].

Training origins step back from the calibration origin by ``origin_step_days``. The recipe is
fit on the training origins, calibrated on C−H, then scored as of C and compared with the
baselines and with the current champion's recipe on exactly the same customers and outcomes
(the *backtest*). The backtest measures a recipe; the model served should use it on the latest
data, so the same recipe is then refit with every origin moved forward until the latest label
window ends on the log's last day L (calibration origin L−H), keeping the churn tree count the
backtest's cross-validation chose (a hyperparameter chosen on validation data is kept when
refitting). Both models are logged; the
registered version is the refit one, tagged with what it was trained until and evaluated on.

Every origin's features, the evaluation's and the served model's are built with one feature
reference (:class:`features.FeatureReference`, fixed at the calibration origin), so a feature
means the same in training as in serving. Only a finished run registers a model version; the
champion alias moves only when the gate passes, and the gate compares only like with like: the
same horizon, and a champion whose backtest was trained on data before the evaluation window.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from importlib import metadata
from typing import TYPE_CHECKING, Any

import duckdb
import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
from mlflow import MlflowClient

from features import TransactionLog, prepare
from features.build import parse_cutoff
from features.compact import features_frame, labels_frame
from features.labels import check_horizon, labelled_features_arrow
from features.reference import FeatureReference
from features.side import SideData
from models.ml.churn import ChurnModel
from models.pyfunc import log_scorer, scorer_from_pyfunc
from models.scorer import LEARNED_ONLY_COLUMNS, TRAINING_COLUMNS, Progress, WinbackScorer
from training import plots
from training.evaluate import EVALUATION_FEATURES, Evaluation, comparison_table, evaluate
from training.registry import (
    BACKTEST_ARTIFACT,
    CHAMPION,
    GATE_TAG,
    MODEL_NAME,
    PENDING,
    UNUSABLE,
    Gate,
    experiment_id,
    fail_abandoned_runs,
    gate,
    incomparable_reason,
    use_tracking,
    version_for,
)

if TYPE_CHECKING:
    from features.spark import SparkLog

#: The shortest horizon: the scorer answers P(purchase within 30 days) and is judged on it.
MIN_HORIZON_DAYS = 30

PACKAGES = ("winback", "lifetimes", "lightgbm", "scikit-learn", "mlflow", "bentoml", "pandas",
            "numpy", "duckdb")


@dataclass(frozen=True)
class TrainConfig:
    """What a training run does; every field is logged as an MLflow parameter."""

    cutoff: str
    horizon_days: int = 90
    origins: int = 4
    origin_step_days: int = 15
    next_purchase: str = "auto"
    purchase_model: str = "mbgnbd"
    extra_classical: tuple[str, ...] = ("pareto_nbd",)
    churn_estimators: int = 90
    hazard_estimators: int = 80
    random_state: int = 0
    gate: Gate = field(default_factory=Gate)
    #: threads for DuckDB and LightGBM (0: each one's default, one per core)
    threads: int = 0
    #: DuckDB's memory limit, e.g. "3GB" (None: DuckDB's default, 80 % of the RAM); beyond it
    #: DuckDB spills to disk
    memory_limit: str | None = None


@dataclass(frozen=True)
class TrainResult:
    """What one ``winback train`` run decided: the registered version, its alias, the
    evaluations behind the gate's verdict and which candidates are served."""

    run_id: str
    version: str
    alias: str
    #: the out-of-time evaluations; their per-customer tables keep :data:`RESULT_SCORED_COLUMNS`
    evaluation: Evaluation
    champion_evaluation: Evaluation | None
    champion_version: str | None
    table: pd.DataFrame
    verdict: str
    trained_until: str = ""
    evaluated_on: str = ""
    spend_note: str | None = None
    #: which churn and next-purchase candidates are served and why (``WinbackScorer.selection_``)
    selection: dict = field(default_factory=dict)


def plan_origins(cutoff: pd.Timestamp, horizon_days: int, origins: int, step_days: int,
                 first_day: pd.Timestamp) -> tuple[list[pd.Timestamp], pd.Timestamp]:
    """Training origins (oldest first) and the calibration origin, all before the cutoff."""
    if horizon_days < 1 or origins < 1 or step_days < 1:
        raise ValueError("--horizon-days, --origins and --origin-step-days must be at least 1")
    if horizon_days < MIN_HORIZON_DAYS:
        raise ValueError(f"--horizon-days must be at least {MIN_HORIZON_DAYS}, got {horizon_days}: the "
                         "scorer answers P(purchase within 30 days) and is judged on it, which a shorter "
                         "horizon never observes")
    calibration = cutoff - pd.Timedelta(days=horizon_days)
    train = [calibration - pd.Timedelta(days=step_days * k) for k in range(origins, 0, -1)]
    if train[0] <= first_day:
        raise ValueError(
            f"not enough history: with cutoff {cutoff.date()} and a {horizon_days}-day horizon the "
            f"calibration origin is {calibration.date()} (every label window must end by the cutoff, "
            f"so none overlaps the evaluation window), and {origins} training origin(s) "
            f"{step_days} days apart start on {train[0].date()}, not after the log's first day "
            f"{first_day.date()}. Use a later --cutoff, a shorter --horizon-days, fewer --origins "
            "or a smaller --origin-step-days.")
    return train, calibration


def fingerprint(log: TransactionLog) -> dict:
    """Size, span and an order-independent hash of the transactions: what the run saw.

    The hash is the sum (mod 2^64) of the rows' hashes, so it does not depend on row order and,
    unlike an XOR, a row given twice changes it; the row count is part of it too.
    """
    row = log.con.execute(
        "SELECT count(*), count(DISTINCT customer_id), min(ts), max(ts), sum(amount), "
        "coalesce(sum(hash(customer_id, ts, amount)::HUGEINT) % 18446744073709551616, 0) "
        "FROM transactions").fetchone()
    assert row is not None                                # an aggregate always gives one row
    rows, customers, first, last, spend, digest = row
    return {"rows": rows, "customers": customers, "first": str(first), "last": str(last),
            "total_amount": round(float(spend or 0), 2), "hash": f"{int(digest):016x}-{rows}",
            "source": log.source}


def fit_recipe(log: TransactionLog, config: TrainConfig, origins: list[pd.Timestamp],
               calibration_origin: pd.Timestamp, progress: Progress | None = None,
               spark_log: "SparkLog | None" = None, chosen_by: WinbackScorer | None = None,
               side: SideData | None = None) -> WinbackScorer:
    """Fit the scorer on ``origins``, calibrated on ``calibration_origin``: one recipe, any window.

    The feature reference is fixed at the calibration origin and used for every origin. Only
    the columns the scorer reads are fetched from DuckDB (:data:`models.scorer.TRAINING_COLUMNS`),
    or built on Spark from the same definitions when ``spark_log`` is given. ``chosen_by``, a
    scorer fit by the same recipe earlier (the backtest), fixes what its time-series
    cross-validation chose: the churn model's number of trees and the served churn and
    next-purchase candidates, with the record of that choice (a hyperparameter chosen on
    validation data is kept when refitting on all of it); None lets this fit's
    cross-validation choose them. ``side`` (customer attributes, engagement events) adds their
    features, recorded in the reference, to every origin.
    """
    churn_trees = chosen_by.churn_tuning_.get("chosen") if chosen_by is not None else None
    report = progress or (lambda *_: None)
    _, _, reference = prepare(log, calibration_origin, side=side)
    calibration = training_frame(log, [calibration_origin], config.horizon_days, reference,
                                 lambda task, *done: report(task.replace("origin", "calibration origin"), *done),
                                 spark_log, side)
    # one function per training origin: the scorer reads them one at a time and keeps only the
    # rows its learned models read (models.ml.rows), so no table of every origin is ever held
    train_origins = [partial(training_frame, log, [origin], config.horizon_days, reference, report, spark_log, side)
                     for origin in origins]
    chosen = ({"churn_score": chosen_by.churn_score_, "next_purchase": chosen_by.next_purchase_method_,
               "chosen": chosen_by.selection_, "regularity": chosen_by.regularity_k_ or False}
              if chosen_by is not None else {"next_purchase": config.next_purchase})
    # the backtest's cross-validation chose the tree count: no second choice
    tree_choice: dict[str, Any] = {"churn_tree_candidates": ()} if churn_trees else {}
    return WinbackScorer(
        horizon_days=config.horizon_days, **chosen,
        purchase_model=config.purchase_model, extra_classical=tuple(config.extra_classical),
        churn=ChurnModel(n_estimators=churn_trees or config.churn_estimators, random_state=config.random_state,
                         num_threads=config.threads),
        hazard_estimators=config.hazard_estimators, random_state=config.random_state,
        num_threads=config.threads, **tree_choice,
    ).fit(train_origins, calibration, reference, progress=report)


def training_frame(log: TransactionLog, origins: list[pd.Timestamp], horizon_days: int,
                   reference: FeatureReference, progress: Progress,
                   spark_log: "SparkLog | None" = None, side: SideData | None = None) -> pd.DataFrame:
    """Every training origin's labelled features, :data:`~models.scorer.TRAINING_COLUMNS` and the
    reference's side columns only, stacked oldest first.

    Each origin comes out of DuckDB as Arrow, its learned-only features narrowed to float32
    (:func:`_compact`); the origins are stacked without a copy and
    converted to pandas column by column, each Arrow column freed once converted, so the
    training rows exist about once in memory rather than once per origin plus once stacked.
    With ``spark_log`` each origin is built on Spark (:func:`features.spark.labelled_features_spark`)
    and collected to this machine.
    """
    release_memory()                     # what the previous origin's table left in the allocators
    tables = []
    columns = TRAINING_COLUMNS + tuple(reference.side_columns)
    for origin in origins:
        progress(f"features, origin {origin.date()}", None, None)
        start = time.perf_counter()
        tables.append(_compact(_spark_origin(spark_log, origin, horizon_days, reference) if spark_log is not None
                               else labelled_features_arrow(log, origin, horizon_days, reference, columns, side)))
        progress(f"features, origin {origin.date()}", tables[-1].num_rows, time.perf_counter() - start)
    stacked = pa.concat_tables(tables)
    tables.clear()
    # ids stay in one Arrow buffer (a few bytes each) instead of a Python string per row and origin
    return stacked.to_pandas(split_blocks=True, self_destruct=True,
                             types_mapper={pa.string(): pd.ArrowDtype(pa.string())}.get)


def _compact(table: pa.Table) -> pa.Table:
    """``table`` with the float64 columns only the learned models read
    (:data:`~models.scorer.LEARNED_ONLY_COLUMNS`) as float32 (half their memory; LightGBM bins
    them anyway), every column copied into one buffer of its own. The classical models' inputs
    and the labels keep their types.

    The copy matters: DuckDB frees an exported result batch only when all its columns are
    released, so narrowed copies alone would keep every float64 batch alive beside them
    (measured at 1M customers, 3 origins: 3.61 GiB resident after stacking, 2.90 GiB with it).
    """
    narrow = set(LEARNED_ONLY_COLUMNS)
    return table.cast(pa.schema([f.with_type(pa.float32()) if f.name in narrow and pa.types.is_float64(f.type)
                                 else f for f in table.schema])).combine_chunks()


def _spark_origin(spark_log: "SparkLog", origin: pd.Timestamp, horizon_days: int,
                  reference: FeatureReference) -> pa.Table:
    """One origin's :data:`~models.scorer.TRAINING_COLUMNS`, built on Spark, as Arrow."""
    from features.spark import labelled_features_spark, to_pandas

    rest = [c for c in TRAINING_COLUMNS if c not in ("customer_id", "origin")]
    frame = labelled_features_spark(spark_log, origin, horizon_days, reference).select("customer_id", "origin", *rest)
    return pa.Table.from_pandas(to_pandas(frame), preserve_index=False)


def _timed(report: Progress, task: str, work: Callable[[], Any], rows: int | None = None) -> Any:
    """``work()``, reported to ``report`` as a step with its rows (default: the result's length)."""
    report(task, None, None)
    start = time.perf_counter()
    result = work()
    report(task, len(result) if rows is None else rows, time.perf_counter() - start)
    return result


def progress_lines(write: Callable[[str], None]) -> Progress:
    """A :data:`~models.scorer.Progress` that writes one line when a step ends, with its rate:
    ``  churn model: 3,000,000 rows in 41.2 s (72,800 rows/s)``."""
    def report(task: str, rows: int | None = None, seconds: float | None = None) -> None:
        if rows is None or seconds is None:
            return
        rate = f" ({rows / seconds:,.0f} rows/s)" if seconds > 0 else ""
        write(f"  {task}: {rows:,} rows in {seconds:.1f} s{rate}")
    return report


#: DuckDB's allocator settings for a training run: it hands memory freed after each query back
#: to the system instead of keeping up to 128 MiB per thread cached, and a background thread
#: purges what remains. Measured at 1M customers: 0.7 GiB less resident after one origin's
#: features (1.78 vs 2.47 GiB, the staged tables alike).
ALLOCATOR_SETTINGS = {"allocator_flush_threshold": "'8MB'", "allocator_background_threads": "true"}


def release_memory() -> None:
    """Return freed memory to the system: Arrow's pool (the training tables' columns live
    there) and, on glibc, the C heap (numpy's arrays), so the resident size reflects what is
    held, not what was held before."""
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):                     # not glibc: nothing to trim
        pass


def use_engine_settings(log: TransactionLog, threads: int = 0, memory_limit: str | None = None) -> None:
    """Apply ``TrainConfig.threads`` and ``memory_limit`` to the log's DuckDB connection
    (0 threads and no limit leave DuckDB's own settings), and :data:`ALLOCATOR_SETTINGS`."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"threads must be a whole number, 0 for one per core, got {threads!r}")
    for name, value in ALLOCATOR_SETTINGS.items():
        try:
            log.con.execute(f"SET {name} = {value}")
        except duckdb.Error:                              # a DuckDB without that setting
            pass
    if threads:
        log.con.execute(f"SET threads = {threads}")
    if memory_limit:
        try:
            log.con.execute(f"SET memory_limit = '{memory_limit.replace(chr(39), '')}'")
        except duckdb.Error as exc:
            raise ValueError(f"memory_limit must be a size like 3GB or 500MB, got {memory_limit!r}") from exc


def train(log: TransactionLog, config: TrainConfig, tracking_uri: str | None = None,
          step: Callable[[str], None] = lambda _: None, progress: Progress | None = None,
          spark_log: "SparkLog | None" = None, side: SideData | None = None) -> TrainResult:
    """Run the whole training job and return what it decided. See the module docstring.

    ``step`` is told when each phase starts; ``progress`` when each feature build and model fit
    inside the two recipe fits starts and ends, with rows and seconds (:func:`progress_lines`
    prints them). ``config.threads`` and ``config.memory_limit`` are applied to the log's DuckDB
    connection and LightGBM. With ``spark_log`` (the same log handed to Spark) the training
    origins' features and labels are built on Spark; the fits and the evaluation run here.
    ``side`` (customer attributes and engagement events for the same customers) adds their
    features to every origin, the evaluation and the served model's reference.
    """
    use_engine_settings(log, config.threads, config.memory_limit)
    cutoff = parse_cutoff(config.cutoff)
    if log.report.first_timestamp is None or log.report.last_timestamp is None:
        raise ValueError(f"no dated transactions in {log.source}")   # ingest refuses such a log
    first_day = log.report.first_timestamp.normalize()
    last_day = log.report.last_timestamp.normalize()
    origins, calibration_origin = plan_origins(cutoff, config.horizon_days, config.origins,
                                               config.origin_step_days, first_day)
    fresh_origins, fresh_calibration = plan_origins(last_day, config.horizon_days, config.origins,
                                                    config.origin_step_days, first_day)
    check_horizon(log, cutoff, config.horizon_days)                 # fails early if data end too soon
    horizon_end = cutoff + pd.Timedelta(days=config.horizon_days)
    evaluated_on = f"({cutoff.date()}, {horizon_end.date()}]"
    uri = use_tracking(tracking_uri)
    client = MlflowClient(uri, registry_uri=uri)
    run_name = f"cutoff {cutoff.date()} h{config.horizon_days} {config.purchase_model}"
    experiment = experiment_id(uri)
    for abandoned in fail_abandoned_runs(client, experiment):
        step(f"run {abandoned[:8]} was killed earlier: marked FAILED")
    with mlflow.start_run(experiment_id=experiment, run_name=run_name) as run:
        commit = _git_commit()
        mlflow.set_tags({"winback.host": socket.gethostname(), "winback.pid": str(os.getpid()),
                         **({"mlflow.source.git.commit": commit} if commit else {})})
        mlflow.log_params({**{k: v for k, v in asdict(config).items() if k not in ("gate", "extra_classical")},
                           "extra_classical": ",".join(config.extra_classical) or "none",
                           "gate_metrics": ",".join(config.gate.metrics),
                           "origins_dates": ",".join(str(o.date()) for o in origins),
                           "calibration_origin": str(calibration_origin.date()),
                           "refit_origins_dates": ",".join(str(o.date()) for o in fresh_origins),
                           "refit_calibration_origin": str(fresh_calibration.date()),
                           "evaluated_on": evaluated_on})
        mlflow.set_tags({f"version.{k}": v for k, v in _versions().items()})
        seen = fingerprint(log)
        mlflow.log_dict({"fingerprint": seen, "ingest": _jsonable(asdict(log.report))}, "data_profile.json")
        mlflow.log_input(_dataset(seen), context="training")

        step(f"backtest: fitting on {len(origins)} origins to {calibration_origin.date()}")
        scorer = fit_recipe(log, config, origins, calibration_origin, progress, spark_log, side=side)
        mlflow.log_dict(scorer.next_purchase_evaluation_, "next_purchase_selection.json")
        mlflow.log_dict(scorer.churn_tuning_, "churn_tree_selection.json")
        if scorer.churn_tuning_:
            mlflow.log_param("churn_trees_chosen", scorer.churn_tuning_["chosen"])
        mlflow.log_params({"next_purchase_method": scorer.next_purchase_method_, "served_churn": scorer.churn_score_})
        mlflow.log_dict(scorer.selection_, "served_selection.json")
        for target, chosen in scorer.selection_.items():
            mlflow.set_tag(f"winback.served_{target}", chosen["reason"])
            mlflow.log_metrics({f"cv_{target}_{name}": v for name, v in chosen["figures"].items()})

        step(f"evaluating out of time on {evaluated_on}")
        report = progress or (lambda *_: None)
        # compact tables (ids in Arrow, segment names as categoricals): same values as
        # build_features and build_labels, a fraction of the memory at millions of customers
        features = _timed(report, f"features, evaluation cutoff {cutoff.date()}",
                          lambda: features_frame(log, cutoff, reference=scorer.reference_, side=side))
        labels = _timed(report, f"labels, {evaluated_on}", lambda: labels_frame(log, cutoff, config.horizon_days))
        scored = _timed(report, "scoring the evaluation cutoff",
                        partial(scored_for_evaluation, scorer, features, cutoff))
        # scored: evaluate and the plots read only these of the features (shared, not copied)
        features = pd.DataFrame({c: features[c] for c in EVALUATION_FEATURES if c in features.columns}, copy=False)
        evaluation = _timed(report, "evaluation: metrics, baselines, bootstraps",
                            partial(evaluate, scored, features, labels, cutoff, config.horizon_days),
                            rows=len(scored))
        del scored
        champion = version_for(client, CHAMPION)
        champion_eval, blocked = None, None
        if champion is not None:
            blocked = incomparable_reason(client, champion, config.horizon_days, cutoff)
            if blocked is None:
                step(f"evaluating the champion's recipe (version {champion.version}) on the same data")
                champion_eval, blocked = _evaluate_champion(champion, log, features, labels, cutoff,
                                                            config.horizon_days, side)
            if champion_eval is not None:
                mlflow.log_metrics({f"champion_{k}": v for k, v in champion_eval.metrics.items()})
        mlflow.log_metrics(evaluation.metrics)
        if "bootstrap" in evaluation.notes:          # intervals from a subsample of a large base
            mlflow.set_tag("winback.bootstrap", evaluation.notes["bootstrap"])
        table = comparison_table(evaluation, champion_eval)
        mlflow.log_table(table, "comparison.json")

        step("logging plots")
        _log_plots(log, scorer, evaluation, features, cutoff, config.horizon_days)
        del features, labels            # the refit needs neither: its peak memory is the run's
        # nor the evaluations' per-customer tables beyond the scores and outcomes (10M customers:
        # 3.5 GiB each, held through the refit for nothing)
        evaluation = _slim(evaluation)
        champion_eval = _slim(champion_eval) if champion_eval is not None else None
        release_memory()

        step(f"refitting the recipe on the freshest data: {len(fresh_origins)} origins to "
             f"{fresh_calibration.date()}, labels to {last_day.date()}")
        served = fit_recipe(log, config, fresh_origins, fresh_calibration, progress, spark_log, chosen_by=scorer,
                            side=side)
        mlflow.log_params({"trained_until": served.trained_until_,
                           "served_churn_trees": served.churn_model_.n_estimators,
                           "backtest_trained_until": scorer.trained_until_,
                           "spend_model": served.spend_fallback_ or "gamma_gamma"})
        if served.spend_fallback_:
            step(f"spend: {served.spend_fallback_}")
        example = log.con.execute(
            "SELECT customer_id, ts AS timestamp, amount FROM transactions "
            f"WHERE customer_id IN (SELECT customer_id FROM transactions ORDER BY customer_id LIMIT 3) "
            f"AND ts < DATE '{last_day.date()}' + INTERVAL 1 DAY ORDER BY customer_id, ts").df()
        log_scorer(scorer, example, str(last_day.date()), name=BACKTEST_ARTIFACT)
        info = log_scorer(served, example, str(last_day.date()))

    step("registering the model version")
    tags = {"run_id": run.info.run_id, GATE_TAG: PENDING, "horizon_days": str(config.horizon_days),
            "trained_until": served.trained_until_, "backtest_trained_until": scorer.trained_until_,
            "evaluated_on": evaluated_on, "cutoff": str(cutoff.date())}
    version = mlflow.register_model(info.model_uri, MODEL_NAME, tags=tags)
    try:
        alias = gate(client, version, evaluation.metrics,
                     champion_eval.metrics if champion_eval else None, config.gate,
                     blocked=blocked if champion is not None else None)
    except Exception:
        client.delete_model_version(MODEL_NAME, version.version)   # never leave a half-done version
        raise
    verdict = _verdict(evaluation, champion_eval, champion.version if champion else None,
                       version.version, alias, blocked)
    client.set_model_version_tag(MODEL_NAME, version.version, "verdict", verdict)
    return TrainResult(run.info.run_id, version.version, alias, evaluation, champion_eval,
                       champion.version if champion else None, table, verdict,
                       served.trained_until_, evaluated_on, served.spend_fallback_, served.selection_)


#: The columns of an evaluation's per-customer table a finished run returns
#: (:attr:`TrainResult.evaluation`): who, the served churn probability and what they did.
RESULT_SCORED_COLUMNS = ("customer_id", "churn_probability", "purchased", "days_to_next_purchase",
                         "next_purchase_censored")


def _slim(evaluation: Evaluation) -> Evaluation:
    """``evaluation`` with its per-customer table cut to :data:`RESULT_SCORED_COLUMNS`; its
    metrics, baselines, verdicts and notes are kept whole."""
    kept = [c for c in RESULT_SCORED_COLUMNS if c in evaluation.scored.columns]
    return replace(evaluation, scored=evaluation.scored[kept])


def _dataset(seen: dict) -> "mlflow.data.dataset.Dataset":
    """The transaction log as an MLflow dataset: its source, the fingerprint hash as the digest,
    and rows, customers and span as the profile (the data itself is not copied)."""
    from mlflow.data.meta_dataset import MetaDataset

    # made at import by a factory, so invisible to a type checker
    from mlflow.data.sources import LocalArtifactDatasetSource  # type: ignore[attr-defined]

    class TransactionsDataset(MetaDataset):
        @property
        def profile(self) -> dict:
            return {k: seen[k] for k in ("rows", "customers", "first", "last", "total_amount")}

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(self.profile)}

    return TransactionsDataset(LocalArtifactDatasetSource(str(seen["source"])), name="transactions",
                               digest=seen["hash"])


def _git_commit() -> str | None:
    """The commit of this code when it is a git checkout; None without git or a repository."""
    import subprocess
    from pathlib import Path

    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) == 40 else None


def _evaluate_champion(champion, log: TransactionLog, features: pd.DataFrame, labels: pd.DataFrame,
                       cutoff: pd.Timestamp, horizon_days: int,
                       side: SideData | None = None) -> tuple[Evaluation | None, str | None]:
    """The champion's backtest recipe on the same evaluation data, or why it cannot be (the side
    data reaches it only if it was trained with side data)."""
    uri = f"runs:/{champion.run_id}/{BACKTEST_ARTIFACT}"
    try:
        champion_scorer = scorer_from_pyfunc(mlflow.pyfunc.load_model(uri))
    except Exception as exc:                 # an older format, a missing artifact, a changed schema
        return None, (f"{UNUSABLE}: version {champion.version}'s backtest model cannot be loaded by this "
                      f"code ({_first_line(exc)})")
    own_features = features_frame(log, cutoff, reference=champion_scorer.reference_,
                                  side=side if champion_scorer.reference_.side_columns else None)
    scored = scored_for_evaluation(champion_scorer, own_features, cutoff)
    return evaluate(scored, features, labels, cutoff, horizon_days), None


def scored_for_evaluation(scorer: WinbackScorer, features: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """The scorer's output as of the cutoff, with its own expected purchases over its horizon
    (what the value metrics compare with the horizon's spend)."""
    scored = scorer.score(features, cutoff, reasons=False)
    scored["expected_purchases_horizon"] = scorer.purchase_model_.predict_expected_purchases(
        features, scorer.horizon_days)
    return scored


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def _verdict(evaluation: Evaluation, champion: Evaluation | None, champion_version: str | None,
             version: str, alias: str, blocked: str | None = None) -> str:
    best_name, best_auc = max(evaluation.baselines.items(), key=lambda kv: kv[1])
    auc = evaluation.metrics["churn_auc"]
    text = (f"version {version}: churn AUC {auc:.4f}, {auc - best_auc:+.4f} vs the best baseline "
            f"({best_name}, {best_auc:.4f})")
    if "churn_verdict" in evaluation.verdicts:
        m = evaluation.metrics
        text += (f" [95% CI {m['churn_auc_diff_low']:+.4f} to {m['churn_auc_diff_high']:+.4f}: "
                 f"{evaluation.verdicts['churn_verdict']}]")
    if champion is not None:
        text += f", {auc - champion.metrics['churn_auc']:+.4f} vs champion version {champion_version}"
    if blocked is not None and champion_version is not None:
        text += f"; not compared with champion version {champion_version}: {blocked}"
    return text + (" → champion" if alias == CHAMPION else " → challenger (the champion stays)")


def _log_plots(log: TransactionLog, scorer: WinbackScorer, evaluation: Evaluation,
               features: pd.DataFrame, cutoff: pd.Timestamp, horizon_days: int) -> None:
    """The run's figures; ``features`` is the scorer's feature table at the cutoff."""
    import matplotlib.pyplot as plt

    scored = evaluation.scored
    churned = ~scored["purchased"].to_numpy(bool)
    figures = {
        "calibration.png": plots.calibration_curve(churned, scored["churn_probability"].to_numpy()),
        "gains.png": plots.gains_chart(churned, {
            "winback": scored["churn_probability"].to_numpy(),
            "BG/NBD expected purchases": -scored["bgnbd_expected_purchases"].to_numpy(),
            "recency gap": scored["days_since_last_purchase"].to_numpy(float),
        }),
        "feature_importance.png": plots.feature_importance(
            scorer.churn_model_.feature_names_,
            scorer.churn_model_.booster_.feature_importance("gain")),
        "p_alive_matrix.png": plots.p_alive_matrix(scorer.purchase_model_, 20,
                                                   float(scored["tenure_days"].max())),
    }
    days, actual, predicted = _cumulative_holdout(log, scorer, features, cutoff, horizon_days)
    figures["cumulative_purchases.png"] = plots.cumulative_purchases(days, actual, predicted)
    for name, fig in figures.items():
        mlflow.log_figure(fig, f"plots/{name}")
        plt.close(fig)


def _cumulative_holdout(log: TransactionLog, scorer: WinbackScorer, features: pd.DataFrame,
                        cutoff: pd.Timestamp, horizon_days: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = f"DATE '{cutoff.date()}'"
    per_day = log.con.execute(f"""
        SELECT date_diff('day', {c}, day) AS d, count(*) FROM (
            SELECT DISTINCT customer_id, CAST(ts AS DATE) AS day FROM transactions
            WHERE ts >= {c} + INTERVAL 1 DAY AND ts < {c} + INTERVAL {horizon_days + 1} DAY
              AND customer_id IN (SELECT customer_id FROM transactions WHERE ts < {c} + INTERVAL 1 DAY))
        GROUP BY d""").fetchall()
    days = np.arange(1, horizon_days + 1)
    counts = np.zeros(horizon_days + 1)
    for d, n in per_day:
        counts[int(d)] = n
    step = max(1, horizon_days // 30)
    sampled = days[::step]
    predicted = [scorer.purchase_model_.predict_expected_purchases(features, float(d)).sum() for d in sampled]
    return days, np.cumsum(counts[1:]), np.interp(days, sampled, predicted)


def _jsonable(data: dict) -> dict:
    return json.loads(json.dumps(data, default=str))
