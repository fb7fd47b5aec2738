"""`bentoml build` makes a Bento of the service that starts with environment variables only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from serving.run import running
from serving_support import KEYS

PROJECT = Path(__file__).resolve().parents[2]


def test_bentoml_build_makes_a_bento_that_serves_from_environment_variables(store, tmp_path):
    home = tmp_path / "bentoml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WINBACK_", "MLFLOW_", "BENTOML_"))}
    env.update(BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="True")
    built = subprocess.run([sys.executable, "-m", "bentoml", "build", ".", "--output", "tag"],
                           env=env, cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    src = next(home.glob("bentos/winback/*/src"))
    assert {"features", "models", "serving", "training"} <= {p.name for p in src.iterdir()}
    # configuration is environment only: registry, model, snapshot, keys
    env.update(WINBACK_TRACKING_URI=store["tracking_uri"], WINBACK_SNAPSHOT=str(store["snapshot"]),
               WINBACK_API_KEYS=KEYS[0], WINBACK_POLL_SECONDS="0")
    with running(env, service=tag, log=tmp_path / "bento.log") as url:
        answer = httpx.post(f"{url}/score", json={"customer_ids": ["00001"], "reasons": False},
                            headers={"Authorization": f"Bearer {KEYS[0]}"}, timeout=60)
    assert answer.status_code == 200 and answer.json()["customers"][0]["status"] == "ok"
