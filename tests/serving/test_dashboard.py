"""The dashboard in a real Chromium against a real service on 127.0.0.1.

The service is started from the CDNOW slice's transaction log (so the Reports page has its
log) with a viewer, an admin and the usual scorer keys. One browser for the module; the tests
run in order as a marketer would: sign in, switch language, filter and page the list, export,
open a customer and compare every number with ``/score``. Under ``CI=true`` a missing browser
fails instead of skipping.
"""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from serving_support import AS_OF, KEYS

from crm.formatting import format_date, format_money, format_number, format_percent
from serving.run import running, service_env

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWER, ADMIN = "viewer-key-for-tests", "admin-key-for-tests"
MAX_LIMIT = 500


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:                                    # pragma: no cover
        if os.environ.get("CI") == "true":
            pytest.fail(f"playwright is not installed: {exc}")
        pytest.skip("playwright is not installed")
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"no browser at {CHROMIUM}: `make install` installs Debian's chromium")
        pytest.skip(f"no browser at {CHROMIUM}")
    return sync_playwright


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory, store, serving_slice):
    """The service with role keys, features built from the slice's log as of AS_OF."""
    tmp = tmp_path_factory.mktemp("dashboard")
    log = tmp / "transactions.csv"
    serving_slice.to_csv(log, index=False)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WINBACK_", "MLFLOW_", "BENTOML_"))}
    env = service_env(store["tracking_uri"], poll_seconds=0, base=base)
    (tmp / "bentoml").mkdir()
    env.update(BENTOML_HOME=str(tmp / "bentoml"), WINBACK_TRANSACTIONS=str(log), WINBACK_AS_OF=AS_OF,
               WINBACK_API_KEYS=",".join([*KEYS, f"viewer:{VIEWER}", f"admin:{ADMIN}"]),
               WINBACK_MAX_LIMIT=str(MAX_LIMIT), WINBACK_TRIGGERS_STATE=store["triggers"],
               WINBACK_CURRENCY="NT$")
    with running(env, log=tmp / "server.log") as url:
        yield {"url": url, "log": tmp / "server.log", "downloads": tmp}


@pytest.fixture(scope="module")
def browser(dashboard):
    sync_playwright = _browser_or_skip()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser, dashboard):
    context = browser.new_context(base_url=dashboard["url"], accept_downloads=True, locale="en-US")
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
    yield page
    context.close()


@pytest.fixture(scope="module")
def api(dashboard):
    with httpx.Client(base_url=dashboard["url"], headers={"Authorization": f"Bearer {KEYS[0]}"},
                      timeout=60) as client:
        yield client


def _sign_in(page, key: str) -> None:
    page.goto("/ui/signin")
    page.fill("#key", key)
    page.click("#signin-form button[type=submit]")
    page.wait_for_load_state()


def _charts_drawn(page, timeout: float = 15.0) -> int:
    """Charts Plotly drew (polled: the page's CSP forbids the eval ``wait_for_function`` uses)."""
    count = ("[document.querySelectorAll('div.wb-plot').length, "
             "document.querySelectorAll('div.wb-plot > .plot-container').length]")
    deadline = time.monotonic() + timeout
    while True:
        wanted, drawn = page.evaluate(count)
        if wanted == drawn or time.monotonic() > deadline:
            return drawn
        time.sleep(0.1)


# ---------------------------------------------------------------------- access


def test_nothing_without_a_session_but_sign_in_and_static(dashboard):
    with httpx.Client(base_url=dashboard["url"], timeout=30) as client:
        for path in ("/ui/", "/ui/list", "/ui/customer/00001", "/ui/reports", "/ui/model",
                     "/ui/list/export.csv", "/ui/model/plot/calibration.png"):
            answer = client.get(path)
            assert answer.status_code == 303 and answer.headers["location"].endswith("/ui/signin"), path
        assert client.post("/ui/lang", data={"lang": "zh-TW"}).status_code == 401
        assert client.get("/ui/signin").status_code == 200
        assert client.get("/ui/static/app.css").status_code == 200
        plotly_js = client.get("/ui/static/plotly.min.js")
        assert plotly_js.status_code == 200 and len(plotly_js.content) > 1_000_000
        # a dashboard key is not an API key (403: a key without the API's role); a forged session opens nothing
        assert client.post("/score", json={"customer_ids": ["00001"]},
                           headers={"Authorization": f"Bearer {VIEWER}"}).status_code == 403
        assert client.post("/score", json={"customer_ids": ["00001"]},
                           headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200
        forged = client.get("/ui/", headers={"Cookie": "winback_session=eyJyb2xlIjoiYWRtaW4ifQ.forged"})
        assert forged.status_code == 303


def test_sign_in_refuses_scorer_keys_and_forms_without_a_token(page, dashboard):
    _sign_in(page, KEYS[0])                                     # a CRM key cannot open the dashboard
    assert page.locator("#signin-error").is_visible()
    assert not [c for c in page.context.cookies() if c["name"] == "winback_session"]
    answer = page.request.post("/ui/signin", form={"key": VIEWER, "csrf": "not-a-token"}, max_redirects=0)
    assert answer.status == 403


def test_sign_in_sets_a_strict_http_only_expiring_session(page):
    _sign_in(page, VIEWER)
    assert page.url.endswith("/ui/")
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "winback_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert time.time() < cookie["expires"] <= time.time() + 8 * 3600 + 60
    assert VIEWER not in cookie["value"]
    assert page.evaluate("document.cookie").find("winback_session") == -1      # not readable by scripts
    # a form posted without the session's token is refused
    answer = page.request.post("/ui/lang", form={"lang": "zh-TW", "csrf": "forged", "next": "/ui/"},
                               max_redirects=0)
    assert answer.status == 403


# ---------------------------------------------------------------------- language and font


def test_overview_numbers_and_charts(page, api):
    page.goto("/ui/")
    info = api.get("/info").json()
    assert page.locator("#kpi-customers").inner_text() == format_number(info["snapshot"]["customers"], "en")
    assert page.locator("[data-field=model_version]").inner_text() == info["model_version"]
    assert _charts_drawn(page) == 3


def test_language_switch_sticks_and_formats_for_the_locale(page):
    page.goto("/ui/list")
    page.click("#lang-switch")
    page.wait_for_load_state()
    assert page.locator("html").get_attribute("lang") == "zh-Hant-TW"
    assert page.url.endswith("/ui/list")
    page.goto("/ui/")                                           # another page, same language
    assert "總覽" in page.locator("nav").inner_text()
    assert page.locator("[data-field=as_of]").inner_text() == format_date(AS_OF, "zh-TW") == "1997/09/30"
    assert page.locator("#kpi-value-at-risk").inner_text().startswith("NT$")


def _glyphs_differ(page, family: str) -> bool:
    """Draw 冠 and 軍 in ``family`` on a canvas: a missing glyph draws the same box for both."""
    return page.evaluate("""async (family) => {
        await document.fonts.load(`48px ${family}`, '冠軍客戶');
        const pixels = (ch) => {
            const c = document.createElement('canvas'); c.width = 64; c.height = 64;
            const g = c.getContext('2d'); g.font = `48px ${family}`; g.fillText(ch, 4, 52);
            return Array.from(g.getImageData(0, 0, 64, 64).data).join(',');
        };
        return pixels('冠') !== pixels('軍') && pixels('客') !== pixels('戶');
    }""", family)


def _system_has_cjk_font() -> bool:
    import shutil
    import subprocess

    if shutil.which("fc-list") is None:
        return True                                             # unknown: do not rely on its absence
    return bool(subprocess.run(["fc-list", ":lang=zh-tw"], capture_output=True, text=True).stdout.strip())


def test_traditional_chinese_renders_with_the_shipped_font(page):
    page.goto("/ui/")
    loaded = page.evaluate("[...document.fonts].filter(f => f.family.includes('Noto Sans TC'))"
                           ".map(f => f.status)")
    assert loaded == ["loaded"]
    assert _glyphs_differ(page, "'Noto Sans TC'")
    if not _system_has_cjk_font():                              # as here: without the web font, boxes
        assert not _glyphs_differ(page, "'no-such-font'")


# ---------------------------------------------------------------------- the list


def _table_ids(page) -> list[str]:
    return page.locator("#winback-table tbody tr").evaluate_all("rows => rows.map(r => r.dataset.customer)")


def test_list_filters_and_pages_like_the_winback_endpoint(page, api):
    page.goto("/ui/list")
    page.select_option("#f-segment", ["Lost", "At risk"])
    page.select_option("#f-tier", ["member"])
    page.fill("#f-min", "1")
    page.click("#apply")
    page.wait_for_load_state()
    want = api.post("/winback", json={"limit": MAX_LIMIT, "segments": ["Lost", "At risk"], "tiers": ["member"],
                                      "min_value": 1.0, "lang": "zh-TW"}).json()
    total = int(page.locator("#total").get_attribute("data-value"))
    assert total == want["total_matching"] > 100
    ids = [c["customer_id"] for c in want["customers"]]
    assert _table_ids(page) == ids[:50]
    first = page.locator("#winback-table tbody tr").first
    assert first.locator("td.reasons").inner_text() == "；".join(want["customers"][0]["reasons"])
    assert first.locator("[data-field=segment]").inner_text() == want["customers"][0]["segment"]
    page.click("#next")
    page.wait_for_load_state()
    assert page.locator("#page-info").get_attribute("data-page") == "2"
    assert _table_ids(page) == ids[50:100]


def test_list_win_back_window_and_sort(page, api):
    page.goto("/ui/list?winback_from=1997-10-01&winback_to=1997-12-31&sort=churn_probability&order=asc")
    cells = page.locator("#winback-table [data-field=winback_date]").evaluate_all(
        "cells => cells.map(c => c.dataset.value)")
    assert cells and all("1997-10-01" <= d <= "1997-12-31" for d in cells)
    churn = [float(v) for v in page.locator("#winback-table [data-field=churn_probability]").evaluate_all(
        "cells => cells.map(c => c.dataset.value)")]
    assert churn == sorted(churn)
    bad = page.goto("/ui/list?min_value=lots")
    assert bad.status == 400 and "min_value" in page.locator(".error").inner_text()


def test_export_csv_and_xlsx_reopen_with_the_filtered_rows(page, api, dashboard):
    page.goto("/ui/list?segment=Lost")
    want = api.post("/winback", json={"limit": MAX_LIMIT, "segments": ["Lost"], "lang": "zh-TW"}).json()
    ids = [c["customer_id"] for c in want["customers"]]
    with page.expect_download() as info:
        page.click("#export-csv")
    path = dashboard["downloads"] / "list.csv"
    info.value.save_as(path)
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")                      # UTF-8 with a BOM: Excel reads Chinese
    csv = pd.read_csv(io.BytesIO(raw), encoding="utf-8-sig", dtype={"顧客編號": str})
    assert list(csv["顧客編號"]) == ids
    assert set(csv["客群"]) == {"已流失"}
    with page.expect_download() as info:
        page.click("#export-xlsx")
    path = dashboard["downloads"] / "list.xlsx"
    info.value.save_as(path)
    xlsx = pd.read_excel(path, sheet_name="挽回名單", dtype={"顧客編號": str})
    assert list(xlsx["顧客編號"]) == ids
    assert xlsx["風險價值"].tolist() == pytest.approx([c["value_at_risk"] for c in want["customers"]], rel=1e-12)


# ---------------------------------------------------------------------- a customer


def _shown(page) -> dict[str, tuple[str, str, str]]:
    return {c["field"]: (c["kind"], c["value"], c["text"]) for c in page.locator("#scores [data-field]").evaluate_all(
        "cells => cells.map(c => ({field: c.dataset.field, kind: c.dataset.kind, value: c.dataset.value,"
        " text: c.innerText}))")}


def _expected_text(kind: str, value, lang: str) -> str:
    return {"percent": lambda: format_percent(value, lang), "number2": lambda: format_number(value, lang, 2),
            "money": lambda: format_money(value, lang, "NT$", 2), "integer": lambda: format_number(value, lang),
            "date": lambda: (format_date(value, lang) if value
                             else ("預計不會購買" if lang == "zh-TW" else "not expected")),
            "bool": lambda: ("是" if value else "否") if lang == "zh-TW" else ("yes" if value else "no"),
            "label": lambda: value}[kind]()


@pytest.mark.parametrize("lang", ["zh-TW", "en"])
def test_every_number_of_a_customer_equals_score(page, api, lang):
    page.goto("/ui/list")
    if page.locator("html").get_attribute("lang") != ("zh-Hant-TW" if lang == "zh-TW" else "en"):
        page.click("#lang-switch")
        page.wait_for_load_state()
    page.locator("#winback-table tbody tr a").nth(3).click()
    page.wait_for_load_state()
    cid = page.locator("#customer-id").inner_text()
    (score,) = api.post("/score", json={"customer_ids": [cid]}).json()["customers"]
    shown = _shown(page)
    assert len(shown) == 22
    for field, (kind, value, text) in shown.items():
        want = score[field]
        if want is None and kind in ("percent", "number2", "money"):   # e.g. P(90 days) past a 60-day model
            assert (value, text) == ("", "–"), field
            continue
        if kind in ("percent", "number2", "money"):
            assert float(value) == want, field                 # the same float, not a rounding of it
        elif kind == "integer":
            assert int(value) == want, field
        elif kind == "date":
            assert (value or None) == want, field
        elif kind == "bool":
            assert value == str(want).lower(), field
        assert text == _expected_text(kind, want, lang), field
    reasons = page.locator("#reasons li").all_inner_texts()
    assert reasons == score["reasons_zh_tw" if lang == "zh-TW" else "reasons"]
    assert _charts_drawn(page) == 3


def test_customer_triggers_and_unknown_ids(page):
    page.goto("/ui/customer/00001")
    assert "winback_due" in page.locator("#triggers").inner_text()
    page.goto("/ui/customer/00002")
    assert "holdout" in page.locator("#triggers").inner_text()   # held-out events show, as held out
    answer = page.goto("/ui/customer?id=99999999")
    assert answer.status == 404 and page.locator("#unknown").is_visible()


# ---------------------------------------------------------------------- reports, model, hygiene


def test_reports_and_model_pages(page):
    page.goto("/ui/reports")
    assert page.locator("section.report").count() == 4
    assert _charts_drawn(page) >= 2
    page.goto("/ui/model")
    assert page.locator("#mlflow-link").get_attribute("href") == "http://127.0.0.1:5000"
    assert page.locator("#no-plots").is_visible()               # the test store's runs log no plots


def test_no_script_errors_and_no_keys_in_the_log(page, dashboard):
    expected = re.compile(r"^Failed to load resource: the server responded with a status of (400|401|403|404)")
    assert [e for e in page.errors if not expected.match(e)] == []     # no CSP violation, no script error
    page.click("#sign-out")
    page.wait_for_load_state()
    assert page.url.endswith("/ui/signin")
    assert page.goto("/ui/list").url.endswith("/ui/signin")
    log = dashboard["log"].read_text(errors="replace")
    assert VIEWER not in log and ADMIN not in log and KEYS[0] not in log


# ---------------------------------------------------------------------- last: it locks this address out


def test_repeated_failed_sign_ins_are_throttled_even_for_a_good_key(dashboard):
    """Ten wrong keys from one address within five minutes, then 429 with Retry-After, in both
    languages, whatever key comes next (runs last: the server now refuses this address)."""
    with httpx.Client(base_url=dashboard["url"], timeout=30) as client:
        def attempt(key: str, lang: str = "en") -> httpx.Response:
            form = client.get("/ui/signin", params={"lang": lang}).text
            csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
            return client.post("/ui/signin", data={"key": key, "csrf": csrf, "lang": lang})

        assert [attempt(f"wrong-{i}").status_code for i in range(10)] == [401] * 10
        refused = attempt(VIEWER)
        assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 300
        assert "Too many failed sign-ins" in refused.text
        assert "登入失敗次數過多" in attempt(ADMIN, "zh-TW").text
        assert "winback_session" not in client.cookies
