"""The dashboard's Plotly charts, carried as JSON in ``div.wb-plot[data-figure]``.

Plotly (pinned, its ``plotly.min.js`` served from the installed wheel) because it draws every
chart the pages need (bars, lines with an interval band, heat maps for the reports) with hover
values, zoom and PNG download built in, from Python figures the reports share; Altair/Vega-Lite
would need three more scripts vendored. The divs carry no script: ``reports.PLOT_SCRIPT``,
served as a file, draws them, so the pages run under a Content-Security-Policy without inline
scripts.
"""

from __future__ import annotations

import datetime as dt
import html

import plotly.graph_objects as go
import plotly.io as pio

from crm.formatting import format_date

FONT_FAMILY = "'Noto Sans TC', system-ui, sans-serif"
ACCENT, SOFT, WARN = "#1f6feb", "rgba(31,111,235,0.15)", "#d1495b"


def figure_div(figure: go.Figure, key: str, height: int = 320) -> str:
    """A Plotly figure as a ``div.wb-plot`` carrying it as JSON (drawn by the page's script)."""
    figure.update_layout(font={"family": FONT_FAMILY}, margin={"l": 50, "r": 20, "t": 40, "b": 45},
                         template="plotly_white", height=height)
    return (f'<div class="wb-plot" id="wb-plot-{html.escape(key)}" '
            f'data-figure="{html.escape(pio.to_json(figure, validate=True), quote=True)}"></div>')


def bar(labels: list[str], values: list[float], title: str, key: str, value_text: list[str]) -> str:
    """A bar chart with each bar's value written on it."""
    figure = go.Figure(go.Bar(x=labels, y=values, text=value_text, textposition="auto",
                              marker_color=ACCENT, hoverinfo="x+text"))
    figure.update_layout(title=title)
    return figure_div(figure, key)


def histogram(counts: list[int], edges: list[float], title: str, key: str, x_title: str) -> str:
    """A histogram of precomputed counts between ``edges``."""
    centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    figure = go.Figure(go.Bar(x=centers, y=counts, width=[b - a for a, b in zip(edges[:-1], edges[1:])],
                              marker_color=ACCENT))
    figure.update_layout(title=title, xaxis={"title": x_title, "tickformat": ".0%"}, bargap=0.05)
    return figure_div(figure, key)


def purchase_curve(days: list[int], cdf: list[float], low: int | None, high: int | None,
                   title: str, key: str, x_title: str, band_label: str) -> str:
    """P(next purchase within d days), the 80 % interval shaded between its day ends."""
    figure = go.Figure(go.Scatter(x=days, y=cdf, mode="lines+markers", line={"color": ACCENT},
                                  hovertemplate="%{x}: %{y:.1%}<extra></extra>", name=title))
    if low is not None:
        figure.add_vrect(x0=low, x1=high if high is not None else days[-1], fillcolor=SOFT, line_width=0,
                         annotation_text=band_label, annotation_position="top left")
    figure.update_layout(title=title, xaxis={"title": x_title}, yaxis={"tickformat": ".0%", "range": [0, 1]},
                         showlegend=False)
    return figure_div(figure, key)


def line(days: list[int], values: list[float], title: str, key: str, x_title: str) -> str:
    """A curve over days from the as-of date."""
    figure = go.Figure(go.Scatter(x=days, y=values, mode="lines", line={"color": WARN},
                                  hovertemplate="%{x}: %{y:.1%}<extra></extra>"))
    figure.update_layout(title=title, xaxis={"title": x_title}, yaxis={"tickformat": ".0%", "range": [0, 1]})
    return figure_div(figure, key)


def timeline(events: list[tuple[str, dt.date | str | None]], lang: str, title: str, key: str) -> str:
    """Dated events (first and last purchase, as-of day, expected next purchase, win-back day),
    one row each: the labels sit on the y axis (sized to fit) and the dates on the points'
    hover and the x axis, so nothing overlaps or is cut at the chart's edges."""
    known = [(label, day) for label, day in events if day is not None]
    labels = [label for label, _ in known]
    figure = go.Figure(go.Scatter(
        x=[str(day) for _, day in known], y=labels, mode="markers",
        text=[f"{label}: {format_date(day, lang)}" for label, day in known],
        marker={"size": 12, "color": ACCENT}, hoverinfo="text"))
    figure.update_layout(title=title, showlegend=False,
                         yaxis={"type": "category", "categoryorder": "array", "categoryarray": labels[::-1],
                                "automargin": True},
                         xaxis={"automargin": True})
    return figure_div(figure, key, height=max(200, 90 + 36 * len(known)))


# ---------------------------------------------------------------------- the Campaigns page (issue #21)

PALETTE = ("#1f6feb", "#d1495b", "#2a9d8f", "#f0b429", "#6c757d", "#8338ec")


def sends_per_day(days: list[str], sends: dict[str, list[int]], limit: int | None, title: str, key: str,
                  limit_label: str, x_title: str) -> str:
    """Sends per day stacked by rule, with the day's budget (``max_sends_per_day``) as a line."""
    figure = go.Figure([go.Bar(x=days, y=values, name=rule, marker_color=PALETTE[i % len(PALETTE)])
                        for i, (rule, values) in enumerate(sends.items())])
    if limit is not None:
        figure.add_hline(y=limit, line={"color": WARN, "dash": "dash"}, annotation_text=limit_label,
                         annotation_position="top left")
    figure.update_layout(title=title, barmode="stack", xaxis={"title": x_title, "type": "category"},
                         legend={"orientation": "h", "y": -0.25})
    return figure_div(figure, key)


def differences(labels: list[str], diff: list[float], low: list[float], high: list[float], title: str,
                key: str, y_title: str, hover: list[str], percent: bool = True) -> str:
    """One point per label with its interval as error bars, and the line of no difference."""
    figure = go.Figure(go.Scatter(
        x=labels, y=diff, mode="markers", marker={"size": 10, "color": ACCENT}, text=hover, hoverinfo="text",
        error_y={"type": "data", "symmetric": False, "array": [h - d for h, d in zip(high, diff)],
                 "arrayminus": [d - lo for d, lo in zip(diff, low)], "color": ACCENT}))
    figure.add_hline(y=0, line={"color": "#52606d", "width": 1})
    figure.update_layout(title=title, showlegend=False, xaxis={"type": "category", "automargin": True},
                         yaxis={"title": y_title, **({"tickformat": ".1%"} if percent else {})})
    return figure_div(figure, key)


def qini_curves(share: list[float], curves: dict[str, list[float]], random: list[float], title: str, key: str,
                x_title: str, y_title: str, random_label: str) -> str:
    """Qini curves of several rankings over the share targeted, with the random ranking's line."""
    figure = go.Figure([go.Scatter(x=share, y=values, mode="lines+markers", name=name,
                                   line={"color": PALETTE[i % len(PALETTE)]},
                                   hovertemplate="%{x:.0%}: %{y:+.4f}<extra>" + html.escape(name) + "</extra>")
                        for i, (name, values) in enumerate(curves.items())])
    figure.add_trace(go.Scatter(x=share, y=random, mode="lines", name=random_label,
                                line={"color": "#52606d", "dash": "dot"}, hoverinfo="skip"))
    figure.update_layout(title=title, xaxis={"title": x_title, "tickformat": ".0%"}, yaxis={"title": y_title},
                         legend={"orientation": "h", "y": -0.25})
    return figure_div(figure, key, height=360)
