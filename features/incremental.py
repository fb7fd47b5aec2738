"""The daily run's feature state: each customer's partials, carried from one day to the next.

``winback daily`` writes the feature table of every customer each day. Rebuilding it from the
whole history costs what the history costs; this module keeps, beside the daily output, the
state the feature table is finished from, and updates it with only the rows that arrived since
the last run, so that a day costs its new rows (plus writing the table itself). The day's table
equals :func:`features.job.write_features` over the whole log exactly: the same SQL finishes
both (:func:`features.build.finalize_sql`, :func:`features.build.features_sql`), and each
partial is kept exact (integers and DECIMAL sums), so the order the days were added in changes
no bit.

What a customer's features need, and how the state keeps it (``cust``, one row per customer):

* **running sums and extremes** (first and last purchase day, purchase days, orders, spend,
  the first day's spend, the sum of squared gaps and of ``ln(gap)``: ``frequency``,
  ``recency``, ``T``, ``monetary_value``, ``litt``, mean and spread of the gaps, the last gap)
  add the new days, the gap from the last purchase day to the first new one included;
* **windows** (orders and spend in the last N days, the trend, tier spend) are sums over the
  days inside each window: the new days are added and the days that left each window since the
  last run are subtracted, read from ``recent``, the per-day rows of the longest window;
* **the median gap** needs every gap: each customer's gaps are kept as a list and the median
  recomputed for the customers who bought;
* **categories** (favourite, its median gap, its last day: replenishment) are kept per
  customer and category in ``cats`` (days, last day, gaps) and the favourite recomputed for
  the customers who bought in a category;
* rows dated after the day run are kept in ``pending`` until their day comes (features as of
  a day see only rows up to that day);
* RFM scores and category intervals come from the model's feature reference, applied when the
  table is finished; side data (attributes, events) is joined as the feature job joins it.

New rows arrive as new files: each run records the files it has read (path, size, modification
time), and reads only the files it has not seen. A full rebuild replaces the state, and says
why, when:

* there is no state yet (or it cannot be read, or was written by another format);
* a file already read changed or disappeared, or new rows are dated on or before the day the
  state summarises (a backfilled or corrected history: late orders, an old day's correction;
  refunds are kept out of every feature, so a refund of an old order changes nothing);
* the feature settings, the time zone, the period or the ingest settings differ from the
  state's (a new reference with other RFM edges or category intervals does not: those are
  applied when the table is finished);
* the day asked for is before the state's day, or the snapshot the state was saved with is
  missing or was rewritten (the state and its snapshot must agree);
* ``full_rebuild=True`` (the CLI's ``--full-rebuild``).

Writes are atomic: an update is one DuckDB transaction committed after the day's table was
renamed into place and recorded; a rebuild writes a new state file and switches the small
``CURRENT`` file to it by a rename. A run killed at any moment leaves the last committed state
(whose snapshot is still the one it recorded) or, when it cannot tell, one the next run rebuilds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from features import cycle, replenishment
from features.build import (
    cutoff_literal,
    features_sql,
    finalize_sql,
    parse_cutoff,
    partial_aggregates,
    stage,
    window_lengths,
)
from features.job import MAX_DAYS_PAST_LOG, FeatureJobSummary, copy_table
from features.output import atomic_path, check_output_path, pid_alive
from features.reference import FeatureReference
from features.settings import ColumnMap, IngestPolicy
from features.side import SideData, with_side
from features.sql import day_totals_sql, decimal
from features.transactions import (
    CANONICAL_COLUMNS,
    PLAUSIBLE_DATES,
    IngestReport,
    TransactionLog,
    drops_duplicates,
    expand_paths,
    in_any_order,
    one_row,
    read_transactions,
    sql_escape,
)
from features.windows import age_expr

#: The layout of the state; a state of another format is rebuilt.
FORMAT = 1
#: The file in the state folder naming the state file in use.
CURRENT = "CURRENT"
_GENERATION = re.compile(r"state-\d{8}T\d{6}-(\d+)-[0-9a-f]{8}\.duckdb(\.wal)?")

#: The favourite category columns ``cust`` keeps, as :func:`features.replenishment.favourites_sql`
#: names them.
_FAVOURITE = ("category", "last_day", "own_median", "n_gaps")


@dataclass(frozen=True)
class DailyFeatures:
    """What :func:`daily_features` did: the table written, whether the state was updated
    (``"incremental"``) or rebuilt (``"full"``) and why, and what was read."""

    summary: FeatureJobSummary
    mode: str
    reason: str
    files_read: tuple[str, ...]
    report: IngestReport | None
    seconds: float

    def describe(self) -> str:
        """One line for the console."""
        rows = f"{self.report.rows_read:,} rows" if self.report else "no new rows"
        files = f"{len(self.files_read):,} file{'s' if len(self.files_read) != 1 else ''}"
        if self.mode == "incremental":
            return f"features updated from the state: {rows} in {files} new since the last run ({self.seconds:.1f} s)"
        return f"features rebuilt from the whole history ({rows} in {files}, {self.seconds:.1f} s): {self.reason}"


def daily_features(transactions: str | Path | Sequence[str | Path], as_of: dt.date | str, out: str | Path,
                   reference: FeatureReference, state_dir: str | Path, columns: ColumnMap = ColumnMap(),
                   policy: IngestPolicy = IngestPolicy(), side: SideData | None = None, *,
                   full_rebuild: bool = False, encoding: str = "utf-8", memory_limit: str | None = None,
                   threads: int | None = None,
                   dates: tuple[dt.date, dt.date] = PLAUSIBLE_DATES) -> DailyFeatures:
    """Write the feature table as of ``as_of`` to ``out`` with the model's ``reference``, from
    the state in ``state_dir`` and the files of ``transactions`` (paths or globs) it has not
    read yet; or, when the state cannot be carried forward (see the module), rebuild the state
    from every file and say why in the result. Bad input raises
    :class:`~features.transactions.TransactionDataError` naming file, row and column."""
    started = time.perf_counter()
    out = check_output_path(out, (".parquet",))
    day = parse_cutoff(as_of).date()
    if reference.freq != "D":
        raise ValueError("the daily feature state keeps daily periods; a weekly reference is built with "
                         "`winback features --freq W`")
    files = expand_paths(transactions)
    stamps = {os.path.realpath(f): _stamp(f) for f in files}
    depends = _depends_on(reference, columns, policy)
    state_dir = Path(state_dir)
    reason = "asked for (--full-rebuild)" if full_rebuild else None
    state, new_log = None, None
    try:
        if reason is None:
            state, reason = _open_state(state_dir, memory_limit, threads)
        if state is not None:       # _open_state gives a state, or the reason there is none
            reason = state.cannot_continue(depends, stamps, day)
        if state is not None and reason is None:
            new = [f for f in files if os.path.realpath(f) not in state.files]
            if new:
                new_log = read_transactions(new, columns, policy, encoding=encoding, memory_limit=memory_limit,
                                            threads=threads, dates=dates)
                reason = _late_rows(new_log, state.day)
            if reason is None:
                summary = state.update(new_log, stamps, day, out, reference, columns, policy, side)
                return DailyFeatures(summary, "incremental", "", tuple(new), new_log.report if new_log else None,
                                     time.perf_counter() - started)
    finally:
        if state is not None:
            state.close()
    assert reason is not None, "every way here says why the state is rebuilt"
    log = read_transactions(files, columns, policy, encoding=encoding, memory_limit=memory_limit,
                            threads=threads, dates=dates)
    summary = rebuild(log, stamps, day, out, reference, state_dir, depends, side, memory_limit, threads)
    return DailyFeatures(summary, "full", reason, tuple(files), log.report, time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# what the state depends on, and the files it has read


def _stamp(path: str | Path) -> dict:
    info = os.stat(path)
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _depends_on(reference: FeatureReference, columns: ColumnMap, policy: IngestPolicy) -> dict:
    """Everything besides the rows that the state's partials depend on."""
    return {"settings": reference.settings.to_dict(), "timezone": reference.timezone, "freq": reference.freq,
            "columns": dataclasses.asdict(columns), "policy": dataclasses.asdict(policy)}


def _late_rows(log: TransactionLog, day: dt.date) -> str | None:
    """The reason to rebuild when rows used by the features are dated on or before the state's
    day (refunds and excluded rows are not used: they never change a feature)."""
    n, first, where = log.con.execute(
        f"SELECT count(*), min(ts), arg_min(_file, ts) FROM typed WHERE ts < {cutoff_literal(day)} + INTERVAL 1 DAY "
        f"AND ({_kept(log.policy)})").fetchall()[0]
    if not n:
        return None
    return (f"{n:,} new row(s) are dated on or before {day}, the day the state summarises (the earliest "
            f"{first:%Y-%m-%d} in {where}): a late or corrected history changes features already summarised")


def _kept(policy: IngestPolicy) -> str:
    return "amount > 0" if policy.zero_amounts == "exclude" else "amount >= 0"


# ---------------------------------------------------------------------------------------------
# the state on disk


@dataclass
class _State:
    """An opened state: its connection (a DuckDB file) and what ``meta`` records."""

    con: duckdb.DuckDBPyConnection
    path: Path
    meta: dict

    @property
    def day(self) -> dt.date:
        return dt.date.fromisoformat(self.meta["day"])

    @property
    def files(self) -> dict:
        return self.meta["files"]

    def close(self) -> None:
        with contextlib.suppress(duckdb.Error):
            self.con.close()

    def cannot_continue(self, depends: dict, stamps: dict, day: dt.date) -> str | None:
        """Why this state cannot be carried to ``day`` with these files, or None."""
        if self.meta.get("depends") != depends:
            changed = [k for k in depends if self.meta.get("depends", {}).get(k) != depends[k]]
            return f"the {', '.join(changed)} differ from those the state was built with"
        if day < self.day:
            return f"{day} is before {self.day}, the day the state summarises"
        for path, stamp in self.files.items():
            if path not in stamps:
                return f"{path}, read by an earlier run, is no longer among the transactions"
            if stamps[path] != stamp:
                return f"{path}, read by an earlier run, has changed since (size or modification time)"
        snapshot = self.meta.get("snapshot") or {}
        try:
            on_disk = _stamp(snapshot.get("path", ""))
        except OSError:
            return f"the snapshot the state was saved with ({snapshot.get('path')}) is missing"
        if on_disk != snapshot.get("stamp"):
            return f"the snapshot the state was saved with ({snapshot['path']}) was rewritten since"
        return None

    def update(self, new_log: TransactionLog | None, stamps: dict, day: dt.date, out: Path,
               reference: FeatureReference, columns: ColumnMap, policy: IngestPolicy,
               side: SideData | None) -> FeatureJobSummary:
        """Carry the state to ``day`` with the new rows, write the day's table, commit."""
        con = self.con
        con.execute("BEGIN TRANSACTION")
        if new_log is not None:
            con.register("incoming", new_log.con.sql(
                f"SELECT {', '.join(CANONICAL_COLUMNS)} FROM transactions").to_arrow_table())
        else:
            con.execute("CREATE OR REPLACE TEMP TABLE incoming AS SELECT * FROM pending WHERE false")
        _carry(con, self.day, day, reference, columns, policy)
        last_ts = _later(self.meta.get("last_ts"), new_log.report.last_timestamp if new_log else None)
        first_ts = _earlier(self.meta.get("first_ts"), new_log.report.first_timestamp if new_log else None)
        summary = _finish(con, day, out, reference, side, last_ts, first_ts, self.meta["source"])
        meta = {**self.meta, "day": day.isoformat(), "files": {**self.files, **stamps},
                "last_ts": last_ts, "first_ts": first_ts,
                "snapshot": {"path": str(out.resolve()), "stamp": _stamp(out)},
                "reference_id": reference.fingerprint()}
        _write_meta(con, meta)
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
        return summary


def _open_state(state_dir: Path, memory_limit: str | None, threads: int | None) -> tuple[_State | None, str | None]:
    """The state in use in ``state_dir``, or the reason there is none to carry forward."""
    _remove_stale(state_dir)
    try:
        name = (state_dir / CURRENT).read_text().strip()
    except FileNotFoundError:
        return None, f"no feature state in {state_dir} yet"
    path = state_dir / name
    if not _GENERATION.fullmatch(name) or not path.is_file():
        return None, f"the feature state {path} named in {state_dir / CURRENT} is missing"
    try:
        con = _connect(path, memory_limit, threads)
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        meta = {k: json.loads(v) for k, v in meta.items()}
    except (duckdb.Error, json.JSONDecodeError, OSError) as exc:
        return None, f"the feature state {path} cannot be read ({str(exc).splitlines()[0]})"
    if meta.get("format") != FORMAT:
        con.close()
        return None, f"the feature state {path} has format {meta.get('format')}, this version keeps {FORMAT}"
    return _State(con, path, meta), None


def _connect(path: Path, memory_limit: str | None, threads: int | None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")         # the state holds shop-time wall clock values
    con.execute("SET enable_progress_bar = false")
    if memory_limit:
        con.execute(f"SET memory_limit = '{sql_escape(memory_limit)}'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def _write_meta(con: duckdb.DuckDBPyConnection, meta: dict) -> None:
    con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("DELETE FROM meta")
    con.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v, sort_keys=True)) for k, v in meta.items()])


def _remove_stale(state_dir: Path) -> None:
    """Delete state files no run uses: those ``CURRENT`` does not name, unless a live run is
    writing them (their name holds its process id)."""
    try:
        current = (state_dir / CURRENT).read_text().strip()
    except OSError:
        current = None
    with contextlib.suppress(OSError):
        for entry in state_dir.iterdir():
            match = _GENERATION.fullmatch(entry.name)
            if not match or entry.name.removesuffix(".wal") == current:
                continue
            pid = int(match.group(1))
            if pid == os.getpid() or not pid_alive(pid):
                with contextlib.suppress(OSError):
                    entry.unlink()


def _later(a: str | None, b: pd.Timestamp | None) -> str | None:
    values = [pd.Timestamp(x) for x in (a, b) if x is not None]
    return max(values).isoformat() if values else None


def _earlier(a: str | None, b: pd.Timestamp | None) -> str | None:
    values = [pd.Timestamp(x) for x in (a, b) if x is not None]
    return min(values).isoformat() if values else None


# ---------------------------------------------------------------------------------------------
# a full rebuild


def rebuild(log: TransactionLog, stamps: dict, day: dt.date, out: Path, reference: FeatureReference,
            state_dir: Path, depends: dict, side: SideData | None = None, memory_limit: str | None = None,
            threads: int | None = None) -> FeatureJobSummary:
    """Build the state as of ``day`` from the whole ``log`` into a new state file, write the
    day's table from it, then make it the state in use (a rename of ``CURRENT``)."""
    settings = reference.settings
    cutoff = cutoff_literal(day)
    if reference.timezone != log.policy.timezone:
        raise ValueError(f"the transactions were read in time zone {log.policy.timezone!r}, but the model "
                         f"defines days in {reference.timezone!r}; read them with --timezone {reference.timezone}")
    state_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale(state_dir)
    name = f"state-{dt.datetime.now():%Y%m%dT%H%M%S}-{os.getpid()}-{uuid.uuid4().hex[:8]}.duckdb"
    path = state_dir / name
    stage(log, cutoff, settings, with_customers=False)
    con = log.con
    con.execute(f"ATTACH '{sql_escape(str(path))}' AS st")
    try:
        with in_any_order(con):
            con.execute(f"CREATE TABLE st.cats AS SELECT customer_id, category, count(*) AS n_days, "
                        f"max(day) AS last_day, {_gap_list('gap')} AS gaps FROM cat_days "
                        "GROUP BY customer_id, category")
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE partials AS
                SELECT customer_id, {', '.join(partial_aggregates(settings))}, {_gap_list('gap')} AS _gaps
                FROM (SELECT customer_id, day, spend, orders, {age_expr(cutoff)} AS age, gap FROM daily)
                GROUP BY customer_id""")
            con.execute("CREATE TABLE st.cust_gaps AS SELECT customer_id, _gaps AS gaps FROM partials "
                        "WHERE _gaps IS NOT NULL")
        con.execute(f"""
            CREATE TABLE st.cust AS
            SELECT p.* EXCLUDE (_gaps), {', '.join(f'f.{c} AS fav_{c}' for c in _FAVOURITE)}
            FROM partials AS p
            LEFT JOIN ({replenishment.favourites_sql(_per_category('st.cats'))}) AS f USING (customer_id)
            ORDER BY customer_id""")                    # kept in customer order: the table needs no sort
        con.execute("DROP TABLE partials")
        con.execute(f"CREATE TABLE st.recent AS SELECT customer_id, day, spend, orders FROM daily "
                    f"WHERE day > {cutoff} - {max(window_lengths(settings))} ORDER BY day")
        con.execute(f"CREATE TABLE st.pending AS SELECT {', '.join(CANONICAL_COLUMNS)} FROM transactions "
                    f"WHERE ts >= {cutoff} + INTERVAL 1 DAY")
        con.execute("DETACH st")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("DETACH st")
        path.unlink(missing_ok=True)
        raise
    state = _connect(path, memory_limit, threads)
    try:
        report = log.report
        first = report.first_timestamp.isoformat() if report.first_timestamp is not None else None
        last = report.last_timestamp.isoformat() if report.last_timestamp is not None else None
        summary = _finish(state, day, out, reference, side, last, first, log.source)
        _write_meta(state, {"format": FORMAT, "day": day.isoformat(), "depends": depends, "files": stamps,
                            "first_ts": first, "last_ts": last, "source": log.source,
                            "snapshot": {"path": str(out.resolve()), "stamp": _stamp(out)},
                            "reference_id": reference.fingerprint(), "duckdb": duckdb.__version__})
        state.execute("CHECKPOINT")
    finally:
        state.close()
    with atomic_path(state_dir / CURRENT) as tmp:
        tmp.write_text(name + "\n")
    _remove_stale(state_dir)
    return summary


def _gap_list(gap: str) -> str:
    return f"list({gap}) FILTER (WHERE {gap} IS NOT NULL)"


def _per_category(cats: str) -> str:
    """:data:`features.replenishment.PER_CATEGORY_SQL`'s rows from the kept per-category state."""
    return (f"SELECT customer_id, category, n_days, last_day, list_median(gaps) AS own_median, "
            f"coalesce(len(gaps), 0) AS n_gaps FROM {cats}")


# ---------------------------------------------------------------------------------------------
# carrying the state forward


def _carry(con: duckdb.DuckDBPyConnection, before: dt.date, day: dt.date, reference: FeatureReference,
           columns: ColumnMap, policy: IngestPolicy) -> None:
    """Carry the state from ``before`` to ``day`` with the rows in ``incoming`` and ``pending``."""
    settings = reference.settings
    cutoff, old = cutoff_literal(day), cutoff_literal(before)
    lengths = window_lengths(settings)
    distinct = "DISTINCT " if drops_duplicates(columns, policy) else ""
    con.execute(f"CREATE OR REPLACE TEMP TABLE arrived AS SELECT {distinct}* FROM "
                f"(SELECT * FROM pending UNION ALL SELECT * FROM incoming)")
    seen = f"ts < {cutoff} + INTERVAL 1 DAY"
    orders = "count(DISTINCT order_id)" if columns.order_id is not None else "count(*)"
    con.execute(f"CREATE OR REPLACE TEMP TABLE new_days AS {day_totals_sql('arrived', orders, seen)}")
    # the new days with their gaps (the first one's from the last purchase day before)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE new_gaps AS
        SELECT customer_id, day, spend, orders, gap FROM (
            SELECT *, {cycle.GAP} AS gap FROM (
                SELECT customer_id, day, spend, orders, false AS known FROM new_days
                UNION ALL
                SELECT customer_id, last_purchase_date, NULL, NULL, true
                FROM cust SEMI JOIN new_days USING (customer_id)))
        WHERE NOT known""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE bought AS
        SELECT customer_id, min(day) AS first_day, max(day) AS last_day, count(*) AS n, sum(orders) AS orders,
            sum({decimal('spend')}) AS spend, arg_min(spend, day) AS first_value, sum(gap * gap) AS gap_sq,
            sum(CAST(ln(gap) AS DECIMAL(38, 18))) AS litt, {_gap_list('gap')} AS gaps,
            CAST(arg_max(gap, day) FILTER (WHERE gap IS NOT NULL) AS DOUBLE) AS last_gap
        FROM new_gaps GROUP BY customer_id""")
    # each customer's gaps (for the median): the new ones appended
    con.execute("""
        CREATE OR REPLACE TEMP TABLE new_lists AS
        SELECT b.customer_id, list_concat(coalesce(g.gaps, []), b.gaps) AS gaps
        FROM bought AS b LEFT JOIN cust_gaps AS g USING (customer_id) WHERE b.gaps IS NOT NULL""")
    con.execute("DELETE FROM cust_gaps WHERE customer_id IN (SELECT customer_id FROM new_lists)")
    con.execute("INSERT INTO cust_gaps SELECT customer_id, gaps FROM new_lists")
    # windows: add the new days inside each, subtract the days that left each since `before`
    leaving = " UNION ALL ".join(
        f"SELECT customer_id, day, spend, orders, {n} AS length FROM recent "
        f"WHERE day > {old} - {n} AND day <= {cutoff} - {n}" for n in lengths)
    moved = []
    for n in lengths:
        moved.append(f"sum(CASE WHEN length IS NULL AND age < {n} THEN {decimal('spend')} "
                     f"WHEN length = {n} THEN -{decimal('spend')} END) AS d_spend_w{n}")
    for n in settings.windows_days:
        moved.append(f"sum(CASE WHEN length IS NULL AND age < {n} THEN orders "
                     f"WHEN length = {n} THEN -orders END) AS d_orders_w{n}")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE moved AS
        SELECT customer_id, {', '.join(moved)}
        FROM (SELECT customer_id, day, spend, orders, NULL::INTEGER AS length, {age_expr(cutoff)} AS age FROM new_days
              UNION ALL SELECT *, NULL AS age FROM ({leaving}))
        GROUP BY customer_id""")
    con.execute(f"INSERT INTO recent SELECT customer_id, day, spend, orders FROM new_days "
                f"WHERE day > {cutoff} - {max(lengths)}")
    con.execute(f"DELETE FROM recent WHERE day <= {cutoff} - {max(lengths)}")
    # categories: days, last day and gaps per customer and category; then the favourites
    favourites = "SELECT NULL::VARCHAR AS customer_id, " + ", ".join(
        f"NULL::{t} AS {c}" for c, t in zip(_FAVOURITE, ("VARCHAR", "DATE", "DOUBLE", "BIGINT"))) + " WHERE false"
    if columns.category is not None:
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE new_cats AS
            SELECT customer_id, category, count(*) AS n, max(day) AS last_day, {_gap_list('gap')} AS gaps
            FROM (SELECT *, {replenishment.GAP} AS gap FROM (
                    SELECT DISTINCT customer_id, category, CAST(ts AS DATE) AS day, false AS known FROM arrived
                    WHERE {seen} AND category IS NOT NULL
                    UNION ALL
                    SELECT customer_id, category, last_day, true FROM cats
                    SEMI JOIN (SELECT customer_id, category FROM arrived WHERE {seen}) AS a
                        USING (customer_id, category)))
            WHERE NOT known
            GROUP BY customer_id, category""")
        con.execute("""
            UPDATE cats SET n_days = cats.n_days + c.n, last_day = c.last_day,
                gaps = list_concat(coalesce(cats.gaps, []), c.gaps)
            FROM new_cats AS c WHERE cats.customer_id = c.customer_id AND cats.category = c.category""")
        con.execute("""
            INSERT INTO cats BY NAME SELECT customer_id, category, n AS n_days, last_day, gaps
            FROM new_cats ANTI JOIN cats USING (customer_id, category)""")
        touched = "(SELECT * FROM cats SEMI JOIN (SELECT DISTINCT customer_id FROM new_cats) AS t USING (customer_id))"
        favourites = replenishment.favourites_sql(_per_category(touched))
    # applied in place, each to the customers it moves (the table keeps its customer order; an
    # UPDATE rewrites every column it sets), new customers appended
    con.execute("""
        UPDATE cust SET last_purchase_date = b.last_day, purchase_days = cust.purchase_days + b.n,
            orders = cust.orders + b.orders, _spend = cust._spend + b.spend,
            _gap_sq = coalesce(cust._gap_sq, 0) + b.gap_sq, _litt = coalesce(cust._litt, 0) + b.litt,
            last_gap_days = b.last_gap, median_gap_days = list_median(l.gaps)
        FROM bought AS b JOIN new_lists AS l USING (customer_id) WHERE cust.customer_id = b.customer_id""")
    sets = [f"_spend_w{n} = coalesce(cust._spend_w{n}, 0) + coalesce(m.d_spend_w{n}, 0)" for n in lengths]
    sets += [f"_orders_w{n} = coalesce(cust._orders_w{n}, 0) + coalesce(m.d_orders_w{n}, 0)"
             for n in settings.windows_days]
    con.execute(f"UPDATE cust SET {', '.join(sets)} FROM moved AS m WHERE cust.customer_id = m.customer_id")
    con.execute(f"CREATE OR REPLACE TEMP TABLE favourites AS {favourites}")
    con.execute(f"UPDATE cust SET {', '.join(f'fav_{c} = f.{c}' for c in _FAVOURITE)} "
                f"FROM favourites AS f WHERE cust.customer_id = f.customer_id")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE delta AS
        SELECT customer_id, b.* EXCLUDE (customer_id, gaps), list_median(l.gaps) AS median, m.* EXCLUDE (customer_id),
            {', '.join(f'f.{c} AS fav_{c}' for c in _FAVOURITE)}
        FROM (bought ANTI JOIN cust USING (customer_id)) AS b LEFT JOIN moved AS m USING (customer_id)
        LEFT JOIN favourites AS f USING (customer_id) LEFT JOIN new_lists AS l USING (customer_id)""")
    windows_new = [f"d_spend_w{n} AS _spend_w{n}" for n in lengths] + [
        f"d_orders_w{n} AS _orders_w{n}" for n in settings.windows_days]
    newcomers = f"""
        SELECT customer_id, first_day AS first_purchase_date, last_day AS last_purchase_date, n AS purchase_days,
            orders, spend AS _spend, first_value AS first_purchase_value, gap_sq AS _gap_sq, litt AS _litt,
            last_gap AS last_gap_days, median AS median_gap_days, {', '.join(windows_new)},
            {', '.join(f'fav_{c}' for c in _FAVOURITE)}
        FROM delta AS d"""
    con.execute(f"CREATE OR REPLACE TEMP TABLE newcomers AS {newcomers}")
    first_new, last_known = one_row(
        con, "SELECT (SELECT min(customer_id) FROM newcomers), (SELECT max(customer_id) FROM cust)")
    if first_new is not None and last_known is not None and first_new <= last_known:
        con.execute("CREATE OR REPLACE TABLE cust AS SELECT * FROM (SELECT * FROM cust UNION ALL BY NAME "
                    "SELECT * FROM newcomers) ORDER BY customer_id")
    else:
        con.execute("INSERT INTO cust BY NAME SELECT * FROM newcomers ORDER BY customer_id")
    con.execute("DELETE FROM pending")
    con.execute(f"INSERT INTO pending SELECT * FROM arrived WHERE NOT ({seen})")


def _in_customer_order(con: duckdb.DuckDBPyConnection) -> None:
    """Make sure ``cust`` is stored in customer order (the day's table is read from it without
    a sort); a state whose order was lost is rewritten sorted."""
    unordered = one_row(con, "SELECT count(*) FROM (SELECT customer_id, lag(customer_id) OVER () AS before FROM cust) "
                             "WHERE before >= customer_id")[0]
    if unordered:
        con.execute("CREATE OR REPLACE TABLE cust AS SELECT * FROM cust ORDER BY customer_id")


# ---------------------------------------------------------------------------------------------
# the day's table


def _finish(con: duckdb.DuckDBPyConnection, day: dt.date, out: Path, reference: FeatureReference,
            side: SideData | None, last_ts: str | None, first_ts: str | None, source: str) -> FeatureJobSummary:
    """Write the feature table as of ``day`` from the state on ``con`` (with the feature job's
    checks: some customer by then, a day within a year of the log's last)."""
    if not one_row(con, "SELECT count(*) FROM cust")[0]:
        starts = f"; the log starts on {pd.Timestamp(first_ts):%Y-%m-%d}" if first_ts else ""
        raise ValueError(f"no purchases on or before the cutoff {day} in {source}{starts}, "
                         "so there is no customer to write; choose a later --cutoff")
    if last_ts is not None and (pd.Timestamp(day) - pd.Timestamp(last_ts).normalize()).days > MAX_DAYS_PAST_LOG:
        last = pd.Timestamp(last_ts)
        raise ValueError(f"the cutoff {day} is {(pd.Timestamp(day) - last.normalize()).days:,} days after the last "
                         f"transaction in {source} ({last:%Y-%m-%d}); more than {MAX_DAYS_PAST_LOG} days past the "
                         "log, every customer would look lapsed. Choose a cutoff within the log, or load the "
                         "newer data")
    cutoff = cutoff_literal(day)
    settings = reference.settings
    _in_customer_order(con)
    con.execute(f"CREATE OR REPLACE TEMP VIEW customers AS "
                f"{finalize_sql(cutoff, settings, 'cust', tuple(f'fav_{c}' for c in _FAVOURITE))}")
    query = with_side(con, features_sql(cutoff, "D", settings, reference, replenishment.INLINE), day.isoformat(),
                      reference, side)
    return copy_table(con, query, out, day.isoformat(), reference)
