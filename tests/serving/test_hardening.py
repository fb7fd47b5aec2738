"""Issue #9, the service part: no 5xx for any client input, strict requests, a registry file
replaced under the service, start-up errors that stop instead of looping, signals that stop
the whole server, and an OpenAPI document that says how to authenticate."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from serving_support import AS_OF, KEYS, register_version, set_champion

from serving.config import ConfigError
from serving.run import PROJECT, free_port, running, serve, service_env

AUTH = {"Authorization": f"Bearer {KEYS[0]}"}


def _history(*transactions: dict, as_of: str = AS_OF, customer_id: str = "c1") -> dict:
    return {"as_of": as_of, "customers": [{"customer_id": customer_id, "transactions": list(transactions)}]}


# ---------------------------------------------------------------------- 1. no 500 for client input

EXTREME = 4.2424242e15                                  # an amount no other log line can contain


@pytest.mark.parametrize("line,field", [
    ({"timestamp": "1997-01-01", "amount": EXTREME}, "amount"),
    ({"timestamp": "1997-01-01", "amount": -EXTREME}, "amount"),
    ({"timestamp": "1997-01-01", "amount": 1.5e12}, "amount"),
    ({"timestamp": "1997-01-01", "amount": 5, "quantity": 1e15}, "quantity"),
    ({"timestamp": "9999-12-31T23:59:59-14:00", "amount": 5}, '"loc":["customers",0,"transactions",0,"timestamp"]'),
    ({"timestamp": "0001-01-01T00:00:00+14:00", "amount": 5}, '"loc":["customers",0,"transactions",0,"timestamp"]'),
    ({"timestamp": "9999-12-31T23:59:59", "amount": 5}, '"loc":["customers",0,"transactions",0,"timestamp"]'),
], ids=["huge", "huge-refund", "over-limit", "huge-quantity", "offset-at-max", "offset-at-min", "naive-max"])
def test_extreme_values_are_400_naming_the_field(http, line, field):
    response = http.post("/score_history", json=_history(line))
    assert response.status_code == 400, response.text
    assert field in response.text


@pytest.mark.parametrize("lines", [
    [{"timestamp": "1998-01-01", "amount": 5}],                          # first purchase after as_of
    [{"timestamp": "1997-01-01", "amount": -5}],                         # only a refund
    [{"timestamp": "1997-01-01", "amount": 0}, {"timestamp": "1998-02-01", "amount": 8}],
], ids=["after-as-of", "refund", "zero-amount"])
def test_nobody_with_purchases_is_200_no_purchases(http, lines):
    body = _history(*lines)
    body["customers"].append({"customer_id": "c2", "transactions": [{"timestamp": "1999-05-05", "amount": 3}]})
    response = http.post("/score_history", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["customers"] == [{"customer_id": "c1", "status": "no_purchases"},
                                            {"customer_id": "c2", "status": "no_purchases"}]


def test_extreme_amounts_stay_out_of_the_log(http, server_log):
    assert http.post("/score_history", json=_history({"timestamp": "1997-01-01", "amount": EXTREME})
                     ).status_code == 400
    text = server_log.read_text(errors="replace")
    assert "4242424" not in text and "4.2424242" not in text


# ---------------------------------------------------------------------- 2. strict requests

SECRET = "zqxj-wvkm-tplr"

STRICT = [
    ("/score", {"customer_ids": ["00001"], "colour": SECRET}, 400, "colour"),
    ("/score", {"customer_ids": ["00001"], "reasons": "yes"}, 400, "reasons"),
    ("/score", {"customer_ids": ["00001"], "reasons": 1}, 400, "reasons"),
    ("/winback", {"limit": "10"}, 400, "limit"),
    ("/winback", {"limit": 10.5}, 400, "limit"),
    ("/winback", {"limit": 5, "segment": ["Lost"]}, 400, "segment"),
    ("/winback", {"min_value": "1"}, 400, "min_value"),
    ("/score_history", {**_history({"timestamp": "1997-01-01", "amount": "5"})}, 400, "amount"),
    ("/score_history", {**_history({"timestamp": "1997-01-01", "amount": 5}), "asof": "1997-01-01"}, 400, "asof"),
    ("/score_history", _history({"timestamp": "1997-01-01", "amount": 5, "quantity": "2"}), 400, "quantity"),
    ("/score_history", {"as_of": 19970930,
                        "customers": _history({"timestamp": "1997-01-01", "amount": 5})["customers"]},
     400, "as_of"),
]


@pytest.mark.parametrize("path,body,status,field", STRICT,
                         ids=[f"{p}-{f}-{i}" for i, (p, _, _, f) in enumerate(STRICT)])
def test_requests_are_strict(http, path, body, status, field):
    response = http.post(path, json=body)
    assert response.status_code == status, response.text
    assert field in response.text
    assert SECRET not in response.text                                # errors do not quote the input


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_only_json_bodies(http, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = http.post("/score", content=b'{"customer_ids": ["00001"]}', headers=headers)
    assert response.status_code == 415, response.text
    assert response.json()["field"] == "Content-Type"
    assert http.post("/score", content=b'{"customer_ids": ["00001"]}',
                     headers={"Content-Type": "application/json; charset=utf-8"}).status_code == 200


# ---------------------------------------------------------------------- 3 and 5: `winback serve`


def _serve_env(tmp: Path) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WINBACK_", "MLFLOW_", "BENTOML_"))}
    (tmp / "bentoml").mkdir(exist_ok=True)
    env = service_env(base=base)
    env.update(BENTOML_HOME=str(tmp / "bentoml"), WINBACK_API_KEYS=",".join(KEYS))
    return env


@pytest.fixture(scope="module")
def served(tmp_path_factory, store):
    """`winback serve` (python -m training.cli serve) on a copy of the registry, polling each second."""
    tmp = tmp_path_factory.mktemp("winback-serve")
    db = tmp / "mlflow.db"
    shutil.copy(store["root"] / "mlruns" / "mlflow.db", db)
    port = free_port()
    log = open(tmp / "serve.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "training.cli", "serve", "--port", str(port), "--tracking-uri", f"sqlite:///{db}",
         "--snapshot", str(store["snapshot"]), "--poll-seconds", "1"],
        cwd=PROJECT, env=_serve_env(tmp), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: process.poll() is not None or _ready(url), 180)
        assert process.poll() is None, (tmp / "serve.log").read_text(errors="replace")[-3000:]
        yield {"process": process, "url": url, "port": port, "db": db, "tmp": tmp}
    finally:
        for p in [*_descendants(process.pid), psutil.Process(process.pid)] if process.poll() is None else []:
            p.kill()                                                 # the test failed: clean up
        process.wait()
        log.close()


def test_a_replaced_registry_file_is_read_again(served, store, scorer):
    url, db = served["url"], served["db"]
    before = httpx.get(url + "/info", headers=AUTH).json()
    assert before["status"] == "ok"
    # a new registry file, with a new champion, moved over the served one (a new inode)
    fresh = served["tmp"] / "fresh.db"
    shutil.copy(db, fresh)
    new = str(register_version(f"sqlite:///{fresh}", scorer, store["example"], {"churn_auc": 0.5}))
    set_champion(f"sqlite:///{fresh}", new)
    assert new != before["model_version"]
    os.replace(fresh, db)
    info = _wait_info(url, lambda i: i["model_version"] == new)
    assert info["status"] == "ok" and info["metrics"]["churn_auc"] == 0.5
    answer = httpx.post(url + "/score", json={"customer_ids": ["00001"]}, headers=AUTH).json()
    assert answer["model_version"] == new
    # the file gone: degraded (and no empty database created in its place), then back
    away = served["tmp"] / "away.db"
    os.replace(db, away)
    info = _wait_info(url, lambda i: i["status"] == "degraded")
    assert info["registry"]["reachable"] is False and "gone" in info["registry"]["last_error"]
    assert not db.exists()
    assert httpx.post(url + "/score", json={"customer_ids": ["00001"]}, headers=AUTH).status_code == 200
    os.replace(away, db)
    assert _wait_info(url, lambda i: i["status"] == "ok")["model_version"] == new


def test_sigterm_stops_the_whole_server(served):
    process = served["process"]
    children = _descendants(process.pid)
    assert children, "winback serve should have started the BentoML server"
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(60) == 0
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, [p.pid for p in alive]
    finally:
        for child in children:                                       # if not: do not leave them running
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
    with socket.socket() as sock:                                    # the port is free again
        sock.bind(("127.0.0.1", served["port"]))


# ---------------------------------------------------------------------- 4. start-up errors


def test_serve_refuses_a_missing_registry_file(tmp_path, store, monkeypatch):
    for name in [n for n in os.environ if n.startswith("WINBACK_")]:
        monkeypatch.delenv(name)
    typo = tmp_path / "mlrun" / "mlflow.db"
    with pytest.raises(ConfigError, match=r"WINBACK_TRACKING_URI: there is no registry database at .*mlrun"):
        serve(tracking_uri=f"sqlite:///{typo}", snapshot=store["snapshot"])
    assert not typo.exists()


def test_serve_refuses_an_unknown_alias_and_a_missing_snapshot(tmp_path, store, monkeypatch):
    for name in [n for n in os.environ if n.startswith("WINBACK_")]:
        monkeypatch.delenv(name)
    with pytest.raises(ConfigError, match="WINBACK_MODEL_URI: the registry .* has no models:/winback@nobody"):
        serve(tracking_uri=store["tracking_uri"], model_uri="models:/winback@nobody", snapshot=store["snapshot"])
    monkeypatch.setenv("WINBACK_SNAPSHOT", str(tmp_path / "nothing.parquet"))
    with pytest.raises(ConfigError, match="WINBACK_SNAPSHOT: no feature table"):
        serve(tracking_uri=store["tracking_uri"])


def test_the_cli_exits_with_the_message(tmp_path):
    typo = tmp_path / "typo.db"
    result = subprocess.run([sys.executable, "-m", "training.cli", "serve", "--tracking-uri", f"sqlite:///{typo}"],
                            cwd=PROJECT, env=_serve_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "no registry database" in " ".join(result.stderr.split())
    assert not typo.exists()


def test_a_worker_that_cannot_start_stops_the_server(tmp_path, store):
    """`bentoml serve` directly: the worker logs the message and the server exits (no restart loop)."""
    typo = tmp_path / "typo.db"
    env = {**_serve_env(tmp_path), "WINBACK_TRACKING_URI": f"sqlite:///{typo}",
           "WINBACK_SNAPSHOT": str(store["snapshot"])}
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="exited with status"):
        with running(env, log=tmp_path / "server.log", timeout=120):
            pass
    assert time.monotonic() - started < 120
    text = " ".join((tmp_path / "server.log").read_text(errors="replace").split())
    assert "cannot start" in text and "no registry database" in text
    assert text.count("cannot start") == 1                                # not restarted
    assert not typo.exists()


# ---------------------------------------------------------------------- 6. OpenAPI


def test_the_openapi_document_declares_auth_and_errors(server):
    document = httpx.get(server + "/docs.json").json()
    from serving.openapi import package_version

    assert document["info"]["version"] == package_version() != "None"
    assert document["components"]["securitySchemes"]["bearer"] == {
        **document["components"]["securitySchemes"]["bearer"], "type": "http", "scheme": "bearer"}
    for path in ("/score", "/score_history", "/winback"):
        operation = document["paths"][path]["post"]
        assert operation["security"] == [{"bearer": []}], path
        assert {"400", "401", "413"} <= set(map(str, operation["responses"])), path
    assert document["paths"]["/info"]["get"]["security"] == [{"bearer": []}]
    assert "security" not in document["paths"]["/healthz"]["get"]


# ---------------------------------------------------------------------- helpers


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.25)


def _wait_info(url: str, condition, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = httpx.get(url + "/info", headers=AUTH, timeout=30).json()
        if condition(info) or time.monotonic() > deadline:
            assert condition(info), info
            return info
        time.sleep(0.25)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


# ---------------------------------------------------------------------- fuzzing posted histories

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_zones = st.one_of(st.none(), st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m))))
_stamps = st.builds(lambda d, tz: d.replace(tzinfo=tz), st.datetimes(dt.datetime(1, 1, 2), dt.datetime(9999, 12, 30)),
                    _zones)
_amounts = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-10**16, 10**16))
_lines = st.lists(st.fixed_dictionaries({"timestamp": _stamps, "amount": _amounts}), min_size=1, max_size=6)
_histories = st.lists(st.fixed_dictionaries({"customer_id": st.text(min_size=1, max_size=12), "transactions": _lines}),
                      min_size=1, max_size=4, unique_by=lambda c: c["customer_id"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(histories=_histories, as_of=st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31)))
def test_any_posted_history_is_scored_or_refused_with_a_400(scorer, histories, as_of):
    """Hypothesis-generated histories (any dates and offsets, any finite amounts, any ids): the
    scoring path either answers or raises the 4xx error that names a field, never anything else."""
    from pydantic import ValidationError

    from serving.config import Limits
    from serving.history import HistoryError, score_history
    from serving.schemas import CustomerHistory

    try:
        customers = [CustomerHistory.model_validate(h) for h in histories]
    except ValidationError:
        return                                            # refused by the request model: a 400
    try:
        answers = score_history(scorer, as_of, customers, Limits(), reasons=False)
    except HistoryError as exc:
        assert 400 <= exc.status < 500 and exc.field.startswith(("customers", "as_of")), exc
        return
    assert [a["customer_id"] for a in answers] == [c.customer_id for c in customers]
    assert all(a["status"] in ("ok", "no_purchases") for a in answers)
