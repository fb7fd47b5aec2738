"""Feature and label tables for millions of customers, compact in memory.

:func:`features.build_features` hands its table over as DuckDB's pandas result: every text
value a Python object. That is right for a service answering a few customers, but at 10
million customers the ids and the segment and tier names alone take several GiB. The same
queries (:func:`features.prepare`, :func:`features.labels.labels_sql`) are fetched here through
Arrow instead: customer ids stay in one Arrow buffer (``string[pyarrow]``), low-cardinality
text (segments, tiers, top category) becomes pandas categoricals, numbers keep the dtypes
``build_features`` gives them. Same rows, same order, same values: only the memory differs.
Training's evaluation and the bulk scorers read these; nothing computes a feature here.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.attributes import categorize_arrow
from features.build import TransactionsLike, cutoff_literal, prepare
from features.labels import check_horizon, labels_sql
from features.reference import FeatureReference
from features.side import SideData
from features.transactions import TransactionLog

#: Text columns kept as Arrow strings (one value per customer); every other text column is
#: read as a categorical.
ID_COLUMNS = ("customer_id",)


def features_frame(transactions: TransactionsLike, cutoff: dt.date | str,
                   reference: FeatureReference | None = None, side: SideData | None = None) -> pd.DataFrame:
    """:func:`features.build_features` (daily, with ``reference`` and ``side``), compact."""
    log, query, used = prepare(transactions, cutoff, None, None, reference, side)
    table = log.con.sql(query).to_arrow_table()
    return compact_frame(categorize_arrow(table, used) if used.attributes else table)


def labels_frame(log: TransactionLog, cutoff: dt.date | str, horizon_days: int) -> pd.DataFrame:
    """:func:`features.build_labels`, compact."""
    check_horizon(log, cutoff, horizon_days)
    return compact_frame(log.con.sql(labels_sql(cutoff_literal(cutoff), int(horizon_days), log.has_order_id))
                         .to_arrow_table())


def compact_frame(table: pa.Table) -> pd.DataFrame:
    """``table`` as pandas, column by column (each Arrow column freed once converted): text in
    :data:`ID_COLUMNS` as ``string[pyarrow]``, other text as categoricals, DuckDB's HUGEINT
    sums (Arrow decimals) as float64 and dates as ``datetime64[us]``, as DuckDB's own pandas
    result has them."""
    columns, fields = [], []
    for f, column in zip(table.schema, table.columns):
        if pa.types.is_decimal(f.type):
            column = column.cast(pa.float64())
        elif pa.types.is_date(f.type):               # DuckDB's pandas result: datetime64[us]
            column = column.cast(pa.timestamp("us"))
        elif (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)) and f.name not in ID_COLUMNS:
            column = pc.dictionary_encode(column)
        columns.append(column)
        fields.append(f.with_type(column.type))
    table = pa.table(columns, schema=pa.schema(fields))
    del columns
    return table.to_pandas(split_blocks=True, self_destruct=True,
                           types_mapper={pa.string(): pd.ArrowDtype(pa.string())}.get)
