"""Model health on the Model page (en and zh-TW) and in ``/info``, from `winback monitor` results
stored on the champion's MLflow run; the served candidates (``scorer.selection_``) beside them."""

from __future__ import annotations

import html
import re
import time
from types import SimpleNamespace

import pandas as pd
import pytest
from mlflow import MlflowClient
from serving_support import AS_OF
from starlette.requests import Request

from features import TransactionLog
from features.cdnow import CDNOW_COLUMNS
from serving.dashboard.app import Dashboard
from serving.dashboard.i18n import STRINGS
from serving.state import ModelInfo
from training import monitor as M

SELECTION = {"churn": {"served": "lightgbm", "metric": "auc", "reason": "lightgbm beats the best formula",
                       "figures": {"lightgbm": 0.8123, "pareto_nbd_p_alive": 0.7911}},
             "next_purchase": {"served": "hazard", "metric": "cindex", "reason": "hazard beats the formula",
                               "candidates": {"hazard": 0.74, "classical": 0.71}}}


@pytest.fixture(scope="module")
def slice_log(cdnow_raw) -> TransactionLog:
    return TransactionLog.from_frame(cdnow_raw[cdnow_raw["customer_id"].astype(int) <= 3000], CDNOW_COLUMNS)


@pytest.fixture(scope="module")
def monitored(tmp_path_factory, scorer, slice_log) -> dict:
    """A run of its own with the scorer's backtest figure, monitored on two days: the origin
    and three months later (the origin's 60-day horizon has closed by then)."""
    root = tmp_path_factory.mktemp("health")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("health"))
    client.log_metric(run.info.run_id, "churn_auc", 0.77)
    reports = [M.run_monitor(scorer, slice_log, day, client, run.info.run_id, "1") for day in (AS_OF, "1997-12-31")]
    return {"uri": uri, "run_id": run.info.run_id, "reports": reports}


def _page(scorer, monitored, lang: str, selection=SELECTION) -> str:
    model = ModelInfo("winback", "1", "champion", "models:/winback@champion", run_id=monitored["run_id"],
                      metrics={"churn_auc": 0.77})
    scorer_view = SimpleNamespace(selection_=selection) if selection is not None else object()
    state = SimpleNamespace(model=model, scorer=scorer_view, as_of=pd.Timestamp(AS_OF))
    settings = SimpleNamespace(tracking_uri=monitored["uri"],
                               dashboard=SimpleNamespace(currency=None, mlflow_ui_url="http://127.0.0.1:5000"))
    service = SimpleNamespace(settings=settings, champion=SimpleNamespace(current=state, degraded=False))
    request = Request({"type": "http", "method": "GET", "path": "/ui/model", "root_path": "/ui",
                       "query_string": b"", "headers": []})
    request.state.lang = lang
    return Dashboard(lambda: service).model_page(request).body.decode()


def test_monitor_results_are_one_point_per_snapshot_on_the_run(monitored):
    health = M.read_health(monitored["uri"], monitored["run_id"])
    assert health["as_of"] == "1997-12-31" and health["status"] == monitored["reports"][1].status
    assert list(health["series"]["estimated_churn_auc"]) == [AS_OF, "1997-12-31"]
    assert list(health["realized"]) == [AS_OF]
    realized = monitored["reports"][1].realized[0]
    assert health["realized"][AS_OF]["churn_auc"] == pytest.approx(realized["realized_churn_auc"])


@pytest.mark.parametrize("lang", ["en", "zh-TW"])
def test_model_page_shows_health_drift_and_auc_over_time(scorer, monitored, lang):
    text = _page(scorer, monitored, lang)
    t = {k: v[0 if lang == "en" else 1] for k, v in STRINGS.items()}
    assert t["health"] in text
    last = monitored["reports"][1]
    status = re.search(r'id="health-status" data-status="(\w+)">([^<]+)<', text)
    assert status.groups() == (last.status, t[f"health_{last.status}"])
    assert html.escape(last.reason) in text
    estimated = re.search(r'data-key="estimated_churn_auc">([^<]+)<', text).group(1)
    assert float(estimated) == pytest.approx(last.estimated["estimated_churn_auc"], abs=5e-4)
    assert text.count('class="wb-plot"') == 2                     # drift and AUC over time, drawn by Plotly
    figures = html.unescape(text)
    assert t["drift_over_time"] in figures and t["auc_over_time"] in figures
    assert '"1997-09-30"' in figures and '"1997-12-31"' in figures       # the snapshot days on the x axis
    assert "plotly.min.js" in text
    # the served candidates
    assert re.search(r'data-target="churn">lightgbm<', text) and re.search(r'data-target="next_purchase">hazard<', text)
    assert t["selection"] in text and "0.8123" in text.replace(",", "")


def test_model_page_without_monitoring_or_selection_says_so(scorer, monitored, tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'empty.db'}")
    run = client.create_run(client.create_experiment("none"))
    empty = {"uri": f"sqlite:///{tmp_path / 'empty.db'}", "run_id": run.info.run_id}
    text = _page(scorer, empty, "zh-TW", selection=None)
    assert 'id="no-health"' in text and STRINGS["health_none"][1].split("：")[0] in text
    assert 'id="selection"' not in text and "plotly.min.js" not in text


def test_info_has_the_health_block_of_the_served_run(http, store, scorer, slice_log):
    client = MlflowClient(store["tracking_uri"], registry_uri=store["tracking_uri"])
    served = http.get("/info").json()["model_version"]     # other tests may have moved the champion
    run_id = client.get_model_version("winback", served).run_id
    report = M.run_monitor(scorer, slice_log, AS_OF, client, run_id, served)
    deadline = time.monotonic() + 30
    while (health := http.get("/info").json().get("health")) is None and time.monotonic() < deadline:
        time.sleep(1)                   # a "never monitored" answer is cached for a few seconds
    assert health is not None
    assert health["as_of"] == AS_OF and health["status"] == report.status and health["reason"] == report.reason
    assert health["estimated_churn_auc"] == pytest.approx(report.estimated["estimated_churn_auc"])
    assert health["backtest_churn_auc"] == client.get_run(run_id).data.metrics.get("churn_auc")
    assert "series" not in health
