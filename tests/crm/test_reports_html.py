"""`winback report`'s file: self-contained, both languages, the DataFrames' numbers, escaped, atomic."""

from __future__ import annotations

import base64
import os
import re
import stat
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from crm import reports as html_reports
from crm.formatting import format_date, format_money, format_month, format_number, format_percent
from crm.reports import write_report
from features import ColumnMap, TransactionLog, build_features, reports

AS_OF = "1998-06-30"
CHROMIUM = "/usr/bin/chromium"


class Page(HTMLParser):
    """Every start tag with its attributes, the text of <script> and <style>, and table cells by class."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.headings: list[str] = []
        self._in: str | None = None
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag in ("script", "style", "h1", "h2"):
            self._in, self._text = tag, []
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("class", "").split()[-1], [])
        if tag == "tr" and self._table is not None:
            self._table.append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._table[-1].append("".join(self._cell))
            self._cell = None
        if tag == "table":
            self._table = None
        if tag == self._in:
            text = "".join(self._text)
            {"script": self.scripts, "style": self.styles}.get(tag, self.headings).append(text)
            self._in = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in:
            self._text.append(data)


@pytest.fixture(scope="module")
def documents(small_log, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("report")
    return {lang: write_report(small_log, AS_OF, folder / f"report-{lang}.html", lang)
            for lang in ("en", "zh-TW")}


def _page(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("lang", ["en", "zh-TW"])
def test_the_file_is_self_contained(documents, lang):
    text = documents[lang].read_text(encoding="utf-8")
    page = Page(text)
    for tag, attrs in page.tags:
        for name in ("src", "href", "action", "data", "poster"):
            assert not re.match(r"\s*(https?:)?//", attrs.get(name) or ""), (tag, attrs)
    assert {tag for tag, _ in page.tags}.isdisjoint({"link", "iframe", "img", "object", "embed"})
    assert all("src" not in attrs for tag, attrs in page.tags if tag == "script")
    assert len(page.scripts) == 2 and html_reports.plotly_js() in page.scripts[0]    # plotly.js, once
    assert html_reports.PLOT_SCRIPT in page.scripts[1]
    urls = re.findall(r"url\(([^)]*)\)", "".join(page.styles))
    assert all(u.startswith("data:") for u in urls)
    assert "@import" not in "".join(page.styles)


def test_both_languages_have_their_titles(documents):
    for lang in ("en", "zh-TW"):
        page = _page(documents[lang])
        words = html_reports.TEXT[lang]
        assert page.headings[0] == f"{words['document']} · {words['as_of']} {format_date(AS_OF, lang)}"
        assert page.headings[1:] == [words[k] for k in ("monthly", "cohorts", "intervals", "tiers")]
    assert "每月新舊客獲取報表" in _page(documents["zh-TW"]).headings
    assert "Monthly new vs returning customers" in _page(documents["en"]).headings


@pytest.mark.parametrize("lang", ["en", "zh-TW"])
def test_the_numbers_are_the_dataframes(documents, small_log, lang):
    tables = _page(documents[lang]).tables
    currency = {"en": "$", "zh-TW": "NT$"}[lang]
    money = lambda x: format_money(x, lang, currency)
    monthly = reports.monthly_new_vs_returning(small_log, AS_OF)
    rows = tables["wb-monthly"][1:]
    assert [r[0] for r in rows] == [format_month(m, lang) for m in monthly["month"]]
    assert [r[1:] for r in rows] == [
        [format_number(r.new_customers, lang), format_number(r.returning_customers, lang),
         format_number(r.new_orders, lang), format_number(r.returning_orders, lang),
         money(r.new_revenue), money(r.returning_revenue), money(r.new_avg_order_value),
         money(r.returning_avg_order_value), format_percent(r.returning_revenue_share, lang),
         format_percent(r.repurchase_rate, lang)] for r in monthly.itertuples()]
    assert rows[0][2] == "0" and rows[0][-2:] == ["0.0%", "0.0%"]          # nobody returns in month one

    cohorts = reports.cohort_retention(small_log, AS_OF)
    first = cohorts[cohorts["cohort_month"] == cohorts["cohort_month"].min()]
    assert tables["wb-cohorts"][1][1:] == [format_number(first["cohort_customers"].iloc[0], lang)] + [
        format_percent(v, lang) for v in first["retention"]]

    intervals = reports.repurchase_interval_summary(small_log, AS_OF)
    assert tables["wb-intervals"][1] == [html_reports.TEXT[lang]["all_products"]] + [
        format_number(intervals[c].iloc[0], lang, d) for c, d in (
            ("customers", 0), ("intervals", 0), ("mean_days", 1), ("p25_days", 1), ("median_days", 1),
            ("p75_days", 1), ("p90_days", 1))]

    features = build_features(small_log, AS_OF)
    summary = reports.tier_review_summary(features, AS_OF)
    assert [r[2:5] for r in tables["wb-tier-summary"][1:]] == [
        [format_number(r.customers, lang), format_number(r.dropping, lang), format_percent(r.dropping_share, lang)]
        for r in summary.itertuples()]
    calendar = reports.tier_review_calendar(features, AS_OF)
    assert len(calendar) > 0
    assert [r[0] for r in tables["wb-tier-calendar"][1:]] == calendar["customer_id"].tolist()
    assert [r[2] for r in tables["wb-tier-calendar"][1:]] == [money(x) for x in calendar["tier_spend"]]


@pytest.mark.parametrize("lang, symbol", [("en", "€"), ("zh-TW", "US$")])
def test_the_currency_is_configurable(small_log, lang, symbol):
    text = html_reports.report_html(small_log, AS_OF, lang, symbol)
    monthly = reports.monthly_new_vs_returning(small_log, AS_OF)
    assert format_money(monthly["new_revenue"].iloc[0], lang, symbol) in text


def test_zh_tw_inlines_the_font_and_en_does_not(small_log, tmp_path):
    font = tmp_path / "NotoSansTC-subset.woff2"
    font.write_bytes(os.urandom(64))
    encoded = base64.b64encode(font.read_bytes()).decode()
    zh = Page(html_reports.report_html(small_log, AS_OF, "zh-TW", font=font))
    assert f"url(data:font/woff2;base64,{encoded})" in zh.styles[0]
    assert "Noto Sans TC" in zh.styles[0]
    assert "@font-face" not in Page(html_reports.report_html(small_log, AS_OF, "en", font=font)).styles[0]


def test_the_shipped_font_is_inlined_when_the_dashboard_has_one(documents):
    shipped = html_reports.shipped_font()
    if shipped is None:
        pytest.skip("the dashboard ships no Noto Sans TC woff2 yet")
    encoded = base64.b64encode(shipped.read_bytes()).decode()
    assert encoded in documents["zh-TW"].read_text(encoding="utf-8")


def test_every_value_is_escaped(tmp_path):
    hostile = '"><img src=x onerror=alert(1)>'
    rows = pd.DataFrame({
        "customer_id": [hostile, hostile, "<b>bold</b>", "<b>bold</b>"],
        "timestamp": pd.to_datetime(["1997-07-15", "1998-03-05", "1998-02-01", "1998-06-01"]),  # drops silver
        "amount": [2500.0, 10.0, 5.0, 5.0],
        "category": ["</script><script>alert(2)</script>"] * 2 + ["A&B"] * 2,
    })
    log = TransactionLog.from_frame(rows, ColumnMap(category="category"))
    text = write_report(log, AS_OF, tmp_path / "hostile.html", "en").read_text(encoding="utf-8")
    page = Page(text)
    assert {tag for tag, _ in page.tags}.isdisjoint({"img", "b"})
    assert len(page.scripts) == 2
    cells = [c for table in page.tables.values() for row in table for c in row]
    assert hostile in cells and "</script><script>alert(2)</script>" in cells and "A&B" in cells
    assert "&lt;script&gt;" in text                                     # escaped, not dropped


def test_the_write_is_atomic(small_log, tmp_path):
    out = tmp_path / "report.html"
    out.write_text("the previous report", encoding="utf-8")
    with pytest.raises(ValueError, match="no purchases on or before 1990-01-01"):
        write_report(small_log, "1990-01-01", out)
    assert out.read_text(encoding="utf-8") == "the previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    with pytest.raises(ValueError, match=r"--out must end in \.html or \.htm"):
        write_report(small_log, AS_OF, tmp_path / "report.pdf")
    with pytest.raises(ValueError, match="--lang must be one of en, zh-TW, got 'fr'"):
        write_report(small_log, AS_OF, out, "fr")
    previous = os.umask(0o027)
    try:
        write_report(small_log, AS_OF, out)
    finally:
        os.umask(previous)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert stat.S_IMODE(out.stat().st_mode) == 0o640                  # the umask's, not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_the_tiers_follow_the_model(small_log, tmp_path):
    from training_support import quick_config

    from training.pipeline import train
    from training.registry import load_scorer

    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    train(small_log, quick_config(), store)
    reference = load_scorer(None, store)[0].reference_
    out = write_report(small_log, AS_OF, tmp_path / "report.html", "en", reference=reference)
    features = build_features(small_log, AS_OF, reference=reference)
    calendar = reports.tier_review_calendar(features, AS_OF, reference.settings.tiers)
    rows = _page(out).tables["wb-tier-calendar"][1:]
    assert [r[0] for r in rows] == calendar["customer_id"].tolist()


def _chromium_or_skip() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make install)")
    pytest.skip(f"{CHROMIUM} is not installed")


@pytest.mark.parametrize("lang", ["en", "zh-TW"])
def test_it_opens_in_chromium_offline_and_draws_every_chart(documents, lang):
    from playwright.sync_api import sync_playwright

    executable = _chromium_or_skip()
    requested, errors = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page()
            page.on("request", lambda r: requested.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(documents[lang].as_uri())
            page.wait_for_function("document.querySelectorAll('div.wb-plot .main-svg').length >= 3",
                                   timeout=20_000)
            drawn = page.eval_on_selector_all("div.wb-plot", "els => els.map(e => !!e.querySelector('.main-svg'))")
            title = page.title()
            faces = page.evaluate("""async () => { await document.fonts.ready;
                return [...document.fonts].map(f => [f.family.replace(/["']/g, ''), f.status]); }""")
        finally:
            browser.close()
    assert drawn == [True, True, True] and not errors
    assert all(url.startswith("file://") or url.startswith("data:") for url in requested), requested
    assert title.startswith(html_reports.TEXT[lang]["document"])
    if lang == "zh-TW" and html_reports.shipped_font() is not None:      # the inlined font is used
        assert ["Noto Sans TC", "loaded"] in faces


def test_the_command_writes_the_report_and_refuses_bad_flags(tmp_path):
    from typer.testing import CliRunner

    from training.cli import app

    out = tmp_path / "report.html"
    done = CliRunner().invoke(app, ["report", "--dataset", "cdnow", "--as-of", "1998-06-30",
                                    "--lang", "zh-TW", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "每月新舊客" in out.read_text(encoding="utf-8")
    for bad in (["--as-of", "30/06/1998"], ["--lang", "fr"], ["--out", str(tmp_path / "r.txt")]):
        args = ["report", "--dataset", "cdnow", "--as-of", "1998-06-30", "--out", str(tmp_path / "r.html"), *bad]
        refused = CliRunner().invoke(app, args)
        assert refused.exit_code == 2 and "Traceback" not in refused.output, bad
    assert not (tmp_path / "r.html").exists()
