"""The trigger outbox on a real PostgreSQL: the exactly-once and kill -9 checks of
``test_outbox.py`` (SQLite) run against the server ``make install`` provides, with the same
events and the same recording child process.

Each test gets a new database on the session's server (``postgres`` fixture, tests/conftest.py);
under ``CI=true`` a missing server fails them instead of skipping.
"""

from __future__ import annotations

import random
import signal
import time

import pytest
import test_outbox as sqlite_tests  # the SQLite tests' events and child process

from crm.outbox import Outbox

N = 20_000


@pytest.fixture
def state_uri(postgres, request) -> str:
    return postgres.create_database(f"outbox_{request.node.name[:40].lower()}")


@pytest.fixture
def outbox(state_uri) -> Outbox:
    box = Outbox(state_uri)
    yield box
    box.close()


def _stored_keys(uri: str) -> list[str]:
    """Every key in the table, read by a connection of its own (as the next run would)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(uri)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text("SELECT idempotency_key FROM trigger_events")).scalars())
    finally:
        engine.dispose()


def test_record_twice_adds_nothing(outbox):
    assert outbox.engine.dialect.name == "postgresql"
    events = sqlite_tests.make_events(50, holdout_every=5)
    assert outbox.record(events) == 50
    assert outbox.record(events) == 0
    assert outbox.record(sqlite_tests.make_events(60)) == 10
    stored = outbox.events()
    assert len(stored) == 60 and stored["idempotency_key"].is_unique
    assert (stored["status"] == "holdout").sum() == 10
    assert (stored["group"] == "holdout").equals(stored["status"] == "holdout")
    assert stored.loc[stored["customer_id"] == "000007", "fields"].item() == events.loc[7, "fields"]   # UTF-8 kept
    assert len(Outbox(outbox.state_uri).past()) == 60              # a second process sees the same


def test_two_runs_recording_the_same_day_at_once_store_each_event_once(state_uri):
    """Two processes commit the same 20,000 events concurrently: the loser's insert meets the
    winner's keys (a unique violation on PostgreSQL), starts over and adds nothing."""
    Outbox(state_uri).close()                                    # the table exists before the race
    runs = [sqlite_tests._child(state_uri, "2026-11-02", N) for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    for run, (out, err) in zip(runs, outputs):
        assert run.returncode == 0, err[-3000:]
        assert "again 0" in out
    added = [int(out.split("recorded ")[1].split()[0]) for out, _ in outputs]
    assert sorted(added) == [0, N]                             # one transaction won, whole
    keys = _stored_keys(state_uri)
    assert len(keys) == N and len(set(keys)) == N


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(state_uri):
    """A run SIGKILLed while recording (or just after) leaves all or none of its new events on
    the server; the next run's record adds exactly the rest."""
    calibration = sqlite_tests._child(state_uri, "2026-01-01", N)
    out, err = calibration.communicate(timeout=300)
    assert calibration.returncode == 0, err[-3000:]
    recording = float(out.split("recorded ")[1].split(" in ")[1].split()[0])
    assert f"recorded {N} in" in out and "again 0" in out
    expected = set(_stored_keys(state_uri))
    assert len(expected) == N

    rng = random.Random(10)
    for run in range(5):
        day = f"2026-11-{run + 1:02d}"
        child = sqlite_tests._child(state_uri, day, N)
        assert child.stdout.readline().strip() == "recording"
        time.sleep(rng.uniform(0, 1.5 * recording))
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
        assert child.returncode in (-signal.SIGKILL, 0)

        keys = _stored_keys(state_uri)
        assert len(keys) == len(set(keys)), "duplicate keys after a kill"
        day_keys = {k for k in keys if k.startswith(f"k:{day}:")}
        assert set(keys) - day_keys == expected, "a kill changed earlier days"
        assert len(day_keys) in (0, N), f"a kill left {len(day_keys)} of {N} events: not one transaction"

        box = Outbox(state_uri)                                  # the next run
        day_events = sqlite_tests.make_child_events(day, N)
        assert box.record(day_events) == N - len(day_keys)
        assert box.record(day_events) == 0
        box.close()
        expected |= set(day_events["idempotency_key"])
        keys = _stored_keys(state_uri)
        assert len(keys) == len(set(keys)) and set(keys) == expected
    assert len(_stored_keys(state_uri)) == 6 * N
