"""Kills and interruptions leave the registry usable: a store is created whole or not at all,
killed runs end as FAILED, and a version registered but never gated is marked and guarded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from training.cli import app
from training.registry import (
    CHAMPION,
    GATE_TAG,
    MODEL_NAME,
    PENDING,
    experiment_id,
    fail_abandoned_runs,
    promote,
    use_tracking,
)

PROJECT = Path(__file__).resolve().parents[2]


def _python(code: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(PROJECT))
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=PROJECT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("delay", [0.3, 0.9, 1.6, 2.5])
def test_a_store_killed_while_being_created_is_absent_or_whole(tmp_path, delay):
    db = tmp_path / "mlruns" / "mlflow.db"
    child = _python(f"from training.registry import create_sqlite_store; from pathlib import Path; "
                    f"create_sqlite_store(Path({str(db)!r}))")
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not db.exists() or MlflowClient(f"sqlite:///{db}").search_experiments() is not None
    uri = use_tracking(f"sqlite:///{db}")                       # the next command repairs nothing: it just works
    assert MlflowClient(uri).create_experiment("after-the-kill")
    assert not list(db.parent.glob(".mlflow.db.init-*"))         # no temporary schema left behind


def test_a_killed_run_ends_as_failed_on_the_next_start(tmp_path):
    uri = use_tracking(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = experiment_id(uri)
    child = _python(
        "import mlflow, os, socket, time, sys\n"
        f"mlflow.set_tracking_uri({uri!r})\n"
        f"run = mlflow.start_run(experiment_id={experiment!r})\n"
        "mlflow.set_tags({'winback.host': socket.gethostname(), 'winback.pid': str(os.getpid())})\n"
        "print('started', flush=True)\n"
        "time.sleep(600)\n")
    client = MlflowClient(uri)
    deadline = time.monotonic() + 120
    while not client.search_runs([experiment], "attributes.status = 'RUNNING'") and time.monotonic() < deadline:
        time.sleep(0.5)
    running = client.search_runs([experiment], "attributes.status = 'RUNNING'")
    assert len(running) == 1 and fail_abandoned_runs(client, experiment) == []   # alive: left alone
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert fail_abandoned_runs(client, experiment) == [running[0].info.run_id]
    assert client.get_run(running[0].info.run_id).info.status == "FAILED"


def test_a_version_never_gated_is_marked_and_not_promoted_by_accident(tmp_path):
    uri = use_tracking(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment(experiment_id=experiment_id(uri))
    with mlflow.start_run() as run:
        mlflow.log_text("x", "model/placeholder.txt")
    client = MlflowClient(uri)
    client.create_registered_model(MODEL_NAME)
    version = client.create_model_version(MODEL_NAME, f"runs:/{run.info.run_id}/model", run.info.run_id,
                                          tags={GATE_TAG: PENDING})           # what a kill before gating leaves
    with pytest.raises(ValueError, match="never gated"):
        promote(client, version.version)
    listed = CliRunner().invoke(app, ["models", "--tracking-uri", uri])
    assert listed.exit_code == 0 and "never gated" in listed.output
    refused = CliRunner().invoke(app, ["promote", str(version.version), "--tracking-uri", uri])
    assert refused.exit_code == 2 and "--force" in refused.output
    forced = CliRunner().invoke(app, ["promote", str(version.version), "--force", "--tracking-uri", uri])
    assert forced.exit_code == 0, forced.output
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == str(version.version)
