"""The hot lookups answered ahead of BentoML's middleware (serving.lookups) keep what BentoML gave
an operator: the access-log line, the request metrics, the model-version header; BentoML's timeout
middleware no longer leaves a timer per request; the snapshot's column blocks answer what the
per-column arrays did; the heap is frozen out of the garbage collector's passes."""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import re
import time

import httpx
import numpy as np
import pandas as pd
import pytest
from serving_support import KEYS

LINE = re.compile(r"^\S+ \[INFO\] \[entry_service:winback:\d+\] 127\.0\.0\.1:\d+ "
                  r"\(scheme=http,method=POST,path=(?P<path>/\w+),type=application/json,length=(?P<sent>\d+),"
                  r"request_id=(?P<id>[\w.:-]+)\) "
                  r"\(status=(?P<status>\d+),type=application/json,length=(?P<got>\d+)\) \d+\.\d{3}ms"
                  r"(?P<trace> \(trace=\w+,span=\w+,sampled=\d,service\.name=winback\))?$")


# ---------------------------------------------------------------------- over HTTP


def _lines(log, path: str) -> list[re.Match]:
    return [m for m in map(LINE.match, log.read_text(errors="replace").splitlines()) if m and m["path"] == path]


def test_access_log_lines_of_hot_lookups_are_bentomls(http, server_log):
    """A /score line has the shape and fields of the line BentoML's own middleware writes for
    /score_history, with the real sizes; a refused request is logged too."""
    body = b'{"customer_ids": ["00001", "00010"], "reasons": false}'
    before = len(_lines(server_log, "/score"))
    ok = http.post("/score", content=body, headers={"Content-Type": "application/json"})
    bad = http.post("/score", content=b'{"customer_ids": 5}', headers={"Content-Type": "application/json"})
    assert (ok.status_code, bad.status_code) == (200, 400)
    assert http.post("/score_history", json={"as_of": "1997-09-30", "customers": [
        {"customer_id": "a", "transactions": [{"timestamp": "1997-01-01", "amount": 10}]}]}).status_code == 200
    for _ in range(50):                                     # flushed at the end of the loop's turn
        lines = _lines(server_log, "/score")[before:]
        if len(lines) >= 2:
            break
        time.sleep(0.1)
    assert [(m["sent"], m["status"], m["got"], m["trace"]) for m in lines[-2:]] == [
        (str(len(body)), "200", str(len(ok.content)), None), ("19", "400", str(len(bad.content)), None)]
    assert _lines(server_log, "/score_history"), "BentoML's own line, the shape compared with"


def _samples(server: str, name: str, endpoint: str, code: int) -> float:
    text = httpx.get(server + "/metrics").text
    pattern = re.compile(rf'^{name}\{{(?=[^}}]*endpoint="{endpoint}")(?=[^}}]*http_response_code="{code}")'
                         rf'[^}}]*\}} (\S+)$', re.M)
    return sum(float(v) for v in pattern.findall(text))


def test_metrics_count_hot_lookups(server, http):
    """BentoML's request count and duration histogram on /metrics count every lookup, by status."""
    names = ("bentoml_service_request_total", "bentoml_service_request_duration_seconds_count")
    before = {(n, c): _samples(server, n, "/score", c) for n in names for c in (200, 400)}
    for _ in range(7):
        assert http.post("/score", json={"customer_ids": ["00001"]}).status_code == 200
    for _ in range(3):
        assert http.post("/score", json={"customer_ids": "00001"}).status_code == 400
    after = {(n, c): _samples(server, n, "/score", c) for n in names for c in (200, 400)}
    assert {key: after[key] - before[key] for key in after} == {
        (n, c): {200: 7, 400: 3}[c] for n in names for c in (200, 400)}
    assert _samples(server, "bentoml_service_request_duration_seconds_bucket", "/score", 200) > 0


@pytest.mark.parametrize("headers,content,status", [
    ({}, b'{"customer_ids": ["00001"]}', 401),
    ({"Authorization": f"Bearer {KEYS[0]}", "Content-Type": "text/plain"}, b'{"customer_ids": ["00001"]}', 415),
    ({"Authorization": f"Bearer {KEYS[0]}", "Content-Type": "application/json"}, b'{"customer_ids": []}', 400),
    ({"Authorization": f"Bearer {KEYS[0]}", "Content-Type": "application/json"}, b'{"limit": 0}', 400),
    ({"Authorization": f"Bearer {KEYS[0]}", "Content-Type": "application/json"}, b'{"customer_ids": ["00001"]}', 200),
], ids=["no-key", "text", "empty-ids", "winback-limit", "ok"])
def test_every_hot_answer_names_the_model_version(server, store, headers, content, status):
    path = "/winback" if b"limit" in content else "/score"
    response = httpx.post(server + path, content=content, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["x-model-version"].isdigit()
    assert response.headers["content-length"] == str(len(response.content))


# ---------------------------------------------------------------------- the parts


def test_bentomls_timeout_middleware_leaves_a_timer_per_request_ours_none():
    """BentoML's TimeoutMiddleware schedules the timeout and never cancels it: at 2,000 requests/s
    and 120 s that was a quarter of a million live timers. CancellingTimeout cancels it; a slow
    answer still gets the 504."""
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    from serving.lookups import CancellingTimeout

    async def fast(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def slow(scope, receive, send):
        await asyncio.sleep(5)

    async def drive(middleware, n):
        sent = []

        async def send(message):
            sent.append(message)

        def live():                                                     # in the loop's timer heap
            return sum(1 for h in asyncio.get_running_loop()._scheduled if not h.cancelled())

        before = live()
        for _ in range(n):
            await middleware({"type": "http"}, None, send)
        await asyncio.sleep(0)                                          # a cancelled app unwinds
        return live() - before, [m["status"] for m in sent if m["type"] == "http.response.start"]

    async def both():
        return (await drive(TimeoutMiddleware(fast, timeout=120), 50),
                await drive(CancellingTimeout(fast, timeout=120), 50),
                await drive(CancellingTimeout(slow, timeout=0.05), 1))

    bentoml_, ours, timed_out = asyncio.run(both())
    assert bentoml_ == (50, [200] * 50)
    assert ours == (0, [200] * 50)
    assert timed_out == (0, [504])


def test_observe_all_equals_observing_one_by_one():
    from prometheus_client import CollectorRegistry, Histogram

    from serving.lookups import observe_all

    values = [0.0, 0.001, 0.005, 0.0051, 0.3, 2.5, 7.0, 1e6, 0.005]
    one, batched = CollectorRegistry(), CollectorRegistry()
    by_one = Histogram("d", "d", ["e"], registry=one).labels(e="x")
    for v in values:
        by_one.observe(v)
    observe_all(Histogram("d", "d", ["e"], registry=batched).labels(e="x"), values)

    def samples(registry):
        return [(s.name, s.labels, s.value) for m in registry.collect() for s in m.samples if "created" not in s.name]

    assert samples(batched) == samples(one)


def _bentoml_logging(stream: io.StringIO) -> logging.Logger:
    """A logger hierarchy set up as BentoML's server logging sets up ``bentoml`` (its format,
    date format and trace filter on one stream handler), writing to ``stream``."""
    from bentoml._internal.log import DATE_FORMAT, TRACED_LOG_FORMAT, TraceRecordFilter

    parent = logging.getLogger("test_hot_lookups_bentoml")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(TRACED_LOG_FORMAT, DATE_FORMAT))
    handler.addFilter(TraceRecordFilter())
    parent.handlers[:] = [handler]
    parent.setLevel(logging.INFO)
    parent.propagate = False
    return logging.getLogger("test_hot_lookups_bentoml.access")


def test_direct_access_line_is_the_line_logging_writes():
    """Written without a log record, the line is the one logging writes for the same message."""
    from serving.lookups import AccessLine, direct_handler

    stream = io.StringIO()
    logger = _bentoml_logging(stream)
    assert direct_handler(logger) is not None
    line = AccessLine(True, True, True, True)
    line.logger = logger
    scope = {"path": "/score", "scheme": "http", "method": "POST", "client": ("127.0.0.1", 5123)}
    request = {b"content-type": b"application/json", b"content-length": b"42"}

    async def write():
        line.write(scope, request, 200, [(b"content-type", b"application/json")], 828, 0.000606, "r-1")
        await asyncio.sleep(0)                                          # the flush at the end of the turn

    asyncio.run(write())
    logger.info("%s", "127.0.0.1:5123 (scheme=http,method=POST,path=/score,type=application/json,length=42,"
                      "request_id=r-1) "
                      "(status=200,type=application/json,length=828) 0.606ms")
    direct, logged = stream.getvalue().splitlines()
    assert direct.split(" ", 1)[1] == logged.split(" ", 1)[1]          # all but the time stamp
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", direct.split(" ", 1)[0])


def test_another_logging_setup_gets_log_records():
    """A handler BentoML did not set up (another format) is given records, not direct writes."""
    from serving.lookups import AccessLine, direct_handler

    stream = io.StringIO()
    logger = _bentoml_logging(stream)
    handler = logging.getLogger("test_hot_lookups_bentoml").handlers[0]
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    assert direct_handler(logger) is None
    line = AccessLine()
    line.logger = logger
    line.write({"path": "/score", "scheme": "http", "method": "POST", "client": None}, {}, 200, [], 3, 0.001)
    assert stream.getvalue() == "INFO _ (scheme=http,method=POST,path=/score,request_id=-) (status=200) 1.000ms\n"


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 500
    return pd.DataFrame({
        "a": rng.random(n), "b": np.where(rng.random(n) < .2, np.nan, rng.random(n)),
        "d": pd.Timestamp("1997-01-01") + pd.to_timedelta(rng.integers(0, 900, n), "D"),
        "e": pd.Series(pd.Timestamp("1998-01-01")
                       + pd.to_timedelta(rng.integers(0, 9, n), "D")).where(rng.random(n) < .7),
        "f": rng.integers(0, 5, n), "g": rng.random(n) < .5,
        "h": pd.Series(rng.choice(["x", "y", None], n)), "i": rng.random(n)})


@pytest.mark.parametrize("rows", [[5], [3, 499, 3], list(range(500)), []], ids=["one", "some", "all", "none"])
def test_column_blocks_read_what_the_columns_hold(frame, rows):
    from serving.state import ColumnBlocks, json_column, json_values

    columns = {name: json_column(frame[name]) for name in frame}
    blocks = ColumnBlocks(columns)
    idx = np.asarray(rows, dtype=np.intp)
    assert blocks.values(idx) == [json_values(kind, array[idx]) for kind, array in columns.values()]
    assert list(blocks.columns) == list(columns)
    for name, (kind, array) in blocks.columns.items():
        assert kind == columns[name][0]
        assert json_values(kind, array) == json_values(*columns[name])
        assert array.flags.f_contiguous and any(np.shares_memory(array, b) for _, b in blocks.blocks)


def test_freeze_heap_leaves_older_objects_out_of_collections():
    from serving.champion import freeze_heap

    older = [{"i": i} for i in range(1000)]
    try:
        seconds = freeze_heap()
        assert seconds >= 0 and gc.get_freeze_count() >= len(older)
        assert not any(o is older for o in gc.get_objects())          # frozen objects are not tracked
    finally:
        gc.unfreeze()
    assert any(o is older for o in gc.get_objects())
