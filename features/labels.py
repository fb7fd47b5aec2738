"""Training labels: what each customer did in the horizon after a cutoff.

For cutoff C and horizon H days, every customer with a purchase on or before C gets:
``purchased`` (any purchase in (C, C+H]), ``horizon_purchase_days`` (distinct purchase days
there, the unit the BG/NBD counts at daily frequency), ``horizon_orders``, ``horizon_spend``,
and ``days_to_next_purchase`` with ``next_purchase_censored``: the days from C to the first
purchase after it, or H and censored when there was none within the horizon.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pandas as pd
import pyarrow as pa

from features.attributes import categorize, categorize_arrow
from features.build import TransactionsLike, as_log, cutoff_literal, parse_cutoff, prepare
from features.reference import FeatureReference
from features.settings import FeatureSettings
from features.side import SideData
from features.sql import money_sum
from features.transactions import TransactionLog


def build_labels(transactions: TransactionsLike, cutoff: dt.date | str, horizon_days: int,
                 observation_end: dt.date | str | None = None) -> pd.DataFrame:
    """Labels for the customers known at ``cutoff``, sorted by ``customer_id``.

    ``observation_end`` is the last day the log covers (default: its last transaction day); a
    horizon reaching past it would call customers churned for days nobody observed, so it is
    refused.
    """
    log = as_log(transactions)
    check_horizon(log, cutoff, horizon_days, observation_end)
    return log.con.execute(labels_sql(cutoff_literal(cutoff), int(horizon_days), log.has_order_id)).df()


def check_horizon(log: TransactionLog, cutoff: dt.date | str, horizon_days: int,
                  observation_end: dt.date | str | None = None) -> None:
    """Refuse a horizon shorter than a day or reaching past the last day the log covers."""
    if int(horizon_days) < 1:
        raise ValueError(f"horizon_days must be at least 1, got {horizon_days!r}")
    end = pd.Timestamp(observation_end) if observation_end is not None else log.report.last_timestamp
    horizon_end = parse_cutoff(cutoff) + pd.Timedelta(days=int(horizon_days))
    if end is None or horizon_end.normalize() > end.normalize():
        raise ValueError(
            f"the horizon ends on {horizon_end.date()}, after the log's last day "
            f"({end.date() if end is not None else 'empty log'}): choose an earlier cutoff or a shorter horizon")


def labels_sql(cutoff: str, horizon_days: int, has_order_id: bool) -> str:
    """The labels as one SELECT over ``transactions`` (engine-neutral SQL; see :func:`build_labels`)."""
    c = cutoff
    orders = "count(DISTINCT f.order_id)" if has_order_id else "count(f.ts)"
    return f"""
        SELECT b.customer_id,
            count(f.ts) > 0 AS purchased,
            count(DISTINCT CAST(f.ts AS DATE)) AS horizon_purchase_days,
            {orders} AS horizon_orders,
            {money_sum('f.amount')} AS horizon_spend,
            coalesce(date_diff('day', {c}, min(CAST(f.ts AS DATE))), {int(horizon_days)}) AS days_to_next_purchase,
            min(f.ts) IS NULL AS next_purchase_censored
        FROM (SELECT DISTINCT customer_id FROM transactions WHERE ts < {c} + INTERVAL 1 DAY) AS b
        LEFT JOIN (SELECT * FROM transactions
                   WHERE ts >= {c} + INTERVAL 1 DAY AND ts < {c} + INTERVAL {int(horizon_days) + 1} DAY) AS f
            USING (customer_id)
        GROUP BY b.customer_id ORDER BY b.customer_id"""


def labelled_features(transactions: TransactionsLike, cutoff: dt.date | str, horizon_days: int,
                      reference: FeatureReference | None = None,
                      settings: FeatureSettings | None = None,
                      columns: Sequence[str] | None = None,
                      side: SideData | None = None) -> pd.DataFrame:
    """Features as of ``cutoff`` (daily summary) joined with the labels of the next ``horizon_days``.

    One training origin; the column ``origin`` holds the cutoff. Training passes the model's
    ``reference`` so every origin's features are defined exactly as at scoring time.
    ``columns`` keeps only those feature and label columns (with ``customer_id`` and
    ``origin``): the join and the selection run in DuckDB, so a large log never holds the
    whole feature table in pandas. ``side`` (customer attributes, events) adds the reference's
    side columns as of ``cutoff`` (:func:`features.side.with_side`); text attributes come out
    as categoricals with the reference's categories.
    """
    log, query, used = _labelled_query(transactions, cutoff, horizon_days, reference, settings, columns, side)
    table = log.con.execute(query).df()
    table.insert(1, "origin", parse_cutoff(cutoff))
    return categorize(table, used) if used.attributes else table


def labelled_features_arrow(transactions: TransactionsLike, cutoff: dt.date | str, horizon_days: int,
                            reference: FeatureReference | None = None,
                            columns: Sequence[str] | None = None,
                            side: SideData | None = None) -> pa.Table:
    """:func:`labelled_features` as an Arrow table (``origin`` a timestamp column), for stacking
    many origins without pandas copies: Arrow keeps each column apart, so the stacked table
    converts to pandas column by column (``to_pandas(split_blocks=True, self_destruct=True)``).
    Text attributes are dictionary columns whose dictionary is the reference's categories."""
    log, query, used = _labelled_query(transactions, cutoff, horizon_days, reference, None, columns, side)
    origin = f"CAST({cutoff_literal(cutoff)} AS TIMESTAMP) AS origin"
    table = log.con.sql(f"SELECT customer_id, {origin}, * EXCLUDE (customer_id) FROM ({query})").to_arrow_table()
    # DuckDB sums integers as HUGEINT, which Arrow holds as decimal128 and pandas would turn into
    # Python objects; as floats, like DuckDB's own .df()
    table = table.cast(pa.schema([f.with_type(pa.float64()) if pa.types.is_decimal(f.type) else f
                                  for f in table.schema]))
    return categorize_arrow(table, used) if used.attributes else table


def _labelled_query(transactions: TransactionsLike, cutoff: dt.date | str, horizon_days: int,
                    reference: FeatureReference | None, settings: FeatureSettings | None,
                    columns: Sequence[str] | None,
                    side: SideData | None = None) -> tuple[TransactionLog, str, FeatureReference]:
    """Stage the log for ``cutoff``; the SELECT joining features and labels on that connection,
    and the reference used."""
    log = as_log(transactions, reference.timezone if reference else "UTC")
    check_horizon(log, cutoff, horizon_days)
    log, features, used = prepare(log, cutoff, "D", settings, reference, side)
    wanted = "f.*, l.* EXCLUDE (customer_id)" if columns is None else ", ".join(
        ["customer_id"] + [_quoted(c) for c in columns if c not in ("customer_id", "origin")])
    return log, f"""
        SELECT {wanted}
        FROM ({features}) AS f JOIN ({labels_sql(cutoff_literal(cutoff), int(horizon_days), log.has_order_id)}) AS l
            USING (customer_id)
        ORDER BY customer_id""", used


def _quoted(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'
