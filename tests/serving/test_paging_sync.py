"""Paging and the full-base sync, on all of CDNOW (23,570 customers) served by two workers.

* ``/winback`` pages, concatenated, are the whole ranking of :func:`models.policy.winback.winback_list`
  on the scorer's own scores, at CDNOW's 23,570 in pages of 10,000 (each page asked on a new
  connection, so both workers answer) and at a small page size with filters; ``GET /triggers``
  pages too.
* ``GET /scores`` streams every customer: each line equals the customer's ``/score`` answer
  (``reasons: false``) and the Parquet file holds the same; ``If-None-Match`` gives 304.
* Then the snapshot file is replaced (7 customers gone, 30 with other features): a cursor of the
  old snapshot is a 409, and ``since=<old ETag>`` sends exactly the customers whose answer changed
  and a ``removed`` line for each customer gone.
* Per-key rate limits (a 429 with ``Retry-After``, shared by the two workers) and ``X-Request-ID``.
"""

from __future__ import annotations

import io
import os
import time

import httpx
import numpy as np
import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest
from serving_support import AS_OF, KEYS

from features import TransactionLog
from features.cdnow import CDNOW_COLUMNS
from features.job import read_feature_table, write_features
from models.policy.winback import winback_list
from serving.run import running, service_env
from serving.schemas import ScoreLine

FULL = 23_570
RATE_KEY = "test-rate-key"
RATE = 500                                           # per key and hour: a token back every 7 s


@pytest.fixture(scope="module")
def full(tmp_path_factory, store, scorer, cdnow_raw) -> dict:
    """The service on every CDNOW customer's features as of AS_OF, version 1 pinned, two workers,
    500 requests an hour per key; and a changed snapshot to swap in later (:func:`_changed`)."""
    tmp = tmp_path_factory.mktemp("full-cdnow")
    log = TransactionLog.from_frame(cdnow_raw, CDNOW_COLUMNS)
    snapshot, next_day = tmp / "snapshot.parquet", tmp / "changed.parquet"
    write_features(log, AS_OF, snapshot, "D", reference=scorer.reference_)
    _changed(snapshot, next_day)
    (tmp / "bentoml").mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WINBACK_", "MLFLOW_", "BENTOML_"))}
    env = service_env(store["tracking_uri"], model_uri="models:/winback/1", snapshot=snapshot, poll_seconds=1,
                      workers=2, base=base)
    env.update(BENTOML_HOME=str(tmp / "bentoml"), WINBACK_API_KEYS=",".join([*KEYS, RATE_KEY]),
               WINBACK_RATE_LIMIT=f"{RATE}/3600s", WINBACK_TRIGGERS_STATE=store["triggers"])
    with running(env, log=tmp / "server.log", timeout=300) as url:
        yield {"url": url, "snapshot": snapshot, "next_day": next_day, "log": tmp / "server.log",
               "features": read_feature_table(snapshot)[0]}


def _changed(path, out) -> None:
    """``path``'s feature table without 7 customers and with 30 others given other customers'
    features (ids kept), its metadata (the feature reference) as it was."""
    table = pq.read_table(path)
    n = table.num_rows
    gone = set(range(100, 7 * 300 + 100, 300))
    moved = {i: (i * 7919) % n for i in range(1000, 1000 + 30 * 400, 400)}
    kept = [i for i in range(n) if i not in gone]
    changed = table.take([moved.get(i, i) for i in kept])
    column = table.schema.get_field_index("customer_id")
    changed = changed.set_column(column, table.schema.field(column), table.column(column).take(kept))
    pq.write_table(changed.replace_schema_metadata(table.schema.metadata), out)


def _post(url: str, path: str, body: dict, key: str = KEYS[0]) -> httpx.Response:
    """One request on a new connection (so either worker may answer)."""
    return httpx.post(url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120)


def _get(url: str, path: str, key: str = KEYS[1], **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
    return httpx.get(url + path, headers=headers, timeout=300, **kwargs)


def _pages(url: str, path: str, body: dict, key: str = KEYS[0]) -> list[dict]:
    pages, cursor = [], None
    while True:
        answer = _post(url, path, {**body, **({"cursor": cursor} if cursor else {})}, key)
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        cursor = pages[-1]["next_cursor"]
        if cursor is None:
            return pages


def _ranking(scorer, features: pd.DataFrame, **filters) -> list[str]:
    scores = scorer.score(features, pd.Timestamp(AS_OF), reasons=False)
    return winback_list(scores, top=10**9, **filters)["customer_id"].tolist()


# ---------------------------------------------------------------------- paging


def test_pages_of_10000_are_the_whole_ranking_of_23570(full, scorer):
    pages = _pages(full["url"], "/winback", {"limit": 10_000, "reasons": False})
    assert [len(p["customers"]) for p in pages] == [10_000, 10_000, 3_570]
    assert {p["total_matching"] for p in pages} == {FULL} and len({p["model_version"] for p in pages}) == 1
    entries = [e for p in pages for e in p["customers"]]
    assert [e["rank"] for e in entries] == list(range(1, FULL + 1))
    assert [e["customer_id"] for e in entries] == _ranking(scorer, full["features"])
    assert all(e["reasons"] == [] for e in entries)


def test_small_pages_with_filters_are_the_whole_filtered_ranking(server, scorer, store):
    filters = {"segments": ["Hibernating", "流失風險", "Lost"], "tiers": ["member"], "min_value": 0.5}
    pages = _pages(server, "/winback", {"limit": 7, "lang": "zh-TW", **filters})
    ids = [e["customer_id"] for p in pages for e in p["customers"]]
    expected = _ranking(scorer, read_feature_table(store["snapshot"])[0], **filters)
    assert 50 < len(expected) == pages[0]["total_matching"] and ids == expected
    assert all(len(p["customers"]) == 7 for p in pages[:-1]) and pages[-1]["next_cursor"] is None
    assert all(e["reasons"] for p in pages for e in p["customers"])      # reasons by default
    whole = _post(server, "/winback", {"limit": 500, "lang": "zh-TW", **filters}).json()
    assert [e for p in pages for e in p["customers"]][:500] == whole["customers"]


def test_a_cursor_belongs_to_its_filters(server):
    first = _post(server, "/winback", {"limit": 5, "segments": ["Lost"]}).json()
    other = _post(server, "/winback", {"limit": 5, "segments": ["At risk"], "cursor": first["next_cursor"]})
    assert other.status_code == 409 and "other filters" in other.json()["error"]
    forged = _post(server, "/winback", {"limit": 5, "cursor": "bm90LWEtY3Vyc29y"})
    assert forged.status_code == 409 and forged.json()["field"] == "cursor"
    assert _post(server, "/winback", {"limit": 5, "cursor": "not a cursor!"}).status_code == 400


def test_trigger_events_come_a_page_at_a_time(server, store):
    import json

    from crm.outbox import Outbox
    from crm.rules import EVENT_COLUMNS, idempotency_key

    day = "1997-10-15"
    rows = [{"idempotency_key": idempotency_key(f"{i:05d}", rule, day), "customer_id": f"{i:05d}", "rule": rule,
             "as_of": day, "group": "holdout" if i % 5 == 0 else "send", "template": "t", "priority": i % 3,
             "fields": json.dumps({"i": i})} for i in range(1, 41) for rule in ("a_rule", "b_rule")]
    Outbox(store["triggers"]).record(pd.DataFrame(rows)[list(EVENT_COLUMNS)])
    pages, cursor = [], None
    while True:
        answer = _get(server, "/triggers", params={"date": day, "limit": 9, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        cursor = pages[-1]["next_cursor"]
        if cursor is None:
            break
    events = [e for p in pages for e in p["events"]]
    sent = [r for r in rows if r["group"] == "send"]
    assert len(events) == len(sent) == 64 and [len(p["events"]) for p in pages] == [9] * 7 + [1]
    assert [(e["rule"], e["priority"], e["idempotency_key"]) for e in events] == sorted(
        (r["rule"], r["priority"], r["idempotency_key"]) for r in sent)
    whole = _get(server, "/triggers", params={"date": day}).json()
    assert whole["events"] == events and whole["next_cursor"] is None
    other_day = {"date": "1997-10-16", "cursor": pages[0]["next_cursor"]}
    assert _get(server, "/triggers", params=other_day).status_code == 409
    assert _get(server, "/triggers", params={"date": day, "limit": 0}).status_code == 400


# ---------------------------------------------------------------------- the full-base sync


def _lines(content: bytes) -> list[dict]:
    return [orjson.loads(line) for line in content.splitlines()]


def _by_score(url: str, ids: list[str]) -> list[dict]:
    answers = []
    for start in range(0, len(ids), 10_000):
        answer = _post(url, "/score", {"customer_ids": ids[start:start + 10_000], "reasons": False}, KEYS[1])
        assert answer.status_code == 200
        answers += answer.json()["customers"]
    return answers


def test_the_stream_is_every_customers_score_answer(full):
    answer = _get(full["url"], "/scores")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/x-ndjson"
    assert answer.headers["x-sync"] == "full" and answer.headers["x-customers"] == str(FULL)
    lines = _lines(answer.content)
    ids = [line["customer_id"] for line in lines]
    assert len(set(ids)) == FULL and set(ids) == set(full["features"]["customer_id"])
    for line in lines:                                                 # the document's ScoreLine, strictly
        ScoreLine.model_validate(line, strict=False)
    assert all(set(line) <= set(ScoreLine.model_fields) for line in lines)
    assert lines == _by_score(full["url"], ids)                          # one truth: /score's answers
    full["etag"] = answer.headers["etag"]
    full["lines"] = lines
    info = _get(full["url"], "/info").json()
    assert info["etag"] == answer.headers["etag"] and info["etag"].startswith('"1-')


def test_parquet_holds_the_same_as_the_lines(full):
    answer = _get(full["url"], "/scores", headers={"Accept": "application/vnd.apache.parquet"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/vnd.apache.parquet"
    assert answer.headers["etag"] == full["etag"]
    table = pq.read_table(io.BytesIO(answer.content)).to_pylist()
    for row in table:
        for name, value in row.items():
            if hasattr(value, "isoformat"):
                row[name] = value.isoformat()
    assert table == full["lines"]


def test_if_none_match_is_304_and_accept_is_negotiated(full):
    same = _get(full["url"], "/scores", headers={"If-None-Match": f'W/"x", {full["etag"]}'})
    assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == full["etag"]
    assert _get(full["url"], "/scores", headers={"If-None-Match": '"1-0000000000000000"'}).status_code == 200
    assert _get(full["url"], "/scores", headers={"Accept": "text/csv"}).status_code == 406
    nothing = _get(full["url"], "/scores", params={"since": full["etag"]})
    assert nothing.status_code == 200 and nothing.headers["x-sync"] == "delta" and nothing.content == b""
    unknown = _get(full["url"], "/scores", params={"since": '"7-0123456789abcdef"'})
    assert unknown.headers["x-sync"] == "full-since-unknown" and unknown.content.count(b"\n") == FULL
    assert _get(full["url"], "/scores", params={"since": "no such tag!"}).status_code == 400


def test_after_the_snapshot_changes_old_cursors_are_409_and_since_sends_the_changes(full):
    first = _post(full["url"], "/winback", {"limit": 100, "reasons": False}).json()
    os.replace(full["next_day"], full["snapshot"])                     # 7 customers gone, 30 changed
    etags, deadline = [], time.monotonic() + 180
    while time.monotonic() < deadline:                                 # every worker has swapped
        etags = [_get(full["url"], "/info").json()["etag"] for _ in range(4)]
        if full["etag"] not in etags:
            break
        time.sleep(1)
    assert full["etag"] not in etags and len(set(etags)) == 1, etags
    stale = _post(full["url"], "/winback", {"limit": 100, "reasons": False, "cursor": first["next_cursor"]})
    assert stale.status_code == 409 and "start again" in stale.json()["error"]

    now = _lines(_get(full["url"], "/scores").content)
    delta = _get(full["url"], "/scores", params={"since": full["etag"]})
    assert delta.headers["x-sync"] == "delta" and delta.headers["etag"] == etags[0]
    before = {line["customer_id"]: line for line in full["lines"]}
    changed = [line for line in now if line != before.get(line["customer_id"])]
    present = {line["customer_id"] for line in now}
    removed = [{"customer_id": line["customer_id"], "status": "removed"} for line in full["lines"]
               if line["customer_id"] not in present]
    assert len(removed) == 7 and 30 <= len(changed) < FULL
    assert _lines(delta.content) == changed + removed                  # exactly what changed, and who left
    assert delta.headers["x-customers"] == str(len(changed) + 7)
    as_parquet = _get(full["url"], "/scores", params={"since": full["etag"]},
                      headers={"Accept": "application/vnd.apache.parquet"})
    table = pq.read_table(io.BytesIO(as_parquet.content))
    assert table.column("customer_id").to_pylist() == [line["customer_id"] for line in changed + removed]
    assert table.column("status").to_pylist()[-7:] == ["removed"] * 7


# ---------------------------------------------------------------------- limits a client can plan for


def test_a_key_over_its_rate_limit_gets_429_with_retry_after_on_every_worker(full):
    started = time.monotonic()
    answers = [_post(full["url"], "/score", {"customer_ids": ["00001"], "reasons": False}, RATE_KEY)
               for _ in range(RATE + 10)]                              # new connections: both workers answer
    earned = (time.monotonic() - started) * RATE / 3600                # tokens back meanwhile
    statuses = [a.status_code for a in answers]
    assert statuses[:RATE] == [200] * RATE and statuses[-1] == 429, statuses
    assert statuses.count(200) <= RATE + earned + 1                    # one bucket for both workers
    refused = answers[-1]
    assert 1 <= int(refused.headers["retry-after"]) <= 8 and "WINBACK_RATE_LIMIT" in refused.json()["error"]
    assert _get(full["url"], "/info", key=RATE_KEY).status_code == 429        # every API call counts
    assert _get(full["url"], "/info", key=KEYS[1]).status_code == 200         # per key
    assert httpx.get(full["url"] + "/healthz").status_code == 200             # the probes are not limited


def test_request_ids_are_echoed_and_logged(server, server_log, auth):
    mine = httpx.post(server + "/score", json={"customer_ids": ["00001"]}, headers={**auth, "X-Request-ID": "crm-42.a"})
    assert mine.headers["x-request-id"] == "crm-42.a"
    made = httpx.get(server + "/info", headers=auth)
    assert made.status_code == 200 and len(made.headers["x-request-id"]) >= 8
    other = httpx.get(server + "/info", headers=auth)
    assert other.headers["x-request-id"] != made.headers["x-request-id"]
    bad = httpx.get(server + "/info", headers={**auth, "X-Request-ID": "no spaces, please"})
    assert bad.status_code == 400 and bad.json()["field"] == "X-Request-ID"
    refused = httpx.post(server + "/score", json={}, headers={"X-Request-ID": "crm-43"})
    assert refused.status_code == 401 and refused.headers["x-request-id"] == "crm-43"
    for _ in range(50):                                                # the log is flushed at the end of a turn
        text = server_log.read_text(errors="replace")
        if all(f"request_id={rid}" in text for rid in ("crm-42.a", made.headers["x-request-id"], "crm-43")):
            break
        time.sleep(0.1)
    for rid in ("crm-42.a", made.headers["x-request-id"], "crm-43"):   # hot lookups and BentoML's own lines
        assert f"request_id={rid})" in text, rid


def test_the_rate_limiter_is_one_bucket_per_key_for_every_worker(tmp_path):
    from serving.ratelimit import RateLimit, RateLimiter

    limit = RateLimit.parse("3/60s")
    one, two = RateLimiter(limit, 2, tmp_path / "buckets"), RateLimiter(limit, 2, tmp_path / "buckets")
    assert [one.take(0), two.take(0), one.take(0)] == [0, 0, 0]
    assert 1 <= two.take(0) <= 20 and one.take(1) == 0                 # key 0 is spent; key 1 is not
    assert RateLimit.parse("1000/min") == RateLimit(1000, 60) and str(RateLimit.parse("10/s")) == "10/1s"
    with pytest.raises(ValueError):
        RateLimit.parse("lots")


def test_page_sizes_and_the_stream_agree_on_every_field(full):
    """Every field /winback shows is the customer's stream line (same snapshot)."""
    page = _post(full["url"], "/winback", {"limit": 50, "reasons": False}).json()
    lines = {line["customer_id"]: line for line in _lines(_get(full["url"], "/scores").content)}
    for entry in page["customers"]:
        line = lines[entry["customer_id"]]
        assert entry["rank"] == line["priority"]
        assert {k: entry[k] for k in ("value_at_risk", "churn_probability", "clv_12m", "winback_date", "segment",
                                      "tier")} == {k: line[k] for k in ("value_at_risk", "churn_probability",
                                                                        "clv_12m", "winback_date", "segment", "tier")}
    assert np.isfinite([e["value_at_risk"] for e in page["customers"]]).all()
