"""The ``winback`` command line: one subcommand per job.

Each command parses flags into the typed settings of the package it drives and calls that
package; no job logic lives here. A user's mistake (a bad file, a bad flag value) ends with a
one-paragraph message on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.table import Table

from training.monitor_cli import register as register_monitor
from training.options import (
    AmountCol,
    CategoryCol,
    ChannelCol,
    CustomerCol,
    CustomersIdCol,
    CustomersOpt,
    DatasetOpt,
    DateFormat,
    DuplicatesOpt,
    EncodingOpt,
    EngineOpt,
    EventsIdCol,
    EventsOpt,
    EventsTimestampCol,
    EventsTypeCol,
    MemoryLimitOpt,
    ModelUriOpt,
    OrderCol,
    QuantityCol,
    RefundsOpt,
    SparkMasterOpt,
    SparkStagingOpt,
    ThreadsOpt,
    TimestampCol,
    TimezoneOpt,
    TrackingOpt,
    TransactionsOpt,
    ZerosOpt,
    choice,
    console,
    errors,
    log_options,
    open_log,
    steps,
    user_errors,
)

app = typer.Typer(
    help="Churn, next-purchase and win-back scores from a transaction log.\n\n"
         "Start with `winback features --dataset cdnow --cutoff 1997-09-30 --out features.parquet`.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def _group() -> None:
    """Churn, next-purchase and win-back scores from a transaction log."""

def open_side(flags: dict, timezone: str, screen: bool = False):
    """The customers file and events log a command's flags (its ``locals()``) name, read in the
    log's ``timezone`` and date format, as :class:`features.SideData`; None when neither is given.
    ``screen`` (when a model will be fitted on them) refuses id-like and label-like columns."""
    from features import IngestPolicy
    from features.side import open_side as open_side_data

    if not flags.get("customers") and not flags.get("events"):
        return None
    return open_side_data(
        flags.get("customers"), flags.get("events"), customers_id_col=flags.get("customers_id_col", "customer_id"),
        events_id_col=flags.get("events_id_col", "customer_id"),
        events_timestamp_col=flags.get("events_timestamp_col", "timestamp"),
        events_type_col=flags.get("events_type_col", "event_type"),
        policy=IngestPolicy(timezone=timezone, date_format=flags.get("date_format")),
        encoding=flags.get("encoding") or "utf-8", threads=flags.get("threads"), memory_limit=flags.get("memory_limit"),
        screen=screen)


def _check_side(reference, side, engine: str = "duckdb") -> None:
    """For a model whose features include customer attributes or events: refuse --engine spark
    (it does not build them yet) and say which are missing when their flag is not given; say
    which are ignored when the model does not read them."""
    if reference is None:
        return
    ignored = [(flag, what) for flag, what, needed, given in (
        ("--customers", "customer attributes", reference.attributes, side and side.customers),
        ("--events", "engagement events", reference.event_types, side and side.events))
        if given is not None and not needed]
    for flag, what in ignored:
        errors.print(f"[yellow]note:[/] the model does not read {what}; {flag} is ignored", highlight=False,
                     soft_wrap=True)
    if not reference.side_columns:
        return
    if engine == "spark":
        raise ValueError("this model reads customer attributes or engagement events, which --engine spark does "
                         "not build yet; use --engine duckdb")
    missing = [flag for flag, needed, given in (("--customers", reference.attributes, side and side.customers),
                                                 ("--events", reference.event_types, side and side.events))
               if needed and given is None]
    if missing:
        errors.print(f"[yellow]note:[/] the model reads {' and '.join(f[2:] for f in missing)}; without "
                     f"{' and '.join(missing)} they are missing for every customer, so its scores differ from "
                     "those built with them", highlight=False, soft_wrap=True)


def _no_spark_side(engine: str, flags: dict) -> None:
    if engine == "spark" and (flags.get("customers") or flags.get("events")):
        raise ValueError("--engine spark does not read --customers or --events yet; use --engine duckdb")


def spark_log_for(log, master: str | None, staging: Path | None):
    """The validated ``log`` handed to a Spark session (``--engine spark``)."""
    from features.spark import spark_log, spark_session

    return spark_log(log, spark_session(master), staging)


@app.command()
@user_errors
def features(
    out: Annotated[Path, typer.Option(help="Output table, .parquet or .csv (written atomically).")],
    cutoff: Annotated[str | None, typer.Option(
        help="As-of date YYYY-MM-DD: only transactions on or before it are read. "
             "Default: the log's last day.")] = None,
    freq: Annotated[str, typer.Option(help="BG/NBD time unit for recency and T: D (days) or W (weeks).")] = "D",
    check_lifetimes: Annotated[bool, typer.Option(
        help="Also compare the BG/NBD summary with lifetimes' own (in-memory; for small logs).")] = False,
    model_uri: Annotated[str | None, typer.Option(
        help="Build the features a model reads, with its feature reference (RFM edges, category "
             "intervals, tiers, time zone), e.g. models:/winback@champion: the snapshot the "
             "service answers from. Default: a reference fitted on this log.")] = None,
    tracking_uri: TrackingOpt = None,
    engine: EngineOpt = "duckdb", spark_master: SparkMasterOpt = None, spark_staging: SparkStagingOpt = None,
    transactions: TransactionsOpt = None, dataset: DatasetOpt = None,
    customer_id_col: CustomerCol = "customer_id", timestamp_col: TimestampCol = "timestamp",
    amount_col: AmountCol = "amount", order_id_col: OrderCol = None, quantity_col: QuantityCol = None,
    category_col: CategoryCol = None, channel_col: ChannelCol = None, date_format: DateFormat = None,
    timezone: TimezoneOpt = None, duplicates: DuplicatesOpt = "auto", refunds: RefundsOpt = "exclude",
    zero_amounts: ZerosOpt = "keep", encoding: EncodingOpt = "utf-8",
    threads: ThreadsOpt = None, memory_limit: MemoryLimitOpt = None,
    customers: CustomersOpt = None, customers_id_col: CustomersIdCol = "customer_id", events: EventsOpt = None,
    events_id_col: EventsIdCol = "customer_id", events_timestamp_col: EventsTimestampCol = "timestamp",
    events_type_col: EventsTypeCol = "event_type",
) -> None:
    """Build one row of features per customer as of a cutoff: BG/NBD summary, RFM and
    segment, purchase cycle, rolling windows, membership tier and replenishment; with
    --customers and --events also customer attributes and engagement counts.

    For the scoring service's snapshot pass --model-uri: the table is then built exactly as
    that model defines its features, and the service checks it."""
    from features.build import parse_cutoff
    from features.job import write_features
    from features.output import check_output_path
    from features.settings import Freq

    choice("--freq", freq, ("D", "W"))
    choice("--engine", engine, ("duckdb", "spark"))
    _no_spark_side(engine, locals())
    check_output_path(out)                          # before the whole job, not after it
    if cutoff is not None:
        parse_cutoff(cutoff)
    started = time.perf_counter()
    reference, version = None, None
    if model_uri:
        from training.registry import load_scorer

        if freq != "D":
            raise ValueError("--model-uri builds the model's daily features; drop --freq W")
        scorer, version = load_scorer(model_uri, tracking_uri)
        reference = scorer.reference_
        timezone = timezone or reference.timezone
    with steps() as progress:
        progress.add_task("reading and validating transactions")
        log = open_log(transactions, dataset, **log_options(locals()))
        side = open_side(locals(), log.policy.timezone, screen=reference is None)
        _check_side(reference, side, engine)
        if cutoff is None:
            cutoff = log.report.last_timestamp.date().isoformat()
        progress.add_task(f"building features as of {cutoff} ({engine})")
        unit = None if reference else cast(Freq, freq)               # D or W, checked above
        if engine == "spark":
            from features.spark_job import write_features_spark

            summary = write_features_spark(spark_log_for(log, spark_master, spark_staging), cutoff, out,
                                           unit, reference=reference)
        else:
            summary = write_features(log, cutoff, out, unit, reference=reference, side=side)
    _print_ingest(log.report)
    if reference is not None:
        console.print(f"features defined by model {model_uri} (version {version}), "
                      f"feature reference {summary.reference_id}")
    table = Table(title=f"{summary.customers:,} customers as of {cutoff} → {summary.out}")
    table.add_column("segment")
    table.add_column("customers", justify="right")
    for name, n in summary.segments.items():
        table.add_row(name, f"{n:,}")
    console.print(table)
    console.print("tiers: " + ", ".join(f"{k} {v:,}" for k, v in summary.tiers.items()))
    if check_lifetimes:
        import pandas as pd

        from features.parity import lifetimes_parity

        worst = lifetimes_parity(log, pd.read_parquet(out) if out.suffix == ".parquet"
                                 else pd.read_csv(out, encoding="utf-8-sig", dtype={"customer_id": str}), cutoff, freq)
        verdict = "[green]equal[/]" if max(worst.values()) < 1e-9 else "[red]DIFFERENT[/]"
        console.print(f"parity with lifetimes.summary_data_from_transaction_data (freq={freq}): "
                      f"{verdict}; largest differences " +
                      ", ".join(f"{k} {v:.2g}" for k, v in worst.items()))
    console.print(f"done in {time.perf_counter() - started:.1f} s")


FeaturesOpt = Annotated[Path | None, typer.Option(
    "--features", help="A feature table written by `winback features` (.parquet), instead of a log.")]


@app.command()
@user_errors
def train(
    cutoff: Annotated[str, typer.Option(
        help="Evaluation cutoff YYYY-MM-DD: the model is judged on (cutoff, cutoff + horizon].")],
    horizon_days: Annotated[int, typer.Option(help="Churn horizon H: churn = no purchase within H days.")] = 90,
    origins: Annotated[int, typer.Option(help="Training origins, stepping back from cutoff − H (the latest "
                                              "validates the churn model's tree count).")] = 4,
    origin_step_days: Annotated[int, typer.Option(help="Days between training origins.")] = 15,
    next_purchase: Annotated[str, typer.Option(
        help="auto (keep the better out of time), hazard or classical.")] = "auto",
    purchase_model: Annotated[str, typer.Option(
        help="Classical model behind P(alive) and expected purchases: mbgnbd, pareto_nbd or bgnbd "
             "(bgnbd gives every one-time buyer P(alive) = 1).")] = "mbgnbd",
    seed: Annotated[int, typer.Option(help="Random seed for the learned models.")] = 0,
    gate_metrics: Annotated[str, typer.Option(
        help="Metrics a new model must not lose on to become champion.")] = "churn_auc,next_purchase_cindex",
    tracking_uri: TrackingOpt = None,
    engine: EngineOpt = "duckdb", spark_master: SparkMasterOpt = None, spark_staging: SparkStagingOpt = None,
    transactions: TransactionsOpt = None, dataset: DatasetOpt = None,
    customer_id_col: CustomerCol = "customer_id", timestamp_col: TimestampCol = "timestamp",
    amount_col: AmountCol = "amount", order_id_col: OrderCol = None, quantity_col: QuantityCol = None,
    category_col: CategoryCol = None, channel_col: ChannelCol = None, date_format: DateFormat = None,
    timezone: TimezoneOpt = None, duplicates: DuplicatesOpt = "auto", refunds: RefundsOpt = "exclude",
    zero_amounts: ZerosOpt = "keep",
    threads: ThreadsOpt = None, memory_limit: MemoryLimitOpt = None,
    customers: CustomersOpt = None, customers_id_col: CustomersIdCol = "customer_id", events: EventsOpt = None,
    events_id_col: EventsIdCol = "customer_id", events_timestamp_col: EventsTimestampCol = "timestamp",
    events_type_col: EventsTypeCol = "event_type",
) -> None:
    """Train on rolling origins, evaluate out of time against baselines and the champion,
    record everything in MLflow, and promote the new version only if it wins.

    With --engine spark the training origins' features and labels are built on Spark from the
    same definitions; the fits and the evaluation run on this machine.

    Example: winback train --dataset cdnow --cutoff 1997-12-31 --horizon-days 180"""
    from training.pipeline import TrainConfig, progress_lines
    from training.pipeline import train as run_training
    from training.registry import Gate

    choice("--next-purchase", next_purchase, ("auto", "hazard", "classical"))
    choice("--purchase-model", purchase_model, ("mbgnbd", "pareto_nbd", "bgnbd"))
    choice("--engine", engine, ("duckdb", "spark"))
    _no_spark_side(engine, locals())
    started = time.perf_counter()
    config = TrainConfig(cutoff=cutoff, horizon_days=horizon_days, origins=origins,
                         origin_step_days=origin_step_days, next_purchase=next_purchase,
                         purchase_model=purchase_model,
                         random_state=seed, gate=Gate(tuple(m.strip() for m in gate_metrics.split(","))),
                         threads=threads or 0, memory_limit=memory_limit)
    with steps() as progress:
        task = progress.add_task("reading and validating transactions")
        log = open_log(transactions, dataset, **log_options(locals()))
        side = open_side(locals(), log.policy.timezone, screen=True)
        slog = spark_log_for(log, spark_master, spark_staging) if engine == "spark" else None
        result = run_training(log, config, tracking_uri,
                              step=lambda text: progress.update(task, description=text),
                              progress=progress_lines(progress.console.print), spark_log=slog,
                              **({"side": side} if side else {}))
    _print_selection(result.selection)
    table = Table(title=f"Churn ROC AUC as of {cutoff}, horizon {horizon_days} days (out of time)")
    for col in ("model", "churn AUC", "difference"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in result.table.itertuples(index=False):
        table.add_row(row.model, f"{row.churn_auc:.4f}", f"{row._2:+.4f}")
    console.print(table)
    m = result.evaluation.metrics
    brier = ", ".join(f"Brier({d}d) {m[f'next_purchase_brier_{d}d']:.4f}" for d in (7, 30, 90)
                      if f"next_purchase_brier_{d}d" in m)
    console.print(
        f"churn: PR AUC {m['churn_pr_auc']:.3f}, Brier {m['churn_brier']:.4f}, ECE {m['churn_ece']:.4f}, "
        f"top-decile lift {m['churn_lift_top_decile']:.2f}\n"
        f"next purchase: C-index {m['next_purchase_cindex']:.3f}, MAE {m['next_purchase_mae_days']:.1f} days "
        f"(on {m['next_purchase_mae_share']:.0%} of buyers), 80% interval coverage "
        f"{m['next_purchase_coverage80']:.3f} (buyers {m['next_purchase_coverage80_buyers']:.3f}, "
        f"non-buyers {m['next_purchase_coverage80_nonbuyers']:.3f}), {brier}, "
        f"integrated Brier {m['next_purchase_ibs']:.4f}\n"
        f"classical: BG/NBD forecast {m['bgnbd_forecast_purchases']:,.0f} vs actual {m['actual_purchases']:,.0f} "
        f"({m['bgnbd_forecast_error']:+.1%}), per-customer correlation {m['bgnbd_correlation']:.3f}; "
        f"Pareto/NBD {m['pareto_nbd_forecast_error']:+.1%}, {m['pareto_nbd_correlation']:.3f}; "
        f"MBG/CNBD-k (k = {m['mbgcnbd_k']:.0f}) {m['mbgcnbd_forecast_error']:+.1%}, {m['mbgcnbd_correlation']:.3f}\n"
        f"value (shipped clv_12m): normalized Gini {m['value_gini']:.3f}, decile MAPE {m['value_decile_mape']:.1%}")
    for line in result.evaluation.summary_lines():
        console.print(line)
    console.print(f"served model trained until {result.trained_until}; its recipe was evaluated on "
                  f"{result.evaluated_on}")
    if result.spend_note:
        console.print(f"spend: {result.spend_note}")
    console.print(f"[bold]{result.verdict}[/]")
    console.print(f"MLflow run {result.run_id}; see it with: mlflow ui --backend-store-uri "
                  f"{_display_uri(tracking_uri)}  (done in {time.perf_counter() - started:.0f} s)")


def _print_selection(selection: dict) -> None:
    """The candidates of the time-series cross-validation on training origins, the served one
    marked, and why it is served."""
    for target, chosen in selection.items():
        table = Table(title=f"{target.replace('_', ' ')}: candidates in cross-validation on "
                            f"{chosen['validation']['origin']} ({chosen['validation']['customers']:,} customers)")
        for col in ("candidate", chosen["metric"], "served"):
            table.add_column(col, justify="left" if col == "candidate" else "right")
        for name, value in sorted(chosen["figures"].items(), key=lambda kv: -kv[1]):
            table.add_row(name, f"{value:.4f}", "yes" if name == chosen["served"] else "")
        console.print(table)
        console.print(f"served {target.replace('_', ' ')}: {chosen['served']}: {chosen['reason']}")


def _display_uri(tracking_uri: str | None) -> str:
    from training.registry import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    return "sqlite:///mlruns/mlflow.db" if uri == resolve_tracking_uri(None) and not tracking_uri else uri


@app.command()
@user_errors
def models(tracking_uri: TrackingOpt = None) -> None:
    """List the registered versions of `winback` with their key metrics and aliases."""
    from mlflow import MlflowClient

    from training.registry import MODEL_NAME, use_tracking

    uri = use_tracking(tracking_uri)
    client = MlflowClient(uri, registry_uri=uri)
    versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
    if not versions:
        console.print("no model registered yet: run `winback train`")
        return
    table = Table(title=f"registered model '{MODEL_NAME}'")
    for col in ("version", "aliases", "created", "churn AUC", "next-purchase C-index", "horizon",
                "evaluated on", "trained until", "verdict", "run"):
        table.add_column(col)
    for found in sorted(versions, key=lambda v: int(v.version), reverse=True):
        v = client.get_model_version(MODEL_NAME, found.version)     # search results omit aliases
        run = client.get_run(v.run_id) if v.run_id else None
        metrics = run.data.metrics if run else {}
        params = run.data.params if run else {}
        tags = v.tags or {}
        table.add_row(str(v.version), ", ".join(v.aliases) or "-",
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(v.creation_timestamp / 1000)),
                      f"{metrics.get('churn_auc', float('nan')):.4f}",
                      f"{metrics.get('next_purchase_cindex', float('nan')):.4f}",
                      tags.get("horizon_days", params.get("horizon_days", "-")),
                      tags.get("evaluated_on", "-"), tags.get("trained_until", "-"),
                      "never gated" if tags.get("gate") == "pending" or "verdict" not in tags
                      else tags["verdict"].split(": ", 1)[-1][:60],
                      (v.run_id or "-")[:8])
    console.print(table)


@app.command()
@user_errors
def promote(version: Annotated[str, typer.Argument(help="The version to make champion.")],
            force: Annotated[bool, typer.Option(
                help="Promote even a version that was never gated (its run stopped after registering it).")] = False,
            tracking_uri: TrackingOpt = None) -> None:
    """Make VERSION the champion by hand, overriding the gate, and say what it replaced."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from training.registry import MODEL_NAME, use_tracking
    from training.registry import promote as promote_version

    uri = use_tracking(tracking_uri)
    client = MlflowClient(uri, registry_uri=uri)
    try:
        previous = promote_version(client, version, force=force)
    except MlflowException as exc:
        raise ValueError(f"cannot promote version {version} of {MODEL_NAME}: {exc.message}") from None
    was = f"replacing version {previous.version}" if previous else "there was no champion before"
    console.print(f"version {version} of {MODEL_NAME} is now champion ({was})")


CurrencyOpt = Annotated[str | None, typer.Option(
    help="Currency symbol of money columns in .xlsx, e.g. NT$, €; default NT$ with --lang zh-TW, else $.")]


def _no_side_with_features(features_path, flags: dict) -> None:
    if features_path is not None and (flags.get("customers") or flags.get("events")):
        raise ValueError("a feature table (--features) already holds the attributes and events it was built "
                         "with; drop --customers and --events, or score the log itself")


def _scoring_input(features_path, transactions, dataset, as_of, mapping, scorer):
    """(feature table, as-of) from --features, or from a log as of --as-of.

    A feature table must have been built with the scorer's feature reference (``winback
    features --model-uri``); a log is read in the model's time zone unless --timezone says
    otherwise (and then it must be the same).
    """
    from features.build import parse_cutoff
    from features.job import feature_table_metadata, read_feature_table

    if features_path is not None:
        if transactions or dataset:
            raise ValueError("give --features or a log (--transactions / --dataset), not both")
        table, cutoff, freq = read_feature_table(features_path)
        if freq != "D":
            raise ValueError(f"{features_path}: built with --freq {freq}; the scorer needs --freq D")
        built_with = feature_table_metadata(features_path).get("winback.reference_id")
        if built_with != scorer.reference_.fingerprint():
            raise ValueError(f"{features_path} was built with feature reference {built_with or 'none'}, not the "
                             f"model's {scorer.reference_.fingerprint()}: rebuild it with `winback features "
                             "--model-uri ...` or score the log itself (--transactions / --dataset)")
        if as_of and parse_cutoff(as_of) != cutoff:
            raise ValueError(f"{features_path} is as of {cutoff.date()}, not {as_of}")
        return table, cutoff
    if not as_of:
        raise ValueError("--as-of is required when scoring a transaction log")
    mapping = {**mapping, "timezone": mapping.get("timezone") or scorer.reference_.timezone}
    return open_log(transactions, dataset, **mapping), parse_cutoff(as_of)


@app.command()
@user_errors
def score(
    out: Annotated[Path, typer.Option(help="Scores table: .parquet, .csv or .xlsx (written atomically); with "
                                           "--engine spark a directory of Parquet partitioned by as_of.")],
    as_of: Annotated[str | None, typer.Option(help="Score as of this date YYYY-MM-DD.")] = None,
    reasons: Annotated[int | None, typer.Option(
        help="Explain the N customers with the highest value at risk (0: none). Default 100; "
             "--engine spark computes no reasons.")] = None,
    features_path: FeaturesOpt = None, tracking_uri: TrackingOpt = None, model_uri: ModelUriOpt = None,
    engine: EngineOpt = "duckdb", spark_master: SparkMasterOpt = None, spark_staging: SparkStagingOpt = None,
    transactions: TransactionsOpt = None, dataset: DatasetOpt = None,
    currency: CurrencyOpt = None,
    customer_id_col: CustomerCol = "customer_id", timestamp_col: TimestampCol = "timestamp",
    amount_col: AmountCol = "amount", order_id_col: OrderCol = None, quantity_col: QuantityCol = None,
    category_col: CategoryCol = None, channel_col: ChannelCol = None, date_format: DateFormat = None,
    timezone: TimezoneOpt = None, duplicates: DuplicatesOpt = "auto", refunds: RefundsOpt = "exclude",
    zero_amounts: ZerosOpt = "keep", encoding: EncodingOpt = "utf-8",
    threads: ThreadsOpt = None, memory_limit: MemoryLimitOpt = None,
    customers: CustomersOpt = None, customers_id_col: CustomersIdCol = "customer_id", events: EventsOpt = None,
    events_id_col: EventsIdCol = "customer_id", events_timestamp_col: EventsTimestampCol = "timestamp",
    events_type_col: EventsTypeCol = "event_type",
) -> None:
    """Score every customer with the champion model: churn, next purchase, value, win-back date.

    With --engine spark the features are built and scored on Spark (a log, not --features) and
    written as Parquet partitioned by as_of: winback score --engine spark --dataset cdnow
    --as-of 1998-06-30 --out scores/"""
    from crm.exports import write_table
    from training.registry import load_scorer

    choice("--engine", engine, ("duckdb", "spark"))
    if engine == "spark" and (reasons or features_path is not None):
        raise ValueError("--engine spark scores a log (--transactions / --dataset) without reasons: "
                         "drop --features and --reasons")
    _no_spark_side(engine, locals())
    _no_side_with_features(features_path, locals())
    reasons = 100 if reasons is None else reasons
    mapping = log_options(locals())
    started = time.perf_counter()
    with steps() as progress:
        progress.add_task("loading the model and the data")
        scorer, version = load_scorer(model_uri, tracking_uri)
        if threads is not None:
            scorer.use_threads(threads)
        data, day = _scoring_input(features_path, transactions, dataset, as_of, mapping, scorer)
        side = open_side(locals(), timezone or scorer.reference_.timezone)
        if features_path is None:
            _check_side(scorer.reference_, side, engine)
        progress.add_task(f"scoring ({engine})")
        if engine == "spark":
            from training.spark_scoring import score_log_spark

            done = score_log_spark(scorer, spark_log_for(data, spark_master, spark_staging), day, out, version)
            console.print(f"scored {done.customers:,} customers as of {day.date()} on Spark with model version "
                          f"{version} → {done.out} ({time.perf_counter() - started:.1f} s)")
            return
        scorer.compile_trees()                       # a batch: compiled trees pay for themselves
        scores = scorer.score(data, day, reasons=reasons if reasons > 0 else False,
                              **({"side": side} if side else {}))
        scores.insert(1, "model_version", version)
        write_table(scores, out, currency=currency)
    console.print(f"scored {len(scores):,} customers as of {day.date()} with model version {version} "
                  f"→ {out}; mean churn probability {scores['churn_probability'].mean():.3f}, "
                  f"win back now: {int(scores['winback_now'].sum()):,} "
                  f"({time.perf_counter() - started:.1f} s)")


@app.command()
@user_errors
def rank(
    out: Annotated[Path, typer.Option(help="The list: .csv (UTF-8 with BOM, opens in Excel) or .xlsx "
                                           "(formatted, ids kept as text with their leading zeros).")],
    top: Annotated[int, typer.Option(help="How many customers.")] = 100,
    segment: Annotated[list[str] | None, typer.Option(
        help="Only these RFM segments (repeatable; English or zh-TW).")] = None,
    tier: Annotated[list[str] | None, typer.Option(help="Only these tiers (repeatable).")] = None,
    min_value: Annotated[float, typer.Option(help="Only customers with at least this value at risk.")] = 0.0,
    lang: Annotated[str, typer.Option(help="Language of segments, tiers, reasons and headers: en or zh-TW.")] = "en",
    as_of: Annotated[str | None, typer.Option(help="Rank as of this date YYYY-MM-DD.")] = None,
    features_path: FeaturesOpt = None, tracking_uri: TrackingOpt = None, model_uri: ModelUriOpt = None,
    transactions: TransactionsOpt = None, dataset: DatasetOpt = None,
    currency: CurrencyOpt = None,
    customer_id_col: CustomerCol = "customer_id", timestamp_col: TimestampCol = "timestamp",
    amount_col: AmountCol = "amount", order_id_col: OrderCol = None, quantity_col: QuantityCol = None,
    category_col: CategoryCol = None, channel_col: ChannelCol = None, date_format: DateFormat = None,
    timezone: TimezoneOpt = None, duplicates: DuplicatesOpt = "auto", refunds: RefundsOpt = "exclude",
    zero_amounts: ZerosOpt = "keep", encoding: EncodingOpt = "utf-8",
    threads: ThreadsOpt = None, memory_limit: MemoryLimitOpt = None,
    customers: CustomersOpt = None, customers_id_col: CustomersIdCol = "customer_id", events: EventsOpt = None,
    events_id_col: EventsIdCol = "customer_id", events_timestamp_col: EventsTimestampCol = "timestamp",
    events_type_col: EventsTypeCol = "event_type",
) -> None:
    """The win-back list: customers ranked by value at risk (churn probability × 12-month
    value), with win-back date, next-purchase date, segment, tier and reasons."""
    from crm.exports import LIST_SHEET, ranked_list, write_table
    from features import build_features
    from training.registry import load_scorer

    choice("--lang", lang, ("en", "zh-TW"))
    if out.suffix.lower() not in (".csv", ".xlsx"):
        raise ValueError(f"--out must end in .csv or .xlsx, got {out.name!r}")
    _no_side_with_features(features_path, locals())
    mapping = log_options(locals())
    scorer, version = load_scorer(model_uri, tracking_uri)
    if threads is not None:
        scorer.use_threads(threads)
    data, day = _scoring_input(features_path, transactions, dataset, as_of, mapping, scorer)
    side = open_side(locals(), timezone or scorer.reference_.timezone)
    if features_path is None:
        _check_side(scorer.reference_, side)
    table = data if features_path is not None else build_features(data, day, reference=scorer.reference_, side=side)
    ranked = ranked_list(scorer, table, day, top, segment, tier, min_value, lang)
    write_table(ranked, out, sheet=LIST_SHEET[lang], currency=currency, lang=lang)
    if ranked.empty:
        asked = [f"--segment {s}" for s in segment or ()] + [f"--tier {t}" for t in tier or ()]
        asked += [f"--min-value {min_value:g}"] if min_value else []
        console.print(f"0 customers match {' '.join(asked) or 'the filters'} as of {day.date()}; "
                      f"{out} has only its headers", markup=False, highlight=False)
        return
    view = Table(title=f"win-back list as of {day.date()} (model version {version}) → {out}")
    for col in ranked.columns[:9]:
        view.add_column(str(col))
    for row in ranked.head(20).itertuples(index=False):
        view.add_row(*[("" if v is None or v != v else str(v)) for v in list(row)[:9]])
    console.print(view)
    console.print(f"{len(ranked)} customers listed")


@app.command()
@user_errors
def report(
    out: Annotated[Path, typer.Option(help="Report file, .html (written atomically): one self-contained page "
                                           "with every chart and font inside, to mail; opens offline.")],
    as_of: Annotated[str | None, typer.Option(help="Report as of this date YYYY-MM-DD: only transactions "
                                                      "on or before it are read. Default: the log's last day.")] = None,
    lang: Annotated[str, typer.Option(help="Language of the report: en or zh-TW.")] = "en",
    currency: Annotated[str | None, typer.Option(
        help="Currency symbol of money, e.g. NT$, €; default NT$ with --lang zh-TW, else $.")] = None,
    model_uri: Annotated[str | None, typer.Option(
        help="Take tier thresholds, review period and time zone from this model's feature reference, "
             "e.g. models:/winback@champion (the tiers the service shows). Default: the default tiers.")] = None,
    tracking_uri: TrackingOpt = None,
    transactions: TransactionsOpt = None, dataset: DatasetOpt = None,
    customer_id_col: CustomerCol = "customer_id", timestamp_col: TimestampCol = "timestamp",
    amount_col: AmountCol = "amount", order_id_col: OrderCol = None, quantity_col: QuantityCol = None,
    category_col: CategoryCol = None, channel_col: ChannelCol = None, date_format: DateFormat = None,
    timezone: TimezoneOpt = None, duplicates: DuplicatesOpt = "auto", refunds: RefundsOpt = "exclude",
    zero_amounts: ZerosOpt = "keep", encoding: EncodingOpt = "utf-8",
    threads: ThreadsOpt = None, memory_limit: MemoryLimitOpt = None,
) -> None:
    """The marketer reports as one HTML file to mail: monthly new vs returning customers
    (returning share of revenue, repurchase rate), cohort retention, repurchase intervals per
    category and the tier review calendar, in English or Traditional Chinese.

    Example: winback report --dataset cdnow --as-of 1998-06-30 --lang zh-TW --out report.html"""
    from crm.reports import write_report
    from features.build import parse_cutoff
    from features.output import check_output_path

    choice("--lang", lang, ("en", "zh-TW"))
    check_output_path(out, (".html", ".htm"))
    if as_of is not None:
        parse_cutoff(as_of)
    started = time.perf_counter()
    reference = None
    if model_uri:
        from training.registry import load_scorer

        reference = load_scorer(model_uri, tracking_uri)[0].reference_
        timezone = timezone or reference.timezone
    with steps() as progress:
        progress.add_task("reading and validating transactions")
        log = open_log(transactions, dataset, **log_options(locals()))
        as_of = as_of or log.report.last_timestamp.date().isoformat()
        progress.add_task(f"computing the reports as of {as_of}")
        write_report(log, as_of, out, lang, currency, reference=reference)
    console.print(f"reports as of {as_of} ({lang}) → {out} ({out.stat().st_size / 1e6:.1f} MB, "
                  f"{time.perf_counter() - started:.1f} s)")


@app.command()
@user_errors
def classical(
    cutoff: Annotated[str, typer.Option(help="Fit on the weekly summary as of this date.")] = "1997-09-30",
    transactions: TransactionsOpt = None, dataset: DatasetOpt = "cdnow",
    customer_id_col: CustomerCol = "customer_id", timestamp_col: TimestampCol = "timestamp",
    amount_col: AmountCol = "amount", date_format: DateFormat = None,
) -> None:
    """Fit BG/NBD, Pareto/NBD, MBG/NBD and Gamma-Gamma on a weekly summary as of a cutoff and
    print the parameters beside the published CDNOW ones (Fader, Hardie & Lee 2005), with a fit
    on the papers' own 2,357-customer sample for reference."""
    from features import build_features
    from models.clv.published import cdnow_sample_summary, fit_side_by_side

    log = open_log(None if dataset and not transactions else transactions,
                   None if transactions else dataset, customer_id_col=customer_id_col,
                   timestamp_col=timestamp_col, amount_col=amount_col, order_id_col=None,
                   quantity_col=None, category_col=None, channel_col=None, date_format=date_format,
                   timezone="UTC", duplicates="auto", refunds="exclude", zero_amounts="keep")
    label = f"this log as of {cutoff} (weeks)"
    summaries = {"papers' sample (weeks 1-39)": cdnow_sample_summary(),
                 label: build_features(log, cutoff, freq="W")}
    with steps() as progress:
        progress.add_task("fitting four models on two summaries")
        table = fit_side_by_side(summaries)
    view = Table(title="Classical models: published vs fitted (α, β, γ in weeks)")
    for col in table.columns:
        view.add_column(col, justify="left" if col in ("model", "parameter") else "right")
    for row in table.itertuples(index=False):
        view.add_row(row[0], row[1], *[f"{v:.3f}" for v in row[2:]])
    console.print(view)
    console.print(f"the papers' sample has {len(summaries[list(summaries)[0]]):,} customers; "
                  f"{label} has {len(summaries[label]):,}")


@app.command()
@user_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 3000,
    tracking_uri: TrackingOpt = None, model_uri: ModelUriOpt = None,
    snapshot: Annotated[Path | None, typer.Option(
        help="Feature snapshot to answer lookups from (built with `winback features --model-uri`); "
             "default out/cdnow_features.parquet.")] = None,
    as_of: Annotated[str | None, typer.Option(
        help="With --transactions or --dataset: the as-of day of the features the service builds "
             "(default: the log's last day).")] = None,
    api_keys_file: Annotated[Path | None, typer.Option(help="File with more API keys, one a line.")] = None,
    poll_seconds: Annotated[float | None, typer.Option(help="How often to check the champion alias.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    transactions: TransactionsOpt = None, dataset: DatasetOpt = None,
    customer_id_col: CustomerCol = "customer_id", timestamp_col: TimestampCol = "timestamp",
    amount_col: AmountCol = "amount", order_id_col: OrderCol = None, quantity_col: QuantityCol = None,
    category_col: CategoryCol = None, channel_col: ChannelCol = None, date_format: DateFormat = None,
    duplicates: DuplicatesOpt = "auto", refunds: RefundsOpt = "exclude", zero_amounts: ZerosOpt = "keep",
    customers: CustomersOpt = None, customers_id_col: CustomersIdCol = "customer_id", events: EventsOpt = None,
    events_id_col: EventsIdCol = "customer_id", events_timestamp_col: EventsTimestampCol = "timestamp",
    events_type_col: EventsTypeCol = "event_type",
) -> None:
    """Start the scoring service (BentoML). API keys come from WINBACK_API_KEYS
    (comma-separated) or --api-keys-file; requests send `Authorization: Bearer KEY`.

    Features come from a snapshot file, or, with --transactions/--dataset, are built in the
    service from the log with the served model's reference (again after every champion swap).
    The log is read in the model's time zone."""
    from serving.config import LogSource
    from serving.run import serve as run_service

    source = None
    if transactions or dataset:
        if snapshot is not None:
            raise ValueError("give --snapshot or a log (--transactions / --dataset), not both")
        if dataset:
            choice("--dataset", dataset, ("cdnow",))
        if as_of:
            from features.build import parse_cutoff

            parse_cutoff(as_of)
        for flag, value, allowed in (("--duplicates", duplicates, ("auto", "drop", "keep")),
                                     ("--refunds", refunds, ("exclude", "error")),
                                     ("--zero-amounts", zero_amounts, ("keep", "exclude"))):
            choice(flag, value, allowed)
        columns = {"customer_id": customer_id_col, "timestamp": timestamp_col,
                   "amount": None if amount_col.lower() == "none" else amount_col,
                   "order_id": order_id_col, "quantity": quantity_col, "category": category_col,
                   "channel": channel_col}
        policy = {"duplicates": duplicates, "refunds": refunds, "zero_amounts": zero_amounts,
                  "date_format": date_format}
        ingest = {"policy": policy} if dataset else {"columns": columns, "policy": policy}
        if customers or events:             # opened with the log, in the model's zone (features.side.open_side)
            ingest["side"] = {"customers": str(customers.resolve()) if customers else None,
                              "events": str(events.resolve()) if events else None,
                              "customers_id_col": customers_id_col, "events_id_col": events_id_col,
                              "events_timestamp_col": events_timestamp_col, "events_type_col": events_type_col}
        source = LogSource(tuple(str(Path(p).resolve()) for p in transactions or ()), dataset, as_of, ingest)
    elif customers or events:
        raise ValueError("--customers and --events go with a log (--transactions or --dataset), not a snapshot")
    elif as_of:
        raise ValueError("--as-of needs a log to build features from (--transactions or --dataset)")
    raise typer.Exit(run_service(host, port, tracking_uri, model_uri, snapshot, api_keys_file,
                                 poll_seconds, workers, log_source=source))


triggers_app = typer.Typer(help="CRM triggers: the day's win-back, tier, replenishment and silence events, "
                                "exactly once, with holdout groups.", no_args_is_help=True)
app.add_typer(triggers_app, name="triggers")

RulesOpt = Annotated[Path | None, typer.Option("--rules", help="Rules file (TOML); default: the shipped "
                                                                  "crm/triggers_default.toml.")]
StateOpt = Annotated[str, typer.Option("--state-uri", help="Where fired events live: SQLite by default, or a "
                                                           "PostgreSQL SQLAlchemy URI.")]
WebhookOpt = Annotated[str | None, typer.Option(
    "--webhook-url", help="POST signed JSON batches here (secret from WINBACK_WEBHOOK_SECRET).")]
OutDirOpt = Annotated[Path | None, typer.Option("--out-dir", help="Write Parquet and CSV files per rule and day here.")]
DEFAULT_STATE = "sqlite:///out/triggers.db"


def _state_uri(uri: str) -> str:
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def _print_trigger_run(run) -> None:
    console.print(f"triggers as of {run.as_of}: {run.new_events:,} new event(s); the day's events:")
    table = Table()
    for col in ("rule", "group", "events"):
        table.add_column(col, justify="right" if col == "events" else "left")
    for (rule, group), n in sorted(run.counts.items()):
        table.add_row(rule, group, f"{n:,}")
    console.print(table)
    if run.files:
        console.print(f"files: {len(run.files)} in {run.files[0].parent}")
    if run.webhook is not None:
        console.print("webhook: " + ", ".join(f"{k} {v:,}" for k, v in run.webhook.items()))


@triggers_app.command("run")
@user_errors
def triggers_run(
    as_of: Annotated[str, typer.Option(help="The day to run, YYYY-MM-DD.")],
    rules: RulesOpt = None, state_uri: StateOpt = DEFAULT_STATE, out_dir: OutDirOpt = None,
    webhook_url: WebhookOpt = None, tracking_uri: TrackingOpt = None, model_uri: ModelUriOpt = None,
    transactions: TransactionsOpt = None, dataset: DatasetOpt = None,
    customer_id_col: CustomerCol = "customer_id", timestamp_col: TimestampCol = "timestamp",
    amount_col: AmountCol = "amount", order_id_col: OrderCol = None, quantity_col: QuantityCol = None,
    category_col: CategoryCol = None, channel_col: ChannelCol = None, date_format: DateFormat = None,
    duplicates: DuplicatesOpt = "auto", refunds: RefundsOpt = "exclude", zero_amounts: ZerosOpt = "keep",
) -> None:
    """Evaluate the trigger rules on the champion's scores as of a day, record the new events
    (re-running a day adds nothing) and deliver them to files and a webhook. At most
    [budget] max_sends_per_day are sent, the highest expected net value first; each rule is
    ranked by its uplift model (`winback triggers learn`) or, until one beats the baselines, by
    value at risk."""
    from crm.delivery import secret_from_env
    from crm.job import model_features, run_triggers
    from crm.learn import rankings_for
    from crm.outbox import Outbox
    from crm.rules import TriggerRules
    from features.build import parse_cutoff
    from training.registry import load_scorer
    from training.uplift_registry import registered_model

    secret = secret_from_env() if webhook_url else None
    scorer, _ = load_scorer(model_uri, tracking_uri)
    log = open_log(transactions, dataset, **log_options({**locals(), "timezone": scorer.reference_.timezone}))
    trigger_rules, outbox = TriggerRules.from_toml(rules), Outbox(_state_uri(state_uri))
    uplift = rankings_for(trigger_rules, outbox.events(), parse_cutoff(as_of),
                          lambda rule: registered_model(rule, tracking_uri))
    with steps() as progress:
        task = progress.add_task("triggers")
        run = run_triggers(scorer, model_features(scorer, log, as_of), as_of, trigger_rules, outbox, out_dir,
                           webhook_url, secret, step=lambda t: progress.update(task, description=t),
                           log=log, uplift=uplift)
    _print_trigger_run(run)
    sends = sum(n for (_, group), n in run.counts.items() if group == "send")
    console.print(f"budget: {sends:,} of {run.max_sends_per_day:,} sends on {run.as_of}")
    for rule, note in sorted(run.rankings.items()):
        console.print(f"ranking {rule}: {note}")


@triggers_app.command("replay")
@user_errors
def triggers_replay(
    webhook_url: Annotated[str, typer.Option("--webhook-url", help="Where to resend the dead letters.")],
    state_uri: StateOpt = DEFAULT_STATE,
) -> None:
    """Resend the events whose delivery failed too often (the dead letters)."""
    from crm.delivery import secret_from_env
    from crm.outbox import Outbox

    done = Outbox(_state_uri(state_uri)).replay(webhook_url, secret_from_env())
    console.print("replayed: " + ", ".join(f"{k} {v:,}" for k, v in done.items()))


@triggers_app.command("report")
@user_errors
def triggers_report(
    out: Annotated[Path | None, typer.Option(help="Also write the table (.csv or .xlsx).")] = None,
    by_day: Annotated[bool, typer.Option(help="One row per rule, day and window.")] = False,
    state_uri: StateOpt = DEFAULT_STATE, rules: RulesOpt = None,
    transactions: TransactionsOpt = None, dataset: DatasetOpt = None,
    customer_id_col: CustomerCol = "customer_id", timestamp_col: TimestampCol = "timestamp",
    amount_col: AmountCol = "amount", date_format: DateFormat = None, timezone: TimezoneOpt = None,
) -> None:
    """Treated vs holdout: purchase rate and revenue within 30/60/90 days per rule, the
    difference with a 95 % interval, and the messages sent; the budget used and skipped; per
    rule the uplift, the Qini and AUUC of the recorded ranking, churn risk and value at risk,
    and the recorded ranking's Qini curve."""
    from crm.exports import write_table
    from crm.lift import budget_report, lift_report, uplift_report
    from crm.outbox import Outbox
    from crm.rules import TriggerRules

    log = open_log(transactions, dataset, customer_id_col=customer_id_col, timestamp_col=timestamp_col,
                   amount_col=amount_col, order_id_col=None, quantity_col=None, category_col=None,
                   channel_col=None, date_format=date_format, timezone=timezone, duplicates="auto",
                   refunds="exclude", zero_amounts="keep")
    outbox = Outbox(_state_uri(state_uri))
    report = lift_report(outbox.events(), log, by_day=by_day)
    view = Table(title="triggers: treated (send) vs holdout")
    keys = ["rule", *(["as_of"] if by_day else []), "window_days"]
    for col in (*keys, "observed", "sent", "held out", "purchase rate diff [95% CI]", "revenue diff [95% CI]"):
        view.add_column(col)
    for r in report.to_dict("records"):
        view.add_row(*[str(r[k]) for k in keys], str(r["observed"]), f"{r['messages_sent']:,}", f"{r['n_holdout']:,}",
                     f"{r['purchase_rate_diff']:+.4f} [{r['purchase_rate_diff_low']:+.4f}, "
                     f"{r['purchase_rate_diff_high']:+.4f}]",
                     f"{r['revenue_per_customer_diff']:+.2f} [{r['revenue_per_customer_diff_low']:+.2f}, "
                     f"{r['revenue_per_customer_diff_high']:+.2f}]")
    console.print(view)
    events = outbox.events()
    trigger_rules = TriggerRules.from_toml(rules)
    budget = budget_report(events, trigger_rules.budget.max_sends_per_day)
    if len(budget):
        console.print(f"budget: busiest day {int(budget['busiest_day_sends'].iloc[0]):,} sends of "
                      f"{trigger_rules.budget.max_sends_per_day:,} a day; per rule: " + "; ".join(
                          f"{r.rule} sent {r.sent:,}, held out {r.held_out:,}, skipped {r.skipped_budget:,}"
                          for r in budget.itertuples()))
        for r in budget.itertuples():
            console.print(f"ranking of {r.rule} on {r.last_day}: {r.ranking} ({r.uplift_note})", highlight=False)
    qini, curves = uplift_report(events, log, trigger_rules)
    if len(qini):
        table = Table(title="uplift per rule (matured events, the rule's window): Qini and AUUC [95% CI]")
        for col in ("rule", "window", "uplift", "ranking", "Qini [95% CI]", "AUUC [95% CI]"):
            table.add_column(col)
        for r in qini.to_dict("records"):
            table.add_row(r["rule"], str(r["window_days"]), f"{r['uplift']:+.4f}", r["ranking"],
                          f"{r['qini']:+.4f} [{r['qini_low']:+.4f}, {r['qini_high']:+.4f}]",
                          f"{r['auuc']:+.4f} [{r['auuc_low']:+.4f}, {r['auuc_high']:+.4f}]")
        console.print(table)
        for rule, curve in curves.items():
            console.print(f"Qini curve {rule} (recorded ranking; share targeted: incremental purchasers per event): "
                          + ", ".join(f"{s:.0%}: {q:+.4f}" for s, q in zip(curve["share_targeted"], curve["qini"])))
    if out is not None:
        write_table(report, out)


@triggers_app.command("learn")
@user_errors
def triggers_learn(
    as_of: Annotated[str | None, typer.Option(
        help="Learn from outcomes seen by this day (default: the log's last day).")] = None,
    rules: RulesOpt = None, state_uri: StateOpt = DEFAULT_STATE, tracking_uri: TrackingOpt = None,
    model_uri: ModelUriOpt = None,
    learner: Annotated[str, typer.Option(help="Meta-learner: x_learner (default) or t_learner.")] = "x_learner",
    transactions: TransactionsOpt = None, dataset: DatasetOpt = None,
    customer_id_col: CustomerCol = "customer_id", timestamp_col: TimestampCol = "timestamp",
    amount_col: AmountCol = "amount", order_id_col: OrderCol = None, quantity_col: QuantityCol = None,
    category_col: CategoryCol = None, channel_col: ChannelCol = None, date_format: DateFormat = None,
    duplicates: DuplicatesOpt = "auto", refunds: RefundsOpt = "exclude", zero_amounts: ZerosOpt = "keep",
) -> None:
    """Fit an uplift model per rule on the matured sent and held-out events (features as of each
    event's day), judge it out of time by Qini and AUUC against churn risk and value at risk,
    and register it as `winback-uplift` (alias: the rule) only if it beats both."""
    import functools as _functools

    from crm.learn import learn
    from crm.outbox import Outbox
    from crm.rules import TriggerRules
    from features import build_features
    from training.registry import load_scorer
    from training.uplift_registry import register_uplift

    scorer, _ = load_scorer(model_uri, tracking_uri)
    log = open_log(transactions, dataset, **log_options({**locals(), "timezone": scorer.reference_.timezone}))
    day = as_of or log.report.last_timestamp.date().isoformat()

    @_functools.cache
    def features_for_day(when):
        return build_features(log, when.date().isoformat(), reference=scorer.reference_)

    register = _functools.partial(register_uplift, tracking_uri=tracking_uri)
    results = learn(Outbox(_state_uri(state_uri)).events(), log, TriggerRules.from_toml(rules), features_for_day,
                    day, register, learner=learner)
    for r in results:
        where = f" -> {r.alias} (version {r.version})" if r.version else ""
        console.print(f"{r.rule}: {r.n_treated:,} sent, {r.n_holdout:,} held out matured; {r.verdict}{where}")
        if len(r.comparison):
            for row in r.comparison.to_dict("records"):
                console.print(f"    {row['ranking']}: Qini {row['qini']:+.4f} [{row['qini_low']:+.4f}, "
                              f"{row['qini_high']:+.4f}], AUUC {row['auuc']:+.4f} [{row['auuc_low']:+.4f}, "
                              f"{row['auuc_high']:+.4f}]")


@app.command()
@user_errors
def daily(
    as_of: Annotated[str, typer.Option(help="The day to run, YYYY-MM-DD.")],
    out_dir: Annotated[Path, typer.Option(
        "--out-dir", help="Snapshot, scores and trigger files go here.")] = Path("out/daily"),
    rules: RulesOpt = None, state_uri: StateOpt = DEFAULT_STATE, webhook_url: WebhookOpt = None,
    tracking_uri: TrackingOpt = None, model_uri: ModelUriOpt = None,
    transactions: TransactionsOpt = None, dataset: DatasetOpt = None,
    customer_id_col: CustomerCol = "customer_id", timestamp_col: TimestampCol = "timestamp",
    amount_col: AmountCol = "amount", order_id_col: OrderCol = None, quantity_col: QuantityCol = None,
    category_col: CategoryCol = None, channel_col: ChannelCol = None, date_format: DateFormat = None,
    duplicates: DuplicatesOpt = "auto", refunds: RefundsOpt = "exclude", zero_amounts: ZerosOpt = "keep",
    customers: CustomersOpt = None, customers_id_col: CustomersIdCol = "customer_id", events: EventsOpt = None,
    events_id_col: EventsIdCol = "customer_id", events_timestamp_col: EventsTimestampCol = "timestamp",
    events_type_col: EventsTypeCol = "event_type",
    full_rebuild: Annotated[bool, typer.Option(
        "--full-rebuild", help="Rebuild the kept feature state from every file instead of reading only the "
                               "files new since the last run.")] = False,
) -> None:
    """The whole day for cron or an orchestrator: the feature snapshot (with the champion's
    reference), every customer's scores, then the triggers. A lock keeps two runs apart.

    The feature state kept in OUT_DIR/state carries the previous run's features forward with
    only the transaction files it has not read yet (add each day's export as a new file); a
    changed or backfilled history, or other feature settings, rebuild it, and the run says why."""
    from crm.delivery import secret_from_env
    from crm.exports import write_table
    from crm.job import exclusive, run_triggers
    from crm.learn import rankings_for
    from crm.outbox import Outbox
    from crm.rules import TriggerRules
    from features.job import write_features
    from training.monitor_cli import monitor_job, print_report
    from training.registry import load_scorer
    from training.uplift_registry import registered_model

    started = time.perf_counter()
    secret = secret_from_env() if webhook_url else None
    with exclusive(out_dir / "daily.lock"):
        scorer, version = load_scorer(model_uri, tracking_uri)
        log = open_log(transactions, dataset, **log_options({**locals(), "timezone": scorer.reference_.timezone}))
        with steps() as progress:
            task = progress.add_task(f"features as of {as_of}")
            side = open_side(locals(), scorer.reference_.timezone)
            _check_side(scorer.reference_, side)
            if transactions:                    # files: the kept state needs only the new ones
                from features.incremental import daily_features

                carried = daily_features([str(p) for p in transactions], as_of, out_dir / f"features_{as_of}.parquet",
                                         scorer.reference_, out_dir / "state", log.columns, log.policy, side,
                                         full_rebuild=full_rebuild)
                snapshot = carried.summary
                progress.console.print(carried.describe())
            else:
                snapshot = write_features(log, as_of, out_dir / f"features_{as_of}.parquet",
                                          reference=scorer.reference_, side=side)
            progress.update(task, description="scores")
            from features.job import read_feature_table

            table, day, _ = read_feature_table(snapshot.out)
            write_table(scorer.score(table, day, reasons=100), out_dir / f"scores_{as_of}.parquet")
            progress.update(task, description="model health")
            health = monitor_job(as_of, [], True, None, tracking_uri, model_uri, log=log, scorer=scorer,
                                 version=version)
            trigger_rules, outbox = TriggerRules.from_toml(rules), Outbox(_state_uri(state_uri))
            uplift = rankings_for(trigger_rules, outbox.events(), day,
                                  lambda rule: registered_model(rule, tracking_uri))
            run = run_triggers(scorer, table, as_of, trigger_rules, outbox, out_dir / "triggers", webhook_url, secret,
                               step=lambda t: progress.update(task, description=t), log=log, uplift=uplift)
    _print_trigger_run(run)
    print_report(health)
    console.print(f"daily run as of {as_of} with model version {version}: {snapshot.customers:,} customers "
                  f"→ {out_dir} ({time.perf_counter() - started:.0f} s)")


def _print_ingest(report) -> None:
    console.print(
        f"read {report.rows_read:,} rows, used {report.rows_used:,} "
        f"({report.first_timestamp:%Y-%m-%d} to {report.last_timestamp:%Y-%m-%d}); "
        f"refunds excluded {report.refunds_excluded:,}, zero amounts {report.zero_amounts:,} "
        f"(excluded {report.zero_amounts_excluded:,}), duplicates dropped {report.duplicates_dropped:,}")
    for hint in report.hints:
        errors.print(f"note: {hint}")


register_monitor(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
