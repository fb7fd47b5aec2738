"""The marketer's reports as HTML: sections for the dashboard's Reports page, or one document.

The numbers come from :mod:`features.reports` (DuckDB SQL over the transaction log as of a
date); this module only words, formats (:mod:`crm.formatting`) and draws them.
Every value put into HTML is escaped. Charts are Plotly figures carried as JSON in a
``data-figure`` attribute of a ``<div class="wb-plot">``; :data:`PLOT_SCRIPT` draws every such
div once ``plotly.js`` is loaded, so a fragment has no script of its own (a page with a strict
Content-Security-Policy serves :data:`PLOT_SCRIPT` as a file). :func:`report_html` is the
self-contained document ``winback report`` writes: ``plotly.js`` and, in zh-TW, the Noto Sans
TC font are inlined, and nothing is fetched from the network; :func:`write_report` writes it.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from crm.exports import current_umask
from crm.fonts import FONT
from crm.formatting import (
    DEFAULT_CURRENCY,
    format_date,
    format_money,
    format_month,
    format_number,
    format_percent,
)
from features import reports
from features.build import build_features, parse_cutoff
from features.output import atomic_path, check_output_path
from features.reference import FeatureReference
from features.settings import FeatureSettings, TierSettings
from features.transactions import TransactionLog

#: Draws every ``div.wb-plot[data-figure]`` with Plotly, once, when the page is ready.
PLOT_SCRIPT = """(function () {
  function draw() {
    document.querySelectorAll("div.wb-plot[data-figure]").forEach(function (el) {
      if (el.getAttribute("data-drawn")) { return; }
      el.setAttribute("data-drawn", "1");
      var figure = JSON.parse(el.getAttribute("data-figure"));
      Plotly.newPlot(el, figure.data, figure.layout, {displaylogo: false, responsive: true});
    });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", draw); }
  else { draw(); }
})();
"""

#: The CSS font family of the reports (the dashboard ships Noto Sans TC as a web font).
FONT_FAMILY = "'Noto Sans TC', 'Noto Sans CJK TC', system-ui, sans-serif"

#: Calendar rows shown; the rest are counted in a note.
MAX_CALENDAR_ROWS = 200
#: Categories drawn in the interval chart (the table lists them all).
MAX_CHART_CATEGORIES = 8

#: Every word the reports show, per language (the font subset must cover the zh-TW ones).
TEXT: dict[str, dict[str, str]] = {
    "en": {
        "document": "Winback reports", "as_of": "As of", "monthly": "Monthly new vs returning customers",
        "cohorts": "Acquisition-cohort retention", "intervals": "Repurchase intervals by category",
        "tiers": "Tier review calendar", "month": "Month", "through": "through",
        "new_customers": "New customers", "returning_customers": "Returning customers",
        "new_orders": "New orders", "returning_orders": "Returning orders",
        "new_revenue": "New revenue", "returning_revenue": "Returning revenue",
        "new_aov": "New AOV", "returning_aov": "Returning AOV",
        "returning_share": "Returning share of revenue", "repurchase_rate": "Repurchase rate",
        "total": "Total", "revenue": "Revenue",
        "monthly_note": "A customer is new in the month of their first purchase and returning in "
                        "every later month. Returning share of revenue = returning customers' revenue "
                        "/ the month's revenue. Repurchase rate = returning customers / customers who "
                        "bought that month. Average order value (AOV) = revenue / orders. A month still "
                        "running is counted up to the as-of date.",
        "cohort": "First purchase month", "cohort_size": "Customers", "months_since": "Months since first purchase",
        "retention": "Share active",
        "cohort_note": "Each row is the customers whose first purchase was in that month; each cell the "
                       "share of them who bought again that many months later (month 0 is 100%).",
        "cohort_table": "The numbers behind the heat map",
        "category": "Category", "all_products": "All products", "repurchasers": "Customers who repurchased",
        "n_intervals": "Intervals", "mean_days": "Mean (days)", "p25_days": "25th percentile",
        "median_days": "Median", "p75_days": "75th percentile", "p90_days": "90th percentile",
        "interval_days": "Days between purchases", "share_of_intervals": "Share of intervals",
        "intervals_note": "Days between two consecutive purchase days of one customer in one category. "
                          "The last bar holds every interval of {max_days} days or more.",
        "no_intervals": "No customer has bought twice in a category yet.",
        "tier": "Tier", "threshold": "Threshold", "members": "Members",
        "dropping": "Drop at the review", "dropping_share": "Share dropping",
        "needed_total": "Total needed to keep", "review_date": "Next review",
        "customer": "Customer", "tier_spend": "Spend in the last {window} days",
        "kept_spend": "Still counted at the review", "needed": "Needed to keep", "drops_to": "Drops to",
        "keep_sentence": "{amount} more by {date} to keep {tier}",
        "tiers_note": "Tiers are reviewed every {review} days on the spend of the last {window} days. At "
                      "the next review ({date}) the window will have moved: the customers below keep their "
                      "tier only if they spend the amount shown before then (rounded up to a whole unit). "
                      "Cheapest to keep first.",
        "more_rows": "Showing the {shown} customers who need the least, of {total}.",
        "no_dropping": "Nobody drops a tier at the next review.",
    },
    "zh-TW": {
        "document": "Winback 報表", "as_of": "資料截至", "monthly": "每月新舊客獲取報表",
        "cohorts": "首購月份同期群留存", "intervals": "各品類回購間隔分布",
        "tiers": "會員保級日曆", "month": "月份", "through": "截至",
        "new_customers": "新客數", "returning_customers": "舊客數",
        "new_orders": "新客訂單數", "returning_orders": "舊客訂單數",
        "new_revenue": "新客營收", "returning_revenue": "舊客營收",
        "new_aov": "新客平均客單價", "returning_aov": "舊客平均客單價",
        "returning_share": "舊客貢獻比", "repurchase_rate": "回購率",
        "total": "合計", "revenue": "營收",
        "monthly_note": "顧客在首次消費的月份算新客，之後每個月份算舊客。舊客貢獻比＝舊客營收÷當月營收；"
                        "回購率＝舊客數÷當月消費顧客數；平均客單價＝營收÷訂單數。"
                        "尚未結束的月份只計到資料截止日。",
        "cohort": "首購月份", "cohort_size": "顧客數", "months_since": "首購後第幾個月",
        "retention": "活躍比例",
        "cohort_note": "每一列是在該月首次消費的顧客；每一格是其中在首購後第幾個月再次消費的比例"
                       "（第 0 個月為 100%）。",
        "cohort_table": "熱度圖的數字",
        "category": "品類", "all_products": "全部商品", "repurchasers": "回購顧客數",
        "n_intervals": "間隔次數", "mean_days": "平均天數", "p25_days": "第 25 百分位",
        "median_days": "中位數", "p75_days": "第 75 百分位", "p90_days": "第 90 百分位",
        "interval_days": "兩次消費間隔天數", "share_of_intervals": "間隔占比",
        "intervals_note": "同一位顧客在同一品類兩個相鄰消費日之間的天數。最後一欄包含 {max_days} 天以上的所有間隔。",
        "no_intervals": "目前還沒有顧客在同一品類消費兩次。",
        "tier": "會員等級", "threshold": "門檻", "members": "會員數",
        "dropping": "評等時將降級", "dropping_share": "降級比例",
        "needed_total": "保級所需總額", "review_date": "下次評等日",
        "customer": "顧客編號", "tier_spend": "近 {window} 天消費",
        "kept_spend": "評等時仍計入的消費", "needed": "保級還差", "drops_to": "將降為",
        "keep_sentence": "{date} 前再消費 {amount} 即可維持{tier}",
        "tiers_note": "會員等級每 {review} 天依近 {window} 天的消費評等一次。下次評等日（{date}）時計算區間會往後移，"
                      "下列顧客須在那天之前消費表中的金額（無條件進位到整數）才能保級；所需金額最少的排在最前面。",
        "more_rows": "只列出所需金額最少的 {shown} 位，共 {total} 位。",
        "no_dropping": "下次評等時沒有會員會降級。",
    },
}


@dataclass(frozen=True)
class ReportSection:
    """One report: a stable ``key``, its ``title`` and an HTML fragment (escaped, no scripts)."""

    key: str
    title: str
    html: str


def _check(lang: str, currency: str | None) -> tuple[dict[str, str], str]:
    if lang not in TEXT:
        raise ValueError(f"lang must be one of {', '.join(TEXT)}, got {lang!r}")
    return TEXT[lang], DEFAULT_CURRENCY[lang] if currency is None else currency


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: list[str], rows: list[list[str]], css: str) -> str:
    """A table of already formatted cells, every cell escaped."""
    head = "".join(f"<th scope=\"col\">{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="wb-table {css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _plot(figure: go.Figure, key: str) -> str:
    """A div carrying the figure as JSON in an escaped attribute; :data:`PLOT_SCRIPT` draws it."""
    figure.update_layout(font={"family": FONT_FAMILY}, margin={"l": 60, "r": 20, "t": 30, "b": 50},
                         template="plotly_white", height=380)
    return (f'<div class="wb-plot" id="wb-plot-{_e(key)}" '
            f'data-figure="{_e(pio.to_json(figure, validate=True))}"></div>')


def _note(text: str) -> str:
    return f'<p class="wb-note">{_e(text)}</p>'


def _month(value: dt.date, lang: str) -> str:
    return format_month(value, lang)


def _monthly_section(staged: reports.StagedLog, lang: str, currency: str) -> ReportSection:
    t = TEXT[lang]
    frame = reports.monthly_new_vs_returning(staged.log, staged.as_of, staged)
    money = lambda x: format_money(x, lang, currency)
    count = lambda x: format_number(x, lang)
    share = lambda x: format_percent(x, lang)
    rows = [[_month(r.month, lang) + (f" ({t['through']} {format_date(r.through, lang)})"
                                      if r.through != _last_day(r.month) else ""),
             count(r.new_customers), count(r.returning_customers), count(r.new_orders),
             count(r.returning_orders), money(r.new_revenue), money(r.returning_revenue),
             money(r.new_avg_order_value), money(r.returning_avg_order_value),
             share(r.returning_revenue_share), share(r.repurchase_rate)]
            for r in frame.itertuples()]
    headers = [t[k] for k in ("month", "new_customers", "returning_customers", "new_orders", "returning_orders",
                              "new_revenue", "returning_revenue", "new_aov", "returning_aov",
                              "returning_share", "repurchase_rate")]
    labels = [_month(m, lang) for m in frame["month"]]
    figure = go.Figure([
        go.Bar(x=labels, y=frame["new_revenue"].tolist(), name=t["new_revenue"]),
        go.Bar(x=labels, y=frame["returning_revenue"].tolist(), name=t["returning_revenue"]),
        go.Scatter(x=labels, y=frame["returning_revenue_share"].tolist(), name=t["returning_share"],
                   yaxis="y2", mode="lines+markers"),
        go.Scatter(x=labels, y=frame["repurchase_rate"].tolist(), name=t["repurchase_rate"],
                   yaxis="y2", mode="lines+markers"),
    ])
    figure.update_layout(barmode="stack", yaxis={"title": {"text": f"{t['revenue']} ({currency})"}},
                         yaxis2={"overlaying": "y", "side": "right", "tickformat": ".0%", "range": [0, 1.02],
                                 "tickvals": [0, 0.25, 0.5, 0.75, 1], "showgrid": False},
                         legend={"orientation": "h", "y": -0.2})
    body = _plot(figure, "monthly") + _table(headers, rows, "wb-monthly") + _note(t["monthly_note"])
    return ReportSection("monthly", t["monthly"], body)


def _last_day(month: dt.date) -> dt.date:
    return (pd.Timestamp(month) + pd.offsets.MonthEnd(0)).date()


def _cohort_section(staged: reports.StagedLog, lang: str) -> ReportSection:
    t = TEXT[lang]
    frame = reports.cohort_retention(staged.log, staged.as_of, staged)
    grid = frame.pivot(index="cohort_month", columns="months_since_first", values="retention")
    sizes = frame.groupby("cohort_month")["cohort_customers"].first()
    cohorts = [_month(c, lang) for c in grid.index]
    z = [[None if pd.isna(v) else float(v) for v in row] for row in grid.to_numpy()]
    text = [["" if v is None else format_percent(v, lang) for v in row] for row in z]
    later = frame.loc[frame["months_since_first"] > 0, "retention"]
    top = float(later.max()) if len(later) and later.max() > 0 else 1.0     # month 0 (100 %) saturates
    figure = go.Figure(go.Heatmap(z=z, x=[int(c) for c in grid.columns], y=cohorts, text=text,
                                  texttemplate="%{text}", colorscale="Blues", zmin=0, zmax=top,
                                  colorbar={"tickformat": ".0%", "title": {"text": t["retention"]}},
                                  hovertemplate="%{y} +%{x}: %{text}<extra></extra>"))
    figure.update_layout(xaxis={"title": {"text": t["months_since"]}, "dtick": 1},
                         yaxis={"title": {"text": t["cohort"]}, "autorange": "reversed", "type": "category"})
    headers = [t["cohort"], t["cohort_size"]] + [str(int(c)) for c in grid.columns]
    rows = [[label, format_number(sizes[c], lang)] + [("" if pd.isna(v) else format_percent(v, lang))
                                                       for v in grid.loc[c]]
            for label, c in zip(cohorts, grid.index)]
    body = (_plot(figure, "cohorts") + _note(t["cohort_note"])
            + f"<details><summary>{_e(t['cohort_table'])}</summary>"
            + _table(headers, rows, "wb-cohorts") + "</details>")
    return ReportSection("cohorts", t["cohorts"], body)


def _category(value: object, t: dict[str, str]) -> str:
    return t["all_products"] if value is None or pd.isna(value) else str(value)


def _interval_section(staged: reports.StagedLog, lang: str, bin_days: int = 15,
                      max_days: int = 360) -> ReportSection:
    t = TEXT[lang]
    summary = reports.repurchase_interval_summary(staged.log, staged.as_of, staged)
    if summary.empty:
        return ReportSection("intervals", t["intervals"], _note(t["no_intervals"]))
    bins = reports.repurchase_interval_histogram(staged.log, staged.as_of, bin_days, max_days, staged)
    figure = go.Figure()
    for category in summary["category"].head(MAX_CHART_CATEGORIES):
        part = bins[bins["category"].isna()] if pd.isna(category) else bins[bins["category"] == category]
        ticks = [f"{s}–{e}" if pd.notna(e) else f"{s}+" for s, e in zip(part["bin_start_days"], part["bin_end_days"])]
        figure.add_bar(x=ticks, y=part["share"].tolist(), name=_category(category, t))
    figure.update_layout(barmode="group", xaxis={"title": {"text": t["interval_days"]}, "type": "category"},
                         yaxis={"title": {"text": t["share_of_intervals"]}, "tickformat": ".0%"},
                         legend={"orientation": "h", "y": -0.25})
    days = lambda x: format_number(x, lang, 1)
    rows = [[_category(r.category, t), format_number(r.customers, lang), format_number(r.intervals, lang),
             days(r.mean_days), days(r.p25_days), days(r.median_days), days(r.p75_days), days(r.p90_days)]
            for r in summary.itertuples()]
    headers = [t[k] for k in ("category", "repurchasers", "n_intervals", "mean_days", "p25_days",
                              "median_days", "p75_days", "p90_days")]
    body = (_plot(figure, "intervals") + _table(headers, rows, "wb-intervals")
            + _note(t["intervals_note"].format(max_days=max_days)))
    return ReportSection("intervals", t["intervals"], body)


def _tier_name(name: str, name_zh_tw: str, lang: str) -> str:
    return name_zh_tw if lang == "zh-TW" else name


def _tier_section(features: pd.DataFrame, as_of: pd.Timestamp, lang: str, currency: str,
                  tiers: TierSettings, max_rows: int = MAX_CALENDAR_ROWS) -> ReportSection:
    t = TEXT[lang]
    summary = reports.tier_review_summary(features, as_of, tiers)
    calendar = reports.tier_review_calendar(features, as_of, tiers)
    money = lambda x: format_money(x, lang, currency)
    needed = lambda x: format_money(math.ceil(round(x, 4)), lang, currency)    # up: spending it keeps the tier
    review = format_date(summary["review_date"].iloc[0], lang)
    rows = [[_tier_name(r.tier, r.tier_zh_tw, lang), money(r.threshold), format_number(r.customers, lang),
             format_number(r.dropping, lang), format_percent(r.dropping_share, lang),
             money(r.amount_to_keep_total), format_date(r.review_date, lang)]
            for r in summary.itertuples()]
    headers = [t[k] for k in ("tier", "threshold", "members", "dropping", "dropping_share",
                              "needed_total", "review_date")]
    body = _note(t["tiers_note"].format(review=tiers.review_days, window=tiers.window_days, date=review))
    body += _table(headers, rows, "wb-tier-summary")
    if calendar.empty:
        return ReportSection("tiers", t["tiers"], body + _note(t["no_dropping"]))
    shown = calendar.head(max_rows)
    rows = [[r.customer_id, _tier_name(r.tier, r.tier_zh_tw, lang), money(r.tier_spend), money(r.kept_spend),
             needed(r.amount_to_keep_tier), _tier_name(r.drops_to, r.drops_to_zh_tw, lang),
             t["keep_sentence"].format(amount=needed(r.amount_to_keep_tier), date=format_date(r.review_date, lang),
                                       tier=_tier_name(r.tier, r.tier_zh_tw, lang))]
            for r in shown.itertuples()]
    headers = [t["customer"], t["tier"], t["tier_spend"].format(window=tiers.window_days), t["kept_spend"],
               t["needed"], t["drops_to"], ""]
    body += _table(headers, rows, "wb-tier-calendar")
    if len(calendar) > max_rows:
        body += _note(t["more_rows"].format(shown=format_number(max_rows, lang),
                                            total=format_number(len(calendar), lang)))
    return ReportSection("tiers", t["tiers"], body)


def report_sections(log: TransactionLog, as_of: dt.date | str, lang: str = "en", currency: str | None = None,
                    features: pd.DataFrame | None = None, *, tiers: TierSettings | None = None) -> list[ReportSection]:
    """The four reports as of ``as_of``, in ``lang`` ("en" or "zh-TW"), money in ``currency``.

    ``features`` is the feature table (or scored snapshot) as of ``as_of`` the tier calendar
    reads, built with ``tiers`` (default :class:`TierSettings`); without it the features are
    built from ``log`` with those settings. The fragments need ``plotly.js`` and
    :data:`PLOT_SCRIPT` on the page.
    """
    _, currency = _check(lang, currency)
    day = parse_cutoff(as_of)
    tiers = tiers or TierSettings()
    if features is None:
        features = build_features(log, day, settings=FeatureSettings(tiers=tiers))
    with reports.stage_reports(log, day) as staged:                  # the log is reduced once
        return [_monthly_section(staged, lang, currency), _cohort_section(staged, lang),
                _interval_section(staged, lang), _tier_section(features, day, lang, currency, tiers)]


def plotly_js() -> str:
    """The plotly.js that ships in the installed plotly wheel (no CDN)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _font_css(font: Path | None) -> str:
    if font is None:
        return ""
    data = base64.b64encode(Path(font).read_bytes()).decode("ascii")
    return ("@font-face { font-family: 'Noto Sans TC'; font-style: normal; font-weight: 100 900; "
            f"font-display: block; src: url(data:font/woff2;base64,{data}) format('woff2'); }}\n")


def shipped_font() -> Path | None:
    """The Noto Sans TC subset the dashboard ships (:data:`crm.fonts.FONT`), if built."""
    return FONT if FONT.exists() else None


_STYLE = f"""
body {{ font-family: {FONT_FAMILY}; margin: 2rem auto; max-width: 1200px; padding: 0 1rem; color: #1f2933; }}
h1 {{ font-size: 1.6rem; }} h2 {{ font-size: 1.25rem; margin-top: 2.5rem; border-bottom: 1px solid #d9e2ec; }}
table.wb-table {{ border-collapse: collapse; font-size: 0.85rem; margin: 0.75rem 0; }}
table.wb-table th, table.wb-table td {{ border: 1px solid #d9e2ec; padding: 0.25rem 0.5rem; text-align: right; }}
table.wb-table th {{ background: #f0f4f8; }}
table.wb-table td:first-child, table.wb-table th:first-child {{ text-align: left; white-space: nowrap; }}
.wb-note {{ color: #52606d; font-size: 0.85rem; max-width: 60rem; }}
"""


def report_html(log: TransactionLog, as_of: dt.date | str, lang: str = "en", currency: str | None = None,
                features: pd.DataFrame | None = None, *, tiers: TierSettings | None = None,
                font: Path | None = None) -> str:
    """The reports as one self-contained HTML document (plotly.js inlined; nothing fetched).

    In zh-TW the Noto Sans TC font is inlined as base64 (``font``, default
    :func:`shipped_font`), so a manager's mail client shows real characters.
    """
    t, currency = _check(lang, currency)
    day = parse_cutoff(as_of)
    sections = report_sections(log, day, lang, currency, features, tiers=tiers)
    font_css = _font_css(font or shipped_font()) if lang == "zh-TW" else ""
    title = f"{t['document']} · {t['as_of']} {format_date(day, lang)}"
    body = "".join(f'<section id="report-{_e(s.key)}"><h2>{_e(s.title)}</h2>{s.html}</section>'
                   for s in sections)
    script = plotly_js().replace("</script", "<\\/script")
    return ("<!DOCTYPE html>\n"
            f'<html lang="{"zh-Hant-TW" if lang == "zh-TW" else "en"}"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{font_css}{_STYLE}</style>"
            f"<script>{script}</script></head>"
            f"<body><h1>{_e(title)}</h1>{body}<script>{PLOT_SCRIPT}</script></body></html>\n")


def write_report(log: TransactionLog, as_of: dt.date | str, out: Path, lang: str = "en",
                 currency: str | None = None, *, reference: FeatureReference | None = None,
                 settings: FeatureSettings | None = None) -> Path:
    """Write the reports as of ``as_of`` to ``out`` (``.html`` or ``.htm``), atomically.

    The document is built in memory first and written through a temporary file renamed onto
    ``out``, so a failure never leaves half a file. The tier calendar reads features built from
    the log with a model's feature reference (its tier thresholds, review period and time
    zone: the tiers the service's snapshot has), taken from ``reference``; without it, with ``settings``
    (default :class:`FeatureSettings`). Money is shown in ``currency`` (default NT$ in zh-TW,
    else $).
    """
    out = check_output_path(out, (".html", ".htm"))
    if lang not in TEXT:
        raise ValueError(f"--lang must be one of {', '.join(TEXT)}, got {lang!r}")
    day = parse_cutoff(as_of)
    if reference is not None:
        tiers = reference.settings.tiers
        features = build_features(log, day, reference=reference)
    else:
        tiers = (settings or FeatureSettings()).tiers
        features = build_features(log, day, settings=settings or FeatureSettings())
    document = report_html(log, day, lang, currency, features, tiers=tiers)
    with atomic_path(out) as tmp:
        tmp.write_text(document, encoding="utf-8")
        os.chmod(tmp, 0o666 & ~current_umask())          # as any file a program creates, not mkstemp's 0600
    return out
