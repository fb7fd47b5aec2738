"""The trigger outbox: CRM events recorded once, then delivered to files and a signed webhook.

Events are committed to ``trigger_events`` (SQLite by default, PostgreSQL with the same code)
before anything is delivered, each under its ``idempotency_key``; recording the same events
again adds nothing, and a run killed at any moment either committed all of its new events or
none, so the next run completes it without duplicates or losses.

Delivery is **at least once**. A batch is marked ``delivered`` only after the receiver answered
2xx; a crash between the POST and that mark sends the batch again on the next run. Receivers
make this exactly-once on their side by keeping the ``idempotency_key`` every event carries and
ignoring a key they have already seen.

Webhook batches are ``{"events": [...]}`` signed like Stripe's and GitHub's
(:mod:`crm.delivery`).

Statuses: ``pending`` (a send event not yet delivered), ``delivered``, ``holdout`` (recorded
like a sent event for cooldowns and the lift report, never delivered), ``skipped`` (an event of
the group ``skipped_budget``: the day's budget left it out; recorded for the report, never
delivered, not counted by cooldowns) and ``dead`` (a batch that failed ``max_attempts`` times:
the dead letters, resent by :meth:`Outbox.replay`).

Schema changes are made when an outbox opens: version 2 (issue #21) widened ``grp`` to 20
characters for ``skipped_budget`` (``ALTER TABLE`` on PostgreSQL and MySQL; SQLite does not
enforce the length, so an older SQLite outbox opens as it is).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx
import pandas as pd
from sqlalchemy import (
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError

from crm.delivery import SECRET_VARIABLE, post_signed
from crm.rules import EVENT_COLUMNS, SKIPPED  # one home: the rules define what an event is

#: What :meth:`Outbox.events` adds to them.
STATE_COLUMNS = ("status", "attempts", "last_error", "created_at", "delivered_at")
STATUSES = ("pending", "delivered", "holdout", "skipped", "dead")
GROUPS = ("send", "holdout", SKIPPED)
#: The status an event of each group starts with.
INITIAL_STATUS = {"send": "pending", "holdout": "holdout", SKIPPED: "skipped"}
GROUP_CHARS = 20

#: Keys per ``IN (...)`` and rows per INSERT: well under every database's parameter limit.
CHUNK = 500

metadata = MetaData()
trigger_events = Table(
    "trigger_events", metadata,
    Column("idempotency_key", String(255), primary_key=True),
    Column("customer_id", String(255), nullable=False),
    Column("rule", String(100), nullable=False),
    Column("as_of", String(10), nullable=False),          # ISO date: sorts and compares as text
    Column("grp", String(GROUP_CHARS), nullable=False),    # "group" is a reserved word in SQL
    Column("template", String(255)),
    Column("priority", Integer),
    Column("fields", Text),                                # JSON text
    Column("status", String(10), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("created_at", String(32), nullable=False),      # ISO timestamps in UTC
    Column("delivered_at", String(32)),
    Index("ix_trigger_events_status_as_of", "status", "as_of"),
    Index("ix_trigger_events_as_of_rule", "as_of", "rule"),
    Index("ix_trigger_events_customer_id", "customer_id"),    # one customer's page in the dashboard
)


class Outbox:
    """The trigger events of every day and their delivery state, in the database at ``state_uri``.

    ``state_uri`` is a SQLAlchemy URL: ``sqlite:///path/to/state.db`` (its folder is created)
    or ``postgresql+psycopg://...``. The table is created if missing.
    """

    def __init__(self, state_uri: str):
        self.state_uri = state_uri
        url = make_url(state_uri)
        options = {}
        if url.get_backend_name() == "sqlite":
            if url.database and url.database != ":memory:":
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            options["connect_args"] = {"timeout": 60}   # wait for another writer, don't fail
        self.engine = create_engine(url, **options)
        metadata.create_all(self.engine, checkfirst=True)
        for index in trigger_events.indexes:          # create_all skips indexes of an existing table
            index.create(self.engine, checkfirst=True)
        _widen_group_column(self.engine)

    def __repr__(self) -> str:
        return f"Outbox({self.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    # -- recording ---------------------------------------------------------------------------

    def record(self, events: pd.DataFrame) -> int:
        """Commit ``events`` in one transaction, skipping keys already recorded; the new count.

        Send events start ``pending``, holdout events ``holdout``, ``skipped_budget`` events
        ``skipped``. A key repeated within
        ``events`` is recorded once (its first row). Nothing is delivered here. Keys are looked up
        in chunks and the rest inserted inside the same transaction, which works on every
        database; a concurrent run inserting the same keys makes it start over (three times).
        """
        rows = _event_rows(events)
        if not rows:
            return 0
        tries = 3
        while True:
            tries -= 1
            try:
                with self.engine.begin() as conn:
                    existing = _existing_keys(conn, [r["idempotency_key"] for r in rows])
                    new = [r for r in rows if r["idempotency_key"] not in existing]
                    now = _utcnow()
                    for chunk in _chunks(new):
                        conn.execute(insert(trigger_events), [{**r, "created_at": now} for r in chunk])
                return len(new)
            except IntegrityError:       # another run committed some of these keys meanwhile: again
                if not tries:
                    raise

    # -- reading -----------------------------------------------------------------------------

    def past(self, since: dt.date | None = None) -> pd.DataFrame:
        """``customer_id``, ``rule``, ``as_of``, ``group`` of every event recorded (sent or held
        out, whatever its delivery state) on or after ``since``: what cooldowns and caps count."""
        query = select(trigger_events.c.customer_id, trigger_events.c.rule, trigger_events.c.as_of,
                       trigger_events.c.grp.label("group"))
        if since is not None:
            query = query.where(trigger_events.c.as_of >= _iso_date(since, "since"))
        query = query.order_by(trigger_events.c.as_of, trigger_events.c.rule, trigger_events.c.customer_id)
        with self.engine.connect() as conn:
            result = conn.execute(query)
            return pd.DataFrame(result.fetchall(), columns=list(result.keys())).astype(
                {"customer_id": str, "rule": str, "as_of": str, "group": str})

    def events(self, as_of: str | None = None, status: str | None = None,
               customer_id: str | None = None) -> pd.DataFrame:
        """Every recorded event (``EVENT_COLUMNS`` then ``STATE_COLUMNS``), optionally of one
        day, one status and one customer, ordered by day, rule, priority and key."""
        query = select(*_event_selection(), *(trigger_events.c[c] for c in STATE_COLUMNS))
        if customer_id is not None:
            query = query.where(trigger_events.c.customer_id == str(customer_id))
        if as_of is not None:
            query = query.where(trigger_events.c.as_of == _iso_date(as_of, "as_of"))
        if status is not None:
            if status not in STATUSES:
                raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
            query = query.where(trigger_events.c.status == status)
        return self._frame(query, [*EVENT_COLUMNS, *STATE_COLUMNS])

    def dead_letters(self) -> pd.DataFrame:
        """The events whose delivery failed ``max_attempts`` times."""
        return self.events(status="dead")

    # -- delivery: files ---------------------------------------------------------------------

    def deliver_files(self, directory: str | Path, as_of: str) -> list[Path]:
        """Write the day's send events per rule to ``<directory>/<as_of>/<rule>.parquet`` and
        ``.csv`` (UTF-8 with a BOM), each atomically; the paths written.

        The files hold ``EVENT_COLUMNS`` only, not the delivery state, so writing the same day
        again gives the same bytes. Holdout events are never written.
        """
        from crm.exports import write_table  # heavy imports (the scorer): only when writing

        day = _iso_date(as_of, "as_of")
        query = select(*_event_selection()).where(trigger_events.c.as_of == day,
                                                  trigger_events.c.grp == "send")
        frame = self._frame(query, list(EVENT_COLUMNS))
        written = []
        for rule, events in frame.groupby("rule", sort=True):
            events = events.reset_index(drop=True)
            for suffix in (".parquet", ".csv"):
                written.append(write_table(events, Path(directory) / day / f"{_file_name(rule)}{suffix}"))
        return written

    # -- delivery: webhook -------------------------------------------------------------------

    def deliver_webhook(self, url: str, secret: str, as_of: str | None = None, batch_size: int = 500,
                        max_attempts: int = 5, base_delay: float = 0.5, max_delay: float = 30,
                        timeout: float = 10, sleep: Callable[[float], None] = time.sleep) -> dict:
        """POST the pending send events (of ``as_of``, or of every day) in signed batches.

        A batch answered 2xx is marked ``delivered``; any other answer or a network error is
        retried after ``random.uniform(0, min(max_delay, base_delay * 2**attempt))`` seconds
        (exponential backoff with full jitter), and after ``max_attempts`` failures its events
        become ``dead``. Each failure adds one to ``attempts`` and sets ``last_error`` (the
        status and the start of the answer, never the request body). Holdout events are never
        sent. Returns ``{"delivered": events, "dead": events, "batches": batches}``.

        Delivery is at least once: see the module's docstring.
        """
        query = select(trigger_events.c.idempotency_key).where(
            trigger_events.c.status == "pending", trigger_events.c.grp == "send")
        if as_of is not None:
            query = query.where(trigger_events.c.as_of == _iso_date(as_of, "as_of"))
        with self.engine.connect() as conn:
            keys = list(conn.execute(query.order_by(trigger_events.c.as_of, trigger_events.c.rule,
                                                    trigger_events.c.idempotency_key)).scalars())
        return self._send(keys, url, secret, batch_size=batch_size, max_attempts=max_attempts,
                          base_delay=base_delay, max_delay=max_delay, timeout=timeout, sleep=sleep)

    def replay(self, url: str, secret: str, **kw) -> dict:
        """Set the dead letters back to ``pending`` (attempts 0) and deliver them; the
        :meth:`deliver_webhook` counts plus ``replayed``, the dead events taken up again."""
        with self.engine.begin() as conn:
            keys = list(conn.execute(
                select(trigger_events.c.idempotency_key).where(trigger_events.c.status == "dead")
                .order_by(trigger_events.c.as_of, trigger_events.c.rule, trigger_events.c.idempotency_key)
            ).scalars())
            for chunk in _chunks(keys):
                conn.execute(update(trigger_events)
                             .where(trigger_events.c.idempotency_key.in_(chunk), trigger_events.c.status == "dead")
                             .values(status="pending", attempts=0))
        return {**self._send(keys, url, secret, **kw), "replayed": len(keys)}

    def _send(self, keys: list[str], url: str, secret: str, *, batch_size: int = 500, max_attempts: int = 5,
              base_delay: float = 0.5, max_delay: float = 30, timeout: float = 10,
              sleep: Callable[[float], None] = time.sleep) -> dict:
        if not secret:
            raise ValueError(f"the webhook secret is empty; set {SECRET_VARIABLE}")
        if batch_size < 1 or max_attempts < 1:
            raise ValueError(f"batch_size and max_attempts must be at least 1, got {batch_size} and {max_attempts}")
        counts = {"delivered": 0, "dead": 0, "batches": 0}
        with httpx.Client(timeout=timeout) as client:
            for start in range(0, len(keys), batch_size):
                batch = self._payload(keys[start:start + batch_size])
                if not batch:
                    continue
                body = json.dumps({"events": batch}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
                sent = [e["idempotency_key"] for e in batch]
                counts["batches"] += 1
                for attempt in range(max_attempts):
                    error = post_signed(client, url, secret, body)
                    if error is None:
                        self._mark(sent, status="delivered", delivered_at=_utcnow())
                        counts["delivered"] += len(sent)
                        break
                    last = attempt == max_attempts - 1
                    self._mark(sent, status="dead" if last else "pending", last_error=error)
                    if last:
                        counts["dead"] += len(sent)
                    else:
                        sleep(random.uniform(0, min(max_delay, base_delay * 2 ** attempt)))
        return counts

    def _payload(self, keys: list[str]) -> list[dict]:
        """The events to post: still pending, ``fields`` as a JSON object."""
        with self.engine.connect() as conn:
            rows: list[dict] = []
            for chunk in _chunks(keys):
                result = conn.execute(select(*_event_selection()).where(
                    trigger_events.c.idempotency_key.in_(chunk), trigger_events.c.status == "pending",
                    trigger_events.c.grp == "send"))
                rows.extend(dict(zip(EVENT_COLUMNS, row)) for row in result)
        order = {k: i for i, k in enumerate(keys)}
        rows.sort(key=lambda r: order[r["idempotency_key"]])
        for row in rows:
            row["fields"] = json.loads(row["fields"]) if row["fields"] else {}
        return rows

    def _mark(self, keys: list[str], *, status: str, **values) -> None:
        """One delivery attempt's outcome for ``keys``, committed in one transaction."""
        with self.engine.begin() as conn:
            for chunk in _chunks(keys):
                conn.execute(update(trigger_events)
                             .where(trigger_events.c.idempotency_key.in_(chunk),
                                    trigger_events.c.status == "pending")
                             .values(status=status, attempts=trigger_events.c.attempts + 1, **values))

    def _frame(self, query, columns: list[str]) -> pd.DataFrame:
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(trigger_events.c.as_of, trigger_events.c.rule,
                                               trigger_events.c.priority, trigger_events.c.idempotency_key)).fetchall()
        frame = pd.DataFrame(rows, columns=columns)
        frame["priority"] = frame["priority"].astype("Int64")
        return frame


# -- helpers -------------------------------------------------------------------------------------

def _event_selection() -> list:
    return [trigger_events.c.grp.label("group") if c == "group" else trigger_events.c[c] for c in EVENT_COLUMNS]


def _event_rows(events: pd.DataFrame) -> list[dict]:
    """Check the rule engine's frame at the edge and turn it into table rows."""
    missing = [c for c in EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(f"events lack the column(s) {', '.join(missing)}; expected {', '.join(EVENT_COLUMNS)}")
    rows, seen = [], set()
    for position, event in enumerate(events[list(EVENT_COLUMNS)].itertuples(index=False, name=None)):
        key, customer_id, rule, as_of, group, template, priority, fields = event
        if pd.isna(key) or not str(key):
            raise ValueError(f"events row {position}: idempotency_key is empty")
        if group not in GROUPS:
            raise ValueError(f"events row {position}: group must be one of {', '.join(GROUPS)}, got {group!r}")
        if str(key) in seen:
            continue
        seen.add(str(key))
        if fields is not None and not isinstance(fields, str):
            fields = json.dumps(fields, ensure_ascii=False, sort_keys=True, default=str)
        rows.append({
            "idempotency_key": str(key), "customer_id": str(customer_id), "rule": str(rule),
            "as_of": _iso_date(as_of, f"events row {position}: as_of"), "grp": group,
            "template": None if pd.isna(template) else str(template),
            "priority": None if pd.isna(priority) else int(priority),
            "fields": fields, "status": INITIAL_STATUS[group], "attempts": 0,
        })
    return rows


def _widen_group_column(engine) -> None:
    """Migrate an outbox made before issue #21: ``grp`` was 10 characters, too few for
    ``skipped_budget``. SQLite ignores declared lengths, so only other databases are altered."""
    dialect = engine.dialect.name
    if dialect == "sqlite":
        return
    column = next(c for c in inspect(engine).get_columns("trigger_events") if c["name"] == "grp")
    length = getattr(column["type"], "length", None)
    if length is None or length >= GROUP_CHARS:
        return
    statement = {"postgresql": f"ALTER TABLE trigger_events ALTER COLUMN grp TYPE VARCHAR({GROUP_CHARS})",
                 "mysql": f"ALTER TABLE trigger_events MODIFY grp VARCHAR({GROUP_CHARS}) NOT NULL"}.get(dialect)
    if statement is None:
        raise ValueError(f"the outbox's grp column holds {length} characters and this code needs {GROUP_CHARS}; "
                         f"widen it by hand on {dialect}")
    with engine.begin() as conn:
        conn.execute(text(statement))


def _existing_keys(conn: Connection, keys: list[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(keys):
        found.update(conn.execute(select(trigger_events.c.idempotency_key)
                                  .where(trigger_events.c.idempotency_key.in_(chunk))).scalars())
    return found


def _chunks(items: list, size: int = CHUNK) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _iso_date(value, what: str) -> str:
    try:
        return pd.Timestamp(value).date().isoformat()
    except (ValueError, TypeError):
        raise ValueError(f"{what} must be a date (YYYY-MM-DD), got {value!r}") from None


def _file_name(rule: str) -> str:
    """A rule name as a file name: path separators would write outside the day's folder."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(rule)).strip(".")
    if not name:
        raise ValueError(f"rule {rule!r} gives no usable file name")
    return name


def _utcnow() -> str:
    """Audit timestamps (created_at, delivered_at), in UTC."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
