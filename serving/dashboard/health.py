"""The Model page's health section: the latest `winback monitor` advice, drift and estimated vs
realized churn AUC over time (read from the champion's MLflow run, :mod:`training.monitor`), and
which candidate model is served (``scorer.selection_``)."""

from __future__ import annotations

import plotly.graph_objects as go

from serving.dashboard.charts import ACCENT, WARN, figure_div

STATUS_KEYS = {"healthy": "health_healthy", "warning": "health_warning", "retrain": "health_retrain"}
PSI_FLOOR = 0.1


def health_view(summary: dict | None, t) -> dict | None:
    """The section's facts and its two charts (Plotly divs), or None when never monitored."""
    if not summary:
        return None
    series = summary.get("series", {})
    return {"as_of": summary["as_of"], "status": summary.get("status") or "healthy",
            "status_text": t(STATUS_KEYS.get(summary.get("status") or "healthy", "health_healthy")),
            "reason": summary.get("reason") or "",
            "facts": [(key, summary.get(key)) for key in ("estimated_churn_auc", "backtest_churn_auc", "auc_floor",
                                                           "max_psi", "drifted_columns", "unseen_share")],
            "plots": [drift_chart(series, t), auc_chart(series, summary.get("backtest_churn_auc"), t)]}


def drift_chart(series: dict, t) -> str:
    """The largest PSI per snapshot and the number of drifted columns, with the PSI floor."""
    psi = series.get("max_psi", {})
    drifted = series.get("drifted_columns", {})
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=list(psi), y=list(psi.values()), mode="lines+markers", name=t("max_psi"),
                                line={"color": WARN}))
    figure.add_trace(go.Bar(x=list(drifted), y=list(drifted.values()), name=t("drifted_columns"), yaxis="y2",
                            marker_color="rgba(31,111,235,0.25)"))
    if psi:
        figure.add_hline(y=PSI_FLOOR, line_dash="dot", line_color="#888", annotation_text=t("psi_floor"))
    figure.update_layout(title=t("drift_over_time"), xaxis={"title": t("snapshot_day"), "type": "date"},
                         yaxis={"title": "PSI", "rangemode": "tozero"},
                         yaxis2={"overlaying": "y", "side": "right", "rangemode": "tozero", "showgrid": False},
                         legend={"orientation": "h", "y": -0.25})
    return figure_div(figure, "health-drift")


def auc_chart(series: dict, backtest: float | None, t) -> str:
    """Estimated (CBPE) and realized churn AUC per snapshot, the backtest's AUC and interval floor."""
    estimated = series.get("estimated_churn_auc", {})
    realized = series.get("realized_churn_auc", {})
    floor = series.get("auc_floor", {})
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=list(estimated), y=list(estimated.values()), mode="lines+markers",
                                name=t("estimated_churn_auc"), line={"color": ACCENT, "dash": "dash"}))
    figure.add_trace(go.Scatter(x=list(realized), y=list(realized.values()), mode="lines+markers",
                                name=t("realized_churn_auc"), line={"color": ACCENT}))
    if floor:
        figure.add_trace(go.Scatter(x=list(floor), y=list(floor.values()), mode="lines", name=t("auc_floor"),
                                    line={"color": WARN, "dash": "dot"}))
    if backtest is not None:
        figure.add_hline(y=backtest, line_color="#888", annotation_text=t("backtest_churn_auc"))
    figure.update_layout(title=t("auc_over_time"), xaxis={"title": t("snapshot_day"), "type": "date"},
                         yaxis={"title": "AUC"}, legend={"orientation": "h", "y": -0.25})
    return figure_div(figure, "health-auc")


def selection_view(selection: dict | None, t) -> list[dict]:
    """One entry per target (churn, next purchase): the served candidate, every candidate's
    validation figure (highest first), the metric and the reason."""
    out = []
    for target, chosen in (selection or {}).items():
        if not isinstance(chosen, dict) or "served" not in chosen:
            continue
        figures = chosen.get("candidates") or chosen.get("figures") or {}
        label = {"churn": "target_churn", "next_purchase": "target_next_purchase"}.get(target)
        out.append({"target": target, "label": t(label) if label else target, "served": chosen["served"],
                    "metric": chosen.get("metric", ""), "reason": chosen.get("reason", ""),
                    "candidates": sorted(((name, float(v)) for name, v in figures.items()), key=lambda kv: -kv[1])})
    return out
