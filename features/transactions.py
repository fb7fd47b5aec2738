"""Reading and validating transaction logs.

A :class:`TransactionLog` is a validated, lazy view over the input (CSV or Parquet files read
by DuckDB in place, or a pandas DataFrame) with canonical columns::

    customer_id VARCHAR, ts TIMESTAMP, amount DOUBLE,
    order_id VARCHAR, quantity DOUBLE, category VARCHAR, channel VARCHAR

Unmapped optional columns are NULL. Rows are checked once when the log is opened: a missing
column, an empty customer id, an unparseable timestamp or a non-numeric amount raises
:class:`TransactionDataError` naming the file, the row and the column. So do values no shop
records: a NUL byte in an id, an amount above :data:`MAX_AMOUNT` or a nonzero one below
:data:`MIN_AMOUNT` (sums are exact to 1/10,000 of the currency unit), a date outside the
plausible range (:data:`PLAUSIBLE_DATES`). A CSV file that is not well formed (a ragged line, an
unbalanced quote, another encoding) is an error naming the file and line; a log with no rows is
an error. The :class:`~features.settings.IngestPolicy` then decides about duplicates, refunds and
zero amounts.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import dataclasses
import datetime as dt
import glob
import os
import re
import tempfile
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import duckdb
import pandas as pd

from features.output import pid_alive
from features.settings import ColumnMap, IngestPolicy
from features.sql import day_totals_sql

CANONICAL_COLUMNS = ("customer_id", "ts", "amount", "order_id", "quantity", "category", "channel")

#: The largest amount (in size) one row may carry: larger ones are typing or unit mistakes, and
#: amounts are summed as DECIMAL(18, 4), which holds up to 1e14 per row.
MAX_AMOUNT = 1e12
#: The smallest nonzero amount (in size): sums are exact to 1/10,000 of the currency unit, so a
#: smaller one would silently count as a purchase with no spend.
MIN_AMOUNT = 1e-4
#: Purchases must fall on or after the first and before the second date (shop time): a row
#: dated 1900 or 2999 is a placeholder or a typo, and would become the default cutoff.
PLAUSIBLE_DATES = (dt.date(1970, 1, 1), dt.date(2100, 1, 1))
#: Encodings DuckDB's CSV reader decodes itself; others are transcoded to a temporary UTF-8 copy.
_DUCKDB_ENCODINGS = {"utf-8": "utf-8", "utf-16": "utf-16", "iso8859-1": "latin-1"}
#: Temporary files the reader makes carry this prefix and their process id.
TEMP_PREFIX = "winback-transcoded-"


class SqlCursor(Protocol):
    """What the feature code asks of a connection: a DuckDB connection, or the Spark stand-in
    of :mod:`features.spark` that runs the same SQL."""

    def execute(self, query: str, /) -> SqlCursor:
        """Run one SQL statement; the result is read with the fetch methods."""
        ...

    def fetchone(self) -> tuple[Any, ...] | None:
        """The next row of the result, or None after the last."""
        ...

    def fetchall(self) -> list[tuple[Any, ...]]:
        """The remaining rows of the result."""
        ...


def one_row(con: SqlCursor, sql: str) -> tuple[Any, ...]:
    """The row of a query that always returns one (an aggregate, or a row already counted);
    ``fetchone()`` is typed as possibly None, which such a query never is."""
    row = con.execute(sql).fetchone()
    assert row is not None, f"no row from: {sql}"
    return row


class TransactionDataError(ValueError):
    """The input log cannot be used as it is; the message says where and why."""

    def __init__(self, message: str, *, source: str | None = None, row: int | None = None,
                 column: str | None = None) -> None:
        super().__init__(message)
        self.source, self.row, self.column = source, row, column


@dataclass(frozen=True)
class IngestReport:
    """What was read, and what the ingest policy set aside."""

    rows_read: int
    rows_used: int
    refunds_excluded: int
    zero_amounts: int
    zero_amounts_excluded: int
    duplicates_dropped: int
    first_timestamp: pd.Timestamp | None
    last_timestamp: pd.Timestamp | None
    #: one line each for a column named like an optional field (``order_id``, ``quantity``,
    #: ``category``, ``channel``) that the log has but the column map leaves unmapped
    hints: tuple[str, ...] = ()


class TransactionLog:
    """A validated transaction log, queried with DuckDB as the view ``transactions``.

    Build one with :func:`read_transactions` (files) or :meth:`from_frame` (a DataFrame).
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, columns: ColumnMap, report: IngestReport,
                 source: str, policy: IngestPolicy = IngestPolicy()) -> None:
        self.con = con
        self.columns = columns
        self.report = report
        self.source = source
        self.policy = policy

    @property
    def has_category(self) -> bool:
        """Whether a category column is mapped (replenishment features need one)."""
        return self.columns.category is not None

    @property
    def has_order_id(self) -> bool:
        """Whether an order id column is mapped (orders are then counted by id, not by row)."""
        return self.columns.order_id is not None

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, columns: ColumnMap = ColumnMap(),
                   policy: IngestPolicy = IngestPolicy(), *, source: str = "<DataFrame>",
                   memory_limit: str | None = None, threads: int | None = None,
                   dates: tuple[dt.date, dt.date] = PLAUSIBLE_DATES) -> "TransactionLog":
        """Validate a DataFrame of transactions; rows are numbered from 1 in frame order.

        ``memory_limit`` (DuckDB's, e.g. ``"3GB"``) and ``threads`` bound the connection that
        holds the log and every query run on it; ``None`` leaves DuckDB's defaults.
        """
        con = _connect(policy, memory_limit, threads)
        framed = frame.reset_index(drop=True)
        con.register("raw_frame", framed)
        con.execute(
            "CREATE TEMP VIEW raw AS SELECT *, "
            f"'{sql_escape(source)}' AS _file, row_number() OVER () AS _row FROM raw_frame"
        )
        return cls._open(con, columns, policy, source, row_numbers="exact", dates=dates)

    @classmethod
    def _open(cls, con: duckdb.DuckDBPyConnection, columns: ColumnMap, policy: IngestPolicy,
              source: str, row_numbers: str, dates: tuple[dt.date, dt.date] = PLAUSIBLE_DATES,
              csv_specs: dict[str, "_CsvSpec"] | None = None) -> "TransactionLog":
        raw_types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE raw)").fetchall())
        _check_columns(raw_types, columns, source)
        con.execute(_typed_view_sql(raw_types, columns, policy))
        try:
            report = _validate(con, columns, policy, source, row_numbers, dates, csv_specs or {})
        except duckdb.InvalidInputException as exc:
            raise _csv_error(str(exc), csv_specs or {}, source) from None
        con.execute(_final_view_sql(columns, policy, report.duplicates_dropped))
        return cls(con, columns, dataclasses.replace(report, hints=_unmapped_hints(raw_types, columns)), source, policy)


def read_transactions(paths: str | Path | Sequence[str | Path], columns: ColumnMap = ColumnMap(),
                      policy: IngestPolicy = IngestPolicy(), *, memory_limit: str | None = None,
                      threads: int | None = None, encoding: str = "utf-8",
                      dates: tuple[dt.date, dt.date] = PLAUSIBLE_DATES) -> TransactionLog:
    """Open CSV or Parquet files (paths or globs) as a validated :class:`TransactionLog`.

    Files are read in place by DuckDB, so logs larger than memory work. All files must share
    one format, chosen by extension (``.csv``, ``.txt``, ``.tsv``, ``.parquet``, ``.pq``), and a
    file may be named only once (after globs and symbolic links are resolved): the same file
    twice would count every purchase twice. CSV files are read in ``encoding`` (any Python
    codec name; UTF-8, UTF-16 and Latin-1 are read in place, others through a temporary UTF-8
    copy), with the delimiter (``,``, ``;``, tab or ``|``) taken from the header line.

    ``memory_limit`` (DuckDB's, e.g. ``"3GB"``; beyond it DuckDB spills to disk) and
    ``threads`` (at least 1) bound the DuckDB connection that holds the log and runs every
    query on it, the feature job's included; ``None`` leaves DuckDB's defaults (80% of RAM,
    one thread per core). Parquet is read faster than CSV; both are validated the same way.
    """
    _check_threads(threads)
    files = _expand(paths)
    kind = _format_of(files)
    if kind == "csv":
        return _read_csv_files(files, columns, policy, memory_limit, threads, encoding, dates)
    for f in files:
        _check_file_columns(f, columns)
    con = _connect(policy, memory_limit, threads)
    listing = "[" + ", ".join(f"'{sql_escape(f)}'" for f in files) + "]"
    con.execute(
        f"CREATE TEMP VIEW raw AS SELECT * EXCLUDE (filename, file_row_number), "
        f"filename AS _file, file_row_number + 1 AS _row "
        f"FROM read_parquet({listing}, filename = true, file_row_number = true, "
        f"union_by_name = true)"
    )
    return TransactionLog._open(con, columns, policy, ", ".join(files), "exact", dates)


def _read_csv_files(files: list[str], columns: ColumnMap, policy: IngestPolicy,
                    memory_limit: str | None, threads: int | None, encoding: str,
                    dates: tuple[dt.date, dt.date]) -> TransactionLog:
    """CSV files with one dialect read by one ``read_csv``; transcoded copies one by one."""
    _remove_stale_temp_files()
    specs: dict[str, _CsvSpec] = {}
    try:
        for f in files:
            specs[f] = _csv_spec(f, encoding)
            _check_columns(dict.fromkeys(specs[f].names, ""), columns, f)
        groups: dict[tuple, list[_CsvSpec]] = {}
        for spec in specs.values():
            key = (spec.delimiter, spec.names, spec.encoding) if spec.path == spec.file else (spec.file,)
            groups.setdefault(key, []).append(spec)
        selects = []
        for group in groups.values():
            if group[0].path == group[0].file:
                selects.append(f"SELECT * EXCLUDE (filename), filename AS _file, NULL::BIGINT AS _row "
                               f"FROM {group[0].reader([s.path for s in group])}")
            else:
                selects.append(f"SELECT *, '{sql_escape(group[0].file)}' AS _file, NULL::BIGINT AS _row "
                               f"FROM {group[0].reader()}")
        con = _connect(policy, memory_limit, threads)
        con.execute(f"CREATE TEMP VIEW raw AS {' UNION ALL BY NAME '.join(selects)}")
        log = TransactionLog._open(con, columns, policy, ", ".join(files), "rescan", dates, specs)
    except BaseException:
        _unlink([s.path for s in specs.values() if s.path != s.file])
        raise
    copies = [s.path for s in specs.values() if s.path != s.file]
    weakref.finalize(log, _unlink, copies)        # the view reads the copies until the log goes
    return log


@dataclass(frozen=True)
class _CsvSpec:
    """How to read one CSV file: where its UTF-8 (or natively decoded) text is, and its dialect."""

    file: str                   # the file the user named
    path: str                   # what DuckDB reads: the file itself or a transcoded copy
    encoding: str               # DuckDB's name for the encoding of ``path``
    delimiter: str
    names: tuple[str, ...]

    def reader(self, paths: list[str] | None = None) -> str:
        """``read_csv`` of this file, or of several files with the same dialect (with filenames)."""
        columns = ", ".join(f"'{sql_escape(n)}': 'VARCHAR'" for n in self.names)
        listing = ("[" + ", ".join(f"'{sql_escape(p)}'" for p in paths) + "], filename = true"
                   if paths else f"'{sql_escape(self.path)}'")
        return (f"read_csv({listing}, header = true, auto_detect = false, "
                f"delim = '{sql_escape(self.delimiter)}', quote = '\"', escape = '\"', "
                f"strict_mode = true, null_padding = false, encoding = '{self.encoding}', "
                f"columns = {{{columns}}})")


def _csv_spec(file: str, encoding: str) -> _CsvSpec:
    """Read the header line of a CSV file: its encoding, delimiter and column names."""
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise TransactionDataError(f"unknown encoding {encoding!r} (--encoding); try utf-8, big5, "
                                   "cp950, latin-1 or cp1252") from None
    with open(file, "rb") as handle:
        head = handle.read(1 << 20)
    try:                    # the first MiB: the header, and early lines named exactly on error
        text = codecs.getincrementaldecoder(codec)().decode(head, final=len(head) < 1 << 20)
    except UnicodeDecodeError as exc:
        raise _encoding_error(file, head[:exc.start].count(b"\n") + 1, encoding, exc) from None
    header = text.split("\n", 1)[0].lstrip("\ufeff").rstrip("\r")
    if not header.strip():
        raise TransactionDataError(f"no transactions in {file}: the file is empty (no header line)",
                                   source=file, row=0)
    delimiter = max(",;\t|", key=header.count) if any(d in header for d in ",;\t|") else ","
    if Path(file).suffix.lower() == ".tsv":
        delimiter = "\t"
    names = tuple(next(csv.reader([header], delimiter=delimiter)))
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated or any(not n.strip() for n in names):
        problem = (f"column {repeated[0]!r} appears more than once" if repeated
                   else "a column has no name")
        raise TransactionDataError(f"{file}: line 1 (the header): {problem}; the columns are: "
                                   f"{', '.join(map(repr, names))}.", source=file, row=0)
    path, duck_encoding = file, _DUCKDB_ENCODINGS.get(codec)
    if duck_encoding is None:
        path, duck_encoding = _transcode(file, codec, encoding), "utf-8"
    return _CsvSpec(file, path, duck_encoding, delimiter, names)


def _transcode(file: str, codec: str, encoding: str) -> str:
    """A temporary UTF-8 copy of a file in an encoding DuckDB cannot read, line by line."""
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=".csv")
    decoder, line = codecs.getincrementaldecoder(codec)(), 0
    try:    # line by line in bytes: exact line numbers (b"\n" is never part of a multibyte
            # character in the ASCII-compatible encodings this path serves)
        with open(file, "rb") as src, os.fdopen(fd, "w", encoding="utf-8", newline="") as dst:
            for raw in src:
                line += 1       # the line being decoded, for the error below
                dst.write(decoder.decode(raw))
            dst.write(decoder.decode(b"", final=True))
    except UnicodeDecodeError as exc:
        os.unlink(tmp)
        raise _encoding_error(file, max(line, 1), encoding, exc) from None
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _remove_stale_temp_files() -> None:
    """Delete transcoded copies left by runs that were killed (their process is gone)."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{TEMP_PREFIX}*")):
        match = re.match(rf"{TEMP_PREFIX}(\d+)-", os.path.basename(path))
        if match and not pid_alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(path)


def _unlink(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _encoding_error(file: str, line: int, encoding: str, exc: Exception) -> TransactionDataError:
    return TransactionDataError(
        f"{file}: line {line} is not valid {encoding} text ({exc.reason if hasattr(exc, 'reason') else exc}); "
        "give the file's encoding with --encoding, e.g. --encoding big5, cp950 or latin-1.",
        source=file, row=line)


def _csv_error(message: str, specs: dict[str, _CsvSpec], source: str) -> TransactionDataError:
    """DuckDB's many-line CSV error as one paragraph naming the file and line."""
    line = re.search(r"CSV Error on Line: (\d+)", message)
    named = re.search(r"^\s*file = (.*)$", message, re.MULTILINE)
    path = named.group(1).strip() if named else source
    file = next((s.file for s in specs.values() if s.path == path), path)
    text = message.lower()
    if "unterminated quote" in text:
        problem = ('a value opens a quote (") that is never closed; quote the whole value and '
                   'double any quote inside it')
    elif "expected number of columns" in text:
        found = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", message)
        problem = (f"the line is ragged: {found.group(2)} fields where the header has "
                   f"{found.group(1)}" if found else "the line is ragged")
        problem += " (a stray delimiter, or a value with the delimiter that is not quoted)"
    elif "unicode" in text or "encod" in text:
        problem = ("the text is not valid in the file's encoding; give it with --encoding, "
                   "e.g. --encoding big5, cp950 or latin-1")
    else:
        first = next((ln for ln in message.splitlines() if ln.strip() and "CSV Error" not in ln), message)
        problem = f"cannot be read as CSV ({first.strip()})"
    where = f"{file}: line {line.group(1)}" if line else f"{file}"
    return TransactionDataError(f"{where}: {problem}.", source=file,
                                row=int(line.group(1)) - 1 if line else None)


def _check_threads(threads: int | None) -> None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a whole number of at least 1, got {threads!r}")


def _connect(policy: IngestPolicy, memory_limit: str | None,
             threads: int | None = None) -> duckdb.DuckDBPyConnection:
    _check_threads(threads)
    con = duckdb.connect()
    try:
        con.execute(f"SET TimeZone = '{sql_escape(policy.timezone)}'")
    except duckdb.Error:
        raise TransactionDataError(f"unknown time zone {policy.timezone!r} (--timezone); give an IANA "
                                   "name such as UTC, Asia/Taipei or Europe/Berlin") from None
    if memory_limit:
        try:
            con.execute(f"SET memory_limit = '{sql_escape(memory_limit)}'")
        except duckdb.Error:
            raise ValueError(f"memory_limit must be a size like 3GB or 500MB, got {memory_limit!r}") from None
    if threads is not None:
        con.execute(f"SET threads = {int(threads)}")
    return con


def _expand(paths: str | Path | Sequence[str | Path]) -> list[str]:
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    files: list[str] = []
    for item in items:
        text = str(item)
        matched = sorted(glob.glob(text)) if glob.has_magic(text) else [text]
        if not matched:
            raise TransactionDataError(f"{text}: no file matches this pattern", source=text)
        for f in matched:
            if os.path.isdir(f):
                example = os.path.join(f, "*.parquet")
                raise TransactionDataError(f"{f}: is a directory; give its files, e.g. '{example}'", source=f)
            if not os.path.isfile(f):
                raise TransactionDataError(f"{f}: no such file", source=f)
        files.extend(matched)
    seen: dict[str, str] = {}
    for f in files:
        real = os.path.realpath(f)
        if real in seen:
            same = f"{seen[real]} and {f} are the same file" if seen[real] != f else f"{f} is named twice"
            raise TransactionDataError(
                f"{same}: reading it twice would count every purchase twice; give each file once.",
                source=f)
        seen[real] = f
    return files


def _format_of(files: list[str]) -> str:
    kinds = set()
    for f in files:
        suffix = Path(f).suffix.lower()
        if suffix in (".csv", ".txt", ".tsv"):
            kinds.add("csv")
        elif suffix in (".parquet", ".pq"):
            kinds.add("parquet")
        else:
            raise TransactionDataError(
                f"{f}: cannot tell the format from the extension {suffix!r}; "
                "use .csv or .parquet", source=f)
    if len(kinds) > 1:
        raise TransactionDataError("mixing CSV and Parquet files in one log is not supported")
    return kinds.pop()


def _check_file_columns(path: str, columns: ColumnMap) -> None:
    """Every mapped column must be in every Parquet file: name the file and the missing column."""
    try:
        names = [row[0] for row in duckdb.execute(
            f"SELECT column_name FROM (DESCRIBE SELECT * FROM read_parquet('{sql_escape(path)}'))"
        ).fetchall()]
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        raise TransactionDataError(f"{path}: cannot be read as Parquet ({first})", source=path) from None
    _check_columns(dict.fromkeys(names, ""), columns, path)


def _unmapped_hints(available: dict[str, str], columns: ColumnMap) -> tuple[str, ...]:
    """A hint for each optional field whose usual column name is in the log but not mapped."""
    mapped = set(columns.required().values()) | set(columns.optional().values())
    return tuple(f"the log has a column {name!r} that is not used; map it with --{name.replace('_', '-')}-col {name}"
                 for name in ("order_id", "quantity", "category", "channel")
                 if name in available and name not in mapped and getattr(columns, name) is None)


def _check_columns(available: dict[str, str], columns: ColumnMap, source: str) -> None:
    wanted = {**columns.required(), **columns.optional()}
    for canonical, name in wanted.items():
        if name not in available:
            shown = ", ".join(c for c in available if not c.startswith("_")) or "none"
            raise TransactionDataError(
                f"{source}: column {name!r} (the {canonical.replace('_', ' ')}) is missing; "
                f"the columns are: {shown}. Map it with --{canonical.replace('_', '-')}-col.",
                source=source, column=name)


def _timestamp_expr(column: str, raw_type: str, policy: IngestPolicy) -> str:
    col = _ident(column)
    tz = sql_escape(policy.timezone)
    if policy.date_format:
        return f"try_strptime(CAST({col} AS VARCHAR), '{sql_escape(policy.date_format)}')"
    if raw_type.startswith("TIMESTAMP WITH TIME ZONE") or raw_type.startswith("TIMESTAMPTZ"):
        return f"CAST(CAST({col} AS TIMESTAMPTZ) AT TIME ZONE '{tz}' AS TIMESTAMP)"
    if raw_type.startswith("TIMESTAMP") or raw_type == "DATE":
        return f"CAST({col} AS TIMESTAMP)"
    return f"CAST(TRY_CAST(CAST({col} AS VARCHAR) AS TIMESTAMPTZ) AT TIME ZONE '{tz}' AS TIMESTAMP)"


def _typed_view_sql(raw_types: dict[str, str], columns: ColumnMap, policy: IngestPolicy) -> str:
    optional = columns.optional()

    def text(name: str) -> str:
        return f"NULLIF(trim(CAST({_ident(optional[name])} AS VARCHAR)), '')" if name in optional else "NULL::VARCHAR"

    def raw_text(name: str) -> str:     # untrimmed: a NUL byte is found without trimming every value
        return f"CAST({_ident(optional[name])} AS VARCHAR)" if name in optional else "NULL::VARCHAR"

    quantity = (f"TRY_CAST({_ident(optional['quantity'])} AS DOUBLE)"
                if "quantity" in optional else "NULL::DOUBLE")
    amount = f"TRY_CAST({_ident(columns.amount)} AS DOUBLE)" if columns.amount else "1.0::DOUBLE"
    return f"""
        CREATE TEMP VIEW typed AS SELECT
            NULLIF(trim(CAST({_ident(columns.customer_id)} AS VARCHAR)), '') AS customer_id,
            {_timestamp_expr(columns.timestamp, raw_types[columns.timestamp], policy)} AS ts,
            CASE WHEN isfinite({amount}) THEN {amount} END AS amount,
            {text('order_id')} AS order_id,
            {quantity} AS quantity,
            {text('category')} AS category,
            {text('channel')} AS channel,
            CAST({_ident(columns.timestamp)} AS VARCHAR) AS _ts_raw,
            {f"CAST({_ident(columns.amount)} AS VARCHAR)" if columns.amount else "'1'"} AS _amount_raw,
            {f"CAST({_ident(optional['quantity'])} AS VARCHAR)" if "quantity" in optional else "NULL"} AS _quantity_raw,
            CAST({_ident(columns.customer_id)} AS VARCHAR) AS _customer_id_text,
            {', '.join(f"{raw_text(name)} AS _{name}_text" for name in ('order_id', 'category', 'channel'))},
            _file, _row
        FROM raw"""


def _checks(dates: tuple[dt.date, dt.date]) -> tuple[tuple[str, str, str, str | None], ...]:
    """(column checked, the failing condition on the typed view, what was expected, raw value)."""
    earliest, latest = (d.isoformat() for d in dates)
    nul = "chr(0)"          # trimming keeps NUL bytes: they are looked for in the text as read
    return (
        ("customer_id", "customer_id IS NULL", "a non-empty customer id", None),
        ("customer_id", f"contains(_customer_id_text, {nul})", "an id without NUL bytes", "customer_id"),
        ("order_id", f"contains(_order_id_text, {nul})", "an id without NUL bytes", "order_id"),
        ("category", f"contains(_category_text, {nul})", "text without NUL bytes", "category"),
        ("channel", f"contains(_channel_text, {nul})", "text without NUL bytes", "channel"),
        ("timestamp", "ts IS NULL", "a date or timestamp", "_ts_raw"),
        ("timestamp", f"ts < DATE '{earliest}' OR ts >= DATE '{latest}'",
         f"a date from {earliest} to before {latest}", "_ts_raw"),
        ("amount", "amount IS NULL", "a number", "_amount_raw"),
        ("amount", f"abs(amount) > {MAX_AMOUNT!r}",
         f"an amount of at most {MAX_AMOUNT:,.0f} in size", "_amount_raw"),
        ("amount", f"amount <> 0 AND abs(amount) < {MIN_AMOUNT!r}",
         f"0 or an amount of at least {MIN_AMOUNT} in size (sums are exact to 1/10,000)", "_amount_raw"),
        ("quantity", "quantity IS NULL AND _quantity_raw IS NOT NULL AND trim(_quantity_raw) <> ''",
         "a number", "_quantity_raw"),
    )


def _validate(con: duckdb.DuckDBPyConnection, columns: ColumnMap, policy: IngestPolicy,
              source: str, row_numbers: str, dates: tuple[dt.date, dt.date] = PLAUSIBLE_DATES,
              specs: dict[str, "_CsvSpec"] | None = None) -> IngestReport:
    checks = [c for c in _checks(dates) if c[0] in ("customer_id", "timestamp", "amount")
              or getattr(columns, c[0]) is not None]
    counts = ", ".join(f"count(*) FILTER (WHERE {cond})" for _, cond, _, _ in checks)
    stats = one_row(con, f"SELECT count(*), {counts}, count(*) FILTER (WHERE amount < 0), "
                         "count(*) FILTER (WHERE amount = 0), min(ts), max(ts) FROM typed")
    n_rows, bad = stats[0], stats[1:1 + len(checks)]
    refunds, zeros, first_ts, last_ts = stats[1 + len(checks):]
    if n_rows == 0:
        raise TransactionDataError(f"no transactions in {source}: it has a header but no rows",
                                   source=source, row=0)
    for (field, cond, expected, raw_col), n_bad in zip(checks, bad):
        if n_bad:
            _raise_first_bad(con, columns, field, cond, expected, raw_col, n_bad, policy, row_numbers,
                             specs or {})
    if refunds and policy.refunds == "error":
        _raise_first_bad(con, columns, "amount", "amount < 0", "no refunds (refunds='error')",
                         "_amount_raw", refunds, policy, row_numbers, specs or {})
    zero_excluded = zeros if policy.zero_amounts == "exclude" else 0
    duplicates, used = _stage_days(con, columns, policy, n_rows, n_rows - refunds - zero_excluded)
    return IngestReport(n_rows, used, refunds, zeros, zero_excluded, duplicates,
                        pd.Timestamp(first_ts) if first_ts else None,
                        pd.Timestamp(last_ts) if last_ts else None)


def _raise_first_bad(con: duckdb.DuckDBPyConnection, columns: ColumnMap, field: str, cond: str,
                     expected: str, raw_col: str | None, n_bad: int, policy: IngestPolicy,
                     row_numbers: str, specs: dict[str, "_CsvSpec"]) -> None:
    value_expr = raw_col or "NULL"
    file, row, value = one_row(    # called only when some row has the problem
        con, f"SELECT _file, _row, {value_expr} FROM typed WHERE {cond} ORDER BY _file, _row LIMIT 1")
    if row is None and row_numbers == "rescan":
        row = _csv_row_number(specs[file], columns, policy, cond)
    column = getattr(columns, field)
    where = f"{file}: row {row}" + (f" (line {row + 1})" if row_numbers == "rescan" else "")
    shown = "an empty value" if value is None or str(value).strip() == "" else repr(value)
    hint = (" (set the format with --date-format, e.g. %Y%m%d)"
            if field == "timestamp" and cond == "ts IS NULL" else "")
    more = f"; {n_bad - 1} more row(s) have the same problem" if n_bad > 1 else ""
    raise TransactionDataError(
        f"{where}, column {column!r}: expected {expected}, found {shown}{hint}{more}.",
        source=file, row=row, column=column)


def _csv_row_number(spec: "_CsvSpec", columns: ColumnMap, policy: IngestPolicy, cond: str) -> int | None:
    """Find the data row (1-based, header excluded) of the first bad value in one CSV file.

    Only runs on the error path: a single-threaded rescan of that file keeps file order.
    """
    single = duckdb.connect()
    single.execute("SET threads = 1")
    single.execute(f"SET TimeZone = '{sql_escape(policy.timezone)}'")
    single.execute(
        f"CREATE TEMP VIEW raw AS SELECT *, '{sql_escape(spec.file)}' AS _file, "
        f"row_number() OVER () AS _row FROM {spec.reader()}"
    )
    raw_types = dict(single.execute("SELECT column_name, column_type FROM (DESCRIBE raw)").fetchall())
    single.execute(_typed_view_sql(raw_types, columns, policy))
    found = single.execute(f"SELECT min(_row) FROM typed WHERE {cond}").fetchone()
    return found[0] if found else None


#: Tables ingest leaves on the log's connection for the feature job (:func:`features.build.stage`
#: turns them into its per-day tables and drops them): the per-day totals of every customer-day
#: (``n`` rows, ``rows_kept``, ``spend``, ``orders`` and, with categories, a ``category``),
#: exact for the days with one row; and, when the days with several rows need a second look
#: (duplicates dropped by policy, order ids, categories), their exact totals and categories.
DAYS_TABLE = "days_all"
MULTI_DAYS_TABLE = "multi_days_all"
MULTI_CATS_TABLE = "multi_cats_all"


def _needs_second_look(columns: ColumnMap, policy: IngestPolicy) -> bool:
    """Whether a customer-day with several rows may total otherwise than its rows summed: exact
    duplicates dropped, distinct order ids counted, or several categories bought that day."""
    return (_drops_duplicates(columns, policy) or columns.order_id is not None
            or columns.category is not None)


def _stage_days(con: duckdb.DuckDBPyConnection, columns: ColumnMap, policy: IngestPolicy,
                n_rows: int, used: int) -> tuple[int, int]:
    """The one grouped pass over the log that the feature job needs: :data:`DAYS_TABLE`.

    A day with one row is final as grouped (its row is its own distinct row, its order id its
    one order, its category its one category). The days with several rows (about 1 in 70 on a
    busy log) are read again, only their rows, and totalled exactly: duplicates dropped by
    policy, ``count(DISTINCT order_id)`` orders, each category bought
    (:data:`MULTI_DAYS_TABLE`, :data:`MULTI_CATS_TABLE`). This replaces a DISTINCT over whole
    rows and a separate pass for categories. Returns (duplicates dropped, rows used).
    """
    keep = _keep_condition(policy)
    orders = "count(order_id)" if columns.order_id is not None else "count(*)"
    extra = "CAST(count(*) AS INTEGER) AS n" + (        # a day's one row's category (several: read again)
        ", any_value(category) AS category" if columns.category is not None else "")
    with in_any_order(con):
        con.execute(f"CREATE OR REPLACE TEMP TABLE {DAYS_TABLE} AS " + day_totals_sql(
            "typed", f"{orders} FILTER (WHERE {keep})", keep=keep, extra=extra))
        if not _needs_second_look(columns, policy):
            return 0, used
        distinct = "DISTINCT " if _drops_duplicates(columns, policy) else ""
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE multi_rows AS
            SELECT {distinct}{', '.join(f't.{c}' for c in CANONICAL_COLUMNS)}
            FROM typed AS t
            SEMI JOIN (SELECT customer_id, day FROM {DAYS_TABLE} WHERE n > 1) AS m
                ON t.customer_id = m.customer_id AND CAST(t.ts AS DATE) = m.day""")
        orders = "count(DISTINCT order_id)" if columns.order_id is not None else "count(*)"
        con.execute(f"CREATE OR REPLACE TEMP TABLE {MULTI_DAYS_TABLE} AS " + day_totals_sql(
            "multi_rows", f"{orders} FILTER (WHERE {keep})", keep=keep))
        con.execute(f"CREATE OR REPLACE TEMP TABLE {MULTI_CATS_TABLE} AS SELECT DISTINCT customer_id, "
                    f"CAST(ts AS DATE) AS day, category FROM multi_rows WHERE {keep} AND category IS NOT NULL")
    single_kept, multi_n = one_row(
        con, f"SELECT coalesce(sum(rows_kept) FILTER (WHERE n = 1), 0), coalesce(sum(n) FILTER (WHERE n > 1), 0) "
        f"FROM {DAYS_TABLE}")
    multi_distinct, multi_kept = one_row(
        con, f"SELECT count(*), count(*) FILTER (WHERE {keep}) FROM multi_rows")
    con.execute("DROP TABLE multi_rows")
    if not _drops_duplicates(columns, policy):
        return 0, used
    return int(multi_n - multi_distinct), int(single_kept + multi_kept)


@contextlib.contextmanager
def in_any_order(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Let DuckDB store the rows of the tables made inside in any order (its
    ``preserve_insertion_order`` off, then as it was): the staged tables are only grouped,
    filtered and joined later, and keeping the order of a large table costs memory. A query
    with ORDER BY keeps its order either way."""
    before = one_row(con, "SELECT current_setting('preserve_insertion_order')")[0]
    con.execute("SET preserve_insertion_order = false")
    try:
        yield
    finally:
        con.execute(f"SET preserve_insertion_order = {'true' if before else 'false'}")


def expand_paths(paths: str | Path | Sequence[str | Path]) -> list[str]:
    """The files ``paths`` (paths or globs) name, checked as :func:`read_transactions` checks
    them: each exists, is a file, and is named once."""
    return _expand(paths)


def drops_duplicates(columns: ColumnMap, policy: IngestPolicy) -> bool:
    """Whether exact duplicate rows are dropped (the policy's ``duplicates``, ``"auto"``: when an
    order id is mapped)."""
    return _drops_duplicates(columns, policy)


def _drops_duplicates(columns: ColumnMap, policy: IngestPolicy) -> bool:
    if policy.duplicates == "auto":
        return columns.order_id is not None
    return policy.duplicates == "drop"


def _keep_condition(policy: IngestPolicy) -> str:
    return "amount > 0" if policy.zero_amounts == "exclude" else "amount >= 0"


def _final_select(columns: ColumnMap, policy: IngestPolicy, duplicates: int = 1) -> str:
    distinct = "DISTINCT " if duplicates and _drops_duplicates(columns, policy) else ""
    return f"SELECT {distinct}{', '.join(CANONICAL_COLUMNS)} FROM typed WHERE {_keep_condition(policy)}"


def _final_view_sql(columns: ColumnMap, policy: IngestPolicy, duplicates: int = 1) -> str:
    """The ``transactions`` view: the rows used (DISTINCT only when there are duplicates)."""
    return f"CREATE TEMP VIEW transactions AS {_final_select(columns, policy, duplicates)}"


def sql_escape(value: str) -> str:
    """Escape text for use inside a single-quoted SQL string."""
    return str(value).replace("'", "''")


def _ident(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'


# ---------------------------------------------------------------------------------------------
# Other inputs read like transaction logs (customer attributes, engagement events): the same
# formats, dialects, encodings, file checks and messages naming file, row, line and column.


@dataclass
class RawInput:
    """A side input (files or a DataFrame) opened as the view ``raw`` (its columns, ``_file``
    and ``_row``) on a connection of its own, read the way :func:`read_transactions` reads.

    ``what`` names the rows in messages (``"customers"``, ``"events"``); ``row_numbers`` is
    ``"exact"`` (Parquet, frames) or ``"rescan"`` (CSV: an error's row is found by rescanning).
    """

    con: duckdb.DuckDBPyConnection
    source: str
    what: str
    row_numbers: str
    specs: dict[str, _CsvSpec]
    policy: IngestPolicy
    copies: list[str]

    @property
    def types(self) -> dict[str, str]:
        """Column name -> DuckDB type of the raw input (``_file`` and ``_row`` left out)."""
        return {n: t for n, t in self.con.execute(
            "SELECT column_name, column_type FROM (DESCRIBE raw)").fetchall() if n not in ("_file", "_row")}

    def require(self, wanted: dict[str, tuple[str, str]]) -> None:
        """Every wanted column must exist: ``{column: (what it holds, the flag that maps it)}``."""
        available = self.types
        for name, (meaning, flag) in wanted.items():
            if name not in available:
                shown = ", ".join(available) or "none"
                raise TransactionDataError(
                    f"{self.source}: column {name!r} (the {meaning}) is missing; the columns are: "
                    f"{shown}. Map it with {flag}.", source=self.source, column=name)

    def first_bad(self, typed_view: Callable[[dict[str, str]], str], cond: str, column: str,
                  expected: str, raw_value: str | None, n_bad: int) -> TransactionDataError:
        """The error for the first row of the view ``typed`` (made by ``typed_view(raw types)``)
        where ``cond`` holds: file, row (and CSV line), column, what was expected and found."""
        value = raw_value or "NULL"
        file, row, found = one_row(     # called only when some row has the problem
            self.con, f"SELECT _file, _row, {value} FROM typed WHERE {cond} ORDER BY _file, _row LIMIT 1")
        if row is None and self.row_numbers == "rescan":
            row = rescanned_row(self.specs[file], self.policy, typed_view, cond)
        where = f"{file}: row {row}" + (f" (line {row + 1})" if self.row_numbers == "rescan" and row else "")
        shown = "an empty value" if found is None or str(found).strip() == "" else repr(found)
        more = f"; {n_bad - 1} more row(s) have the same problem" if n_bad > 1 else ""
        return TransactionDataError(f"{where}, column {column!r}: expected {expected}, found {shown}{more}.",
                                    source=file, row=row, column=column)

    def close(self) -> None:
        """Remove the transcoded copies of the input, if any were made."""
        _unlink(self.copies)


def open_raw(paths: str | Path | Sequence[str | Path], what: str,
             policy: IngestPolicy = IngestPolicy(), *, encoding: str = "utf-8",
             memory_limit: str | None = None, threads: int | None = None) -> RawInput:
    """Open CSV or Parquet files (paths or globs) as :class:`RawInput`, with the checks of
    :func:`read_transactions`: files that exist and are named once, one format, a well-formed
    header, the encoding (transcoded copies for the encodings DuckDB does not read), rows."""
    _check_threads(threads)
    files = _expand(paths)
    kind = _format_of(files)
    con = _connect(policy, memory_limit, threads)
    con.execute("SET enable_progress_bar = false")          # a side input's checks print nothing
    specs: dict[str, _CsvSpec] = {}
    if kind == "parquet":
        for f in files:
            try:
                duckdb.execute(f"DESCRIBE SELECT * FROM read_parquet('{sql_escape(f)}')")
            except duckdb.Error as exc:
                first = str(exc).strip().splitlines()[0]
                raise TransactionDataError(f"{f}: cannot be read as Parquet ({first})", source=f) from None
        listing = "[" + ", ".join(f"'{sql_escape(f)}'" for f in files) + "]"
        con.execute(f"CREATE TEMP VIEW raw AS SELECT * EXCLUDE (filename, file_row_number), "
                    f"filename AS _file, file_row_number + 1 AS _row FROM read_parquet({listing}, "
                    f"filename = true, file_row_number = true, union_by_name = true)")
        return RawInput(con, ", ".join(files), what, "exact", specs, policy, [])
    _remove_stale_temp_files()
    try:
        for f in files:
            try:
                specs[f] = _csv_spec(f, encoding)
            except TransactionDataError as exc:
                raise _renamed(exc, what) from None
        selects = [f"SELECT *, '{sql_escape(s.file)}' AS _file, NULL::BIGINT AS _row FROM {s.reader()}"
                   for s in specs.values()]
        con.execute(f"CREATE TEMP VIEW raw AS {' UNION ALL BY NAME '.join(selects)}")
    except BaseException:
        _unlink([s.path for s in specs.values() if s.path != s.file])
        raise
    return RawInput(con, ", ".join(files), what, "rescan", specs, policy,
                    [s.path for s in specs.values() if s.path != s.file])


def open_raw_frame(frame: pd.DataFrame, what: str, policy: IngestPolicy = IngestPolicy(), *,
                   source: str = "<DataFrame>") -> RawInput:
    """A DataFrame as :class:`RawInput`; rows are numbered from 1 in frame order."""
    con = _connect(policy, None)
    con.execute("SET enable_progress_bar = false")
    con.register("raw_frame", frame.reset_index(drop=True))
    con.execute(f"CREATE TEMP VIEW raw AS SELECT *, '{sql_escape(source)}' AS _file, "
                "row_number() OVER () AS _row FROM raw_frame")
    return RawInput(con, source, what, "exact", {}, policy, [])


def materialize(raw: RawInput, table: str, select: str) -> None:
    """Run ``CREATE TEMP TABLE table AS select`` over a raw input; a CSV file DuckDB cannot
    parse (ragged, unbalanced quote, bad encoding) is the error naming file and line."""
    try:
        raw.con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS {select}")
    except duckdb.InvalidInputException as exc:
        raise _csv_error(str(exc), raw.specs, raw.source) from None


def checked_count(raw: RawInput, select: str) -> tuple:
    """``select`` over a raw input's views, with CSV parse errors named as in :func:`materialize`."""
    try:
        return one_row(raw.con, select)
    except duckdb.InvalidInputException as exc:
        raise _csv_error(str(exc), raw.specs, raw.source) from None


def timestamp_expr(column: str, raw_type: str, policy: IngestPolicy) -> str:
    """A column read as a shop-time TIMESTAMP, exactly as a log's timestamps are read."""
    return _timestamp_expr(column, raw_type, policy)


def ident(name: str) -> str:
    """A column name quoted for SQL."""
    return _ident(name)


def rescanned_row(spec: _CsvSpec, policy: IngestPolicy, typed_view: Callable[[dict[str, str]], str],
                  cond: str, nth: int = 1) -> int | None:
    """The data row (1-based) of the ``nth`` row of one CSV file where ``cond`` holds on the view
    ``typed`` (made by ``typed_view``), by a single-threaded rescan (only on the error path)."""
    single = duckdb.connect()
    single.execute("SET threads = 1")
    single.execute(f"SET TimeZone = '{sql_escape(policy.timezone)}'")
    single.execute(f"CREATE TEMP VIEW raw AS SELECT *, '{sql_escape(spec.file)}' AS _file, "
                   f"row_number() OVER () AS _row FROM {spec.reader()}")
    raw_types = dict(single.execute("SELECT column_name, column_type FROM (DESCRIBE raw)").fetchall())
    single.execute(typed_view(raw_types))
    found = single.execute(f"SELECT _row FROM typed WHERE {cond} ORDER BY _row LIMIT 1 "
                           f"OFFSET {int(nth) - 1}").fetchone()
    return found[0] if found else None


def _renamed(exc: TransactionDataError, what: str) -> TransactionDataError:
    """A reader error about "transactions" said of another input."""
    text = str(exc).replace("no transactions in", f"no {what} in")
    return TransactionDataError(text, source=exc.source, row=exc.row, column=exc.column)
