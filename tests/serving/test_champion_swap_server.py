"""The champion swap of ``test_champion_swap.py`` with the registry behind a real ``mlflow server``
on 127.0.0.1: the service reads the alias and downloads the model over HTTP, the test registers
the new version over HTTP, and requests in flight still never fail. Then the server is killed:
the service keeps answering with the model it has, says ``degraded``, and recovers when the
server is back."""

from __future__ import annotations

import os
import signal

import httpx
import pytest
import test_champion_swap as swap  # the swap-under-load test, run here as is
from mlflow_server_support import running_mlflow_server
from serving_support import KEYS, register_version, set_champion

from serving.run import running, service_env


@pytest.fixture(scope="module")
def registry(tmp_path_factory, scorer, store) -> dict:
    """An ``mlflow server`` holding version 1 (the session's scorer) as champion."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as server:
        version = register_version(server.url, scorer, store["example"],
                                   {"churn_auc": 0.8, "next_purchase_cindex": 0.7})
        set_champion(server.url, version)
        yield {"tracking_uri": server.url, "example": store["example"], "version": version, "server": server}


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


def test_an_mlflow_server_outage_keeps_the_last_good_model(http_server, registry):
    info = swap._wait_for(http_server, lambda i: i["status"] == "ok")
    registry["server"].stop(signal.SIGKILL)                       # the registry's host goes away
    try:
        down = swap._wait_for(http_server, lambda i: i["status"] == "degraded", timeout=60)
        assert down["registry"]["reachable"] is False and down["registry"]["last_error"]
        assert down["model_version"] == info["model_version"]
        for _ in range(10):
            response = httpx.post(http_server + "/score", json={"customer_ids": ["00001", "00002"]},
                                  headers=swap.AUTH, timeout=30)
            assert response.status_code == 200
            assert response.json()["model_version"] == info["model_version"]
    finally:
        registry["server"].start()                                # same store, same port
    back = swap._wait_for(http_server, lambda i: i["status"] == "ok", timeout=60)
    assert back["registry"]["reachable"] is True and back["model_version"] == info["model_version"]
