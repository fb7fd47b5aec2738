"""What every ``winback`` command shares: the consoles, the log-reading flags and how a user's
mistake ends (one paragraph on stderr, exit status 2, no traceback).

:mod:`training.cli` and :mod:`training.monitor_cli` both build their commands from these.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.console import Console

# Piped or captured output (CI logs, files) gets room for the tables instead of 80 columns.
console = Console(width=None if sys.stdout.isatty() else 140)
errors = Console(stderr=True)

# Where the transactions come from: shared by every command that reads a log.
TransactionsOpt = Annotated[list[Path] | None, typer.Option(
    "--transactions", "-t", help="CSV or Parquet file(s) or glob(s) of transactions.")]
DatasetOpt = Annotated[str | None, typer.Option(
    help="A bundled dataset instead of files: 'cdnow' (lifetimes' CDNOW log).")]
CustomerCol = Annotated[str, typer.Option("--customer-id-col", help="Column with the customer id.")]
TimestampCol = Annotated[str, typer.Option("--timestamp-col", help="Column with the purchase date or time.")]
AmountCol = Annotated[str, typer.Option(
    "--amount-col", help="Column with the order amount; 'none' when the log has no amounts (each purchase counts 1).")]
OrderCol = Annotated[str | None, typer.Option("--order-id-col", help="Column with the order id (optional).")]
QuantityCol = Annotated[str | None, typer.Option("--quantity-col", help="Column with the quantity (optional).")]
CategoryCol = Annotated[str | None, typer.Option(
    "--category-col", help="Column with the product category (optional; enables replenishment features).")]
ChannelCol = Annotated[str | None, typer.Option("--channel-col", help="Column with the sales channel (optional).")]
DateFormat = Annotated[str | None, typer.Option(
    help="strptime format of text dates, e.g. %Y%m%d; default ISO 8601.")]
TimezoneOpt = Annotated[str | None, typer.Option(
    "--timezone", help="Shop time zone: aware timestamps are converted to it, naive ones taken as in "
                       "it. Default UTC, or the model's zone when a model is used.")]
DuplicatesOpt = Annotated[str, typer.Option(
    help="Exact duplicate rows: auto (drop if an order id is mapped), drop or keep.")]
RefundsOpt = Annotated[str, typer.Option(help="Negative amounts: exclude (not purchases) or error.")]
ZerosOpt = Annotated[str, typer.Option(
    "--zero-amounts", help="Zero amounts: keep (purchases without spend) or exclude.")]
EncodingOpt = Annotated[str, typer.Option(
    "--encoding", help="Text encoding of CSV files, e.g. big5, cp950, latin-1; default utf-8.")]
CustomersOpt = Annotated[Path | None, typer.Option(
    "--customers", help="CSV or Parquet file of customer attributes (gender, channel, region, birth year, ...): "
                        "one row per customer, or per customer and valid_from day; they become features.")]
CustomersIdCol = Annotated[str, typer.Option("--customers-id-col", help="Column of --customers with the customer id.")]
EventsOpt = Annotated[Path | None, typer.Option(
    "--events", help="CSV or Parquet engagement log (visits, email opens, carts, ...): counts and days since the "
                     "last event per type, as of the cutoff, become features.")]
EventsIdCol = Annotated[str, typer.Option("--events-id-col", help="Column of --events with the customer id.")]
EventsTimestampCol = Annotated[str, typer.Option(
    "--events-timestamp-col", help="Column of --events with the event time.")]
EventsTypeCol = Annotated[str, typer.Option("--events-type-col", help="Column of --events with the event type.")]


ThreadsOpt = Annotated[int | None, typer.Option(
    help="Threads for DuckDB and LightGBM (default: one per core).")]
MemoryLimitOpt = Annotated[str | None, typer.Option(
    help="DuckDB memory limit, e.g. 3GB; beyond it DuckDB spills to disk (default: 80% of RAM).")]
EngineOpt = Annotated[str, typer.Option(
    help="Where features are computed: duckdb (this machine, default) or spark (the same definitions "
         "on Apache Spark; needs Java 17).")]
SparkMasterOpt = Annotated[str | None, typer.Option(
    help="Spark master for --engine spark, e.g. spark://host:7077, yarn or k8s://https://host:443; default "
         "local[*], or Spark Connect when SPARK_REMOTE is set. Executor memory, cores and the like come from "
         "$SPARK_CONF_DIR/spark-defaults.conf.")]
SparkStagingOpt = Annotated[Path | None, typer.Option(
    help="Where the validated log is staged as Parquet for --engine spark; on a cluster, a path every "
         "executor can read. Default: the temp directory.")]


TrackingOpt = Annotated[str | None, typer.Option(
    help="MLflow tracking URI; default $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db.")]
ModelUriOpt = Annotated[str | None, typer.Option(help="Model to use; default models:/winback@champion.")]


def user_errors(command: Callable) -> Callable:
    """Turn a user's mistake into a message and exit status 2 instead of a traceback."""
    from rich.markup import escape

    from features.transactions import TransactionDataError

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (TransactionDataError, ValueError, OSError) as exc:
            message = str(exc) if not isinstance(exc, OSError) or not exc.filename else (
                f"{exc.filename}: {exc.strerror or exc}")
            errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    return wrapper


def open_log(transactions: list[Path] | None, dataset: str | None, *, customer_id_col: str,
             timestamp_col: str, amount_col: str, order_id_col: str | None,
             quantity_col: str | None, category_col: str | None, channel_col: str | None,
             date_format: str | None, timezone: str | None, duplicates: str, refunds: str,
             zero_amounts: str, encoding: str = "utf-8", threads: int | None = None,
             memory_limit: str | None = None):
    """Open and validate the log the flags describe (time zone default UTC), in a DuckDB with
    ``threads`` and ``memory_limit`` (its defaults when None)."""
    from features import ColumnMap, IngestPolicy, cdnow_log, read_transactions

    choice("--duplicates", duplicates, ("auto", "drop", "keep"))
    choice("--refunds", refunds, ("exclude", "error"))
    choice("--zero-amounts", zero_amounts, ("keep", "exclude"))
    policy = IngestPolicy(duplicates=cast(Any, duplicates), refunds=cast(Any, refunds),   # checked above
                          zero_amounts=cast(Any, zero_amounts), timezone=timezone or "UTC", date_format=date_format)
    if bool(transactions) == bool(dataset):
        raise ValueError("give either --transactions PATH or --dataset cdnow (exactly one)")
    if dataset:
        choice("--dataset", dataset, ("cdnow",))
        return cdnow_log(policy, threads=threads, memory_limit=memory_limit)
    assert transactions is not None                     # exactly one of the two, checked above
    columns = ColumnMap(customer_id=customer_id_col, timestamp=timestamp_col,
                        amount=None if amount_col.lower() == "none" else amount_col,
                        order_id=order_id_col, quantity=quantity_col, category=category_col,
                        channel=channel_col)
    return read_transactions([str(p) for p in transactions], columns, policy, encoding=encoding,
                             threads=threads, memory_limit=memory_limit)


#: The flags every log-reading command shares, as :func:`open_log` takes them.
LOG_OPTIONS = ("customer_id_col", "timestamp_col", "amount_col", "order_id_col", "quantity_col",
               "category_col", "channel_col", "date_format", "timezone", "duplicates", "refunds",
               "zero_amounts", "encoding", "threads", "memory_limit")


def log_options(flags: dict) -> dict:
    """A command's log-reading flags (from its ``locals()``), for :func:`open_log`."""
    return {name: flags[name] for name in LOG_OPTIONS if name in flags}


def choice(flag: str, value: str, allowed: tuple[str, ...]) -> None:
    """Refuse a flag value outside ``allowed``, naming the flag and the values it takes."""
    if value not in allowed:
        raise ValueError(f"{flag} must be one of {', '.join(allowed)}; got {value!r}")


def steps():
    """A transient progress display for a command's long steps (off when not on a terminal)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                    console=console, transient=True, disable=not console.is_terminal)
