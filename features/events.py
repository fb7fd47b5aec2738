"""Engagement events, an optional second log: visits, email opens and clicks, carts, support calls.

An events file (CSV or Parquet, or a DataFrame) has a customer id, a timestamp and an event
type, and is read and checked like a transaction log (:mod:`features.transactions`): the same
formats, encodings, time zone and date format, plausible dates, and errors naming file, row
(and CSV line) and column. Rows are reduced once to counts per customer, type and day.

As of cutoff C each event type ``t`` known to the feature reference gives, from the events on
or before day C only:

* ``events_<t>_<N>d``: the events in the window (C − N days, C], one column per window of the
  :class:`~features.settings.FeatureSettings` (30, 90, 180, 365 days), 0 when there were none;
* ``days_since_<t>``: days from the last such event to C (0 on day C), missing when none.

The types are fixed when the reference is fitted (those seen on or before its cutoff, at most
:data:`MAX_EVENT_TYPES`), so every door builds the same columns; a type the reference does not
know is not counted. Without an events log a reference with event types gives missing values.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from features.reference import event_columns, feature_token
from features.settings import FeatureSettings, IngestPolicy
from features.transactions import (
    PLAUSIBLE_DATES,
    RawInput,
    TransactionDataError,
    checked_count,
    ident,
    materialize,
    open_raw,
    open_raw_frame,
    sql_escape,
    timestamp_expr,
)

#: More event types than this is an error: each type adds a column per window.
MAX_EVENT_TYPES = 50

#: Columns of the per-day table every events log is reduced to.
EVENT_DAYS = "event_days"


@dataclass(frozen=True)
class EngagementLog:
    """A validated events log: the table :data:`EVENT_DAYS` (``customer_id``, ``event_type``,
    ``day``, ``events``) on its own connection, with every type in the log. Build it with
    :func:`read_events` or :meth:`from_frame`."""

    raw: RawInput
    types: tuple[str, ...]
    rows: int
    source: str
    timezone: str

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, id_col: str = "customer_id", timestamp_col: str = "timestamp",
                   type_col: str = "event_type", policy: IngestPolicy = IngestPolicy(), *,
                   source: str = "<events>",
                   dates: tuple[dt.date, dt.date] = PLAUSIBLE_DATES, allow_empty: bool = False) -> "EngagementLog":
        """Validate a DataFrame of events (rows numbered from 1 in frame order). ``allow_empty``:
        no rows means no events (a request whose customers had none), not a missing file."""
        return _open(open_raw_frame(frame, "events", policy, source=source), id_col, timestamp_col, type_col, dates,
                     allow_empty)

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The connection holding the :data:`EVENT_DAYS` table (the raw input's own)."""
        return self.raw.con


def read_events(paths: str | Path | Sequence[str | Path], id_col: str = "customer_id",
                timestamp_col: str = "timestamp", type_col: str = "event_type",
                policy: IngestPolicy = IngestPolicy(), *, encoding: str = "utf-8",
                memory_limit: str | None = None, threads: int | None = None,
                dates: tuple[dt.date, dt.date] = PLAUSIBLE_DATES) -> EngagementLog:
    """Open an events file (CSV or Parquet; paths or globs) as an :class:`EngagementLog`;
    timestamps are read in ``policy``'s time zone and date format, like a log's."""
    raw = open_raw(paths, "events", policy, encoding=encoding, memory_limit=memory_limit, threads=threads)
    try:
        return _open(raw, id_col, timestamp_col, type_col, dates)
    except BaseException:
        raw.close()
        raise


def event_types(events: EngagementLog, cutoff: dt.date | str,
                settings: FeatureSettings = FeatureSettings()) -> tuple[str, ...]:
    """The event types seen on or before day ``cutoff``, sorted: what a feature reference fitted
    there records. More than :data:`MAX_EVENT_TYPES`, or two types that name the same column,
    is an error."""
    from features.build import cutoff_literal

    types = tuple(t for (t,) in events.con.execute(
        f"SELECT DISTINCT event_type FROM {EVENT_DAYS} WHERE day <= {cutoff_literal(cutoff)} ORDER BY 1").fetchall())
    if len(types) > MAX_EVENT_TYPES:
        raise TransactionDataError(
            f"{events.source}: {len(types)} event types, more than {MAX_EVENT_TYPES}: each adds "
            f"{len(settings.windows_days) + 1} feature columns; group them first (e.g. page views by section)",
            source=events.source)
    named: dict[str, str] = {}
    for t in types:
        token = feature_token(t)
        if not token or token in named or token == "last_purchase":
            problem = ("has no letters or digits to name a column after" if not token else
                       f"and {named[token]!r} name the same columns" if token in named else
                       "would name a column the feature table already has (days_since_last_purchase)")
            raise TransactionDataError(f"{events.source}: event type {t!r} {problem}; rename it",
                                       source=events.source)
        named[token] = t
    return types


def event_features_sql(events: EngagementLog, cutoff: dt.date | str, types: tuple[str, ...],
                       windows_days: tuple[int, ...]) -> str:
    """One row per customer with an event of ``types`` on or before day ``cutoff``: the
    columns of :func:`features.reference.event_columns` per type (counts 0 when none)."""
    from features.build import cutoff_literal

    c = cutoff_literal(cutoff)
    parts = []
    for t in types:
        names = event_columns(t, windows_days)
        is_type = f"event_type = '{sql_escape(t)}'"
        for n, name in zip(windows_days, names):
            parts.append(f"coalesce(sum(events) FILTER (WHERE {is_type} AND date_diff('day', day, {c}) < {int(n)}), 0)"
                         f"::DOUBLE AS {ident(name)}")
        parts.append(f"date_diff('day', max(day) FILTER (WHERE {is_type}), {c})::DOUBLE AS {ident(names[-1])}")
    known = ", ".join(f"'{sql_escape(t)}'" for t in types) or "NULL"
    return f"""
        SELECT customer_id, {', '.join(parts)}
        FROM {EVENT_DAYS} WHERE day <= {c} AND event_type IN ({known})
        GROUP BY customer_id ORDER BY customer_id"""


def events_as_of(events: EngagementLog, cutoff: dt.date | str, types: tuple[str, ...] | None = None,
                 settings: FeatureSettings = FeatureSettings()) -> pd.DataFrame:
    """The event features as of ``cutoff`` (every type seen by then unless ``types`` is given),
    one row per customer with an event, sorted by ``customer_id``."""
    chosen = event_types(events, cutoff, settings) if types is None else types
    return events.con.execute(event_features_sql(events, cutoff, chosen, settings.windows_days)).df()


def _open(raw: RawInput, id_col: str, timestamp_col: str, type_col: str,
          dates: tuple[dt.date, dt.date], allow_empty: bool = False) -> EngagementLog:
    raw.require({id_col: ("customer id", "--events-id-col"), timestamp_col: ("event time", "--events-timestamp-col"),
                 type_col: ("event type", "--events-type-col")})

    def typed_view(raw_types: dict[str, str]) -> str:
        return f"""CREATE OR REPLACE TEMP VIEW typed AS SELECT
            NULLIF(trim(CAST({ident(id_col)} AS VARCHAR)), '') AS customer_id,
            {timestamp_expr(timestamp_col, raw_types[timestamp_col], raw.policy)} AS ts,
            NULLIF(trim(CAST({ident(type_col)} AS VARCHAR)), '') AS event_type,
            CAST({ident(timestamp_col)} AS VARCHAR) AS _ts_raw, _file, _row
        FROM raw"""

    raw.con.execute(typed_view(raw.types))
    earliest, latest = (d.isoformat() for d in dates)
    date_hint = " (set the format with --date-format, e.g. %Y%m%d)" if not raw.policy.date_format else ""
    checks = [("customer_id IS NULL", id_col, "a non-empty customer id", None),
              ("contains(customer_id, chr(0))", id_col, "an id without NUL bytes", "customer_id"),
              ("ts IS NULL", timestamp_col, f"a date or timestamp{date_hint}", "_ts_raw"),
              (f"ts < DATE '{earliest}' OR ts >= DATE '{latest}'", timestamp_col,
               f"a date from {earliest} to before {latest}", "_ts_raw"),
              ("event_type IS NULL", type_col, "an event type (visit, email_open, ...)", None),
              ("contains(event_type, chr(0))", type_col, "text without NUL bytes", "event_type")]
    counts = checked_count(raw, "SELECT count(*), " + ", ".join(
        f"count(*) FILTER (WHERE {cond})" for cond, *_ in checks) + " FROM typed")
    if counts[0] == 0 and not allow_empty:
        raise TransactionDataError(f"no events in {raw.source}: it has a header but no rows", source=raw.source, row=0)
    for (cond, column, expected, raw_value), n_bad in zip(checks, counts[1:]):
        if n_bad:
            raise raw.first_bad(typed_view, cond, column, expected, raw_value, n_bad)
    materialize(raw, EVENT_DAYS, "SELECT customer_id, event_type, CAST(ts AS DATE) AS day, count(*) AS events "
                                 "FROM typed GROUP BY ALL")
    types = tuple(t for (t,) in raw.con.execute(f"SELECT DISTINCT event_type FROM {EVENT_DAYS} ORDER BY 1").fetchall())
    return EngagementLog(raw, types, int(counts[0]), raw.source, raw.policy.timezone)
