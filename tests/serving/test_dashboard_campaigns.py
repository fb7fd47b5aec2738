"""The dashboard's Campaigns page (issue #21) in a real Chromium against a real service: one truth
with `winback triggers report`.

The outbox is filled by the real trigger job (:func:`crm.job.run_triggers`, the shipped rules with
a budget of 800 sends a day instead of 1,000, given to the service as ``WINBACK_TRIGGERS_RULES``
and to the report as ``--rules``) with the session's scorer on the CDNOW slice on two month
ends, so their windows have ended by the log's last day; the service reads that outbox and the
slice's log. The page must show the numbers `winback triggers report` prints (and writes with
``--out``) for the same outbox and log, in both languages, with its charts drawn under the CSP.
The session's running service has neither a log nor dashboard keys, so this module starts its own.

``WINBACK_SCREENSHOTS=DIR`` saves the page in each language as ``DIR/campaigns-<lang>.png``.
"""

from __future__ import annotations

import json
import math
import os
import re

import pandas as pd
import pytest
from serving_support import AS_OF, KEYS
from test_dashboard import ARGS, CHROMIUM, _browser_or_skip, _charts_drawn
from typer.testing import CliRunner

from crm.formatting import format_number
from serving.run import running, service_env


def _screenshot(page, lang: str) -> None:
    if os.environ.get("WINBACK_SCREENSHOTS"):
        page.evaluate("document.fonts.ready.then(() => true)")
        page.wait_for_timeout(300)                                  # Plotly's transitions
        page.screenshot(path=os.path.join(os.environ["WINBACK_SCREENSHOTS"], f"campaigns-{lang}.png"), full_page=True)

DAYS = ("1997-10-31", "1997-11-30")
DEFAULT_SENDS, SENDS = 1000, 800        # the shipped daily budget, and the one this campaign ran with
VIEWER = "viewer-key-for-campaigns"


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, store, scorer, serving_slice):
    """The slice's log as a file, an outbox of three days of real trigger runs, the service on both."""
    from crm.job import model_features, run_triggers
    from crm.outbox import Outbox
    from crm.rules import DEFAULT_RULES_PATH, TriggerRules
    from features import TransactionLog

    tmp = tmp_path_factory.mktemp("campaigns")
    path = tmp / "transactions.csv"
    serving_slice.to_csv(path, index=False)
    state = f"sqlite:///{tmp / 'triggers.db'}"
    log = TransactionLog.from_frame(serving_slice)
    rules_file = tmp / "rules.toml"
    rules_file.write_text(DEFAULT_RULES_PATH.read_text(encoding="utf-8").replace(
        f"max_sends_per_day = {DEFAULT_SENDS}", f"max_sends_per_day = {SENDS}"), encoding="utf-8")
    outbox, rules = Outbox(state), TriggerRules.from_toml(rules_file)
    assert rules.budget.max_sends_per_day == SENDS
    for day in DAYS:
        run_triggers(scorer, model_features(scorer, log, day), day, rules, outbox, log=log)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WINBACK_", "MLFLOW_", "BENTOML_"))}
    env = service_env(store["tracking_uri"], poll_seconds=0, base=base)
    (tmp / "bentoml").mkdir()
    env.update(BENTOML_HOME=str(tmp / "bentoml"), WINBACK_TRANSACTIONS=str(path), WINBACK_AS_OF=AS_OF,
               WINBACK_API_KEYS=",".join([*KEYS, f"viewer:{VIEWER}"]), WINBACK_TRIGGERS_STATE=state,
               WINBACK_TRIGGERS_RULES=str(rules_file), WINBACK_CURRENCY="NT$")
    with running(env, log=tmp / "server.log") as url:
        yield {"url": url, "state": state, "transactions": path, "tmp": tmp, "events": outbox.events(),
               "rules": rules_file}


@pytest.fixture(scope="module")
def report(campaign) -> dict:
    """`winback triggers report` on the same outbox and log: its output and its table (--out)."""
    from training.cli import app

    out = campaign["tmp"] / "report.parquet"
    result = CliRunner().invoke(app, ["triggers", "report", "--transactions", str(campaign["transactions"]),
                                      "--state-uri", campaign["state"], "--rules", str(campaign["rules"]),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    return {"output": result.output, "lift": pd.read_parquet(out)}


@pytest.fixture(scope="module")
def page(campaign):
    sync_playwright = _browser_or_skip()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        context = browser.new_context(base_url=campaign["url"], locale="en-US",
                                      viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
        page.goto("/ui/signin?lang=en")
        page.fill("#key", VIEWER)
        page.click("#signin-form button[type=submit]")
        page.wait_for_load_state()
        yield page
        browser.close()


def _rows(page, table: str) -> list[dict]:
    """Each row of ``table``: its data attributes and every cell's data-field -> data-value (and
    the interval ends)."""
    return page.locator(f"#{table} tbody tr").evaluate_all("""rows => rows.map(r => ({row: {...r.dataset},
        cells: Object.fromEntries([...r.querySelectorAll('[data-field]')].map(c => [c.dataset.field,
            {value: c.dataset.value, low: c.dataset.low, high: c.dataset.high, text: c.innerText}]))}))""")


def _same(shown: str, value) -> bool:
    """The page's data-value is the report's float (NaN as nan), not a rounding of it: equal up to
    the order in which DuckDB's threads summed the revenue (1e-12 relative)."""
    return math.isnan(float(shown)) if value != value else math.isclose(float(shown), value, rel_tol=1e-12)


def _cli_table(output: str) -> list[list[str]]:
    """The cells of every row of the CLI's rich tables (lines split on the box character)."""
    return [[c.strip() for c in line.strip().strip("│").split("│")] for line in output.splitlines()
            if line.count("│") >= 3]


def test_the_page_shows_the_figures_of_triggers_report(page, report, campaign):
    page.goto("/ui/campaigns")
    assert page.locator("nav a[aria-current=page]").inner_text() == "Campaigns"

    # the lift: every row and number of the report's table, the same floats
    lift = report["lift"].set_index(["rule", "window_days"])
    shown = _rows(page, "lift-table")
    assert len(shown) == len(lift) > 0
    for row in shown:
        want = lift.loc[(row["row"]["rule"], int(row["row"]["window"]))]
        cells = row["cells"]
        assert cells["observed"]["value"] == str(bool(want["observed"])).lower()
        for field in ("messages_sent", "n_holdout", "purchase_rate_send", "purchase_rate_holdout"):
            assert _same(cells[field]["value"], float(want[field])), (row, field)
        for field in ("purchase_rate_diff", "revenue_per_customer_diff"):
            for end, column in (("value", field), ("low", f"{field}_low"), ("high", f"{field}_high")):
                assert _same(cells[field][end], float(want[column])), (row, column)

    # the budget: what the report's budget line says, rule by rule
    flat = " ".join(report["output"].split())
    busiest, limit = re.search(r"budget: busiest day ([\d,]+) sends of ([\d,]+) a day", flat).groups()
    assert page.locator("#busiest-day").inner_text() == busiest
    assert page.locator("#max-sends").inner_text() == limit == format_number(SENDS, "en")
    budget = _rows(page, "budget-table")
    assert {r["row"]["rule"] for r in budget} == set(campaign["events"]["rule"])
    for r in budget:
        c = r["cells"]
        assert (f"{r['row']['rule']} sent {format_number(int(c['sent']['value']), 'en')}, held out "
                f"{format_number(int(c['held_out']['value']), 'en')}, skipped "
                f"{format_number(int(c['skipped_budget']['value']), 'en')}") in flat
    assert any(int(r["cells"]["skipped_budget"]["value"]) > 0 for r in budget)      # the budget bit
    # which ranking chose the latest day's events, and why: the events' own words
    events = campaign["events"]
    for r in budget:
        mine = events[(events["rule"] == r["row"]["rule"]) & (events["as_of"] == DAYS[-1])]
        if len(mine):
            fields = json.loads(mine["fields"].iloc[0])
            assert r["cells"]["ranking"]["value"] == fields["ranking"] == "value_at_risk"
            assert r["cells"]["uplift_note"]["text"] == fields["uplift_note"]
    per_day = _rows(page, "budget-days")
    assert max(int(r["cells"]["day_sends"]["value"]) for r in per_day) == int(busiest.replace(",", ""))

    # the uplift: the report's table row by row (rule, window, uplift, ranking, Qini and AUUC with intervals)
    cli = {(cells[0], cells[3]): cells for cells in _cli_table(report["output"])
           if len(cells) == 6 and cells[3] in ("recorded_uplift", "churn_risk", "value_at_risk")}
    uplift = _rows(page, "uplift-table")
    assert len(uplift) == len(cli) > 0
    for r in uplift:
        c = r["cells"]
        want = cli[(r["row"]["rule"], r["row"]["ranking"])]
        assert want[1] == c["window_days"]["value"] and want[2] == f"{float(c['uplift']['value']):+.4f}"
        for i, field in ((4, "qini"), (5, "auuc")):
            assert want[i] == (f"{float(c[field]['value']):+.4f} [{float(c[field]['low']):+.4f}, "
                               f"{float(c[field]['high']):+.4f}]"), (r, field)
    # the Qini curves: the recorded ranking's is the report's, point by point; churn risk and value at risk beside it
    for rule in {r["row"]["rule"] for r in uplift}:
        figure = json.loads(page.locator(f"#wb-plot-qini-{rule}").get_attribute("data-figure"))
        assert [t["name"] for t in figure["data"]] == ["Recorded ranking (uplift model or prior)", "Churn risk",
                                                       "Value at risk", "Random ranking"]
        line = re.search(rf"Qini curve {rule} \(recorded ranking[^)]*\): (.*?)(?:Qini curve|$)", flat).group(1)
        assert line.strip().rstrip(",").split(", ") == [f"{s:.0%}: {q:+.4f}" for s, q in
                                                         zip(figure["data"][0]["x"], figure["data"][0]["y"])]
    assert _charts_drawn(page) == 2 + len({r["row"]["rule"] for r in uplift})
    _screenshot(page, "en")


def test_the_page_in_traditional_chinese_with_the_shipped_font(page):
    page.goto("/ui/campaigns")
    page.click("#lang-switch")
    page.wait_for_load_state()
    assert page.locator("nav a[aria-current=page]").inner_text() == "行銷活動"
    assert page.locator("#budget h2").inner_text() == "發送預算與排序"
    assert page.locator("#max-sends").inner_text() == format_number(SENDS, "zh-TW")
    assert "NT$" in page.locator("#lift-table").inner_text()
    assert _charts_drawn(page) >= 3
    text = page.locator("main").inner_text()
    from fontTools.ttLib import TTFont

    from crm.fonts import FONT

    cmap = set(map(chr, TTFont(FONT).getBestCmap()))
    assert not {ch for ch in text if ord(ch) > 0x7F and not ch.isspace()} - cmap       # no box for a missing glyph
    expected = re.compile(r"^Failed to load resource: the server responded with a status of (401|403|404)")
    assert [e for e in page.errors if not expected.match(e)] == []                     # no CSP violation
    _screenshot(page, "zh-TW")


def test_the_page_needs_a_session(campaign):
    import httpx

    with httpx.Client(base_url=campaign["url"], timeout=30) as client:
        answer = client.get("/ui/campaigns")
        assert answer.status_code == 303 and answer.headers["location"].endswith("/ui/signin")
        assert client.get("/ui/campaigns", headers={"Authorization": f"Bearer {KEYS[0]}"}).status_code == 303
