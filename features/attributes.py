"""Customer attributes: one row per customer (gender, channel, region, birth year, ...), as features.

A customers file (CSV or Parquet, or a DataFrame) has the customer id and any numeric or text
columns; optionally ``valid_from``, the day an attribute row became known. It is read and
checked like a transaction log (:mod:`features.transactions`): the same formats, encodings
and messages naming file, row (and CSV line) and column. Then:

* a column whose every value is a number (in CSV, every non-empty value parses as one) is
  numeric; any other text column is categorical. A column that is mostly numbers with a few
  words is a typo, and an error at its first word; dates (other than ``valid_from``) are refused.
* without ``valid_from`` each customer has at most one row; with it, at most one row per
  customer and ``valid_from``. A row without ``valid_from`` is always known.
* a column that looks like an id (as many distinct text values as customers, at least
  :data:`ID_LIKE_MIN_CUSTOMERS`) or is named like a label (:data:`LABEL_NAMES`: ``churn*``,
  ``purchased``, ``label``, ``target``, ...) is refused: the first memorises customers, the
  second is the answer.

As of a cutoff C, a customer's attributes are its latest row with ``valid_from`` on or before
day C (:func:`attributes_as_of`), so a value known only later is never used. In the feature
table each attribute is the column ``attr_<name>`` (:func:`features.reference.feature_token`);
the :class:`~features.reference.FeatureReference` records each one's kind and, for text, the
categories known at the reference's cutoff (:func:`attribute_specs`): another value at scoring
time is missing, never an error. Customers without an attribute row have missing values.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.reference import ATTRIBUTE_PREFIX, AttributeSpec, FeatureReference, feature_token
from features.settings import IngestPolicy
from features.transactions import (
    PLAUSIBLE_DATES,
    RawInput,
    TransactionDataError,
    checked_count,
    ident,
    materialize,
    one_row,
    open_raw,
    open_raw_frame,
    rescanned_row,
    sql_escape,
    timestamp_expr,
)

#: A text column with as many distinct values as customers, over at least this many customers,
#: is an id (an email, a member number), not an attribute.
ID_LIKE_MIN_CUSTOMERS = 20
#: More categories than this in one column is an error (group them first: zip code -> region).
MAX_CATEGORIES = 500
#: Column names (lower case, as tokens between ``_``) that carry the label a model predicts.
LABEL_NAMES = re.compile(
    r"(^|_)(churn\w*|churned|label|labels|target|outcome|purchased|repurchased|retained|"
    r"returned|converted|y)($|_)|^(horizon_|days_to_next|next_purchase|will_)")
#: A column mostly of numbers (this share of its non-empty values or more) with a few that
#: are not is a numeric column with typos: an error, not a text column.
NUMERIC_SHARE = 0.9

_NUMERIC_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
                  "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL", "BOOLEAN")
_DATE_TYPES = ("DATE", "TIMESTAMP", "TIME")


@dataclass(frozen=True)
class CustomerAttributes:
    """A validated customers file: the DuckDB table ``attributes`` on its own connection with
    ``customer_id``, ``valid_from`` (TIMESTAMP, NULL when not given) and one column per
    attribute named by its feature (DOUBLE or VARCHAR), and ``columns``: each attribute's
    :class:`AttributeSpec` with every category in the file. Build it with
    :func:`read_customers` or :meth:`from_frame`."""

    raw: RawInput
    columns: tuple[AttributeSpec, ...]
    has_valid_from: bool
    source: str
    timezone: str

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, id_col: str = "customer_id",
                   valid_from_col: str | None = "valid_from", policy: IngestPolicy = IngestPolicy(), *,
                   source: str = "<customers>", dates: tuple[dt.date, dt.date] = PLAUSIBLE_DATES,
                   screen: bool = True) -> "CustomerAttributes":
        """Validate a DataFrame of attributes (rows numbered from 1 in frame order); ``screen``
        as in :func:`read_customers`."""
        return _open(open_raw_frame(frame, "customers", policy, source=source), id_col, valid_from_col,
                     dates, explicit_valid_from=False, screen=screen)

    @classmethod
    def from_records(cls, records: Mapping[str, Mapping[str, object]], policy: IngestPolicy = IngestPolicy(), *,
                     source: str = "<request>", screen: bool = False) -> "CustomerAttributes":
        """Attributes sent per customer (``{customer_id: {"channel": "web", "age": 41}}``, as
        ``/score_history`` takes them), read exactly as a file's text would be: numbers and text
        alike as their written form (``True``/``False`` as 1/0), so a value means the same
        whichever door it came through. Not screened by default: a model's reference decides
        which attributes are read. A customer sent with no attributes is a missing row."""
        names = list(dict.fromkeys(k for attrs in records.values() for k in attrs))

        def text(value: object) -> str | None:
            if value is None or (isinstance(value, float) and value != value):
                return None
            if isinstance(value, bool):
                return "1" if value else "0"
            return repr(value) if isinstance(value, float) else str(value)

        rows = [{"customer_id": str(cid), **{n: text(attrs.get(n)) for n in names}}
                for cid, attrs in records.items() if attrs]
        frame = pd.DataFrame(rows, columns=["customer_id", *names], dtype=object)
        if frame.empty:
            frame = pd.DataFrame({"customer_id": pd.Series([], dtype=object),
                                  **{n: pd.Series([], dtype=object) for n in names}})
        return cls.from_frame(frame.astype({c: "string" for c in frame.columns}), policy=policy, source=source,
                              screen=screen)

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The connection holding the ``attributes`` table (the raw input's own)."""
        return self.raw.con


def read_customers(paths: str | Path | Sequence[str | Path], id_col: str = "customer_id",
                   valid_from_col: str | None = "valid_from", policy: IngestPolicy = IngestPolicy(), *,
                   encoding: str = "utf-8", memory_limit: str | None = None, threads: int | None = None,
                   dates: tuple[dt.date, dt.date] = PLAUSIBLE_DATES,
                   explicit_valid_from: bool = False, screen: bool = True) -> CustomerAttributes:
    """Open a customers file (CSV or Parquet; paths or globs) as :class:`CustomerAttributes`.

    ``valid_from_col`` is used when the file has it (``explicit_valid_from``: it must have it);
    its values are read like transaction timestamps, in ``policy``'s time zone and date format.
    ``screen`` refuses what a model must not learn from: id-like and label-like columns, more
    than :data:`MAX_CATEGORIES` categories. A door scoring with a model's reference passes False:
    the reference decides which columns are read, and a new category is missing, not an error.
    """
    raw = open_raw(paths, "customers", policy, encoding=encoding, memory_limit=memory_limit, threads=threads)
    try:
        return _open(raw, id_col, valid_from_col, dates, explicit_valid_from, screen)
    except BaseException:
        raw.close()
        raise


def attributes_as_of(attrs: CustomerAttributes, cutoff: dt.date | str) -> pd.DataFrame:
    """One row per customer with an attribute row known on day ``cutoff``: its latest row with
    ``valid_from`` on or before it (rows without ``valid_from`` are always known), the
    attributes under their own column names. Sorted by ``customer_id``."""
    names = {a.feature: a.name for a in attrs.columns}
    frame = attrs.con.execute(as_of_sql(attrs, cutoff)).df()
    return frame.rename(columns=names)


def as_of_sql(attrs: CustomerAttributes, cutoff: dt.date | str,
              specs: tuple[AttributeSpec, ...] | None = None) -> str:
    """The SELECT of :func:`attributes_as_of` over ``attributes`` with feature column names;
    with ``specs`` (a reference's) only those columns, a text value not among a column's
    categories as NULL, and a column the file lacks as NULL."""
    from features.build import cutoff_literal

    c = cutoff_literal(cutoff)
    have = {a.feature: a for a in attrs.columns}
    if specs is None:
        cols = [ident(a.feature) for a in attrs.columns]
    else:
        cols = [_as_spec(s, have.get(s.feature)) for s in specs]
    return f"""
        SELECT customer_id{''.join(', ' + col for col in cols)}
        FROM attributes
        WHERE valid_from IS NULL OR valid_from < {c} + INTERVAL 1 DAY
        QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY valid_from DESC NULLS LAST) = 1
        ORDER BY customer_id"""


def _as_spec(spec: AttributeSpec, have: AttributeSpec | None) -> str:
    """One reference attribute read from the file's column: typed as the reference says."""
    name = ident(spec.feature)
    if have is None:
        return f"NULL::{'DOUBLE' if spec.kind == 'numeric' else 'VARCHAR'} AS {name}"
    if spec.kind == "numeric":
        return f"TRY_CAST({name} AS DOUBLE) AS {name}"
    known = ", ".join(f"'{sql_escape(v)}'" for v in spec.categories) or "NULL"
    text = ident("_raw_" + spec.feature) if have.kind == "numeric" else name    # the text as written
    return f"CASE WHEN {text} IN ({known}) THEN {text} END AS {name}"


def attribute_specs(attrs: CustomerAttributes, cutoff: dt.date | str) -> tuple[AttributeSpec, ...]:
    """Each attribute's kind, and for text the categories of the rows known on day ``cutoff``
    (sorted): what a feature reference fitted at that cutoff records."""
    from features.build import cutoff_literal

    known = f"valid_from IS NULL OR valid_from < {cutoff_literal(cutoff)} + INTERVAL 1 DAY"
    specs = []
    for a in attrs.columns:
        if a.kind == "categorical":
            values = [v for (v,) in attrs.con.execute(
                f"SELECT DISTINCT {ident(a.feature)} FROM attributes WHERE ({known}) "
                f"AND {ident(a.feature)} IS NOT NULL ORDER BY 1").fetchall()]
            a = AttributeSpec(a.name, a.feature, a.kind, tuple(values))
        specs.append(a)
    return tuple(specs)


def categorize(table: pd.DataFrame, reference: FeatureReference) -> pd.DataFrame:
    """The reference's categorical ``attr_*`` columns of a feature table as pandas categoricals
    with the reference's categories (another value becomes missing), its numeric ones as
    floats: the dtypes LightGBM's categorical handling reads. Other columns are untouched."""
    for spec in reference.attributes:
        if spec.feature not in table.columns:
            continue
        if spec.kind == "categorical":
            values = table[spec.feature].astype(object).where(table[spec.feature].notna(), None)
            table[spec.feature] = pd.Categorical(values, categories=list(spec.categories))
        else:
            table[spec.feature] = pd.to_numeric(table[spec.feature], errors="coerce").astype("float64")
    return table


def categorize_arrow(table: pa.Table, reference: FeatureReference) -> pa.Table:
    """:func:`categorize` for an Arrow table: categorical ``attr_*`` columns become dictionary
    columns whose dictionary is the reference's categories (pandas reads them as categoricals
    with exactly those categories)."""
    for spec in reference.attributes:
        if spec.kind != "categorical" or spec.feature not in table.column_names:
            continue
        i = table.column_names.index(spec.feature)
        dictionary = pa.array(list(spec.categories), pa.string())
        column = table.column(i).cast(pa.string())
        chunks = [pa.DictionaryArray.from_arrays(pc.index_in(chunk, value_set=dictionary).cast(pa.int32()),
                                                 dictionary) for chunk in column.chunks]
        typed = pa.chunked_array(chunks, pa.dictionary(pa.int32(), pa.string()))
        table = table.set_column(i, pa.field(spec.feature, typed.type), typed)
    return table


# ------------------------------------------------------------------------------------ reading


def _open(raw: RawInput, id_col: str, valid_from_col: str | None, dates: tuple[dt.date, dt.date],
          explicit_valid_from: bool, screen: bool = True) -> CustomerAttributes:
    types = raw.types
    raw.require({id_col: ("customer id", "--customers-id-col")})
    if explicit_valid_from and valid_from_col:
        raw.require({valid_from_col: ("day an attribute became known", "valid_from_col")})
    valid_from = valid_from_col if valid_from_col in types else None
    names = [n for n in types if n not in (id_col, valid_from)]
    if not names:
        raise TransactionDataError(f"{raw.source}: no attribute columns besides the customer id {id_col!r}"
                                   f"{' and ' + repr(valid_from) if valid_from else ''}", source=raw.source)
    features: dict[str, str] = {}
    for name in names:
        if screen:
            _refuse_label(raw, name)
        feature = ATTRIBUTE_PREFIX + feature_token(name)
        if feature == ATTRIBUTE_PREFIX:
            raise TransactionDataError(f"{raw.source}: column {name!r} has no letters or digits to name a "
                                       "feature after; rename it", source=raw.source, column=name)
        if feature in features:
            raise TransactionDataError(
                f"{raw.source}: columns {features[feature]!r} and {name!r} both become the feature "
                f"{feature!r}; rename one", source=raw.source, column=name)
        if types[name].split("(")[0].startswith(_DATE_TYPES):
            raise TransactionDataError(
                f"{raw.source}: column {name!r} holds dates ({types[name]}); attributes are numbers or "
                "text (give e.g. a signup year), and the day a row became known is 'valid_from'",
                source=raw.source, column=name)
        features[feature] = name
    kinds = _kinds(raw, types, names, id_col)

    def typed_view(raw_types: dict[str, str]) -> str:
        cols = [f"NULLIF(trim(CAST({ident(id_col)} AS VARCHAR)), '') AS customer_id"]
        cols.append(f"{timestamp_expr(valid_from, raw_types[valid_from], raw.policy)} AS valid_from, "
                    f"NULLIF(trim(CAST({ident(valid_from)} AS VARCHAR)), '') AS _valid_from_raw"
                    if valid_from else "NULL::TIMESTAMP AS valid_from, NULL::VARCHAR AS _valid_from_raw")
        for feature, name in features.items():
            text = f"NULLIF(trim(CAST({ident(name)} AS VARCHAR)), '')"
            if kinds[name] == "numeric":
                number = (f"CAST({ident(name)} AS DOUBLE)" if _is_numeric_type(raw_types[name])
                          else f"TRY_CAST({text} AS DOUBLE)")
                cols.append(f"{number} AS {ident(feature)}, {text} AS {ident('_raw_' + feature)}")
            else:
                cols.append(f"{text} AS {ident(feature)}")
        return f"CREATE OR REPLACE TEMP VIEW typed AS SELECT {', '.join(cols)}, _file, _row FROM raw"

    raw.con.execute(typed_view(types))
    earliest, latest = (d.isoformat() for d in dates)
    checks = [("customer_id IS NULL", id_col, "a non-empty customer id", None),
              ("contains(customer_id, chr(0))", id_col, "an id without NUL bytes", "customer_id")]
    if valid_from:
        checks += [("valid_from IS NULL AND _valid_from_raw IS NOT NULL", valid_from,
                    "a date or timestamp (or nothing: always known)", "_valid_from_raw"),
                   (f"valid_from < DATE '{earliest}' OR valid_from >= DATE '{latest}'", valid_from,
                    f"a date from {earliest} to before {latest}", "_valid_from_raw")]
    for feature, name in features.items():
        f = ident(feature)
        if kinds[name] == "numeric":
            raw_value = ident("_raw_" + feature)
            checks.append((f"{f} IS NULL AND {raw_value} IS NOT NULL", name, "a number", raw_value))
            checks.append((f"NOT isfinite({f})", name, "a finite number", raw_value))
        else:
            checks.append((f"contains({f}, chr(0))", name, "text without NUL bytes", f))
    counts = checked_count(raw, "SELECT count(*), " + ", ".join(
        f"count(*) FILTER (WHERE {cond})" for cond, *_ in checks) + " FROM typed")
    if counts[0] == 0:
        raise TransactionDataError(f"no customers in {raw.source}: it has a header but no rows",
                                   source=raw.source, row=0)
    for (cond, column, expected, shown_col), n_bad in zip(checks, counts[1:]):
        if n_bad:
            raise raw.first_bad(typed_view, cond, column, expected, shown_col, n_bad)
    _refuse_duplicates(raw, typed_view, id_col, valid_from)
    keep = ", ".join(["customer_id", "valid_from"] + [ident(f) for f in features]
                     + [ident("_raw_" + f) for f, name in features.items() if kinds[name] == "numeric"])
    materialize(raw, "attributes", f"SELECT {keep} FROM typed")
    specs = []
    for feature, name in features.items():
        if kinds[name] == "categorical":
            n_customers, n_values = one_row(
                raw.con, f"SELECT count(DISTINCT customer_id) FILTER (WHERE {ident(feature)} IS NOT NULL), "
                f"count(DISTINCT {ident(feature)}) FROM attributes")
            if screen and n_values >= n_customers >= ID_LIKE_MIN_CUSTOMERS:
                raise TransactionDataError(
                    f"{raw.source}: column {name!r} looks like an id, not an attribute: {n_values:,} distinct "
                    f"values for {n_customers:,} customers, so a model would learn customers by name; drop "
                    "it (or group it, e.g. city -> region)", source=raw.source, column=name)
            if screen and n_values > MAX_CATEGORIES:
                raise TransactionDataError(
                    f"{raw.source}: column {name!r} has {n_values:,} categories, more than {MAX_CATEGORIES}; "
                    "group them first (e.g. zip code -> region)", source=raw.source, column=name)
            values = tuple(v for (v,) in raw.con.execute(
                f"SELECT DISTINCT {ident(feature)} FROM attributes WHERE {ident(feature)} IS NOT NULL "
                "ORDER BY 1").fetchall())
            specs.append(AttributeSpec(name, feature, "categorical", values))
        else:
            specs.append(AttributeSpec(name, feature, "numeric"))
    return CustomerAttributes(raw, tuple(specs), valid_from is not None, raw.source, raw.policy.timezone)


def _is_numeric_type(duck_type: str) -> bool:
    return duck_type.split("(")[0] in _NUMERIC_TYPES


def _kinds(raw: RawInput, types: dict[str, str], names: list[str], id_col: str) -> dict[str, str]:
    """Each column's kind: numeric types and text whose every non-empty value is a number are
    numeric, other text categorical. Text mostly of numbers is a typo: the first word is an error."""
    kinds, texts = {}, []
    for name in names:
        if _is_numeric_type(types[name]):
            kinds[name] = "numeric"
        else:
            texts.append(name)
    if not texts:
        return kinds
    parts = []
    for name in texts:
        text = f"NULLIF(trim(CAST({ident(name)} AS VARCHAR)), '')"
        parts.append(f"count({text}), count(TRY_CAST({text} AS DOUBLE))")
    row = checked_count(raw, f"SELECT {', '.join(parts)} FROM raw")
    for i, name in enumerate(texts):
        filled, numbers = row[2 * i], row[2 * i + 1]
        if filled and numbers == filled:
            kinds[name] = "numeric"
        elif filled and numbers >= NUMERIC_SHARE * filled:
            text = f"NULLIF(trim(CAST({ident(name)} AS VARCHAR)), '')"
            typed = (lambda raw_types, t=text: f"CREATE OR REPLACE TEMP VIEW typed AS SELECT {t} AS _v, "
                     "_file, _row FROM raw")
            raw.con.execute(typed({}))
            cond = "_v IS NOT NULL AND TRY_CAST(_v AS DOUBLE) IS NULL"
            raise raw.first_bad(typed, cond, name, f"a number (the column's other {numbers:,} values are)",
                                "_v", filled - numbers)
        else:
            kinds[name] = "categorical"
    return kinds


def _refuse_label(raw: RawInput, name: str) -> None:
    if LABEL_NAMES.search(feature_token(name)):
        raise TransactionDataError(
            f"{raw.source}: column {name!r} is named like a label (churn, purchased, target, ...): what the "
            "model predicts cannot be one of its inputs; drop it or rename it if it is known beforehand",
            source=raw.source, column=name)


def _refuse_duplicates(raw: RawInput, typed_view, id_col: str, valid_from: str | None) -> None:
    """At most one row per customer (and ``valid_from``, when given): the error names the
    second row of the first repeated customer."""
    key = "customer_id, valid_from" if valid_from else "customer_id"
    dupes = checked_count(raw, f"SELECT count(*) FROM (SELECT {key} FROM typed GROUP BY ALL HAVING count(*) > 1)")[0]
    if not dupes:
        return
    expected = (f"one row per customer and {valid_from!r}" if valid_from else
                "one row per customer (give a 'valid_from' column for attributes that change)")
    if raw.row_numbers == "rescan":             # CSV rows are numbered by rescanning a file
        who, when = one_row(raw.con, f"SELECT customer_id, {'valid_from' if valid_from else 'NULL'} FROM typed "
                                     f"GROUP BY ALL HAVING count(*) > 1 ORDER BY 1, 2 LIMIT 1")
        cond = f"customer_id = '{sql_escape(who)}'" + (
            f" AND valid_from IS NOT DISTINCT FROM {'NULL' if when is None else repr(str(when))}::TIMESTAMP"
            if valid_from else "")
        file, row, seen = raw.source, None, 0
        for spec in raw.specs.values():
            n = one_row(raw.con, f"SELECT count(*) FROM typed WHERE _file = '{sql_escape(spec.file)}' "
                                 f"AND {cond}")[0]
            if seen + n >= 2:
                file, row = spec.file, rescanned_row(spec, raw.policy, typed_view, cond, nth=2 - seen)
                break
            seen += n
        where = f"{file}: row {row} (line {row + 1})" if row else file
    else:
        file, row, who = one_row(
            raw.con, f"SELECT _file, _row, customer_id FROM (SELECT *, row_number() OVER (PARTITION BY {key} "
            f"ORDER BY _file, _row) AS _k FROM typed) WHERE _k = 2 ORDER BY _file, _row LIMIT 1")
        where = f"{file}: row {row}"
    more = f"; {dupes - 1} more customer(s) repeat too" if dupes > 1 else ""
    raise TransactionDataError(f"{where}, column {id_col!r}: expected {expected}, found customer {who!r} "
                               f"again{more}.", source=file, row=row, column=id_col)
