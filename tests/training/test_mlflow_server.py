"""Training and serving against a real ``mlflow server`` over HTTP, as a team's shared registry
is used: ``train`` logs the run, uploads the model through the server (which keeps the artifacts
in its own root) and registers it; ``winback models`` lists it; ``winback serve --tracking-uri
http://...`` loads the champion from it and answers with that version. A run whose process is
killed with SIGKILL while logging to the server is ended as FAILED by the next start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient
from mlflow_server_support import running_mlflow_server
from training_support import quick_config
from typer.testing import CliRunner

from serving.run import free_port, stop, wait_ready
from training.cli import app
from training.pipeline import train
from training.registry import CHAMPION, MODEL_NAME, experiment_id, fail_abandoned_runs

KEY = "key-for-the-http-registry"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp("mlflow-server")
    with running_mlflow_server(root) as server:
        yield server.url, root


def test_train_registers_over_http_and_serve_loads_the_champion(mlflow_server, small_log, cdnow_raw, tmp_path,
                                                                 monkeypatch):
    url, root = mlflow_server
    monkeypatch.chdir(tmp_path)                          # nothing may fall back to ./mlruns
    result = train(small_log, quick_config(), url)
    assert result.alias == CHAMPION
    client = MlflowClient(url, registry_uri=url)
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    assert champion.version == str(result.version) and champion.run_id == result.run_id
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and 0.5 < run.data.metrics["churn_auc"] <= 1
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # the server holds the artifacts
    stored = {p.name for p in (root / "artifacts").rglob("*") if p.is_file()}
    assert "MLmodel" in stored and "data_profile.json" in stored
    listed = CliRunner().invoke(app, ["models", "--tracking-uri", url])
    assert listed.exit_code == 0 and CHAMPION in listed.output, listed.output
    assert not (tmp_path / "mlruns").exists()

    log = tmp_path / "transactions.csv"
    raw = cdnow_raw[cdnow_raw["customer_id"].astype(int) <= 4000]
    raw.rename(columns={"date": "timestamp", "dollar_value": "amount"})[["customer_id", "timestamp", "amount"]] \
        .to_csv(log, index=False)
    (tmp_path / "bentoml").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WINBACK_", "MLFLOW_", "BENTOML_"))}
    env.update(WINBACK_API_KEYS=KEY, BENTOML_HOME=str(tmp_path / "bentoml"), BENTOML_DO_NOT_TRACK="True")
    port = free_port()
    winback = Path(sys.executable).with_name("winback")
    with open(tmp_path / "serve.log", "wb") as out:
        process = subprocess.Popen([str(winback), "serve", "--tracking-uri", url, "--transactions", str(log),
                                    "--as-of", "1998-06-30", "--port", str(port), "--poll-seconds", "0"],
                                   env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            wait_ready(f"http://127.0.0.1:{port}", process, 240, tmp_path / "serve.log")
            auth = {"Authorization": f"Bearer {KEY}"}
            info = httpx.get(f"http://127.0.0.1:{port}/info", headers=auth, timeout=60)
            scored = httpx.post(f"http://127.0.0.1:{port}/score", json={"customer_ids": ["00001"]},
                                headers=auth, timeout=60)
        finally:
            stop(process)
    assert info.status_code == 200, (info.status_code, info.text[:500])
    info = info.json()
    assert info["model_version"] == str(result.version) and info["status"] == "ok", info
    assert info["metrics"]["churn_auc"] == pytest.approx(run.data.metrics["churn_auc"])
    assert scored.status_code == 200 and scored.json()["customers"][0]["status"] == "ok"
    assert scored.headers["x-model-version"] == str(result.version)


KILLED = textwrap.dedent("""
    import mlflow, os, socket, sys, time
    mlflow.set_tracking_uri(sys.argv[1])
    run = mlflow.start_run(experiment_id=sys.argv[2])
    mlflow.set_tags({"winback.host": socket.gethostname(), "winback.pid": str(os.getpid())})
    mlflow.log_metric("progress", 0.5)
    print(run.info.run_id, flush=True)
    time.sleep(600)
""")


def test_a_run_killed_while_logging_to_the_server_ends_as_failed(mlflow_server):
    url, _ = mlflow_server
    experiment = experiment_id(url)
    child = subprocess.Popen([sys.executable, "-c", KILLED, url, experiment], stdout=subprocess.PIPE, text=True,
                             env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")})
    try:
        run_id = child.stdout.readline().strip()
        client = MlflowClient(url)
        assert client.get_run(run_id).info.status == "RUNNING"
        assert run_id not in fail_abandoned_runs(client, experiment)          # alive: left alone
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert fail_abandoned_runs(client, experiment) == [run_id]
    assert client.get_run(run_id).info.status == "FAILED"
    assert client.get_run(run_id).data.metrics["progress"] == 0.5
