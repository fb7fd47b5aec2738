"""Engagement events as features (issue 19, item 4): counts per type in the windows and days
since the last event, as of the cutoff only; types fixed by the reference; bad logs as errors."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal
from typer.testing import CliRunner

from features import (
    EngagementLog,
    FeatureSettings,
    SideData,
    TransactionDataError,
    build_features,
    prepare,
    read_events,
)
from features.events import MAX_EVENT_TYPES, events_as_of
from training.cli import app

runner = CliRunner()

TX = pd.DataFrame({
    "customer_id": ["A", "A", "B", "C"],
    "timestamp": pd.to_datetime(["2024-01-05", "2024-02-10", "2024-01-20", "2024-03-01"]),
    "amount": [10.0, 20.0, 5.0, 7.5],
})
CUTOFF = "2024-03-31"
DAY = pd.Timestamp(CUTOFF)


def events(rows: list[tuple[str, str, str]], **kw) -> EngagementLog:
    return EngagementLog.from_frame(pd.DataFrame(rows, columns=["customer_id", "timestamp", "event_type"]), **kw)


ROWS = [("A", "2024-03-31 23:59", "visit"), ("A", "2024-03-02", "visit"), ("A", "2024-01-01", "visit"),
        ("A", "2024-03-15", "email_open"), ("B", "2023-06-01", "visit"), ("B", "2024-04-01", "visit"),
        ("C", "2024-04-02", "cart"), ("Z", "2024-03-30", "visit")]


def test_counts_per_type_and_window_and_days_since_the_last():
    table = build_features(TX, CUTOFF, events=events(ROWS)).set_index("customer_id")
    a, b, c = table.loc["A"], table.loc["B"], table.loc["C"]
    assert [a[f"events_visit_{n}d"] for n in (30, 90, 180, 365)] == [2, 2, 3, 3]   # ages 0, 29, 90
    assert a["days_since_visit"] == 0 and a["days_since_email_open"] == 16
    assert a["events_email_open_30d"] == 1
    assert b["events_visit_365d"] == 1 and b["events_visit_180d"] == 0 and b["days_since_visit"] == 304
    assert c[[col for col in table if col.startswith("events_")]].eq(0).all()        # nothing before the cutoff
    assert pd.isna(c["days_since_visit"])
    assert "events_cart_30d" not in table                                            # first seen after the cutoff
    assert "Z" not in table.index


def test_without_events_the_table_is_as_before_and_with_them_the_columns_come_last():
    base = build_features(TX, CUTOFF)
    table = build_features(TX, CUTOFF, events=events(ROWS))
    assert_frame_equal(table[base.columns], base)
    _, _, reference = prepare(TX, CUTOFF, side=SideData(events=events(ROWS)))
    assert reference.event_types == ("email_open", "visit")
    assert list(table.columns) == list(base.columns) + reference.event_feature_columns
    assert reference.event_feature_columns[:5] == [
        "events_email_open_30d", "events_email_open_90d", "events_email_open_180d", "events_email_open_365d",
        "days_since_email_open"]


def test_the_reference_fixes_the_types_every_door_builds():
    _, _, reference = prepare(TX, CUTOFF, side=SideData(events=events(ROWS)))
    later = events([("A", "2024-03-30", "support"), ("A", "2024-03-29", "visit")])
    table = build_features(TX, CUTOFF, reference=reference, events=later).set_index("customer_id")
    assert "events_support_30d" not in table and table.loc["A", "events_visit_30d"] == 1
    assert table.loc["A", "events_email_open_365d"] == 0
    missing = build_features(TX, CUTOFF, reference=reference)
    assert missing[reference.event_feature_columns].isna().all().all()
    assert list(missing.columns) == list(table.reset_index().columns)


def test_the_windows_are_the_references():
    custom = FeatureSettings(windows_days=(7, 14))
    table = build_features(TX, CUTOFF, settings=custom, events=events(ROWS))
    assert [c for c in table if c.startswith("events_visit")] == ["events_visit_7d", "events_visit_14d"]


def test_events_are_read_in_the_shop_zone():
    zone = [("A", "2024-03-31T17:00:00Z", "visit")]        # 01:00 on 1 April in Taipei: after the cutoff
    from features import IngestPolicy, TransactionLog

    log = TransactionLog.from_frame(TX, policy=IngestPolicy(timezone="Asia/Taipei"))
    table = build_features(log, CUTOFF, events=events(zone + [("A", "2024-03-01", "visit")],
                                                      policy=IngestPolicy(timezone="Asia/Taipei")))
    assert table.set_index("customer_id").loc["A", "days_since_visit"] == 30
    with pytest.raises(ValueError, match="time zone"):
        build_features(log, CUTOFF, events=events(zone))


event_row = st.tuples(st.sampled_from(list("ABCD")), st.integers(0, 500), st.integers(0, 86_399),
                      st.sampled_from(["visit", "email_open", "cart"]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event_row, min_size=1, max_size=40), st.lists(event_row, min_size=1, max_size=20))
def test_events_after_the_cutoff_change_nothing(rows, later):
    def frame(rs, start):
        return [(r[0], str(start + pd.Timedelta(days=r[1], seconds=r[2])), r[3]) for r in rs]

    before = frame(rows, pd.Timestamp("2023-01-01"))
    before = [r for r in before if pd.Timestamp(r[1]) < DAY + pd.Timedelta(days=1)]
    if not before:
        return
    after = frame(later, DAY + pd.Timedelta(days=1))
    assert_frame_equal(build_features(TX, CUTOFF, events=events(before)),
                       build_features(TX, CUTOFF, events=events(before + after)))


def test_events_as_of_lists_one_row_per_customer_with_events():
    table = events_as_of(events(ROWS), CUTOFF)
    assert table["customer_id"].tolist() == ["A", "B", "Z"]


def test_too_many_event_types_are_refused():
    many = [("A", "2024-03-01", f"page_{i}") for i in range(MAX_EVENT_TYPES + 1)]
    with pytest.raises(TransactionDataError, match="more than 50"):
        build_features(TX, CUTOFF, events=events(many))


def test_types_naming_the_same_column_are_refused():
    with pytest.raises(TransactionDataError, match="name the same columns"):
        build_features(TX, CUTOFF,
                       events=events([("A", "2024-03-01", "email open"), ("A", "2024-03-02", "email_open")]))


# ------------------------------------------------------------------- bad files via the CLI

GOOD_TX = "customer_id,timestamp,amount\nA,2024-01-01,10\nB,2024-01-02,5\n"
HEADER = "customer_id,timestamp,event_type\n"
BAD_EVENTS = {
    "bad date": (HEADER + "A,2024-01-01,visit\nB,2024-13-01,visit\n", ("events.csv", "row 2 (line 3)", "'timestamp'")),
    "date 1900": (HEADER + "A,1900-01-01,visit\n", ("events.csv", "row 1 (line 2)", "'timestamp'", "1970-01-01")),
    "empty type": (HEADER + "A,2024-01-01,visit\nA,2024-01-02,\n", ("events.csv", "row 2", "'event_type'", "empty")),
    "empty id": (HEADER + ",2024-01-01,visit\n", ("events.csv", "row 1", "'customer_id'", "empty")),
    "NUL in a type": (HEADER + "A,2024-01-01,vi\x00sit\n", ("events.csv", "row 1", "'event_type'", "NUL")),
    "missing type column": ("customer_id,timestamp\nA,2024-01-01\n",
                            ("events.csv", "'event_type'", "missing", "--events-type-col")),
    "unbalanced quote": (HEADER + 'A,2024-01-01,visit\n"B,2024-01-02,visit\n', ("events.csv", "line 3", "quote")),
    "header only": (HEADER, ("no events in", "events.csv")),
}


@pytest.mark.parametrize("case", list(BAD_EVENTS), ids=list(BAD_EVENTS))
def test_a_bad_events_log_is_one_clear_message_exit_2_and_nothing_written(case, tmp_path):
    body, says = BAD_EVENTS[case]
    (tmp_path / "log.csv").write_text(GOOD_TX)
    (tmp_path / "events.csv").write_bytes(body.encode())
    out = tmp_path / "out"
    out.mkdir()
    result = runner.invoke(app, ["features", "-t", str(tmp_path / "log.csv"), "--events", str(tmp_path / "events.csv"),
                                 "--out", str(out / "features.parquet")])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert text.startswith("error: ") and "Traceback" not in text
    for fragment in says:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    assert list(out.iterdir()) == []


def test_events_columns_can_be_named_and_parquet_read(tmp_path):
    (tmp_path / "log.csv").write_text(GOOD_TX)
    pd.DataFrame({"member": ["A", "A"], "at": pd.to_datetime(["2024-01-01", "2024-01-02"]),
                  "kind": ["visit", "cart"]}).to_parquet(tmp_path / "ev.parquet")
    assert read_events(tmp_path / "ev.parquet", "member", "at", "kind").types == ("cart", "visit")
    out = tmp_path / "f.parquet"
    result = runner.invoke(app, ["features", "-t", str(tmp_path / "log.csv"), "--events", str(tmp_path / "ev.parquet"),
                                 "--events-id-col", "member", "--events-timestamp-col", "at",
                                 "--events-type-col", "kind", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out).set_index("customer_id")
    assert table.loc["A", "events_visit_30d"] == 1 and table.loc["B", "events_cart_30d"] == 0
    assert table.loc["A", "days_since_visit"] == 1
