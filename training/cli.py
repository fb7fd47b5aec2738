"""The ``winback`` command line: one subcommand per job.

Each command parses flags into the typed settings of the package it drives and calls that
package; no job logic lives here. A user's mistake (a bad file, a bad flag value) ends with a
one-paragraph message on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Churn, next-purchase and win-back scores from a transaction log.\n\n"
         "Start with `winback features --dataset cdnow --cutoff 1997-09-30 --out features.parquet`.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console()


@app.callback()
def _group() -> None:
    """Churn, next-purchase and win-back scores from a transaction log."""

errors = Console(stderr=True)

# Where the transactions come from: shared by every command that reads a log.
TransactionsOpt = Annotated[Optional[list[Path]], typer.Option(
    "--transactions", "-t", help="CSV or Parquet file(s) or glob(s) of transactions.")]
DatasetOpt = Annotated[Optional[str], typer.Option(
    help="A bundled dataset instead of files: 'cdnow' (lifetimes' CDNOW log).")]
CustomerCol = Annotated[str, typer.Option("--customer-id-col", help="Column with the customer id.")]
TimestampCol = Annotated[str, typer.Option("--timestamp-col", help="Column with the purchase date or time.")]
AmountCol = Annotated[str, typer.Option("--amount-col", help="Column with the order amount.")]
OrderCol = Annotated[Optional[str], typer.Option("--order-id-col", help="Column with the order id (optional).")]
QuantityCol = Annotated[Optional[str], typer.Option("--quantity-col", help="Column with the quantity (optional).")]
CategoryCol = Annotated[Optional[str], typer.Option(
    "--category-col", help="Column with the product category (optional; enables replenishment features).")]
ChannelCol = Annotated[Optional[str], typer.Option("--channel-col", help="Column with the sales channel (optional).")]
DateFormat = Annotated[Optional[str], typer.Option(
    help="strptime format of text dates, e.g. %Y%m%d; default ISO 8601.")]
TimezoneOpt = Annotated[str, typer.Option(
    "--timezone", help="Shop time zone: aware timestamps are converted to it, naive ones taken as in it.")]
DuplicatesOpt = Annotated[str, typer.Option(
    help="Exact duplicate rows: auto (drop if an order id is mapped), drop or keep.")]
RefundsOpt = Annotated[str, typer.Option(help="Negative amounts: exclude (not purchases) or error.")]
ZerosOpt = Annotated[str, typer.Option("--zero-amounts", help="Zero amounts: keep (purchases without spend) or exclude.")]


def user_errors(command: Callable) -> Callable:
    """Turn a user's mistake into a message and exit status 2 instead of a traceback."""
    from features.transactions import TransactionDataError

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (TransactionDataError, ValueError, FileNotFoundError) as exc:
            errors.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    return wrapper


def open_log(transactions: list[Path] | None, dataset: str | None, *, customer_id_col: str,
             timestamp_col: str, amount_col: str, order_id_col: str | None,
             quantity_col: str | None, category_col: str | None, channel_col: str | None,
             date_format: str | None, timezone: str, duplicates: str, refunds: str,
             zero_amounts: str):
    """Open and validate the log the flags describe."""
    from features import ColumnMap, IngestPolicy, cdnow_log, read_transactions

    _choice("--duplicates", duplicates, ("auto", "drop", "keep"))
    _choice("--refunds", refunds, ("exclude", "error"))
    _choice("--zero-amounts", zero_amounts, ("keep", "exclude"))
    policy = IngestPolicy(duplicates=duplicates, refunds=refunds, zero_amounts=zero_amounts,
                          timezone=timezone, date_format=date_format)
    if bool(transactions) == bool(dataset):
        raise ValueError("give either --transactions PATH or --dataset cdnow (exactly one)")
    if dataset:
        _choice("--dataset", dataset, ("cdnow",))
        return cdnow_log(policy)
    columns = ColumnMap(customer_id=customer_id_col, timestamp=timestamp_col, amount=amount_col,
                        order_id=order_id_col, quantity=quantity_col, category=category_col,
                        channel=channel_col)
    return read_transactions([str(p) for p in transactions], columns, policy)


def _choice(flag: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{flag} must be one of {', '.join(allowed)}; got {value!r}")


def _steps() -> "Progress":
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                    console=console, transient=True, disable=not console.is_terminal)


@app.command()
@user_errors
def features(
    out: Annotated[Path, typer.Option(help="Output table, .parquet or .csv (written atomically).")],
    cutoff: Annotated[Optional[str], typer.Option(
        help="As-of date YYYY-MM-DD: only transactions on or before it are read. "
             "Default: the log's last day.")] = None,
    freq: Annotated[str, typer.Option(help="BG/NBD time unit for recency and T: D (days) or W (weeks).")] = "D",
    check_lifetimes: Annotated[bool, typer.Option(
        help="Also compare the BG/NBD summary with lifetimes' own (in-memory; for small logs).")] = False,
    transactions: TransactionsOpt = None, dataset: DatasetOpt = None,
    customer_id_col: CustomerCol = "customer_id", timestamp_col: TimestampCol = "timestamp",
    amount_col: AmountCol = "amount", order_id_col: OrderCol = None, quantity_col: QuantityCol = None,
    category_col: CategoryCol = None, channel_col: ChannelCol = None, date_format: DateFormat = None,
    timezone: TimezoneOpt = "UTC", duplicates: DuplicatesOpt = "auto", refunds: RefundsOpt = "exclude",
    zero_amounts: ZerosOpt = "keep",
) -> None:
    """Build one row of features per customer as of a cutoff: BG/NBD summary, RFM and
    segment, purchase cycle, rolling windows, membership tier and replenishment."""
    from features.job import write_features

    _choice("--freq", freq, ("D", "W"))
    started = time.perf_counter()
    with _steps() as progress:
        progress.add_task("reading and validating transactions")
        log = open_log(transactions, dataset, customer_id_col=customer_id_col,
                       timestamp_col=timestamp_col, amount_col=amount_col,
                       order_id_col=order_id_col, quantity_col=quantity_col,
                       category_col=category_col, channel_col=channel_col,
                       date_format=date_format, timezone=timezone, duplicates=duplicates,
                       refunds=refunds, zero_amounts=zero_amounts)
        cutoff = cutoff or log.report.last_timestamp.date().isoformat()
        progress.add_task(f"building features as of {cutoff}")
        summary = write_features(log, cutoff, out, freq)
    _print_ingest(log.report)
    table = Table(title=f"{summary.customers:,} customers as of {cutoff} → {summary.out}")
    table.add_column("segment"), table.add_column("customers", justify="right")
    for name, n in summary.segments.items():
        table.add_row(name, f"{n:,}")
    console.print(table)
    console.print("tiers: " + ", ".join(f"{k} {v:,}" for k, v in summary.tiers.items()))
    if check_lifetimes:
        import pandas as pd

        from features.parity import lifetimes_parity

        worst = lifetimes_parity(log, pd.read_parquet(out) if out.suffix == ".parquet"
                                 else pd.read_csv(out, dtype={"customer_id": str}), cutoff, freq)
        verdict = "[green]equal[/]" if max(worst.values()) < 1e-9 else "[red]DIFFERENT[/]"
        console.print(f"parity with lifetimes.summary_data_from_transaction_data (freq={freq}): "
                      f"{verdict}; largest differences " +
                      ", ".join(f"{k} {v:.2g}" for k, v in worst.items()))
    console.print(f"done in {time.perf_counter() - started:.1f} s")


def _print_ingest(report) -> None:
    console.print(
        f"read {report.rows_read:,} rows, used {report.rows_used:,} "
        f"({report.first_timestamp:%Y-%m-%d} to {report.last_timestamp:%Y-%m-%d}); "
        f"refunds excluded {report.refunds_excluded:,}, zero amounts {report.zero_amounts:,} "
        f"(excluded {report.zero_amounts_excluded:,}), duplicates dropped {report.duplicates_dropped:,}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
