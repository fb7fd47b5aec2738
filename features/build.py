"""The one path from transactions to customer features: :func:`build_features`.

The CLI's feature job, training and the scoring service all call it, so a feature is defined
once. It is plain SQL run by DuckDB over the validated log: first the log is reduced to one row
per customer and purchase day (``daily``, with the gap to the day before; kept per log, each
cutoff a filter on it), then one GROUP BY over it computes the customer-level groups (summary,
totals, cycle, windows, tiers) as the table ``customers``, RFM edges and scores read that table
and replenishment reads ``cat_days``. The SQL
uses only standard aggregates and window functions (plus ``arg_min``/``arg_max``, which Spark
spells ``min_by``/``max_by``), so the same definitions port to Spark SQL.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Protocol, TypeAlias

import pandas as pd

from features import cycle, replenishment, rfm, summary, tiers, windows
from features.attributes import CustomerAttributes, categorize
from features.events import EngagementLog
from features.reference import FeatureReference
from features.settings import ColumnMap, FeatureSettings, Freq, IngestPolicy
from features.side import SideData, fit_side, with_side
from features.sql import day_totals_sql, decimal
from features.transactions import (
    DAYS_TABLE,
    MULTI_CATS_TABLE,
    MULTI_DAYS_TABLE,
    PLAUSIBLE_DATES,
    SqlCursor,
    TransactionLog,
    in_any_order,
    one_row,
)

TransactionsLike: TypeAlias = TransactionLog | pd.DataFrame


class StagedLog(Protocol):
    """What :func:`fit_reference` reads of a log with staged tables: a :class:`TransactionLog`,
    or a :class:`features.spark.SparkLog` running the same SQL on Spark."""

    @property
    def con(self) -> SqlCursor:
        """The connection the staged tables are on."""
        ...

    @property
    def policy(self) -> IngestPolicy:
        """The policy the log was read with (its time zone is the shop's)."""
        ...


def as_log(transactions: TransactionsLike, timezone: str = "UTC") -> TransactionLog:
    """Accept a :class:`TransactionLog`, or a DataFrame with canonical column names.

    A DataFrame needs ``customer_id``, ``timestamp`` and ``amount``; ``order_id``,
    ``quantity``, ``category`` and ``channel`` are used when present. Its timestamps are read
    in the shop's ``timezone`` (offsets converted to it, naive ones taken as in it).
    """
    if isinstance(transactions, TransactionLog):
        return transactions
    if isinstance(transactions, pd.DataFrame):
        optional = {c: c for c in ("order_id", "quantity", "category", "channel") if c in transactions}
        return TransactionLog.from_frame(transactions, ColumnMap(**optional), IngestPolicy(timezone=timezone))
    raise TypeError(f"transactions must be a TransactionLog or a DataFrame, not {type(transactions).__name__}")


_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}([ T]00:00(:00(\.0+)?)?)?")


def parse_cutoff(cutoff: dt.date | str | pd.Timestamp) -> pd.Timestamp:
    """The cutoff as a midnight Timestamp, after checking it is a whole day.

    Text must be ISO ``YYYY-MM-DD``: ``03/04/2024`` is read month-first by some and day-first
    by others, so it is refused rather than guessed.
    """
    if isinstance(cutoff, str) and not _ISO_DAY.fullmatch(cutoff.strip()):
        raise ValueError(f"cutoff must be a date written YYYY-MM-DD, like 1997-09-30, got {cutoff!r}")
    try:
        day = pd.Timestamp(cutoff.strip() if isinstance(cutoff, str) else cutoff)
    except (ValueError, TypeError):
        raise ValueError(f"cutoff must be a date like 1997-09-30, got {cutoff!r}") from None
    if pd.isna(day) or day != day.normalize() or day.tzinfo is not None:
        raise ValueError(f"cutoff must be a whole day without a time zone, like 1997-09-30, got {cutoff!r}")
    first, last = PLAUSIBLE_DATES
    if not first <= day.date() < last:
        raise ValueError(f"cutoff {day.date()} is not a plausible day: it must be from {first} and before {last}, "
                         "as a transaction's date must")
    return day


def cutoff_literal(cutoff: dt.date | str | pd.Timestamp) -> str:
    """A SQL DATE literal for the cutoff."""
    return f"DATE '{parse_cutoff(cutoff).date().isoformat()}'"


def stage_statements(cutoff: str, has_order_id: bool, has_category: bool) -> list[tuple[str, str]]:
    """The staging step as (table name, SELECT over ``transactions``) pairs, engine-neutral SQL.

    ``daily``: customer_id, day, spend, orders, ``rows_kept`` (the rows that day) and ``gap``
    (:data:`features.cycle.GAP`). ``cat_days``: customer_id, category, day and ``gap``
    (:data:`features.replenishment.GAP`), where the log has categories. The Spark engine
    transpiles this text; DuckDB runs the same SELECTs without the cutoff once per log
    (:func:`stage`).
    """
    return _stage_selects(f"ts < {cutoff} + INTERVAL 1 DAY", has_order_id, has_category)


def _stage_selects(seen: str, has_order_id: bool, has_category: bool) -> list[tuple[str, str]]:
    """The staged SELECTs over ``transactions``, rows seen by the condition ``seen``."""
    orders = "count(DISTINCT order_id)" if has_order_id else "count(*)"
    categories = f"{seen} AND category IS NOT NULL" if has_category else "false"
    return [
        ("daily", f"""
        SELECT customer_id, day, spend, orders, rows_kept, {cycle.GAP} AS gap
        FROM ({day_totals_sql("transactions", orders, seen)})"""),
        # one row per customer, category and day: the rows after a day's first have gap 0 (this
        # window over the rows replaces a DISTINCT before a window over the days)
        ("cat_days", f"""
        SELECT customer_id, category, day, gap
        FROM (SELECT customer_id, category, CAST(ts AS DATE) AS day,
                  {replenishment.gap_over('CAST(ts AS DATE)')} AS gap
              FROM transactions WHERE {categories})
        WHERE gap IS NULL OR gap > 0"""),
    ]


def _ingested_selects(has_category: bool, multi: bool) -> list[tuple[str, str]]:
    """The staged SELECTs from the per-day totals ingest computed (:data:`DAYS_TABLE`: final
    for the days with one row; with ``multi``, the days with several rows totalled exactly in
    :data:`MULTI_DAYS_TABLE` and their categories in :data:`MULTI_CATS_TABLE`). The same
    tables :func:`stage_statements` describes, without reading the transactions again."""
    single = f"{DAYS_TABLE} WHERE rows_kept > 0" + (" AND n = 1" if multi else "")
    days = f"SELECT customer_id, day, spend, orders FROM {single}"
    if multi:
        days += f" UNION ALL SELECT customer_id, day, spend, orders FROM {MULTI_DAYS_TABLE} WHERE rows_kept > 0"
    if has_category:
        cats = f"SELECT customer_id, category, day FROM {single} AND category IS NOT NULL"
        cats += f" UNION ALL SELECT customer_id, category, day FROM {MULTI_CATS_TABLE}" if multi else ""
    else:
        cats = "SELECT NULL::VARCHAR AS customer_id, NULL::VARCHAR AS category, NULL::DATE AS day WHERE false"
    return [
        ("daily", f"SELECT customer_id, day, spend, orders, {cycle.GAP} AS gap FROM ({days})"),
        ("cat_days", f"SELECT customer_id, category, day, {replenishment.GAP} AS gap FROM ({cats})"),
    ]


#: The cutoff-free per-day tables :func:`stage` keeps on a log's connection.
_ALL = {"daily": "daily_all", "cat_days": "cat_days_all"}


def stage(log: TransactionLog, cutoff: str, settings: FeatureSettings = FeatureSettings(), *,
          with_customers: bool = True) -> None:
    """Make ``daily`` and ``cat_days`` (:func:`stage_statements`) the log's rows up to the cutoff,
    and ``customers`` (:func:`customers_statement`) their one row per customer.

    The transactions never change, so the per-day tables of the whole log (with the gaps, as a
    day's gap to the day before never depends on the cutoff) are computed once per log, from the
    per-day totals ingest computed in its one grouped pass (:data:`DAYS_TABLE`, dropped once
    used), and each cutoff is a filter on them: training stages one log at many origins.
    ``customers`` is a table of this cutoff, as the reference and the feature query both read it
    (not made with ``with_customers=False``: :mod:`features.incremental` keeps its partials instead).
    """
    staged = {name for (name,) in log.con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()}
    if DAYS_TABLE in staged:
        selects = _ingested_selects(log.has_category, MULTI_DAYS_TABLE in staged)
    else:
        selects = _stage_selects("true", log.has_order_id, log.has_category)
    with in_any_order(log.con):
        for table, select in selects:
            if _ALL[table] not in staged:
                log.con.execute(f"CREATE TEMP TABLE {_ALL[table]} AS {select}")
        for table in (DAYS_TABLE, MULTI_DAYS_TABLE, MULTI_CATS_TABLE):
            if table in staged:
                log.con.execute(f"DROP TABLE {table}")
        log.con.execute(f"CREATE OR REPLACE TEMP VIEW daily AS SELECT customer_id, day, spend, orders, "
                        f"gap FROM {_ALL['daily']} WHERE day <= {cutoff}")
        log.con.execute(f"CREATE OR REPLACE TEMP VIEW cat_days AS SELECT customer_id, category, day, gap "
                        f"FROM {_ALL['cat_days']} WHERE day <= {cutoff}")
        if with_customers:
            table, select = customers_statement(cutoff, settings)
            log.con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS {select}")


def customers_statement(cutoff: str, settings: FeatureSettings) -> tuple[str, str]:
    """The table ``customers`` as (name, SELECT over ``daily``), engine-neutral SQL: one row per
    customer with the totals, windows, tiers, purchase cycle and, for daily periods, the BG/NBD
    summary. Staged once per cutoff after :func:`stage_statements`' tables: the RFM edges
    (:func:`fit_reference`) and the feature query (:func:`features_sql`) both read it, so the
    one large GROUP BY runs once."""
    return "customers", finalize_sql(cutoff, settings, f"({partials_sql(cutoff, settings)})")


def window_lengths(settings: FeatureSettings) -> tuple[int, ...]:
    """The window lengths whose spend the customer partials keep (:func:`partials_sql`)."""
    return windows.window_lengths(settings.windows_days, settings.trend_days, tiers.tier_windows(settings.tiers))


def partial_aggregates(settings: FeatureSettings) -> list[str]:
    """The customer partials as aggregates over per-day rows (``daily``'s columns and ``age``):
    each adds up over days (or is taken from the first or last day), so
    :mod:`features.incremental` carries them from one day to the next."""
    return ["min(day) AS first_purchase_date", "max(day) AS last_purchase_date",
            "count(*) AS purchase_days", "sum(orders) AS orders", f"sum({decimal('spend')}) AS _spend",
            "arg_min(spend, day) AS first_purchase_value",
            *windows.window_partials(settings.windows_days, window_lengths(settings)),
            *cycle.cycle_partials(), *summary.daily_partials()]


def partials_sql(cutoff: str, settings: FeatureSettings) -> str:
    """One row per customer of ``daily`` in one GROUP BY: the partials every customer-level
    column is finished from (:func:`finalize_sql`)."""
    return f"""
        SELECT customer_id, {', '.join(partial_aggregates(settings))}
        FROM (SELECT customer_id, day, spend, orders, {windows.age_expr(cutoff)} AS age, gap FROM daily)
        GROUP BY customer_id"""


def finalize_sql(cutoff: str, settings: FeatureSettings, partials: str, keep: tuple[str, ...] = ()) -> str:
    """The customer-level columns as of ``cutoff`` from a table of partials (:func:`partials_sql`,
    or the state :mod:`features.incremental` keeps): totals, windows, trend, tiers, purchase
    cycle and the daily BG/NBD summary. One definition for both. ``keep``: columns of
    ``partials`` passed through as they are."""
    finished = ",\n            ".join(
        windows.window_columns(settings.windows_days, settings.trend_days)
        + tiers.tier_spend_columns(settings.tiers) + cycle.cycle_columns())
    return f"""
        SELECT *, {', '.join(summary.daily_summary_columns())},
            total_spend / orders AS avg_order_value
        FROM (SELECT customer_id, first_purchase_date, last_purchase_date, purchase_days, orders,
            CAST(coalesce(_spend, 0) AS DOUBLE) AS total_spend, first_purchase_value, _litt,
            {finished},{''.join(f' {c},' for c in keep)}
            date_diff('day', last_purchase_date, {cutoff}) AS days_since_last_purchase,
            date_diff('day', first_purchase_date, {cutoff}) AS tenure_days
        FROM {partials})"""


def fit_reference(log: StagedLog, cutoff: str, freq: Freq = "D",
                  settings: FeatureSettings = FeatureSettings()) -> FeatureReference:
    """The feature contract fixed on the population in the staged tables (``customers`` and
    ``cat_days``): RFM edges and category intervals, with the settings, ``freq`` and the log's
    time zone. ``cutoff`` is the one the tables were staged for."""
    row = one_row(log.con, rfm.edges_sql("customers"))
    edges = {name: [float(x) for x in (value or [0.0] * len(rfm.QUANTILES))]
             for name, value in zip(rfm.SCORED, row)}
    intervals = dict(log.con.execute(replenishment.category_intervals_sql()).fetchall())
    return FeatureReference(edges, {k: float(v) for k, v in intervals.items()}, settings,
                            log.policy.timezone, freq)


def features_sql(cutoff: str, freq: Freq, settings: FeatureSettings,
                 reference: FeatureReference, favourites: str | None = None) -> str:
    """The whole feature table as one SELECT over the staged tables.

    The staged ``customers`` (:func:`customers_statement`) holds every customer-level group
    (summary for daily periods, totals, cycle, windows, tiers); RFM scores read it, and only
    the weekly summary and replenishment (over ``cat_days``) are separate passes.
    ``favourites`` (default: :func:`features.replenishment.favourites_sql` over ``cat_days``)
    gives each customer's favourite category; :data:`features.replenishment.INLINE` reads it
    from ``customers``' own ``fav_*`` columns (:mod:`features.incremental` keeps them there,
    in customer order, so that the table needs no join and no sort).
    """
    if freq == "D":
        source, summary_from = "scored AS c", "c"
    else:
        source, summary_from = f"({summary.summary_sql(cutoff, freq)}) AS s JOIN scored AS c USING (customer_id)", "s"
    intervals = reference.category_interval_days
    if favourites == replenishment.INLINE:
        columns, join, order = replenishment.inline_columns(cutoff, intervals, "c"), "", ""
    else:
        columns = "p.top_category, p.replenish_interval_days, p.replenish_due_in_days"
        join = (f"LEFT JOIN ({replenishment.replenishment_sql(cutoff, intervals, favourites)}) AS p "
                f"USING (customer_id)")
        order = "ORDER BY c.customer_id"
    return f"""
        WITH scored AS (SELECT *, {', '.join(rfm.score_columns(reference.rfm_edges))}
                        FROM customers)
        SELECT c.customer_id, {', '.join(f'{summary_from}.{col}' for col in summary.TABLE_COLUMNS)},
            c.first_purchase_date, c.last_purchase_date, c.days_since_last_purchase,
            c.tenure_days, c.purchase_days, c.orders, c.total_spend, c.avg_order_value,
            c.first_purchase_value,
            c.r_score, c.f_score, c.m_score, {', '.join(rfm.segment_columns())},
            c.mean_gap_days, c.median_gap_days, c.std_gap_days, c.last_gap_days,
            c.days_since_last_purchase / c.mean_gap_days AS overdue_ratio,
            {', '.join(f'c.orders_{n}d, c.spend_{n}d' for n in settings.windows_days)},
            c.spend_trend, c.tier_spend,
            {', '.join(tiers.tier_columns(settings.tiers))},
            {columns}
        FROM {source}
        {join}
        {order}"""


def resolve(log_timezone: str | None, freq: Freq | None, settings: FeatureSettings | None,
            reference: FeatureReference | None) -> tuple[Freq, FeatureSettings]:
    """The ``freq`` and settings to build with: the reference's when one is given (asking for
    others is an error: they would be another model's features), else the defaults."""
    if reference is None:
        return freq or "D", settings or FeatureSettings()
    for name, asked, fixed in (("freq", freq, reference.freq), ("settings", settings, reference.settings)):
        if asked is not None and asked != fixed:
            raise ValueError(f"{name} {asked!r} differs from the feature reference's {fixed!r}; "
                             "a model's features are built with its own reference")
    if log_timezone is not None and log_timezone != reference.timezone:
        raise ValueError(
            f"the transactions were read in time zone {log_timezone!r}, but the model defines days "
            f"in {reference.timezone!r}; read them with --timezone {reference.timezone}")
    return reference.freq, reference.settings


def prepare(transactions: TransactionsLike, cutoff: dt.date | str, freq: Freq | None = None,
            settings: FeatureSettings | None = None,
            reference: FeatureReference | None = None,
            side: SideData | None = None) -> tuple[TransactionLog, str, FeatureReference]:
    """Stage the log for a cutoff and return it with the feature query and the reference used.

    With a ``reference`` (a model's feature contract) its settings, ``freq`` and time zone are
    used; a DataFrame is read in the reference's time zone, a :class:`TransactionLog` must have
    been read in it. Without one, a reference is fitted on this population at ``cutoff``
    (with ``side``'s schema: :func:`features.side.fit_side`). The query joins the reference's
    side columns (:func:`features.side.with_side`).
    """
    if freq not in (None, "D", "W"):
        raise ValueError(f"freq must be 'D' or 'W', got {freq!r}")
    log = as_log(transactions, reference.timezone if reference else "UTC")
    freq, settings = resolve(log.policy.timezone, freq, settings, reference)
    cutoff_sql = cutoff_literal(cutoff)
    stage(log, cutoff_sql, settings)
    reference = reference or fit_side(fit_reference(log, cutoff_sql, freq, settings), side, cutoff)
    query = with_side(log.con, features_sql(cutoff_sql, freq, settings, reference), cutoff, reference, side)
    return log, query, reference


def build_features(transactions: TransactionsLike, cutoff: dt.date | str, freq: Freq | None = None,
                   settings: FeatureSettings | None = None,
                   reference: FeatureReference | None = None, *,
                   customers: CustomerAttributes | None = None, events: EngagementLog | None = None,
                   side: SideData | None = None) -> pd.DataFrame:
    """One row per customer with a purchase on or before ``cutoff``, from those purchases only.

    Parameters
    ----------
    transactions
        A validated :class:`TransactionLog` or a DataFrame with canonical column names.
    cutoff
        The as-of date. Transactions later than that day are never read.
    freq
        Time unit of the BG/NBD summary (``recency``, ``T``): ``"D"`` days (default) or
        ``"W"`` weeks.
    settings
        Window lengths and tier thresholds (default :class:`FeatureSettings`).
    reference
        A model's feature contract (:class:`FeatureReference`): RFM edges and category
        intervals to score against, and the settings, ``freq`` and time zone to build with.
        By default the statistics are computed from this same population.
    customers, events, side
        Customer attributes (:func:`features.attributes.read_customers`) and engagement events
        (:func:`features.events.read_events`), or both as one :class:`features.side.SideData`:
        as of ``cutoff`` they add ``attr_*``, ``events_<type>_<N>d`` and ``days_since_<type>``
        (the reference's schema; without a reference, fitted here).

    Returns
    -------
    pandas.DataFrame
        Sorted by ``customer_id``; the columns are documented in each feature module.
    """
    side = side or SideData(customers, events)
    log, query, used = prepare(transactions, cutoff, freq, settings, reference, side)
    table = log.con.execute(query).df()
    return categorize(table, used) if used.attributes else table
