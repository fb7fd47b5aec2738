"""The dashboard's parts without a browser: locale formatting, key roles, sessions and CSRF
tokens, the list index against the ranking rule of ``models.policy.winback``, and the shipped font."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from crm.formatting import DEFAULT_CURRENCY, format_date, format_money, format_number, format_percent
from serving.config import ApiKey, ConfigError, ServiceSettings, read_keys_file
from serving.dashboard.listing import FilterError, ListIndex, ListQuery
from serving.security import KeyRing, Sessions, SignInThrottle

# ---------------------------------------------------------------------- formatting


def test_numbers_money_percent_and_dates_in_each_locale():
    assert format_number(1234567.891, "en", 2) == format_number(1234567.891, "zh-TW", 2) == "1,234,567.89"
    assert format_money(1234.5, "zh-TW", digits=2) == "NT$1,234.50"
    assert format_money(-12, "en") == "-$12" and format_money(-0.001, "en") == "$0"
    assert format_money(500, "en", "NT$") == "NT$500" and DEFAULT_CURRENCY["zh-TW"] == "NT$"
    assert format_percent(0.1234, "zh-TW") == "12.3%"
    assert format_date("2026-01-31", "zh-TW") == "2026/01/31"
    assert format_date(dt.date(2026, 1, 31), "en") == "Jan 31, 2026"
    assert format_date(pd.Timestamp("2026-01-31 13:00"), "en") == "Jan 31, 2026"
    assert format_number(None, "en") == format_percent(float("nan"), "en") == "–"
    with pytest.raises(ValueError, match="lang"):
        format_number(1, "fr")


# ---------------------------------------------------------------------- keys and roles


def test_key_roles_are_a_prefix_and_bare_keys_stay_scorer_keys(tmp_path):
    assert ApiKey.parse("viewer:abc") == ApiKey("viewer", "abc")
    assert ApiKey.parse("ADMIN: xyz ") == ApiKey("admin", "xyz")
    assert ApiKey.parse("plain-key") == ApiKey("scorer", "plain-key")
    assert ApiKey.parse("crm:with:colons") == ApiKey("scorer", "crm:with:colons")   # not a role: part of the key
    assert "abc" not in repr(ApiKey.parse("viewer:abc"))
    keys = tmp_path / "keys"
    keys.write_text("# marketers\nviewer:v1\nscorer:s1, old-key\n", encoding="utf-8")
    settings = ServiceSettings.from_env({"WINBACK_API_KEYS": "admin:a1", "WINBACK_API_KEYS_FILE": str(keys),
                                         "WINBACK_TRACKING_URI": "sqlite:////tmp/x.db"})
    assert [(k.role, k.key) for k in settings.api_keys] == [
        ("admin", "a1"), ("viewer", "v1"), ("scorer", "s1"), ("scorer", "old-key")]
    assert read_keys_file(keys) == ["viewer:v1", "scorer:s1", "old-key"]


def test_api_calls_need_a_scorer_or_admin_key():
    ring = KeyRing([ApiKey("viewer", "v"), ApiKey("admin", "a"), "s"])
    assert ring.accepts(b"Bearer s") and ring.accepts(b"bearer a")
    assert not ring.accepts(b"Bearer v") and not ring.accepts(b"Bearer nope") and not ring.accepts(None)
    assert ring.roles_of("v") == {"viewer"} and ring.roles_of("x") == frozenset()


def test_dashboard_settings_from_the_environment():
    env = {"WINBACK_TRACKING_URI": "sqlite:////tmp/x.db", "WINBACK_CURRENCY": "US$",
           "WINBACK_MLFLOW_UI_URL": "http://mlflow:5000", "WINBACK_SESSION_HOURS": "0.5",
           "WINBACK_SESSION_SECRET": "s3cret"}
    board = ServiceSettings.from_env(env).dashboard
    assert (board.currency, board.mlflow_ui_url, board.session_hours, board.session_secret) == (
        "US$", "http://mlflow:5000", 0.5, b"s3cret")
    assert "s3cret" not in repr(board)
    with pytest.raises(ConfigError, match="WINBACK_SESSION_HOURS"):
        ServiceSettings.from_env({**env, "WINBACK_SESSION_HOURS": "0"})


def test_trigger_rules_are_read_and_checked_at_start(tmp_path):
    from crm.rules import DEFAULT_RULES_PATH

    env = {"WINBACK_TRACKING_URI": "sqlite:////tmp/x.db"}
    assert ServiceSettings.from_env(env).triggers_rules is None            # the page uses the shipped file
    rules = tmp_path / "rules.toml"
    rules.write_text(DEFAULT_RULES_PATH.read_text(encoding="utf-8").replace(
        "max_sends_per_day = 1000", "max_sends_per_day = 250"), encoding="utf-8")
    read = ServiceSettings.from_env({**env, "WINBACK_TRIGGERS_RULES": str(rules)}).triggers_rules
    assert read is not None and read.budget.max_sends_per_day == 250
    with pytest.raises(ConfigError, match=r"WINBACK_TRIGGERS_RULES: cannot read .*missing\.toml"):
        ServiceSettings.from_env({**env, "WINBACK_TRIGGERS_RULES": str(tmp_path / "missing.toml")})
    rules.write_text("[budget]\nmax_sends_per_day = 'many'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"WINBACK_TRIGGERS_RULES: .*rules\.toml.*max_sends_per_day"):
        ServiceSettings.from_env({**env, "WINBACK_TRIGGERS_RULES": str(rules)})


# ---------------------------------------------------------------------- sessions


def test_sessions_are_signed_expire_and_bind_csrf_tokens():
    now = [1_000_000.0]
    sessions = Sessions(b"k" * 32, lifetime_seconds=60, clock=lambda: now[0])
    cookie = sessions.issue("viewer")
    session = sessions.read(cookie)
    assert session.role == "viewer" and session.expires == 1_000_060
    payload, signature = cookie.split(".")
    forged = payload.replace(payload[5], "A" if payload[5] != "A" else "B") + "." + signature
    assert sessions.read(forged) is None
    assert Sessions(b"other" * 8).read(cookie) is None                      # another server's secret
    assert sessions.read("garbage") is None and sessions.read(None) is None
    token = sessions.csrf_token(session.sid)
    assert sessions.check_csrf(session.sid, token)
    assert not sessions.check_csrf("another-session", token) and not sessions.check_csrf(session.sid, "")
    now[0] += 61
    assert sessions.read(cookie) is None                                    # expired


# ---------------------------------------------------------------------- the list


@pytest.fixture(scope="module")
def snapshot(scorer, store):
    from serving.state import ModelInfo, ScoredSnapshot, SnapshotFile

    features = pd.read_parquet(store["snapshot"])
    return ScoredSnapshot(scorer, ModelInfo("winback", "1", "champion", "models:/winback@champion"), features,
                          SnapshotFile(store["snapshot"], 0, pd.Timestamp("1997-09-30"), dt.datetime.now()))


@pytest.fixture(scope="module")
def scores(scorer, store):
    return scorer.score(pd.read_parquet(store["snapshot"]), "1997-09-30", reasons=False)


@pytest.mark.parametrize("segments, tiers, min_value", [((), (), 0.0), (("Lost", "At risk"), ("member",), 1.0),
                                                        (("Champions",), (), 5.0)])
def test_list_pages_follow_the_winback_rule(snapshot, scores, segments, tiers, min_value):
    from models.policy.winback import winback_list

    index = ListIndex(snapshot)
    want = winback_list(scores, len(scores), list(segments), list(tiers), min_value)["customer_id"].tolist()
    query = ListQuery(segments=segments, tiers=tiers, min_value=min_value, per_page=25, page=2)
    total, rows = index.select(query)
    assert total == len(want)
    assert [snapshot.customer_id(p) for p in rows] == want[25:50]


def test_list_sorts_with_missing_values_last_and_filters_win_back_dates(snapshot, scores):
    index = ListIndex(snapshot)
    for descending in (True, False):
        query = ListQuery(sort="next_purchase_date", descending=descending, per_page=100)
        total, _ = index.select(query)
        _, rows = index.select(query, limit=total, offset=0)
        dates = pd.to_datetime(scores.set_index("customer_id").loc[[snapshot.customer_id(p) for p in rows],
                                                                     "next_purchase_date"]).to_numpy()
        present = dates[~np.isnat(dates)]
        assert np.isnat(dates[len(present):]).all() and len(present) > 0
        steps = np.diff(present.astype("int64"))
        assert (steps <= 0).all() if descending else (steps >= 0).all()
    window = ListQuery(winback_from=dt.date(1997, 10, 1), winback_to=dt.date(1997, 11, 30))
    total, _ = index.select(window)
    inside = scores["winback_date"].between("1997-10-01", "1997-11-30")
    assert total == inside.sum() > 0


def test_list_parameters_are_checked_by_name():
    assert ListQuery.from_params({"segment": ["Lost", "Lost", ""], "page": ["3"]}) == ListQuery(
        segments=("Lost",), page=3)
    for params, field in (({"sort": ["rank"]}, "sort"), ({"page": ["0"]}, "page"), ({"min_value": ["-1"]}, "min_value"),
                          ({"winback_from": ["31/01/2026"]}, "winback_from"), ({"per_page": ["1000"]}, "per_page"),
                          ({"min_value": ["nan"]}, "min_value")):
        with pytest.raises(FilterError, match=field):
            ListQuery.from_params(params)


# ---------------------------------------------------------------------- the font


def test_the_shipped_font_has_every_character_the_dashboard_shows():
    from fontTools.ttLib import TTFont

    from crm import fonts, reports
    from features.rfm import SEGMENT_ZH_TW
    from serving.dashboard import i18n

    cmap = set(map(chr, TTFont(fonts.FONT).getBestCmap()))
    shown = "".join(zh for _, zh in i18n.STRINGS.values()) + "".join(reports.TEXT["zh-TW"].values())
    shown += "".join(SEGMENT_ZH_TW.values()) + "0123456789NT$,.%/"
    missing = {ch for ch in shown if not ch.isspace()} - cmap
    assert not missing, f"rebuild the font (python -m crm.fonts): missing {''.join(sorted(missing))}"
    assert fonts.FONT.stat().st_size < 200_000


def test_session_secret_is_shared_by_workers_and_changes_with_the_keys():
    env = {"WINBACK_TRACKING_URI": "sqlite:////tmp/x.db", "WINBACK_API_KEYS": "viewer:v1,s1"}
    one, two = ServiceSettings.from_env(env), ServiceSettings.from_env(env)      # two workers
    assert one.dashboard.session_secret == two.dashboard.session_secret
    other = ServiceSettings.from_env({**env, "WINBACK_API_KEYS": "viewer:v2,s1"})
    assert other.dashboard.session_secret != one.dashboard.session_secret
    cookie = Sessions(one.dashboard.session_secret).issue("viewer")
    assert Sessions(two.dashboard.session_secret).read(cookie) is not None
    assert Sessions(other.dashboard.session_secret).read(cookie) is None


def test_customer_events_are_read_by_customer_and_old_outboxes_get_the_index(tmp_path):
    import json
    import sqlite3

    from crm.outbox import Outbox
    from crm.rules import EVENT_COLUMNS, idempotency_key
    from serving.dashboard.customer import customer_events

    db = tmp_path / "state.db"
    with sqlite3.connect(db) as old:                 # an outbox made before the customer index
        old.execute("CREATE TABLE trigger_events (idempotency_key VARCHAR(255) PRIMARY KEY, "
                    "customer_id VARCHAR(255) NOT NULL, rule VARCHAR(100) NOT NULL, as_of VARCHAR(10) NOT NULL, "
                    "grp VARCHAR(10) NOT NULL, template VARCHAR(255), priority INTEGER, fields TEXT, "
                    "status VARCHAR(10) NOT NULL, attempts INTEGER NOT NULL, last_error TEXT, "
                    "created_at VARCHAR(32) NOT NULL, delivered_at VARCHAR(32))")
    box = Outbox(f"sqlite:///{db}")
    events = pd.DataFrame([{"idempotency_key": idempotency_key(cid, rule, day), "customer_id": cid, "rule": rule,
                            "as_of": day, "group": "send", "template": "t", "priority": 1,
                            "fields": json.dumps({})}
                           for cid in ("00001", "00002", "000010")
                           for rule, day in (("winback_due", "1997-09-30"), ("tier_keep", "1997-10-31"))])
    box.record(events[list(EVENT_COLUMNS)])
    mine = customer_events(box, "00001")
    assert [(e["as_of"], e["rule"]) for e in mine] == [("1997-10-31", "tier_keep"), ("1997-09-30", "winback_due")]
    assert customer_events(box, "0000") == []
    with sqlite3.connect(db) as con:
        indexes = {row[1] for row in con.execute("PRAGMA index_list('trigger_events')")}
        plan = " ".join(str(r) for r in con.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM trigger_events WHERE customer_id = '00001'"))
    assert "ix_trigger_events_customer_id" in indexes
    assert "ix_trigger_events_customer_id" in plan
    box.close()


def test_sign_in_throttle_counts_failures_per_address_within_the_window():
    now = [1000.0]
    throttle = SignInThrottle(limit=3, window_seconds=60, max_addresses=2, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.retry_after("a") == 0
        throttle.failed("a")
    assert throttle.retry_after("a") == 60 and throttle.retry_after("b") == 0
    now[0] += 59.5
    assert throttle.retry_after("a") == 1
    now[0] += 0.5                                    # the oldest failure leaves the window
    assert throttle.retry_after("a") == 0
    throttle.failed("a"), throttle.failed("a")
    throttle.succeeded("a")                          # a good sign-in forgets the failures
    assert throttle.retry_after("a") == 0
    for address in ("b", "c", "d"):                  # bounded: the stalest address is forgotten
        throttle.failed(address)
        now[0] += 1
    assert set(throttle._failures) == {"c", "d"}


def test_model_version_header_comes_from_the_answer_when_it_names_one():
    """A champion swap between the Guard reading the version and the handler reading the model
    must not give a header naming one version and a body naming another."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from serving.security import Guard

    async def swapped(_):                       # computed with version 2 after the Guard read 1
        return JSONResponse({"model_version": "2"}, headers={"X-Model-Version": "2"})

    async def plain(_):
        return JSONResponse({})

    app = Guard(Starlette(routes=[Route("/score", swapped, methods=["POST"]), Route("/healthz", plain)]),
                lambda: (KeyRing(["k"]), 1000, "1"))
    with TestClient(app) as client:
        answer = client.post("/score", json={}, headers={"Authorization": "Bearer k"})
        assert answer.headers.get_list("x-model-version") == ["2"] and answer.json()["model_version"] == "2"
        assert client.get("/healthz").headers.get_list("x-model-version") == ["1"]
