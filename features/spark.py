"""The feature definitions run on Apache Spark: the same SQL text, transpiled.

There is one definition of every feature: the DuckDB SQL the feature modules generate
(:func:`features.build.stage_statements`, :func:`features.build.features_sql`,
:func:`features.labels.labels_sql`, ...). This module calls those functions at run time,
translates their text with ``sqlglot`` (DuckDB dialect to Spark SQL, plus the few rewrites in
:func:`to_spark_sql` for functions sqlglot leaves as they are) and runs it with Spark SQL over
temporary views named like DuckDB's tables: ``transactions``, then ``daily`` and ``cat_days``.
The result columns are cast to the types DuckDB gives the same query (read from DuckDB's own
``DESCRIBE`` of it over empty tables), so both engines write the same schema.

Input is checked once, by the same code as the DuckDB path: :func:`features.read_transactions`
validates the files where they are (same column map, policies and error messages) and its
canonical ``transactions`` view is written as Parquet to a staging directory that Spark reads.
On a cluster that directory must be one every executor can read.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sys
import tempfile
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import sqlglot
from sqlglot import exp

from features.build import (
    customers_statement,
    cutoff_literal,
    features_sql,
    fit_reference,
    parse_cutoff,
    resolve,
    stage_statements,
)
from features.labels import check_horizon, labels_sql
from features.output import pid_alive
from features.reference import FeatureReference
from features.settings import ColumnMap, FeatureSettings, Freq, IngestPolicy
from features.transactions import PLAUSIBLE_DATES, TransactionLog, read_transactions, sql_escape

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

#: DuckDB result types -> the Spark SQL type a column is cast to. HUGEINT (DuckDB's sum of
#: BIGINT) becomes DOUBLE, as DuckDB itself writes it to Parquet and pandas.
_SPARK_TYPES = {"VARCHAR": "STRING", "DOUBLE": "DOUBLE", "FLOAT": "FLOAT", "DATE": "DATE",
                "BIGINT": "BIGINT", "HUGEINT": "DOUBLE", "INTEGER": "INT", "SMALLINT": "SMALLINT",
                "BOOLEAN": "BOOLEAN", "TIMESTAMP": "TIMESTAMP_NTZ"}


def spark_session(master: str | None = None, app_name: str = "winback",
                  conf: dict[str, str] | None = None) -> "SparkSession":
    """A Spark session: Spark Connect when ``SPARK_REMOTE`` is set, else ``master`` (default:
    spark-submit's ``--master`` when run under it, else ``local[*]``). Days are computed in UTC
    session time: the log's timestamps are already the shop's local wall time
    (:class:`~features.settings.IngestPolicy` ``timezone``).

    The executors' Python workers (batch scoring ships the fitted scorer to them) run
    ``PYSPARK_PYTHON``; unset, it becomes this interpreter's path, so on ``local[*]``, a
    standalone cluster on this machine or nodes built from one image they import the same
    packages. Spark reads ``PYSPARK_PYTHON`` from the driver's environment when Python starts
    the JVM, as here; ``spark.pyspark.python`` counts only under spark-submit. Other settings
    (executor memory, driver host, a Kubernetes image) come from ``$SPARK_CONF_DIR/spark-defaults.conf``.
    """
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if os.environ.get("SPARK_REMOTE") and master is None:
        builder = builder.remote(os.environ["SPARK_REMOTE"])
    elif master is None and "PYSPARK_GATEWAY_PORT" in os.environ:
        pass                                    # under spark-submit: its --master decides
    else:
        master = master or "local[*]"
        check_master(master)
        builder = builder.master(master).config("spark.ui.showConsoleProgress", "false")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)   # executors run this venv's packages
    for key, value in {"spark.sql.session.timeZone": "UTC", **(conf or {})}.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def check_master(master: str) -> None:
    """Refuse, in one line and at once, a master Spark itself fails on only after a minute of
    retries or with a Java stack trace: a standalone ``spark://host:port[,host:port]`` where no
    master answers, or ``yarn`` without the Hadoop configuration it reads."""
    if master.startswith("spark://"):
        tried = []
        for address in master[len("spark://"):].split(","):       # several: a standby master (HA)
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"Spark master {master}: expected spark://HOST:PORT, e.g. spark://10.0.0.5:7077")
            try:
                socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
                return
            except OSError as exc:
                tried.append(f"{address} ({exc.strerror or exc})")
        raise ValueError(f"Spark master {master}: no master answers at {', '.join(tried)}; start it "
                         "(spark-class org.apache.spark.deploy.master.Master) or check the host and port")
    if master == "yarn" and not (os.environ.get("HADOOP_CONF_DIR") or os.environ.get("YARN_CONF_DIR")):
        raise ValueError("Spark master yarn: set HADOOP_CONF_DIR (or YARN_CONF_DIR) to the folder with the "
                         "cluster's core-site.xml and yarn-site.xml")


#: Staged copies of validated logs are named ``<prefix><pid>-<random>.parquet``.
STAGED_PREFIX = "winback-transactions-"


# ---------------------------------------------------------------------------------------------
# DuckDB SQL -> Spark SQL


def _spark_median(node: exp.Expression) -> exp.Expression:
    """``list_median(list(x) [FILTER (WHERE c)])`` (DuckDB) -> ``median(x) [FILTER (WHERE c)]``;
    ``quantile_cont(x, [q...])`` -> ``percentile(x, array(q...))`` (both interpolate linearly)."""
    if isinstance(node, exp.Anonymous) and node.name.lower() == "list_median" and len(node.expressions) == 1:
        inner = node.expressions[0]
        filtered = inner if isinstance(inner, exp.Filter) else None
        agg = filtered.this if filtered else inner
        if isinstance(agg, exp.ArrayAgg):
            median = exp.Median(this=agg.this.copy())
            return exp.Filter(this=median, expression=filtered.expression.copy()) if filtered else median
    if isinstance(node, exp.PercentileCont) and isinstance(node.expression, exp.Array):
        return exp.Anonymous(this="percentile", expressions=[node.this.copy(), node.expression.copy()])
    return node


def to_spark_sql(duckdb_sql: str) -> str:
    """The Spark SQL spelling of one DuckDB statement of the feature definitions.

    sqlglot does the translation; :func:`_spark_median` adds the two medians it keeps in
    DuckDB's spelling. A construct neither knows raises :class:`sqlglot.errors.ParseError`
    or fails in Spark's analyser, naming it; the parity tests catch any that translate
    to another meaning.
    """
    tree = sqlglot.parse_one(duckdb_sql, read="duckdb")
    return tree.transform(_spark_median).sql(dialect="spark")


def _staged(cutoff_sql: str, has_order_id: bool, has_category: bool,
            settings: FeatureSettings | None) -> list[tuple[str, str]]:
    """The tables staged before a query, in order: the per-day tables, then (for the feature
    query, given its ``settings``) ``customers``."""
    tables = stage_statements(cutoff_sql, has_order_id, has_category)
    return tables + ([customers_statement(cutoff_sql, settings)] if settings is not None else [])


def _duckdb_types(query: str, has_category: bool,
                  settings: FeatureSettings | None = None) -> dict[str, str]:
    """The column types DuckDB gives ``query`` over the staged tables (empty here)."""
    con = duckdb.connect()
    con.execute("CREATE TABLE transactions (customer_id VARCHAR, ts TIMESTAMP, amount DOUBLE, "
                "order_id VARCHAR, quantity DOUBLE, category VARCHAR, channel VARCHAR)")
    for table, select in _staged("DATE '2000-01-01'", True, has_category, settings):
        con.execute(f"CREATE TABLE {table} AS {select}")
    return {name: kind for name, kind, *_ in con.execute(f"DESCRIBE {query}").fetchall()}


def _run(spark: "SparkSession", duckdb_sql: str, has_category: bool = True,
         settings: FeatureSettings | None = None) -> "DataFrame":
    """Run one feature query on Spark, columns cast to the types DuckDB gives it (``settings``:
    those of the staged ``customers`` it reads, if any)."""
    from pyspark.sql import functions as F

    frame = spark.sql(to_spark_sql(duckdb_sql))
    types = _duckdb_types(duckdb_sql, has_category, settings)
    return frame.select([F.col(f"`{name}`").cast(_spark_type(kind)).alias(name)
                         for name, kind in types.items()])


def _spark_type(duckdb_type: str) -> str:
    if duckdb_type.startswith("DECIMAL"):
        return duckdb_type
    if duckdb_type not in _SPARK_TYPES:
        raise TypeError(f"no Spark type for DuckDB's {duckdb_type}; add it to features.spark._SPARK_TYPES")
    return _SPARK_TYPES[duckdb_type]


def to_pandas(frame: "DataFrame") -> "pd.DataFrame":
    """A Spark result as pandas with DuckDB's ``.df()`` dtypes (dates as ``datetime64[us]``)."""
    import pandas as pd

    table: pd.DataFrame = frame.toPandas()
    for field in frame.schema.fields:
        if field.dataType.typeName() == "date":
            table[field.name] = pd.to_datetime(table[field.name]).astype("datetime64[us]")
    return table


# ---------------------------------------------------------------------------------------------
# The log on Spark


@dataclass
class SparkLog:
    """A validated transaction log as the Spark view ``transactions`` (canonical columns, as
    :class:`~features.transactions.TransactionLog` defines them), with what was learned when
    it was checked: the column map, policy and ingest report."""

    spark: "SparkSession"
    log: TransactionLog
    staged: str

    @property
    def has_category(self) -> bool:
        """Whether the checked log maps a category column."""
        return self.log.has_category

    @property
    def has_order_id(self) -> bool:
        """Whether the checked log maps an order id column."""
        return self.log.has_order_id

    @property
    def policy(self) -> IngestPolicy:
        """The ingest policy the log was checked with (its time zone is the shop's)."""
        return self.log.policy

    @property
    def source(self) -> str:
        """The files (or frame) the log was read from, as messages name them."""
        return self.log.source

    def use(self) -> "SparkLog":
        """Make this log the session's ``transactions`` view (several logs may share a session)."""
        self.spark.read.parquet(self.staged).createOrReplaceTempView("transactions")
        return self

    @property
    def con(self) -> "_SparkCursor":
        """A DuckDB-like ``execute(sql).fetchone()/fetchall()`` over this log, so code written
        against :class:`TransactionLog` (e.g. :func:`features.build.fit_reference`) runs here."""
        return _SparkCursor(self.spark)


class _SparkCursor:
    def __init__(self, spark: "SparkSession") -> None:
        self.spark = spark
        self._rows: list[tuple[Any, ...]] = []

    def execute(self, duckdb_sql: str) -> "_SparkCursor":
        self._rows = [tuple(row) for row in self.spark.sql(to_spark_sql(duckdb_sql)).collect()]
        return self

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows


def spark_log(log: TransactionLog, spark: "SparkSession", staging: str | Path | None = None) -> SparkLog:
    """Hand a validated log to Spark: its ``transactions`` view written once as Parquet under
    ``staging`` (default: the system temporary directory; on a cluster, a path every executor
    reads) and registered in ``spark`` as the view ``transactions``.

    The staged file is deleted when the returned log is garbage collected; files left by
    killed runs (their process gone) are deleted by the next call.
    """
    # absolute: a Spark Connect server resolves a relative path against its own folder
    base = (Path(staging) if staging is not None else Path(tempfile.gettempdir())).absolute()
    base.mkdir(parents=True, exist_ok=True)
    for stale in base.glob(f"{STAGED_PREFIX}*.parquet"):
        pid = stale.name[len(STAGED_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            stale.unlink(missing_ok=True)
    target = base / f"{STAGED_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
    log.con.execute(f"COPY transactions TO '{sql_escape(str(target))}' (FORMAT parquet)")
    slog = SparkLog(spark, log, str(target))
    weakref.finalize(slog, target.unlink, missing_ok=True)
    return slog.use()


def read_transactions_spark(paths: str | Path | Sequence[str | Path], spark: "SparkSession",
                            columns: ColumnMap = ColumnMap(), policy: IngestPolicy = IngestPolicy(), *,
                            staging: str | Path | None = None, memory_limit: str | None = None,
                            encoding: str = "utf-8",
                            dates: tuple[dt.date, dt.date] = PLAUSIBLE_DATES) -> SparkLog:
    """CSV or Parquet files (paths or globs) checked exactly as :func:`features.read_transactions`
    checks them (the same code, so the same errors), then handed to Spark (:func:`spark_log`)."""
    log = read_transactions(paths, columns, policy, memory_limit=memory_limit, encoding=encoding, dates=dates)
    return spark_log(log, spark, staging)


# ---------------------------------------------------------------------------------------------
# Features and labels


def stage_spark(slog: SparkLog, cutoff_sql: str, settings: FeatureSettings = FeatureSettings()) -> None:
    """The per-day tables of :func:`features.build.stage_statements` and the ``customers`` of
    :func:`features.build.customers_statement`, cached as Spark views."""
    slog.use()
    for table, select in _staged(cutoff_sql, slog.has_order_id, slog.has_category, settings):
        slog.spark.catalog.dropTempView(table)
        slog.spark.sql(to_spark_sql(select)).cache().createOrReplaceTempView(table)


def _unstage(slog: SparkLog) -> None:
    for table in ("customers", "daily", "cat_days"):
        if slog.spark.catalog.tableExists(table):
            slog.spark.table(table).unpersist()
            slog.spark.catalog.dropTempView(table)


def build_features_spark(slog: SparkLog, cutoff: dt.date | str, freq: Freq | None = None,
                         settings: FeatureSettings | None = None,
                         reference: FeatureReference | None = None) -> tuple["DataFrame", FeatureReference]:
    """The feature table of :func:`features.build_features` as a Spark DataFrame, with the
    reference it was built with (fitted on this population when none is given).

    The per-day tables stay cached until the next call stages another cutoff.
    """
    if freq not in (None, "D", "W"):
        raise ValueError(f"freq must be 'D' or 'W', got {freq!r}")
    freq, settings = resolve(slog.policy.timezone, freq, settings, reference)
    cutoff_sql = cutoff_literal(cutoff)
    stage_spark(slog, cutoff_sql, settings)
    reference = reference or fit_reference(slog, cutoff_sql, freq, settings)
    return _run(slog.spark, features_sql(cutoff_sql, freq, settings, reference), slog.has_category,
                settings), reference


def build_labels_spark(slog: SparkLog, cutoff: dt.date | str, horizon_days: int,
                       observation_end: dt.date | str | None = None) -> "DataFrame":
    """The labels of :func:`features.labels.build_labels` as a Spark DataFrame (same checks)."""
    check_horizon(slog.log, cutoff, horizon_days, observation_end)
    slog.use()
    return _run(slog.spark, labels_sql(cutoff_literal(cutoff), int(horizon_days), slog.has_order_id))


def labelled_features_spark(slog: SparkLog, cutoff: dt.date | str, horizon_days: int,
                            reference: FeatureReference | None = None,
                            settings: FeatureSettings | None = None) -> "DataFrame":
    """One training origin on Spark, as :func:`features.labels.labelled_features` builds it:
    daily features as of ``cutoff`` joined one-to-one with the next ``horizon_days``' labels,
    the cutoff in column ``origin`` (second)."""
    from pyspark.sql import functions as F

    table, _ = build_features_spark(slog, cutoff, "D", settings, reference)
    labels = build_labels_spark(slog, cutoff, horizon_days)
    joined = table.join(labels, on="customer_id", how="inner")
    origin = F.lit(parse_cutoff(cutoff).to_pydatetime()).cast("TIMESTAMP_NTZ").alias("origin")
    rest = [c for c in joined.columns if c != "customer_id"]
    return joined.select("customer_id", origin, *rest).orderBy("customer_id")
