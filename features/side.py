"""Side data: what a shop knows of its customers besides the transactions.

:class:`SideData` bundles the customer attributes (:mod:`features.attributes`) and the
engagement events (:mod:`features.events`) that travel with a transaction log to
:func:`features.build_features`, :func:`features.labelled_features` and the feature job. A
feature reference fitted with side data records its schema (attribute kinds and categories,
event types); the feature table then gains ``attr_*``, ``events_<type>_<N>d`` and
``days_since_<type>`` after the transaction features, joined per customer as of the cutoff.
A reference without side data builds exactly the table it always did.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import duckdb

from features.attributes import CustomerAttributes, as_of_sql, attribute_specs, read_customers
from features.events import EngagementLog, event_features_sql, event_types, read_events
from features.reference import FeatureReference
from features.settings import IngestPolicy
from features.transactions import ident


class _Opened(TypedDict):
    """How both side inputs are read (as the log is)."""

    policy: IngestPolicy
    encoding: str
    memory_limit: str | None
    threads: int | None


@dataclass(frozen=True)
class SideData:
    """Customer attributes and engagement events for the same customers as a log (either may
    be None)."""

    customers: CustomerAttributes | None = None
    events: EngagementLog | None = None

    def __bool__(self) -> bool:
        return self.customers is not None or self.events is not None


def open_side(customers: str | Path | Sequence[str | Path] | None = None,
              events: str | Path | Sequence[str | Path] | None = None, *,
              customers_id_col: str = "customer_id", events_id_col: str = "customer_id",
              events_timestamp_col: str = "timestamp", events_type_col: str = "event_type",
              policy: IngestPolicy = IngestPolicy(), encoding: str = "utf-8",
              memory_limit: str | None = None, threads: int | None = None,
              screen: bool = True) -> SideData | None:
    """Read and validate a customers file and an events log (either may be None) as
    :class:`SideData`, both in ``policy``'s time zone and date format (the log's: one shop
    day); None when neither is given. The CLI's ``--customers``/``--events`` and the service's
    log source (``ingest["side"]``, these arguments as JSON) open them here. ``screen``: see
    :func:`features.attributes.read_customers` (False where a model's reference is used)."""
    if customers is None and events is None:
        return None
    opened: _Opened = {"policy": policy, "encoding": encoding, "memory_limit": memory_limit, "threads": threads}
    attrs = read_customers(customers, customers_id_col, screen=screen, **opened) if customers is not None else None
    log = (read_events(events, events_id_col, events_timestamp_col, events_type_col, **opened)
           if events is not None else None)
    return SideData(attrs, log)


def fit_side(reference: FeatureReference, side: SideData | None, cutoff: dt.date | str) -> FeatureReference:
    """``reference`` with the side data's schema as of ``cutoff``: attribute kinds and the
    categories known then, the event types seen by then."""
    if not side:
        return reference
    _check_zone(side, reference.timezone)
    return dataclasses.replace(
        reference,
        attributes=attribute_specs(side.customers, cutoff) if side.customers is not None else (),
        event_types=event_types(side.events, cutoff, reference.settings) if side.events is not None else ())


def with_side(con: duckdb.DuckDBPyConnection, query: str, cutoff: dt.date | str,
              reference: FeatureReference, side: SideData | None) -> str:
    """The feature ``query`` with the reference's side columns joined as of ``cutoff``.

    The side tables are computed on their own connections, one row per customer, and
    registered on ``con`` (the log's) as ``side_attributes`` and ``side_events`` (so run the
    query before preparing another cutoff on the same log). A column the reference records
    but the side data lacks is missing (NULL); side data the reference does not record (a
    model trained without it) is not read, and the table is the one it always was.
    """
    side = side or SideData()
    if not reference.side_columns:
        return query
    _check_zone(side, reference.timezone)
    columns, joins = [], []
    if reference.attributes:
        if side.customers is not None:
            con.register("side_attributes", side.customers.con.sql(
                as_of_sql(side.customers, cutoff, reference.attributes)).to_arrow_table())
            joins.append("LEFT JOIN side_attributes AS a USING (customer_id)")
            columns += [f"a.{ident(s.feature)}" for s in reference.attributes]
        else:
            columns += [f"NULL::{'DOUBLE' if s.kind == 'numeric' else 'VARCHAR'} AS {ident(s.feature)}"
                        for s in reference.attributes]
    if reference.event_types:
        names = reference.event_feature_columns
        if side.events is not None:
            con.register("side_events", side.events.con.sql(event_features_sql(
                side.events, cutoff, reference.event_types, reference.settings.windows_days)).to_arrow_table())
            joins.append("LEFT JOIN side_events AS e USING (customer_id)")
            columns += [f"e.{ident(n)}" if n.startswith("days_since_") else f"coalesce(e.{ident(n)}, 0) AS {ident(n)}"
                        for n in names]
        else:
            columns += [f"NULL::DOUBLE AS {ident(n)}" for n in names]
    return f"""
        SELECT f.*, {', '.join(columns)}
        FROM ({query}) AS f {' '.join(joins)}
        ORDER BY f.customer_id"""


def _check_zone(side: SideData, timezone: str) -> None:
    for name, part in (("customers file", side.customers), ("events log", side.events)):
        if part is not None and part.timezone != timezone:
            raise ValueError(f"the {name} {part.source} was read in time zone {part.timezone!r}, but the "
                             f"features define days in {timezone!r}; read it with --timezone {timezone}")
