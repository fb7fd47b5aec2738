"""The trigger outbox: events recorded exactly once (even through kill -9), files rewritten
identically, signed webhook batches retried, dead-lettered and replayed against a real receiver."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pandas as pd
import pytest

from crm.delivery import SIGNATURE_HEADER, secret_from_env, sign, verify_signature
from crm.outbox import EVENT_COLUMNS, Outbox

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec-test-秘密"


def make_events(n: int, as_of: str = "2026-11-20", rule: str = "winback", start: int = 0,
                holdout_every: int = 0) -> pd.DataFrame:
    """``n`` events; every ``holdout_every``-th one in the holdout group."""
    ids = range(start, start + n)
    return pd.DataFrame({
        "idempotency_key": [f"{rule}:{as_of}:{i:06d}" for i in ids],
        "customer_id": [f"{i:06d}" for i in ids],
        "rule": rule,
        "as_of": as_of,
        "group": ["holdout" if holdout_every and i % holdout_every == 0 else "send" for i in ids],
        "template": f"{rule}_v1",
        "priority": [i + 1 for i in ids],
        "fields": [json.dumps({"name": f"客戶 {i}", "amount_to_next_tier": 12.5}, ensure_ascii=False) for i in ids],
    })[list(EVENT_COLUMNS)]


@pytest.fixture
def outbox(tmp_path) -> Outbox:
    box = Outbox(f"sqlite:///{tmp_path / 'state' / 'winback.db'}")
    yield box
    box.close()


# -- recording -----------------------------------------------------------------------------------

def test_record_twice_adds_nothing(outbox, tmp_path):
    events = make_events(50, holdout_every=5)
    assert (tmp_path / "state" / "winback.db").exists()          # parent folder created
    assert outbox.record(events) == 50
    assert outbox.record(events) == 0
    assert outbox.record(pd.concat([events, make_events(10, start=50)])) == 10
    stored = outbox.events()
    assert len(stored) == 60 and stored["idempotency_key"].is_unique
    assert set(stored["status"]) == {"pending", "holdout"}
    assert (stored["status"] == "holdout").sum() == 10           # ids 0, 5, ..., 45
    assert (stored["group"] == "holdout").equals(stored["status"] == "holdout")


def test_record_keeps_the_first_of_a_key_repeated_in_one_frame(outbox):
    events = make_events(3)
    twice = pd.concat([events, events.assign(template="other")])
    assert outbox.record(twice) == 3
    assert set(outbox.events()["template"]) == {"winback_v1"}


def test_record_refuses_bad_frames_naming_the_problem(outbox):
    with pytest.raises(ValueError, match="fields"):
        outbox.record(make_events(2).drop(columns="fields"))
    with pytest.raises(ValueError, match=r"row 1: group .* 'treated'"):
        outbox.record(make_events(2).assign(group=["send", "treated"]))
    with pytest.raises(ValueError, match="row 0: as_of"):
        outbox.record(make_events(1).assign(as_of="not a day"))
    assert outbox.events().empty


def test_past_and_events_filters(outbox):
    outbox.record(make_events(4, as_of="2026-11-01", holdout_every=2))
    outbox.record(make_events(3, as_of="2026-11-20", rule="tier_upgrade"))
    past = outbox.past()
    assert list(past.columns) == ["customer_id", "rule", "as_of", "group"] and len(past) == 7
    recent = outbox.past(since=pd.Timestamp("2026-11-10").date())
    assert set(recent["rule"]) == {"tier_upgrade"} and set(recent["as_of"]) == {"2026-11-20"}
    assert len(outbox.events(as_of="2026-11-01")) == 4
    assert len(outbox.events(as_of="2026-11-01", status="holdout")) == 2
    assert list(outbox.events().columns[:len(EVENT_COLUMNS)]) == list(EVENT_COLUMNS)
    with pytest.raises(ValueError, match="'sent'"):
        outbox.events(status="sent")


CHILD = textwrap.dedent("""
    import json, sys, tempfile, time
    import pandas as pd
    from crm.outbox import EVENT_COLUMNS, Outbox

    uri, day, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ids = range(n)
    events = pd.DataFrame({
        "idempotency_key": [f"k:{day}:{i}" for i in ids], "customer_id": [str(i) for i in ids],
        "rule": "winback", "as_of": day, "group": ["holdout" if i % 10 == 0 else "send" for i in ids],
        "template": "t", "priority": [i for i in ids], "fields": [json.dumps({"i": i}) for i in ids],
    })[list(EVENT_COLUMNS)]
    box = Outbox(uri)
    print("recording", flush=True)
    started = time.perf_counter()
    new = box.record(events)
    print(f"recorded {new} in {time.perf_counter() - started:.3f}", flush=True)
    with tempfile.TemporaryDirectory() as out:
        box.deliver_files(out, day)
    time.sleep(0.05)
    print("again", box.record(events), flush=True)
""")


def _child(uri: str, day: str, n: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", CHILD, uri, day, str(n)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _stored_keys(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [k for (k,) in conn.execute("SELECT idempotency_key FROM trigger_events")]


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(tmp_path):
    """A run SIGKILLed while recording (or just after) leaves all or none of its new events;
    the next run's record adds exactly the rest."""
    n = 20_000
    db = tmp_path / "state.db"
    uri = f"sqlite:///{db}"
    calibration = _child(f"sqlite:///{tmp_path / 'calibration.db'}", "2026-01-01", n)
    out, err = calibration.communicate(timeout=120)
    assert calibration.returncode == 0, err
    recording = float(out.split("recorded ")[1].split(" in ")[1].split()[0])
    assert f"recorded {n} in" in out and "again 0" in out

    rng = random.Random(10)
    expected: set[str] = set()
    for run in range(5):
        day = f"2026-11-{run + 1:02d}"
        child = _child(uri, day, n)
        assert child.stdout.readline().strip() == "recording"
        time.sleep(rng.uniform(0, 1.5 * recording))
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
        assert child.returncode in (-signal.SIGKILL, 0)

        keys = _stored_keys(db)
        assert len(keys) == len(set(keys)), "duplicate keys after a kill"
        day_keys = {k for k in keys if k.startswith(f"k:{day}:")}
        assert set(keys) - day_keys == expected, "a kill changed earlier days"
        assert len(day_keys) in (0, n), f"a kill left {len(day_keys)} of {n} events: not one transaction"

        box = Outbox(uri)                 # the next run
        day_events = make_child_events(day, n)
        assert box.record(day_events) == n - len(day_keys)
        assert box.record(day_events) == 0
        box.close()
        expected |= set(day_events["idempotency_key"])
        keys = _stored_keys(db)
        assert len(keys) == len(set(keys)) and set(keys) == expected
    assert len(_stored_keys(db)) == 5 * n


def make_child_events(day: str, n: int) -> pd.DataFrame:
    ids = range(n)
    return pd.DataFrame({
        "idempotency_key": [f"k:{day}:{i}" for i in ids], "customer_id": [str(i) for i in ids],
        "rule": "winback", "as_of": day, "group": ["holdout" if i % 10 == 0 else "send" for i in ids],
        "template": "t", "priority": list(ids), "fields": [json.dumps({"i": i}) for i in ids],
    })[list(EVENT_COLUMNS)]


# -- files ---------------------------------------------------------------------------------------

def test_files_per_rule_and_day_hold_send_events_and_rewrite_identically(outbox, tmp_path):
    outbox.record(pd.concat([make_events(20, holdout_every=4), make_events(5, rule="tier_upgrade"),
                             make_events(7, as_of="2026-11-21")]))
    out = tmp_path / "triggers"
    written = outbox.deliver_files(out, "2026-11-20")
    day = out / "2026-11-20"
    assert sorted(written) == sorted([day / "tier_upgrade.csv", day / "tier_upgrade.parquet",
                                      day / "winback.csv", day / "winback.parquet"])
    first = {p: p.read_bytes() for p in written}
    assert first[day / "winback.csv"].startswith("\ufeff".encode("utf-8"))
    assert "客戶 1".encode() in first[day / "winback.csv"]
    sent = pd.read_parquet(day / "winback.parquet")
    assert list(sent.columns) == list(EVENT_COLUMNS)
    assert len(sent) == 15 and set(sent["group"]) == {"send"}
    assert pd.read_csv(day / "winback.csv", encoding="utf-8-sig", dtype=str)["customer_id"].iloc[0] == "000001"
    assert not list(day.glob(".*tmp"))

    with Receiver() as receiver:          # delivery state changes; the files do not
        outbox.deliver_webhook(receiver.url, SECRET, sleep=lambda s: None)
    assert outbox.deliver_files(out, "2026-11-20") == written
    assert {p: p.read_bytes() for p in written} == first


# -- webhook -------------------------------------------------------------------------------------

class Receiver:
    """A real HTTP receiver on 127.0.0.1 that checks signatures (401 when wrong or stale) and
    answers 500 to the first ``fail_first`` signed requests (all of them with ``fail_first=-1``)."""

    def __init__(self, fail_first: int = 0, secret: str = SECRET):
        self.fail_first, self.secret = fail_first, secret
        self.requests: list[tuple[int, bytes, dict]] = []   # (status answered, body, headers)
        self.accepted: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.answer(body, self.headers.get(SIGNATURE_HEADER))
                receiver.requests.append((status, body, dict(self.headers)))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no" if status != 200 else b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/winback"

    def answer(self, body: bytes, header: str | None) -> int:
        if not verify_signature(self.secret, header, body):
            return 401
        if self.fail_first:
            self.fail_first -= 1
            return 500
        self.accepted.extend(json.loads(body)["events"])
        return 200

    def __enter__(self) -> "Receiver":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhook_retries_with_jittered_backoff_then_delivers(outbox):
    outbox.record(make_events(12, holdout_every=3))             # 4 holdout, 8 send
    delays = []
    with Receiver(fail_first=3) as receiver:
        counts = outbox.deliver_webhook(receiver.url, SECRET, batch_size=5, base_delay=0.5,
                                        max_delay=0.75, sleep=delays.append)
    assert counts == {"delivered": 8, "dead": 0, "batches": 2}
    assert [s for s, _, _ in receiver.requests] == [500, 500, 500, 200, 200]
    assert len(delays) == 3
    assert 0 <= delays[0] <= 0.5 and 0 <= delays[1] <= 0.75 and 0 <= delays[2] <= 0.75   # capped
    assert len(set(delays)) == 3                                  # jittered, not fixed steps
    keys = [e["idempotency_key"] for e in receiver.accepted]
    assert len(keys) == 8 and len(set(keys)) == 8
    assert all(e["group"] == "send" and isinstance(e["fields"], dict) for e in receiver.accepted)
    assert receiver.accepted[0]["fields"]["name"] == "客戶 1"
    stored = outbox.events().set_index("idempotency_key")
    sent = stored[stored["group"] == "send"]
    assert (sent["status"] == "delivered").all() and sent["delivered_at"].notna().all()
    assert sorted(sent["attempts"]) == [1, 1, 1, 4, 4, 4, 4, 4]
    assert (stored.loc[stored["group"] == "holdout", "status"] == "holdout").all()

    with Receiver() as receiver:                                  # nothing pending: nothing sent
        assert outbox.deliver_webhook(receiver.url, SECRET)["batches"] == 0
    assert receiver.requests == []


def test_holdout_events_are_never_posted(outbox):
    outbox.record(make_events(6, holdout_every=1))                # every one held out
    outbox.record(make_events(2, rule="tier_upgrade"))
    with Receiver() as receiver:
        counts = outbox.deliver_webhook(receiver.url, SECRET)
        outbox.replay(receiver.url, SECRET)
    assert counts["delivered"] == 2
    posted = [e["idempotency_key"] for _, body, _ in receiver.requests for e in json.loads(body)["events"]]
    assert posted and not any(k.startswith("winback:") for k in posted)
    assert set(outbox.events(status="holdout")["rule"]) == {"winback"}


def test_receiver_refuses_a_wrong_secret_and_a_stale_signature(outbox):
    outbox.record(make_events(3))
    with Receiver() as receiver:
        counts = outbox.deliver_webhook(receiver.url, "not-the-secret", max_attempts=2, sleep=lambda s: None)
        body = json.dumps({"events": []}).encode()
        stale = httpx.post(receiver.url, content=body,
                           headers={SIGNATURE_HEADER: sign(SECRET, body, int(time.time()) - 301)})
        fresh = httpx.post(receiver.url, content=body, headers={SIGNATURE_HEADER: sign(SECRET, body, int(time.time()))})
    assert counts == {"delivered": 0, "dead": 3, "batches": 1}
    assert [s for s, _, _ in receiver.requests] == [401, 401, 401, 200]
    assert stale.status_code == 401 and fresh.status_code == 200
    dead = outbox.dead_letters()
    assert len(dead) == 3 and set(dead["attempts"]) == {2}
    assert set(dead["last_error"]) == {"HTTP 401: no"}


def test_always_failing_receiver_dead_letters_then_replay_delivers(outbox):
    outbox.record(make_events(7))
    delays = []
    with Receiver(fail_first=-1) as failing:
        counts = outbox.deliver_webhook(failing.url, SECRET, as_of="2026-11-20", batch_size=4, max_attempts=3,
                                        sleep=delays.append)
    assert counts == {"delivered": 0, "dead": 7, "batches": 2}
    assert len(failing.requests) == 6 and len(delays) == 4
    dead = outbox.dead_letters()
    assert len(dead) == 7 and set(dead["attempts"]) == {3}
    assert all(e.startswith("HTTP 500") and "客戶" not in e for e in dead["last_error"])
    assert outbox.events(status="pending").empty

    with Receiver() as healthy:
        replayed = outbox.replay(healthy.url, SECRET, sleep=delays.append)
    assert replayed == {"delivered": 7, "dead": 0, "batches": 1, "replayed": 7}
    assert sorted(e["idempotency_key"] for e in healthy.accepted) == sorted(make_events(7)["idempotency_key"])
    assert outbox.dead_letters().empty
    assert set(outbox.events()["status"]) == {"delivered"} and set(outbox.events()["attempts"]) == {1}


def test_unreachable_receiver_is_an_error_without_the_body(outbox):
    outbox.record(make_events(2))
    with Receiver() as receiver:
        url = receiver.url                                        # closed on exit: nothing listens
    counts = outbox.deliver_webhook(url, SECRET, max_attempts=2, timeout=2, sleep=lambda s: None)
    assert counts["dead"] == 2
    error = outbox.dead_letters()["last_error"].iloc[0]
    assert error.startswith("ConnectError") and "客戶" not in error


# -- signatures and the secret -------------------------------------------------------------------

def test_verify_signature():
    body = b'{"events":[{"idempotency_key":"a"}]}'
    now = 1_800_000_000
    header = sign(SECRET, body, now)
    assert verify_signature(SECRET, header, body, now=now + 299)
    assert not verify_signature(SECRET, header, body + b" ", now=now)                   # tampered body
    assert not verify_signature(SECRET, header, body.replace(b'"a"', b'"b"'), now=now)
    assert not verify_signature("other", header, body, now=now)
    assert not verify_signature(SECRET, header, body, now=now + 301)                    # stale
    assert not verify_signature(SECRET, header, body, tolerance_seconds=10, now=now - 11)  # future
    assert verify_signature(SECRET, f"t={now},v1=00ff,v1={header.split('v1=')[1]}", body, now=now)  # rotation
    for malformed in (None, "", "t=abc,v1=00", f"t={now}", "v1=00", "garbage"):
        assert not verify_signature(SECRET, malformed, body, now=now)


def test_secret_from_env(monkeypatch):
    monkeypatch.setenv("WINBACK_WEBHOOK_SECRET", "s3cret")
    assert secret_from_env() == "s3cret"
    monkeypatch.delenv("WINBACK_WEBHOOK_SECRET")
    with pytest.raises(ValueError, match="WINBACK_WEBHOOK_SECRET"):
        secret_from_env()
    monkeypatch.setenv("MY_HOOK_SECRET", " ")
    with pytest.raises(ValueError, match="MY_HOOK_SECRET"):
        secret_from_env("MY_HOOK_SECRET")


# -- the budget's skipped events and the schema of older outboxes (issue #21) ----------------------

def test_skipped_budget_events_are_recorded_never_delivered(outbox, tmp_path):
    events = make_events(6)
    events.loc[events.index[3:], "group"] = "skipped_budget"
    assert outbox.record(events) == 6
    stored = outbox.events()
    assert (stored.set_index("customer_id")["status"].iloc[3:] == "skipped").all()
    assert set(outbox.past()["group"]) == {"send", "skipped_budget"}
    files = outbox.deliver_files(tmp_path / "out", "2026-11-20")
    assert len(pd.read_parquet(next(p for p in files if p.suffix == ".parquet"))) == 3
    with pytest.raises(ValueError, match="group must be one of"):
        outbox.record(make_events(1, start=99).assign(group="later"))


def test_an_outbox_made_by_the_previous_version_still_opens(tmp_path):
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:                          # the schema before issue #21
        conn.executescript("""
            CREATE TABLE trigger_events (idempotency_key VARCHAR(255) PRIMARY KEY,
                customer_id VARCHAR(255) NOT NULL, rule VARCHAR(100) NOT NULL, as_of VARCHAR(10) NOT NULL,
                grp VARCHAR(10) NOT NULL, template VARCHAR(255), priority INTEGER, fields TEXT,
                status VARCHAR(10) NOT NULL, attempts INTEGER NOT NULL, last_error TEXT,
                created_at VARCHAR(32) NOT NULL, delivered_at VARCHAR(32));
            INSERT INTO trigger_events VALUES ('k1', 'c1', 'winback_due', '2026-11-19', 'send', 't', 10,
                '{}', 'delivered', 1, NULL, '2026-11-19T00:00:00+00:00', '2026-11-19T00:00:01+00:00');""")
    box = Outbox(f"sqlite:///{db}")
    try:
        events = make_events(2, as_of="2026-11-20").assign(group=["send", "skipped_budget"])
        assert box.record(events) == 2
        assert list(box.events()["group"]) == ["send", "send", "skipped_budget"]
    finally:
        box.close()
