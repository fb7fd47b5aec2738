"""``winback monitor``: the champion's health as of a day.

Exit status 0 when healthy (or only a warning about the feed), 3 when retraining is advised,
2 on a user's mistake; the reason in one line. :func:`register` adds the command to the
``winback`` app (``training/cli.py`` calls it); the flags it shares with the other commands come
from :mod:`training.options`.
"""


from typing import Annotated

import pandas as pd
import typer
from rich.markup import escape
from rich.table import Table


def print_report(report, out=None, most: int = 15) -> None:
    """The drift table (the ``most`` flagged columns by PSI, then the model's main features and
    the churn probability), the estimated and realized performance beside the backtest's, and
    the advice in one line."""
    if out is None:
        from training.options import console as out
    d = report.drift.copy()
    d["order"] = ~(d["drifted"] | d["missing_flag"] | d["range_flag"])
    d["main"] = d["column"].isin(report.main_features)
    flagged = d[~d["order"]].sort_values("psi", ascending=False)
    rest = d[d["order"] & (d["main"] | (d["column"] == "churn_probability"))].sort_values("psi", ascending=False)
    more = flagged.iloc[most:]
    more = more[~more["main"] & (more["column"] != "churn_probability")]
    shown = pd.concat([flagged[~flagged.index.isin(more.index)], rest])
    view = Table(title=f"model health as of {report.as_of} (version {report.model_version or '?'}, "
                       f"reference {report.reference_origin}; {len(d)} columns, {(~d['order']).sum()} flagged)")
    for col, right in (("column", False), ("main", False), ("PSI", True), ("threshold", True),
                       ("missing", True), ("out of range", True), ("flag", False)):
        view.add_column(col, justify="right" if right else "left")
    for r in shown.itertuples(index=False):
        flags = [name for name, on in (("drift", r.drifted), ("missing", r.missing_flag),
                                       ("range", r.range_flag)) if on]
        view.add_row(r.column, "yes" if r.main else "", f"{r.psi:.3f}", f"{r.threshold:.3f}",
                     f"{r.missing:.1%}", f"{r.out_of_range:.1%}", ", ".join(flags) or "ok")
    out.print(view)
    if len(more):
        out.print(f"… and {len(more)} more flagged: {', '.join(more['column'])}", highlight=False, soft_wrap=True)
    perf = Table(title="churn performance")
    for col in ("snapshot", "kind", "churn AUC", "AUC floor", "Brier", "calibration", "C-index"):
        perf.add_column(col, justify="left" if col in ("snapshot", "kind") else "right")
    p, e = report.promised, report.estimated
    fmt = lambda x: "–" if x is None or x != x else f"{x:.3f}"
    if p:
        perf.add_row("", "backtest (promised)", fmt(p.get("churn_auc")), "–", fmt(p.get("churn_brier")), "–",
                     fmt(p.get("next_purchase_cindex")))
    perf.add_row(report.as_of, "estimated (CBPE)", fmt(e["estimated_churn_auc"]), fmt(report.auc_floor),
                 fmt(e["estimated_churn_brier"]), "–", "–")
    for r in report.realized:
        perf.add_row(r["snapshot"], "realized", fmt(r["realized_churn_auc"]), fmt(r.get("auc_floor")),
                     fmt(r["realized_churn_brier"]), f"{r['realized_calibration_in_the_large']:+.3f}",
                     fmt(r["realized_next_purchase_cindex"]))
    out.print(perf)
    out.print(f"customers unseen at training: {report.unseen_share:.1%}; main features (80 % of gain): "
              f"{', '.join(report.main_features)}", highlight=False)
    out.print(escape(report.reason), highlight=False, soft_wrap=True)


def register(app) -> None:
    """Add ``winback monitor`` to ``app`` (the ``winback`` Typer app)."""
    from training.options import (
        AmountCol,
        CategoryCol,
        ChannelCol,
        CustomerCol,
        DatasetOpt,
        DateFormat,
        DuplicatesOpt,
        ModelUriOpt,
        OrderCol,
        QuantityCol,
        RefundsOpt,
        TimestampCol,
        TrackingOpt,
        TransactionsOpt,
        ZerosOpt,
        log_options,
        user_errors,
    )

    @app.command("monitor")
    @user_errors
    def monitor(
        as_of: Annotated[str, typer.Option(help="The day to monitor, YYYY-MM-DD.")],
        snapshots: Annotated[list[str] | None, typer.Option(
            "--snapshot", help="Also compute realized metrics for this past snapshot day (repeatable); "
                               "earlier monitored days whose horizon has closed are always computed.")] = None,
        store: Annotated[bool, typer.Option(help="Log the results on the champion's MLflow run.")] = True,
        webhook_url: Annotated[str | None, typer.Option(
            "--webhook-url", help="POST the advice here, signed (secret from WINBACK_WEBHOOK_SECRET).")] = None,
        tracking_uri: TrackingOpt = None, model_uri: ModelUriOpt = None,
        transactions: TransactionsOpt = None, dataset: DatasetOpt = None,
        customer_id_col: CustomerCol = "customer_id", timestamp_col: TimestampCol = "timestamp",
        amount_col: AmountCol = "amount", order_id_col: OrderCol = None, quantity_col: QuantityCol = None,
        category_col: CategoryCol = None, channel_col: ChannelCol = None, date_format: DateFormat = None,
        duplicates: DuplicatesOpt = "auto", refunds: RefundsOpt = "exclude", zero_amounts: ZerosOpt = "keep",
    ) -> None:
        """Compare the day's features and scores with the champion's training reference (drift,
        missing values, ranges, the feed), estimate churn AUC before labels exist, compute realized
        metrics of past snapshots whose horizon has closed; exit 3 when retraining is advised."""
        report = monitor_job(as_of, snapshots or [], store, webhook_url, tracking_uri, model_uri,
                             transactions, dataset, log_options(dict(locals())))
        print_report(report)
        if report.exit_code:
            raise typer.Exit(report.exit_code)


def monitor_job(as_of: str, snapshots: list[str], store: bool, webhook_url: str | None,
                tracking_uri: str | None, model_uri: str | None, transactions=None, dataset=None,
                flags: dict | None = None, log=None, scorer=None, version: str | None = None):
    """Load the champion (unless ``scorer`` and its ``version`` are given), open the log in the
    model's time zone (unless ``log`` is given), run :func:`training.monitor.run_monitor` and
    post the advice. ``winback daily`` calls it with its own scorer and log."""
    from mlflow import MlflowClient

    from crm.delivery import secret_from_env
    from training.monitor import post_advice, run_monitor
    from training.options import console, open_log
    from training.registry import MODEL_NAME, load_scorer, use_tracking

    secret = secret_from_env() if webhook_url else ""
    if scorer is None:
        scorer, version = load_scorer(model_uri, tracking_uri)
    if log is None:
        log = open_log(transactions, dataset, **{**(flags or {}), "timezone": scorer.reference_.timezone})
    uri = use_tracking(tracking_uri)
    client = MlflowClient(uri, registry_uri=uri)
    run_id = client.get_model_version(MODEL_NAME, version).run_id if version else None
    report = run_monitor(scorer, log, as_of, client, run_id, version, snapshots=snapshots, store=store)
    if webhook_url:
        failed = post_advice(webhook_url, secret, report)
        console.print(f"webhook: {'delivered' if failed is None else 'failed: ' + failed}", highlight=False)
    return report
