"""A new champion is picked up without a restart and without failing requests in flight; when
the registry cannot be read the service keeps answering with the model it has."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest
from serving_support import KEYS, register_version, set_champion

AUTH = {"Authorization": f"Bearer {KEYS[0]}"}


def test_champion_swap_under_load(server, store, scorer):
    before = httpx.get(server + "/info", headers=AUTH).json()["model_version"]
    stop = threading.Event()
    seen: list[list[str]] = [[] for _ in range(4)]
    failures: list[str] = []

    def client(k: int) -> None:
        with httpx.Client(base_url=server, headers=AUTH, timeout=30) as http:
            while not stop.is_set():
                try:
                    response = http.post("/score", json={"customer_ids": ["00001", f"{k + 2:05d}"],
                                                         "reasons": k % 2 == 0})
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                    continue
                version = response.json()["model_version"]
                assert response.headers["x-model-version"] == version
                seen[k].append(version)

    # An exception in a worker (a failed assert included) ends that worker; its future keeps the
    # exception, and the test re-raises it below instead of the thread printing it and passing.
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="swap-client") as pool:
        workers = [pool.submit(client, k) for k in range(4)]
        try:
            time.sleep(1.0)
            new = str(register_version(store["tracking_uri"], scorer, store["example"],
                                       {"churn_auc": 0.81, "next_purchase_cindex": 0.71}))
            set_champion(store["tracking_uri"], new)
            deadline = time.monotonic() + 60
            while (time.monotonic() < deadline and not any(w.done() for w in workers)
                   and not all(s and s[-1] == new for s in seen)):
                time.sleep(0.2)
            time.sleep(0.5)
        finally:
            stop.set()
    _raise_worker_errors(workers)
    assert not failures, failures[:5]
    assert new != before
    for versions in seen:
        assert versions[0] == before and versions[-1] == new
        first_new = versions.index(new)
        assert set(versions[first_new:]) == {new}                    # one worker: never back
    info = httpx.get(server + "/info", headers=AUTH).json()
    assert info["model_version"] == new and info["status"] == "ok"
    assert info["metrics"]["churn_auc"] == 0.81


def test_registry_outage_keeps_the_last_good_model(server, store):
    url, db = server, store["root"] / "mlruns" / "mlflow.db"
    info = httpx.get(url + "/info", headers=AUTH).json()
    assert info["status"] == "ok"
    good = db.read_bytes()
    try:
        db.write_bytes(b"this is not a database" * 4096)            # the store becomes unreadable
        info = _wait_for(url, lambda i: i["status"] == "degraded")
        assert info["registry"]["reachable"] is False and info["registry"]["last_error"]
        for _ in range(20):
            response = httpx.post(url + "/score", json={"customer_ids": ["00001", "00002"]}, headers=AUTH)
            assert response.status_code == 200
            assert response.json()["model_version"] == info["model_version"]
        assert httpx.post(url + "/winback", json={"limit": 5}, headers=AUTH).status_code == 200
    finally:
        db.write_bytes(good)
    info = _wait_for(url, lambda i: i["status"] == "ok")                # and it recovers
    assert info["registry"]["reachable"] is True


def _raise_worker_errors(workers: list[Future]) -> None:
    errors = [w.exception() for w in workers]
    failed = [f"worker {k}: {e!r}" for k, e in enumerate(errors) if e is not None]
    if failed:
        raise AssertionError(f"{len(failed)} of {len(workers)} client threads failed: {failed}") \
            from next(e for e in errors if e is not None)


def test_a_failing_worker_fails_the_test():
    def worker(k: int) -> None:
        assert k != 2, "worker 2 saw a wrong version"

    with ThreadPoolExecutor(max_workers=3) as pool:
        workers = [pool.submit(worker, k) for k in range(3)]
    with pytest.raises(AssertionError, match="1 of 3 client threads failed.*worker 2 saw a wrong version"):
        _raise_worker_errors(workers)
    _raise_worker_errors(workers[:2])                                # no failure: nothing raised


def _wait_for(url, condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        info = httpx.get(url + "/info", headers=AUTH).json()
        if condition(info) or time.monotonic() > deadline:
            assert condition(info), info
            return info
        time.sleep(0.2)
