"""`winback monitor`: injected faults are flagged and named, an unchanged feed is not, CBPE
tracks the realized AUC on CDNOW's closed horizons, results land on the champion's run."""

from __future__ import annotations

import http.server
import json
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features import TransactionLog, labelled_features, prepare
from features.cdnow import CDNOW_COLUMNS
from features.settings import ColumnMap
from models.ml.churn import ChurnModel
from models.scorer import WinbackScorer
from training import monitor as M
from training.cli import app

sys.path.append(str(Path(__file__).resolve().parents[2] / "benchmarks"))
import synthetic  # noqa: E402

ORIGIN, HORIZON = "1997-09-30", 60           # the CDNOW scorer's calibration origin and horizon
SYN_ORIGIN = "2025-08-01"
PROMISED = {"churn_auc": 0.77}               # about what the CDNOW scorer realizes at its origin
SYNTHETIC_COLUMNS = ColumnMap(order_id="order_id", quantity="quantity", category="category", channel="channel")


def _fit(log: TransactionLog, train_origin: str, origin: str) -> WinbackScorer:
    """Tiny models, as the serving tests' scorer: fast to fit, still the real scorer."""
    _, _, reference = prepare(log, origin)
    train = labelled_features(log, train_origin, HORIZON, reference)
    calibration = labelled_features(log, origin, HORIZON, reference)
    return WinbackScorer(horizon_days=HORIZON, churn=ChurnModel(n_estimators=30, learning_rate=0.1),
                         hazard_estimators=15).fit(train, calibration, reference)


@pytest.fixture(scope="module")
def cdnow_scorer(cdnow_raw) -> WinbackScorer:
    """Fit on the first 3,000 CDNOW customers (calibration origin 1997-09-30, 60 days)."""
    log = TransactionLog.from_frame(cdnow_raw[cdnow_raw["customer_id"].astype(int) <= 3000], CDNOW_COLUMNS)
    return _fit(log, "1997-06-30", ORIGIN)


@pytest.fixture(scope="module")
def cdnow_reference(cdnow_scorer, cdnow) -> M.Reference:
    return M.Reference.build(cdnow_scorer, cdnow)


@pytest.fixture(scope="module")
def synthetic_raw() -> pd.DataFrame:
    frame = pd.concat(list(synthetic.generate_transactions(3000, seed=11, arrow_strings=False, refunds=False)),
                      ignore_index=True)
    return frame


@pytest.fixture(scope="module")
def synthetic_scorer(synthetic_raw) -> WinbackScorer:
    return _fit(TransactionLog.from_frame(synthetic_raw, SYNTHETIC_COLUMNS), "2025-05-01", SYN_ORIGIN)


def _cdnow(frame: pd.DataFrame) -> TransactionLog:
    return TransactionLog.from_frame(frame, CDNOW_COLUMNS)


def _mix_shift(raw: pd.DataFrame, share: float = 0.75) -> pd.DataFrame:
    """``raw`` without ``share`` of the customers with one purchase day by :data:`ORIGIN`."""
    days = raw[raw["date"] <= ORIGIN].groupby("customer_id")["date"].nunique()
    one_timers = days.index[days == 1]
    dropped = set(np.random.default_rng(0).permutation(one_timers)[: int(share * len(one_timers))])
    return raw[~raw["customer_id"].isin(dropped)]


def _flagged(report: M.HealthReport) -> set[str]:
    return set(report.flagged["column"])


# ---------------------------------------------------------------------- the unchanged feed


def test_an_unchanged_feed_raises_no_alarm_in_at_least_19_of_20_resamples(cdnow_scorer, cdnow_raw):
    """Each seed splits CDNOW's customers in two random halves: the reference is built from one,
    the day's snapshot from the other, on the reference's own day: the same population."""
    ids = cdnow_raw["customer_id"].unique()
    promised = PROMISED
    alarms, statuses = 0, []
    for seed in range(20):
        half = set(np.random.default_rng(seed).permutation(ids)[: len(ids) // 2])
        inside = cdnow_raw["customer_id"].isin(half)
        reference = M.Reference.build(cdnow_scorer, _cdnow(cdnow_raw[inside]))
        report = M.check_day(cdnow_scorer, _cdnow(cdnow_raw[~inside]), ORIGIN, reference, promised)
        statuses.append(report.status)
        alarms += report.status != M.HEALTHY
    print(f"unchanged feed: {alarms} alarm(s) in 20 resamples: {statuses}")
    assert alarms <= 1


# ---------------------------------------------------------------------- injected faults


def test_amounts_times_three_are_flagged_and_named(cdnow_scorer, cdnow_raw, cdnow_reference):
    report = M.check_day(cdnow_scorer, _cdnow(cdnow_raw.assign(dollar_value=cdnow_raw["dollar_value"] * 3)),
                         ORIGIN, cdnow_reference, PROMISED)
    flagged = _flagged(report)
    assert {"monetary_value", "total_spend", "avg_order_value", "spend_365d"} <= flagged
    # spend is not among the model's main features: a warning about the feed, not retraining
    assert report.status == M.WARNING and report.exit_code == 0 and "monetary_value" in report.reason


def test_a_month_of_missing_transactions_is_flagged_and_named(cdnow_scorer, cdnow_raw, cdnow_reference):
    day = pd.Timestamp(ORIGIN)
    gap = (cdnow_raw["date"] > day - pd.Timedelta(days=30)) & (cdnow_raw["date"] <= day)
    report = M.check_day(cdnow_scorer, _cdnow(cdnow_raw[~gap]), ORIGIN, cdnow_reference, PROMISED)
    flagged = _flagged(report)
    assert {"feed.transactions_per_day", "orders_30d", "spend_30d"} <= flagged
    assert "feed.transactions_per_day" in report.reason
    # nobody bought in the last month: the probabilities themselves promise a worse ranking
    assert report.status == M.RETRAIN and "estimated churn AUC" in report.reason


def test_a_customer_mix_shift_is_flagged_and_advises_retraining(cdnow_scorer, cdnow_raw, cdnow_reference):
    """Three in four one-time buyers (as of the day) are missing: a loyal-heavy mix."""
    report = M.check_day(cdnow_scorer, _cdnow(_mix_shift(cdnow_raw)), ORIGIN, cdnow_reference, PROMISED)
    assert "frequency" in _flagged(report) and "frequency" in report.main_features
    assert report.status == M.RETRAIN and report.exit_code == 3 and "frequency" in report.reason


def test_a_channel_that_disappears_is_flagged_and_named(synthetic_scorer, synthetic_raw):
    log = TransactionLog.from_frame(synthetic_raw, SYNTHETIC_COLUMNS)
    reference = M.Reference.build(synthetic_scorer, log)
    assert M.check_day(synthetic_scorer, log, SYN_ORIGIN, reference, {}).status == M.HEALTHY
    day = pd.Timestamp(SYN_ORIGIN)
    recent = synthetic_raw["timestamp"] > day - pd.Timedelta(days=60)
    gone = synthetic_raw[~(recent & (synthetic_raw["channel"] == "store"))]
    report = M.check_day(synthetic_scorer, TransactionLog.from_frame(gone, SYNTHETIC_COLUMNS), SYN_ORIGIN,
                         reference, {})
    assert "feed.channel" in _flagged(report) and "feed.channel" in report.reason
    assert report.status != M.HEALTHY


def test_synthetic_amounts_times_three_are_flagged(synthetic_scorer, synthetic_raw):
    log = TransactionLog.from_frame(synthetic_raw, SYNTHETIC_COLUMNS)
    reference = M.Reference.build(synthetic_scorer, log)
    tripled = TransactionLog.from_frame(synthetic_raw.assign(amount=synthetic_raw["amount"] * 3), SYNTHETIC_COLUMNS)
    report = M.check_day(synthetic_scorer, tripled, SYN_ORIGIN, reference, {})
    assert {"monetary_value", "total_spend"} <= _flagged(report) and "monetary_value" in report.reason


def test_a_useless_model_is_estimated_below_the_backtest(cdnow_scorer, cdnow, cdnow_reference, monkeypatch):
    """Constant churn probabilities estimate an AUC of one half: retraining advised."""
    monkeypatch.setattr(cdnow_scorer.churn_model_, "predict_proba", lambda X: np.full(len(X), 0.6))
    report = M.check_day(cdnow_scorer, cdnow, ORIGIN, cdnow_reference, {"churn_auc": 0.77})
    assert report.estimated["estimated_churn_auc"] == pytest.approx(0.5)
    assert report.status == M.RETRAIN and "estimated churn AUC 0.500" in report.reason


# ---------------------------------------------------------------------- CBPE vs realized


def test_estimated_auc_tracks_realized_auc_on_cdnow_closed_horizons(cdnow_scorer, cdnow):
    """Monthly snapshots from the calibration origin to the last whose 60-day horizon closes
    within the log. Measured (this tiny model, all 23,570 customers): within 0.02 for the
    snapshots up to a month after the origin; later the cohort ages (CDNOW has no new customers
    after March 1997), the realized AUC rises and CBPE, which assumes calibration holds, lags."""
    days = ["1997-09-30", "1997-10-31", "1997-11-30", "1997-12-31", "1998-01-31", "1998-02-28", "1998-03-31",
            "1998-04-30"]
    rows = [M.realized(cdnow_scorer, cdnow, d) for d in days]
    gaps = {r["snapshot"]: r["estimated_churn_auc"] - r["realized_churn_auc"] for r in rows}
    print("estimated − realized churn AUC: " + ", ".join(f"{d} {g:+.4f}" for d, g in gaps.items()))
    assert all(abs(gaps[d]) <= 0.02 for d in days[:2])
    assert all(g < 0 for g in list(gaps.values())[2:])          # later: CBPE is below, not above
    assert all(r["realized_next_purchase_cindex"] > 0.6 for r in rows)


# ---------------------------------------------------------------------- the job: CLI, MLflow, webhook


@pytest.fixture
def champion(tmp_path, cdnow_scorer, cdnow_raw) -> str:
    import mlflow

    from models.pyfunc import log_scorer
    from training.registry import CHAMPION, MODEL_NAME, experiment_id

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    example = cdnow_raw[cdnow_raw["customer_id"].isin(["00001", "00002"])].rename(
        columns={"date": "timestamp", "dollar_value": "amount"})[["customer_id", "timestamp", "amount"]]
    with mlflow.start_run(experiment_id=experiment_id(uri)):
        mlflow.log_metrics({"churn_auc": 0.77, "next_purchase_cindex": 0.75, "churn_brier": 0.17})
        info = log_scorer(cdnow_scorer, example, ORIGIN)
    version = mlflow.register_model(info.model_uri, MODEL_NAME).version
    mlflow.MlflowClient(uri).set_registered_model_alias(MODEL_NAME, CHAMPION, version)
    return uri


class _Receiver(http.server.BaseHTTPRequestHandler):
    got: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.got.append((self.headers["Winback-Signature"], body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_monitor_stores_one_point_per_snapshot_and_realizes_closed_horizons(champion, tmp_path, monkeypatch,
                                                                            cdnow_raw):
    from mlflow import MlflowClient

    from crm.delivery import verify_signature

    runner = CliRunner()
    first = runner.invoke(app, ["monitor", "--as-of", ORIGIN, "--dataset", "cdnow", "--tracking-uri", champion])
    assert first.exit_code == 0, first.output
    assert "model health as of 1997-09-30" in first.output and "healthy" in first.output
    run_id = MlflowClient(champion).search_runs([MlflowClient(champion).get_experiment_by_name("winback")
                                                 .experiment_id])[0].info.run_id
    assert "health/reference.json" in [f.path for f in MlflowClient(champion).list_artifacts(run_id, "health")]

    # 1997-12-31: the 1997-09-30 snapshot's horizon (60 days) has closed, so it is realized
    second = runner.invoke(app, ["monitor", "--as-of", "1997-12-31", "--dataset", "cdnow",
                                 "--tracking-uri", champion])
    assert second.exit_code in (0, 3), second.output
    assert "realized" in second.output
    health = M.read_health(champion, run_id)
    assert health["as_of"] == "1997-12-31"
    assert set(health["series"]["estimated_churn_auc"]) == {"1997-09-30", "1997-12-31"}
    assert set(health["realized"]) == {"1997-09-30"}
    assert 0.7 < health["realized"]["1997-09-30"]["churn_auc"] < 0.85

    # a drifted feed: three in four one-time buyers missing; exit 3, the reason in one line, a
    # signed webhook; the reference is the one cached on the run, not rebuilt from this feed
    faulted = tmp_path / "shifted.csv"
    _mix_shift(cdnow_raw).assign(date=lambda f: f["date"].dt.date).rename(
        columns={"date": "timestamp", "dollar_value": "amount"})[["customer_id", "timestamp", "amount"]].to_csv(
        faulted, index=False)
    server = http.server.HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("WINBACK_WEBHOOK_SECRET", "s3cret")
    _Receiver.got.clear()
    try:
        drifted = runner.invoke(app, ["monitor", "--as-of", ORIGIN, "-t", str(faulted), "--tracking-uri", champion,
                                      "--no-store", "--webhook-url", f"http://127.0.0.1:{server.server_port}/"])
    finally:
        server.shutdown()
    print(first.output, second.output, drifted.output, sep="\n")
    assert drifted.exit_code == 3, drifted.output
    assert "retraining advised" in drifted.output
    (signature, body), = _Receiver.got
    assert verify_signature("s3cret", signature, body)
    assert json.loads(body)["status"] == "retrain"
    assert M.read_health(champion, run_id)["as_of"] == "1997-12-31"          # --no-store stored nothing
