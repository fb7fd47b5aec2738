"""`winback monitor`: is the served champion still working? Drift, estimated and realized performance.

Churn labels arrive only when the horizon closes, so a broken feed or a shifted customer mix
would otherwise be served for months. For a day D this job

1. builds the day's feature snapshot and scores with the champion (``features.build_features``
   with the model's reference, ``WinbackScorer.score``: the one path every door uses);
2. compares them with the champion's **training reference**: the same table at the model's
   calibration origin ``trained_until − horizon`` (where its feature reference was fitted),
   rebuilt from the log the first time and cached as a compact profile (decile edges and
   counts, category counts) in the champion's run (``health/reference.json``), so an already
   registered champion needs nothing new;
3. checks the feed itself: transactions per day and the shares of channels and categories of
   the last ``feed_days`` days against the same window before the calibration origin;
4. estimates churn AUC, Brier and churn rate from the calibrated probabilities alone (CBPE,
   :func:`models.health.estimated_auc`);
5. for every earlier monitored snapshot whose horizon has closed (and any asked for), computes
   the realized churn AUC, Brier, calibration and next-purchase C-index;
6. advises retraining when a feature carrying most of the model's gain drifts, or the estimated
   or a realized AUC falls below the backtest's interval (:func:`advise`).

Results are MLflow metrics on the champion's run, one point per snapshot (``step`` = days since
1970-01-01 of the snapshot day), plus the full table as ``health/<day>.json`` and the latest
advice as run tags. The run is where the model's backtest figures already live, the service
already reads it, and a new champion starts a new series of its own; a state database would
need one more thing configured and would mix models.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features import TransactionLog, build_features, build_labels
from features.build import parse_cutoff
from models.health import DriftCalculator, auc_floor, estimated_churn_metrics, main_features, realized_churn_metrics
from models.metrics import concordance_index

REFERENCE_ARTIFACT = "health/reference.json"
#: Scores compared with the reference, beside the churn model's own inputs.
SCORE_COLUMNS = ("churn_probability", "p_purchase_30d", "p_purchase_90d", "expected_days_to_purchase",
                 "value_at_risk")
CATEGORICAL_COLUMNS = ("segment", "tier", "top_category")
FEED_CATEGORICAL = ("channel", "category")
EPOCH = pd.Timestamp("1970-01-01")
HEALTHY, WARNING, RETRAIN = "healthy", "warning", "retrain"
#: Metrics logged per snapshot (prefix ``health_``).
SERIES = ("estimated_churn_auc", "estimated_churn_brier", "estimated_churn_rate", "max_psi",
          "drifted_columns", "drifted_main_features", "unseen_share", "auc_floor",
          "realized_churn_auc", "realized_churn_brier", "realized_churn_ece",
          "realized_calibration_in_the_large", "realized_next_purchase_cindex", "status")
STATUS_CODE = {HEALTHY: 0, WARNING: 1, RETRAIN: 2}


@dataclass(frozen=True)
class MonitorSettings:
    """``alpha``: false-alarm rate of one snapshot's drift tests (shared by its columns);
    ``psi_floor``: the least PSI that counts; ``gain_share``: the features carrying this share
    of the churn model's gain are its main ones; ``feed_days``: the window of the feed checks;
    ``z``: the width of the AUC interval in standard errors."""

    alpha: float = 0.01
    psi_floor: float = 0.1
    gain_share: float = 0.8
    feed_days: int = 30
    z: float = 1.96


@dataclass
class HealthReport:
    """What one monitoring day found: the drift table, the estimates, realized rows, advice."""

    as_of: str
    model_version: str | None
    reference_origin: str
    drift: pd.DataFrame
    estimated: dict[str, float]
    realized: list[dict] = field(default_factory=list)
    promised: dict[str, float] = field(default_factory=dict)
    main_features: list[str] = field(default_factory=list)
    unseen_share: float = 0.0
    auc_floor: float = float("nan")
    status: str = HEALTHY
    reason: str = ""

    @property
    def exit_code(self) -> int:
        """3 when retraining is advised, else 0 (the command's exit status)."""
        return 3 if self.status == RETRAIN else 0

    @property
    def flagged(self) -> pd.DataFrame:
        """The drift rows with a drift, missing-value or range flag."""
        d = self.drift
        return d[d["drifted"] | d["missing_flag"] | d["range_flag"]]

    def to_dict(self) -> dict:
        """The report as plain JSON (what is stored on the champion's run)."""
        return {"as_of": self.as_of, "model_version": self.model_version, "reference_origin": self.reference_origin,
                "status": self.status, "reason": self.reason, "estimated": self.estimated,
                "realized": self.realized, "promised": self.promised, "main_features": self.main_features,
                "unseen_share": self.unseen_share, "auc_floor": self.auc_floor,
                "drift": json.loads(self.drift.to_json(orient="records"))}


# --------------------------------------------------------------------------- snapshots

def calibration_origin(scorer) -> pd.Timestamp:
    """Where the scorer's feature reference was fitted: ``trained_until − horizon`` (training
    fixes the reference at the calibration origin, whose labels end on ``trained_until``)."""
    return pd.Timestamp(scorer.trained_until_) - pd.Timedelta(days=scorer.horizon_days)


def snapshot(scorer, log: TransactionLog, day) -> pd.DataFrame:
    """The churn model's inputs, the categorical labels and the scores of every customer known
    on ``day``, one row each, with ``customer_id`` and ``first_purchase_date``."""
    day = parse_cutoff(day)
    features = build_features(log, day, reference=scorer.reference_)
    X = scorer.model_input(features).reset_index(drop=True)
    scores = scorer.score(features, day, reasons=False)
    out = {"customer_id": X["customer_id"].to_numpy(),
           "first_purchase_date": pd.to_datetime(X["first_purchase_date"]).to_numpy()}
    out.update({c: X[c].to_numpy() for c in scorer.churn_features_})
    out.update({c: X[c].to_numpy() for c in CATEGORICAL_COLUMNS if c in X.columns})
    out.update({c: scores[c].to_numpy() for c in SCORE_COLUMNS})
    return pd.DataFrame(out)


def feed(log: TransactionLog, day, days: int = 30) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The transactions of the ``days`` days up to ``day``: their channel and category (one
    row per transaction, NULL where the log has none) and the count of each day."""
    day = parse_cutoff(day)
    start, end = (day - pd.Timedelta(days=days - 1)).date(), day.date()
    rows = log.con.execute(
        f"SELECT channel, category FROM transactions WHERE ts >= DATE '{start}' "
        f"AND ts < DATE '{end}' + INTERVAL 1 DAY").df()
    per_day = log.con.execute(
        f"SELECT CAST(ts AS DATE) AS d, count(*) AS n FROM transactions WHERE ts >= DATE '{start}' "
        f"AND ts < DATE '{end}' + INTERVAL 1 DAY GROUP BY d").df()
    counts = pd.Series(0.0, index=pd.date_range(start, end, freq="D"))
    if len(per_day):
        counts.loc[pd.to_datetime(per_day["d"])] = per_day["n"].to_numpy(float)
    return rows, pd.DataFrame({"transactions_per_day": counts.to_numpy()})


# --------------------------------------------------------------------------- the reference

@dataclass
class Reference:
    """The champion's training reference: calculators fitted on its calibration-origin table."""

    origin: str
    customers: DriftCalculator
    feed_rows: DriftCalculator
    feed_days: DriftCalculator

    @classmethod
    def build(cls, scorer, log: TransactionLog, settings: MonitorSettings = MonitorSettings()) -> "Reference":
        """Profile the scorer's calibration origin: its features and scores, and the feed."""
        origin = calibration_origin(scorer)
        table = snapshot(scorer, log, origin)
        numeric = tuple(scorer.churn_features_) + SCORE_COLUMNS
        categorical = tuple(c for c in CATEGORICAL_COLUMNS if c in table.columns)
        rows, days = feed(log, origin, settings.feed_days)
        present = tuple(c for c in FEED_CATEGORICAL if rows[c].notna().any())
        return cls(str(origin.date()),
                   DriftCalculator(numeric, categorical, settings.alpha, settings.psi_floor).fit(table),
                   DriftCalculator((), present, settings.alpha, settings.psi_floor).fit(rows),
                   DriftCalculator(("transactions_per_day",), (), settings.alpha, settings.psi_floor).fit(days))

    def calculate(self, table: pd.DataFrame, rows: pd.DataFrame, days: pd.DataFrame) -> pd.DataFrame:
        """Drift of a snapshot's customers and feed against this reference, one row per column."""
        parts = [self.customers.calculate(table)]
        if self.feed_rows.profiles_:
            parts.append(self.feed_rows.calculate(rows).assign(column=lambda d: "feed." + d["column"]))
        parts.append(self.feed_days.calculate(days).assign(column=lambda d: "feed." + d["column"]))
        return pd.concat(parts, ignore_index=True)

    def to_dict(self) -> dict:
        """The reference as plain JSON."""
        return {"origin": self.origin, "customers": self.customers.to_dict(),
                "feed_rows": self.feed_rows.to_dict(), "feed_days": self.feed_days.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> "Reference":
        """A reference from :meth:`to_dict`."""
        return cls(data["origin"], DriftCalculator.from_dict(data["customers"]),
                   DriftCalculator.from_dict(data["feed_rows"]), DriftCalculator.from_dict(data["feed_days"]))


# --------------------------------------------------------------------------- the day

def realized(scorer, log: TransactionLog, day) -> dict:
    """Realized churn AUC, Brier, calibration and next-purchase C-index of the snapshot of
    ``day``, whose horizon must have closed within the log."""
    day = parse_cutoff(day)
    features = build_features(log, day, reference=scorer.reference_)
    scores = scorer.score(features, day, reasons=False)
    labels = build_labels(log, day, scorer.horizon_days)
    joined = scores.merge(labels, on="customer_id", validate="one_to_one")
    churned = ~joined["purchased"].to_numpy(bool)
    p = joined["churn_probability"].to_numpy(float)
    out = {"snapshot": str(day.date()), **estimated_churn_metrics(p), **realized_churn_metrics(churned, p),
           "realized_next_purchase_cindex": concordance_index(
               joined["days_to_next_purchase"].to_numpy(float), ~joined["next_purchase_censored"].to_numpy(bool),
               joined["expected_days_to_purchase"].to_numpy(float)),
           "churners": int(churned.sum()), "buyers": int((~churned).sum())}
    return out


def model_main_features(scorer, share: float = 0.8) -> list[str]:
    """The features that carry ``share`` of the served churn score's split gain: the LightGBM
    model's; a calibrated formula's one input column when the scorer serves a formula
    (``scorer.churn_score_``), with the formulas' columns added for a stack."""
    model = scorer.churn_model_
    trees = main_features(list(model.feature_names_), model.booster_.feature_importance("gain"), share)
    served = getattr(scorer, "churn_score_", "lightgbm")
    formulas = getattr(scorer, "_classical_scores", None)
    if served == "lightgbm" or formulas is None:
        return trees
    columns = {name: spec[0] for name, spec in formulas().items()}
    if served == "stack":
        return list(dict.fromkeys(trees + list(columns.values())))
    return [columns[served]] if served in columns else trees


def check_day(scorer, log: TransactionLog, day, reference: Reference, promised: dict[str, float],
              settings: MonitorSettings = MonitorSettings(), realized_rows: Sequence[dict] = (),
              model_version: str | None = None) -> HealthReport:
    """Monitor one day against ``reference`` (no storage): see the module docstring."""
    day = parse_cutoff(day)
    table = snapshot(scorer, log, day)
    rows, days = feed(log, day, settings.feed_days)
    drift = reference.calculate(table, rows, days)
    estimated = estimated_churn_metrics(table["churn_probability"].to_numpy(float))
    main = model_main_features(scorer, settings.gain_share)
    unseen = float((pd.to_datetime(table["first_purchase_date"]) > pd.Timestamp(reference.origin)).mean())
    report = HealthReport(str(day.date()), model_version, reference.origin, drift, estimated, list(realized_rows),
                          dict(promised), main, unseen)
    if "churn_auc" in promised:
        report.auc_floor = auc_floor(promised["churn_auc"], estimated["expected_churners"],
                                     estimated["expected_buyers"], z=settings.z * np.sqrt(2))
        for row in report.realized:
            row["auc_floor"] = auc_floor(promised["churn_auc"], row["churners"], row["buyers"],
                                         z=settings.z * np.sqrt(2))
    report.status, report.reason = advise(report)
    return report


def advise(report: HealthReport) -> tuple[str, str]:
    """``retrain`` when a main feature drifts, or the estimated or a realized churn AUC is below
    the backtest's interval; ``warning`` when anything else is flagged (another column's drift,
    missing values, values out of range, the feed); else ``healthy``. With the reason, one line.

    The AUC interval is the backtest's AUC less ``z·√2`` Hanley-McNeil standard errors at the
    batch's class sizes (expected ones for the estimate): the backtest's noise and the batch's.
    """
    d = report.drift
    drifted = d[d["drifted"]]
    main = [c for c in report.main_features if c in set(drifted["column"])]
    problems = []
    if main:
        top = drifted.set_index("column").loc[main, "psi"]
        problems.append("drift on main feature(s) " + ", ".join(f"{c} (PSI {v:.2f})" for c, v in top.items()))
    est = report.estimated.get("estimated_churn_auc", float("nan"))
    if np.isfinite(report.auc_floor) and est < report.auc_floor:
        problems.append(f"estimated churn AUC {est:.3f} below the backtest's interval "
                        f"(≥ {report.auc_floor:.3f}, backtest {report.promised['churn_auc']:.3f})")
    for row in report.realized:
        auc = row.get("realized_churn_auc", float("nan"))
        if np.isfinite(row.get("auc_floor", float("nan"))) and auc < row["auc_floor"]:
            problems.append(f"realized churn AUC {auc:.3f} on {row['snapshot']} below the backtest's interval "
                            f"(≥ {row['auc_floor']:.3f})")
    notes = []
    other = [c for c in drifted["column"] if c not in main]
    if other:
        notes.append("drift on " + _names(other))
    missing = list(d.loc[d["missing_flag"], "column"])
    if missing:
        notes.append("more missing values in " + _names(missing))
    outside = list(d.loc[d["range_flag"], "column"])
    if outside:
        notes.append("values outside the training range in " + _names(outside))
    if problems:
        return RETRAIN, "retraining advised: " + "; ".join(problems) + ("; also " + "; ".join(notes) if notes else "")
    if notes:
        return WARNING, "check the feed (the model's main features are stable): " + "; ".join(notes)
    return HEALTHY, (f"healthy: no drift on {len(d)} columns, estimated churn AUC {est:.3f}"
                     + (f" (backtest {report.promised['churn_auc']:.3f})" if "churn_auc" in report.promised else ""))


def _names(columns: list[str], most: int = 8) -> str:
    return ", ".join(columns[:most]) + (f" and {len(columns) - most} more" if len(columns) > most else "")


# --------------------------------------------------------------------------- MLflow: the job

def _step(day) -> int:
    return int((pd.Timestamp(day) - EPOCH).days)


def _day(step: int) -> str:
    return str((EPOCH + pd.Timedelta(days=int(step))).date())


def load_reference(client, run_id: str | None, scorer, log: TransactionLog,
                   settings: MonitorSettings = MonitorSettings(), cache: bool = True) -> Reference:
    """The champion's reference profile: from its run if cached there, else built from the log
    at its calibration origin (and cached there when ``cache``).

    Built from the log, the reference is only as good as the log's history up to the
    calibration origin: the first monitoring run after training caches it, so a feed that
    breaks later cannot rewrite it."""
    origin = str(calibration_origin(scorer).date())
    if run_id:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = client.download_artifacts(run_id, REFERENCE_ARTIFACT, tmp)
                data = json.loads(Path(path).read_text(encoding="utf-8"))
            if data.get("origin") == origin and data["customers"]["alpha"] == settings.alpha \
                    and data["customers"]["floor"] == settings.psi_floor:
                return Reference.from_dict(data)
        except Exception:                        # not cached yet (or unreadable): rebuild it
            pass
    reference = Reference.build(scorer, log, settings)
    if run_id and cache:
        client.log_dict(run_id, reference.to_dict(), REFERENCE_ARTIFACT)
    return reference


def promised_metrics(client, run_id: str | None) -> dict[str, float]:
    """What the champion's backtest promised (its run's metrics)."""
    if not run_id:
        return {}
    metrics = client.get_run(run_id).data.metrics
    return {k: float(metrics[k]) for k in ("churn_auc", "churn_brier", "churn_ece", "next_purchase_cindex")
            if k in metrics}


def monitored_days(client, run_id: str) -> dict[str, set[str]]:
    """The snapshot days already monitored and those already realized, from the run's metrics."""
    seen = {p.step for p in client.get_metric_history(run_id, "health_estimated_churn_auc")}
    done = {p.step for p in client.get_metric_history(run_id, "health_realized_churn_auc")}
    return {"monitored": {_day(s) for s in seen}, "realized": {_day(s) for s in done}}


def run_monitor(scorer, log: TransactionLog, as_of, client=None, run_id: str | None = None,
                model_version: str | None = None, settings: MonitorSettings = MonitorSettings(),
                snapshots: Sequence[str] = (), store: bool = True) -> HealthReport:
    """Monitor ``as_of``: the drift and estimates of its snapshot, the realized metrics of every
    earlier monitored snapshot (and of ``snapshots``) whose horizon has closed by ``as_of`` and
    within the log; stored on the champion's run when ``store`` (see the module docstring)."""
    day = parse_cutoff(as_of)
    reference = (load_reference(client, run_id, scorer, log, settings, cache=store) if client
                 else Reference.build(scorer, log, settings))
    known = monitored_days(client, run_id) if (client and run_id) else {"monitored": set(), "realized": set()}
    if log.report.last_timestamp is None:
        raise ValueError("the log has no purchases to monitor")
    last = log.report.last_timestamp.normalize()
    closes_by = min(day, last) - pd.Timedelta(days=scorer.horizon_days)
    due = sorted({s for s in known["monitored"] - known["realized"] | set(snapshots)
                  if pd.Timestamp(s) <= closes_by})
    rows = [realized(scorer, log, s) for s in due]
    report = check_day(scorer, log, day, reference, promised_metrics(client, run_id) if client else {},
                       settings, rows, model_version)
    if store and client and run_id:
        store_report(client, run_id, report)
    return report


def store_report(client, run_id: str, report: HealthReport) -> None:
    """Log the report on the champion's run: its series at the snapshot's step, the realized
    rows at theirs, the full table as ``health/<day>.json`` and the latest advice as tags."""
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    step = _step(report.as_of)
    d = report.drift
    values = {**{k: report.estimated[k] for k in ("estimated_churn_auc", "estimated_churn_brier",
                                                  "estimated_churn_rate")},
              "max_psi": float(d["psi"].max()), "drifted_columns": float(d["drifted"].sum()),
              "drifted_main_features": float(d["drifted"][d["column"].isin(report.main_features)].sum()),
              "unseen_share": report.unseen_share, "status": float(STATUS_CODE[report.status])}
    if np.isfinite(report.auc_floor):
        values["auc_floor"] = report.auc_floor
    metrics = [Metric(f"health_{k}", float(v), now, step) for k, v in values.items()]
    metrics += [Metric(f"health_psi.{c}", float(v), now, step) for c, v in zip(d["column"], d["psi"])
                if np.isfinite(v)]
    for row in report.realized:
        metrics += [Metric(f"health_{k}", float(row[k]), now, _step(row["snapshot"]))
                    for k in ("realized_churn_auc", "realized_churn_brier", "realized_churn_ece",
                              "realized_calibration_in_the_large", "realized_next_purchase_cindex",
                              "estimated_churn_auc", "auc_floor")     # the estimate: the same snapshot's
                    if np.isfinite(row.get(k, float("nan")))]
    for i in range(0, len(metrics), 900):
        client.log_batch(run_id, metrics=metrics[i:i + 900])
    client.log_dict(run_id, report.to_dict(), f"health/{report.as_of}.json")
    client.log_batch(run_id, tags=[RunTag("health.as_of", report.as_of), RunTag("health.status", report.status),
                                   RunTag("health.reason", report.reason[:4000])])


# --------------------------------------------------------------------------- reading it back

_CACHE: dict[tuple[str, str], tuple[float, dict | None]] = {}
_CACHE_LOCK = threading.Lock()


def health_summary(tracking_uri: str, run_id: str | None, max_age: float = 60.0,
                   refresh: bool = True) -> dict | None:
    """The latest advice and the series of the run (``None`` if never monitored), read from
    MLflow at most every ``max_age`` seconds per run; the last value read when the store cannot
    be read, or when not ``refresh`` (the service passes False while the registry is down, so
    ``/info`` never waits on it)."""
    if not run_id:
        return None
    key = (tracking_uri, run_id)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit and (time.monotonic() - hit[0] < (max_age if hit[1] else min(max_age, 5.0)) or not refresh):
        return hit[1]                                     # "never monitored" is asked again sooner
    if not refresh:
        return None
    try:
        summary = read_health(tracking_uri, run_id)
    except Exception:
        summary = hit[1] if hit else None
    with _CACHE_LOCK:
        _CACHE[key] = (time.monotonic(), summary)
    return summary


def health_info(tracking_uri: str, run_id: str | None, refresh: bool = True) -> dict | None:
    """The ``health`` block of the service's ``/info``: :func:`health_summary` without the series."""
    summary = health_summary(tracking_uri, run_id, refresh=refresh)
    if summary is None:
        return None
    out = {k: v for k, v in summary.items() if k != "series"}
    if out.get("drifted_columns") is not None:
        out["drifted_columns"] = int(out["drifted_columns"])
    return out


def read_health(tracking_uri: str, run_id: str) -> dict | None:
    """The latest health report stored on the run ``run_id``, or None."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    run = client.get_run(run_id)
    tags = run.data.tags
    if "health.as_of" not in tags:
        return None
    series = {}
    for name in SERIES:
        history = client.get_metric_history(run_id, f"health_{name}")
        latest: dict[int, tuple[int, float]] = {}
        for point in history:                     # the last value logged for each snapshot
            if point.step not in latest or point.timestamp >= latest[point.step][0]:
                latest[point.step] = (point.timestamp, point.value)
        series[name] = {_day(s): v for s, (_, v) in sorted(latest.items())}
    days = series["estimated_churn_auc"]
    at = tags["health.as_of"]
    return {"as_of": at, "status": tags.get("health.status"), "reason": tags.get("health.reason"),
            "estimated_churn_auc": days.get(at), "max_psi": series["max_psi"].get(at),
            "drifted_columns": series["drifted_columns"].get(at),
            "unseen_share": series["unseen_share"].get(at), "auc_floor": series["auc_floor"].get(at),
            "backtest_churn_auc": run.data.metrics.get("churn_auc"),
            "realized": {d: {"churn_auc": v, "churn_brier": series["realized_churn_brier"].get(d),
                             "next_purchase_cindex": series["realized_next_purchase_cindex"].get(d)}
                         for d, v in series["realized_churn_auc"].items()},
            "series": series}


# --------------------------------------------------------------------------- the webhook

def post_advice(url: str, secret: str, report: HealthReport, attempts: int = 3) -> str | None:
    """POST the advice as JSON, signed as the triggers are (``Winback-Signature``); None on a
    2xx answer, else what went wrong after ``attempts`` tries."""
    import httpx

    from crm.delivery import SIGNATURE_HEADER, sign

    body = json.dumps({"type": "model_health", "as_of": report.as_of, "model_version": report.model_version,
                       "status": report.status, "reason": report.reason,
                       "estimated_churn_auc": report.estimated.get("estimated_churn_auc"),
                       "backtest_churn_auc": report.promised.get("churn_auc"),
                       "drifted": list(report.drift.loc[report.drift["drifted"], "column"])},
                      ensure_ascii=False).encode("utf-8")
    error = None
    with httpx.Client(timeout=10) as http:
        for attempt in range(attempts):
            try:
                answer = http.post(url, content=body, headers={
                    "Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body, int(time.time()))})
                if 200 <= answer.status_code < 300:
                    return None
                error = f"HTTP {answer.status_code}"
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            time.sleep(0.5 * 2 ** attempt)
    return error
