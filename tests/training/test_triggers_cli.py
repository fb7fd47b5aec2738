"""`winback triggers run|report` and `winback daily` end to end: the real champion, a real outbox,
a real local webhook receiver; re-running a day sends nothing twice, and daily runs never overlap."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from training_support import quick_config
from typer.testing import CliRunner

from training.cli import app
from training.pipeline import train
from training.trigger_smoke import receiver

AS_OF = "1998-06-30"


@pytest.fixture(scope="module")
def champion(small_log, cdnow_raw, tmp_path_factory):
    root = tmp_path_factory.mktemp("triggers")
    store = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    train(small_log, quick_config(), store)
    log_file = root / "tx.csv"
    cdnow_raw[cdnow_raw["customer_id"].astype(int) <= 4000].to_csv(log_file, index=False)
    data = ["-t", str(log_file), "--timestamp-col", "date", "--amount-col", "dollar_value"]
    return {"root": root, "store": store, "data": data}


def test_a_day_is_recorded_and_delivered_exactly_once(champion, tmp_path, monkeypatch):
    monkeypatch.setenv("WINBACK_WEBHOOK_SECRET", "s3cret-for-the-test")
    server, received = receiver("s3cret-for-the-test")
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    state = f"sqlite:///{tmp_path / 'triggers.db'}"
    args = ["triggers", "run", *champion["data"], "--as-of", AS_OF, "--state-uri", state,
            "--out-dir", str(tmp_path / "files"), "--webhook-url", url, "--tracking-uri", champion["store"]]
    try:
        first = CliRunner().invoke(app, args)
        assert first.exit_code == 0, first.output
        sent = sum(received.values())
        second = CliRunner().invoke(app, args)
        assert second.exit_code == 0, second.output
    finally:
        server.shutdown()
    assert sent > 0 and sum(received.values()) == sent                     # nothing sent twice
    assert "0 new event(s)" in second.output and "winback_due" in first.output
    files = sorted(p.name for p in (tmp_path / "files" / AS_OF).iterdir())
    assert "winback_due.parquet" in files and "winback_due.csv" in files
    shipped = pd.read_parquet(tmp_path / "files" / AS_OF / "winback_due.parquet")
    assert (shipped["group"] == "send").all() and shipped["idempotency_key"].is_unique

    # issue #21: at most the day's budget is sent, each event says what it is worth and who ranked it
    sends = int(re.search(r"budget: ([\d,]+) of 1,000 sends", first.output).group(1).replace(",", ""))
    assert 0 < sends <= 1000 and sent == sends
    flat_run = " ".join(first.output.split())
    assert "ranking winback_due: prior uplift 0, ranked by value at risk: 0 of 500 sent" in flat_run
    fields = [json.loads(f) for f in shipped["fields"]]
    assert all(f["ranking"] == "value_at_risk" and f["expected_uplift"] == 0.0 and f["value_basis"] == "clv_12m"
               and f["net_value"] == 0.0 and f["window_days"] == 30 for f in fields)

    report = CliRunner().invoke(app, ["triggers", "report", *champion["data"][:2], "--state-uri", state,
                                      "--timestamp-col", "date", "--amount-col", "dollar_value"])
    assert report.exit_code == 0, report.output
    assert "winback_due" in report.output
    flat = " ".join(report.output.split())                               # the console wraps long lines
    assert re.search(r"budget: busiest day 1,000 sends of 1,000 a day; per rule: .*winback_due sent [\d,]+, "
                     r"held out [\d,]+, skipped [1-9]", flat)
    assert re.search(r"ranking of winback_due on [\d-]+: value_at_risk \(prior uplift 0, ranked by value at risk", flat)

    learned = CliRunner().invoke(app, ["triggers", "learn", *champion["data"], "--state-uri", state,
                                       "--tracking-uri", champion["store"]])
    assert learned.exit_code == 0, learned.output
    assert "winback_due: 0 sent, 0 held out matured; no matured outcome yet" in " ".join(learned.output.split())


def test_daily_runs_the_whole_day_and_never_overlaps(champion, tmp_path):
    from crm.job import exclusive

    out = tmp_path / "daily"
    args = ["daily", *champion["data"], "--as-of", AS_OF, "--out-dir", str(out),
            "--state-uri", f"sqlite:///{tmp_path / 'triggers.db'}", "--tracking-uri", champion["store"]]
    with exclusive(out / "daily.lock"):                                     # another run holds the lock
        blocked = CliRunner().invoke(app, args)
    assert blocked.exit_code == 2 and "still running" in blocked.output
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert (out / f"features_{AS_OF}.parquet").exists() and (out / f"scores_{AS_OF}.parquet").exists()
    assert (out / "triggers" / AS_OF).is_dir()
    flat = " ".join(done.output.split())
    assert "model health as of" in flat and any(w in flat for w in ("healthy", "warning", "retraining advised"))
