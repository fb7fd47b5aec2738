"""Reading and validating transaction logs.

A :class:`TransactionLog` is a validated, lazy view over the input (CSV or Parquet files read
by DuckDB in place, or a pandas DataFrame) with canonical columns::

    customer_id VARCHAR, ts TIMESTAMP, amount DOUBLE,
    order_id VARCHAR, quantity DOUBLE, category VARCHAR, channel VARCHAR

Unmapped optional columns are NULL. Rows are checked once when the log is opened: a missing
column, an empty customer id, an unparseable timestamp or a non-numeric amount raises
:class:`TransactionDataError` naming the file, the row and the column. The
:class:`~features.settings.IngestPolicy` then decides about duplicates, refunds and zero amounts.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import duckdb
import pandas as pd

from features.settings import ColumnMap, IngestPolicy

CANONICAL_COLUMNS = ("customer_id", "ts", "amount", "order_id", "quantity", "category", "channel")


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
        return self.columns.category is not None

    @property
    def has_order_id(self) -> bool:
        return self.columns.order_id is not None

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, columns: ColumnMap = ColumnMap(),
                   policy: IngestPolicy = IngestPolicy(), *, source: str = "<DataFrame>",
                   memory_limit: str | None = None) -> "TransactionLog":
        """Validate a DataFrame of transactions; rows are numbered from 1 in frame order."""
        con = _connect(policy, memory_limit)
        framed = frame.reset_index(drop=True)
        con.register("raw_frame", framed)
        con.execute(
            "CREATE TEMP VIEW raw AS SELECT *, "
            f"'{sql_escape(source)}' AS _file, row_number() OVER () AS _row FROM raw_frame"
        )
        return cls._open(con, columns, policy, source, row_numbers="exact")

    @classmethod
    def _open(cls, con: duckdb.DuckDBPyConnection, columns: ColumnMap, policy: IngestPolicy,
              source: str, row_numbers: str) -> "TransactionLog":
        raw_types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE raw)").fetchall())
        _check_columns(raw_types, columns, source)
        con.execute(_typed_view_sql(raw_types, columns, policy))
        report = _validate(con, columns, policy, source, row_numbers)
        con.execute(_final_view_sql(columns, policy))
        return cls(con, columns, report, source, policy)


def read_transactions(paths: str | Path | Sequence[str | Path], columns: ColumnMap = ColumnMap(),
                      policy: IngestPolicy = IngestPolicy(), *,
                      memory_limit: str | None = None) -> TransactionLog:
    """Open CSV or Parquet files (paths or globs) as a validated :class:`TransactionLog`.

    Files are read in place by DuckDB, so logs larger than memory work. All files must share
    one format, chosen by extension (``.csv``, ``.txt``, ``.tsv``, ``.parquet``, ``.pq``).
    """
    files = _expand(paths)
    kind = _format_of(files)
    for f in files:
        _check_file_columns(f, kind, columns)
    con = _connect(policy, memory_limit)
    listing = "[" + ", ".join(f"'{sql_escape(f)}'" for f in files) + "]"
    if kind == "csv":
        con.execute(
            f"CREATE TEMP VIEW raw AS SELECT *, filename AS _file, NULL::BIGINT AS _row "
            f"FROM read_csv({listing}, all_varchar = true, header = true, filename = true, "
            f"union_by_name = true)"
        )
        row_numbers = "rescan"
    else:
        con.execute(
            f"CREATE TEMP VIEW raw AS SELECT * EXCLUDE (filename, file_row_number), "
            f"filename AS _file, file_row_number + 1 AS _row "
            f"FROM read_parquet({listing}, filename = true, file_row_number = true, "
            f"union_by_name = true)"
        )
        row_numbers = "exact"
    return TransactionLog._open(con, columns, policy, ", ".join(files), row_numbers)


def _connect(policy: IngestPolicy, memory_limit: str | None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    try:
        con.execute(f"SET TimeZone = '{sql_escape(policy.timezone)}'")
    except duckdb.Error as exc:
        raise TransactionDataError(f"unknown time zone {policy.timezone!r}: {exc}") from None
    if memory_limit:
        con.execute(f"SET memory_limit = '{sql_escape(memory_limit)}'")
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
            if not os.path.isfile(f):
                raise TransactionDataError(f"{f}: no such file", source=f)
        files.extend(matched)
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


def _check_file_columns(path: str, kind: str, columns: ColumnMap) -> None:
    """Every mapped column must be in every file: name the file and the missing column."""
    reader = "read_csv" if kind == "csv" else "read_parquet"
    options = ", all_varchar = true, header = true" if kind == "csv" else ""
    try:
        names = [row[0] for row in duckdb.execute(
            f"SELECT column_name FROM (DESCRIBE SELECT * FROM {reader}('{sql_escape(path)}'{options}))"
        ).fetchall()]
    except duckdb.Error as exc:
        raise TransactionDataError(f"{path}: cannot be read as {kind.upper()}: {exc}", source=path) from None
    _check_columns(dict.fromkeys(names, ""), columns, path)


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
    if raw_type.startswith("TIMESTAMP WITH TIME ZONE"):
        return f"CAST({col} AT TIME ZONE '{tz}' AS TIMESTAMP)"
    if raw_type.startswith("TIMESTAMP") or raw_type == "DATE":
        return f"CAST({col} AS TIMESTAMP)"
    return f"CAST(TRY_CAST(CAST({col} AS VARCHAR) AS TIMESTAMPTZ) AT TIME ZONE '{tz}' AS TIMESTAMP)"


def _typed_view_sql(raw_types: dict[str, str], columns: ColumnMap, policy: IngestPolicy) -> str:
    optional = columns.optional()

    def text(name: str) -> str:
        return f"NULLIF(trim(CAST({_ident(optional[name])} AS VARCHAR)), '')" if name in optional else "NULL::VARCHAR"

    quantity = (f"TRY_CAST({_ident(optional['quantity'])} AS DOUBLE)"
                if "quantity" in optional else "NULL::DOUBLE")
    amount = f"TRY_CAST({_ident(columns.amount)} AS DOUBLE)"
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
            CAST({_ident(columns.amount)} AS VARCHAR) AS _amount_raw,
            {f"CAST({_ident(optional['quantity'])} AS VARCHAR)" if "quantity" in optional else "NULL"} AS _quantity_raw,
            _file, _row
        FROM raw"""


# (column checked, the failing condition on the typed view, what was expected)
_CHECKS = (
    ("customer_id", "customer_id IS NULL", "a non-empty customer id", None),
    ("timestamp", "ts IS NULL", "a date or timestamp", "_ts_raw"),
    ("amount", "amount IS NULL", "a number", "_amount_raw"),
    ("quantity", "quantity IS NULL AND _quantity_raw IS NOT NULL AND trim(_quantity_raw) <> ''",
     "a number", "_quantity_raw"),
)


def _validate(con: duckdb.DuckDBPyConnection, columns: ColumnMap, policy: IngestPolicy,
              source: str, row_numbers: str) -> IngestReport:
    counts = ", ".join(f"count(*) FILTER (WHERE {cond})" for _, cond, _, _ in _CHECKS)
    stats = con.execute(
        f"SELECT count(*), {counts}, count(*) FILTER (WHERE amount < 0), "
        "count(*) FILTER (WHERE amount = 0), min(ts), max(ts) FROM typed"
    ).fetchone()
    n_rows, bad = stats[0], stats[1:1 + len(_CHECKS)]
    refunds, zeros, first_ts, last_ts = stats[1 + len(_CHECKS):]
    for (field, cond, expected, raw_col), n_bad in zip(_CHECKS, bad):
        if n_bad:
            _raise_first_bad(con, columns, field, cond, expected, raw_col, n_bad, policy, row_numbers)
    if refunds and policy.refunds == "error":
        _raise_first_bad(con, columns, "amount", "amount < 0", "no refunds (refunds='error')",
                         "_amount_raw", refunds, policy, row_numbers)
    zero_excluded = zeros if policy.zero_amounts == "exclude" else 0
    duplicates = 0
    if _drops_duplicates(columns, policy):                  # one pass over the distinct rows
        distinct, used = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE {_keep_condition(policy)}) "
            f"FROM (SELECT DISTINCT {', '.join(CANONICAL_COLUMNS)} FROM typed)").fetchone()
        duplicates = n_rows - distinct
    else:
        used = n_rows - refunds - zero_excluded
    return IngestReport(n_rows, used, refunds, zeros, zero_excluded, duplicates,
                        pd.Timestamp(first_ts) if first_ts else None,
                        pd.Timestamp(last_ts) if last_ts else None)


def _raise_first_bad(con: duckdb.DuckDBPyConnection, columns: ColumnMap, field: str, cond: str,
                     expected: str, raw_col: str | None, n_bad: int, policy: IngestPolicy,
                     row_numbers: str) -> None:
    value_expr = raw_col or "NULL"
    file, row, value = con.execute(
        f"SELECT _file, _row, {value_expr} FROM typed WHERE {cond} ORDER BY _file, _row LIMIT 1"
    ).fetchone()
    if row is None and row_numbers == "rescan":
        row = _csv_row_number(file, columns, policy, cond)
    column = getattr(columns, field)
    where = f"{file}: row {row}" + (f" (line {row + 1})" if row_numbers == "rescan" else "")
    shown = "an empty value" if value is None or str(value).strip() == "" else repr(value)
    hint = " (set the format with --date-format, e.g. %Y%m%d)" if field == "timestamp" else ""
    more = f"; {n_bad - 1} more row(s) have the same problem" if n_bad > 1 else ""
    raise TransactionDataError(
        f"{where}, column {column!r}: expected {expected}, found {shown}{hint}{more}.",
        source=file, row=row, column=column)


def _csv_row_number(file: str, columns: ColumnMap, policy: IngestPolicy, cond: str) -> int | None:
    """Find the data row (1-based, header excluded) of the first bad value in one CSV file.

    Only runs on the error path: a single-threaded rescan of that file keeps file order.
    """
    single = duckdb.connect()
    single.execute("SET threads = 1")
    single.execute(f"SET TimeZone = '{sql_escape(policy.timezone)}'")
    single.execute(
        f"CREATE TEMP VIEW raw AS SELECT *, '{sql_escape(file)}' AS _file, "
        f"row_number() OVER () AS _row FROM read_csv('{sql_escape(file)}', all_varchar = true, header = true)"
    )
    raw_types = dict(single.execute("SELECT column_name, column_type FROM (DESCRIBE raw)").fetchall())
    single.execute(_typed_view_sql(raw_types, columns, policy))
    found = single.execute(f"SELECT min(_row) FROM typed WHERE {cond}").fetchone()
    return found[0] if found else None


def _drops_duplicates(columns: ColumnMap, policy: IngestPolicy) -> bool:
    if policy.duplicates == "auto":
        return columns.order_id is not None
    return policy.duplicates == "drop"


def _keep_condition(policy: IngestPolicy) -> str:
    return "amount > 0" if policy.zero_amounts == "exclude" else "amount >= 0"


def _final_select(columns: ColumnMap, policy: IngestPolicy) -> str:
    distinct = "DISTINCT " if _drops_duplicates(columns, policy) else ""
    return f"SELECT {distinct}{', '.join(CANONICAL_COLUMNS)} FROM typed WHERE {_keep_condition(policy)}"


def _final_view_sql(columns: ColumnMap, policy: IngestPolicy) -> str:
    return f"CREATE TEMP VIEW transactions AS {_final_select(columns, policy)}"


def sql_escape(value: str) -> str:
    """Escape text for use inside a single-quoted SQL string."""
    return str(value).replace("'", "''")


def _ident(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'
