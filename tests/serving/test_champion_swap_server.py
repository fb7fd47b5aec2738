"""The champion swap of ``test_champion_swap.py`` with the registry behind a real ``mlflow server``
on 127.0.0.1: the service reads the alias and downloads the model over HTTP, the test registers
the new version over HTTP, and requests in flight still never fail."""

from __future__ import annotations

import os

import pytest

import test_champion_swap as swap                   # the swap-under-load test, run here as is
from mlflow_server_support import running_mlflow_server
from serving.run import running, service_env
from serving_support import KEYS, register_version, set_champion


@pytest.fixture(scope="module")
def registry(tmp_path_factory, scorer, store) -> dict:
    """An ``mlflow server`` holding version 1 (the session's scorer) as champion."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        version = register_version(url, scorer, store["example"], {"churn_auc": 0.8, "next_purchase_cindex": 0.7})
        set_champion(url, version)
        yield {"tracking_uri": url, "example": store["example"], "version": version}


@pytest.fixture(scope="module")
def http_server(tmp_path_factory, registry, store) -> str:
    """The service following the server's alias every second, answering from the snapshot."""
    tmp = tmp_path_factory.mktemp("service-over-http")
    (tmp / "bentoml").mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WINBACK_", "MLFLOW_", "BENTOML_"))}
    env = service_env(registry["tracking_uri"], snapshot=store["snapshot"], poll_seconds=1, base=base)
    env.update(BENTOML_HOME=str(tmp / "bentoml"), WINBACK_API_KEYS=",".join(KEYS))
    with running(env, log=tmp / "server.log") as url:
        yield url


def test_champion_swap_under_load_with_an_mlflow_server(http_server, registry, scorer):
    swap.test_champion_swap_under_load(http_server, registry, scorer)
