"""One truth per customer: the same model and as-of date give the same scores through every door.

Doors: ``/score`` (the snapshot the service scored at start), ``/score_history`` (features built
from the posted history), ``winback score`` (the CLI on the log), and the service's own snapshot
built from a log. They agree only if every door builds features with the model's feature
reference (RFM edges, category intervals, tiers, time zone), which these tests pin down.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest
from serving_support import AS_OF, DATES, FLOATS
from typer.testing import CliRunner

#: Everything a customer is told, but ``priority`` (a rank among whoever is scored together).
LABELS = ["winback_now", "r_score", "f_score", "m_score", "segment", "segment_zh_tw", "tier", "tier_zh_tw"]
CUSTOMERS = 240


@pytest.fixture(scope="module")
def chosen(store, serving_slice) -> pd.DataFrame:
    """The full histories (up to the as-of day) of the first customers of the snapshot."""
    seen = serving_slice[serving_slice["timestamp"] <= pd.Timestamp(AS_OF)]
    ids = sorted(seen["customer_id"].unique())[:CUSTOMERS]
    return seen[seen["customer_id"].isin(ids)]


def _frame(customers: list[dict]) -> pd.DataFrame:
    ok = [c for c in customers if c["status"] == "ok"]
    assert len(ok) == len(customers), [c for c in customers if c["status"] != "ok"][:3]
    return pd.DataFrame(ok).set_index("customer_id").sort_index()


def _batches(histories: pd.DataFrame, max_customers: int = 50, max_lines: int = 500):
    batch, lines = [], 0
    for cid, rows in histories.groupby("customer_id", sort=True):
        if batch and (len(batch) == max_customers or lines + len(rows) > max_lines):
            yield batch
            batch, lines = [], 0
        batch.append({"customer_id": cid, "transactions": [
            {"timestamp": t.isoformat(), "amount": float(a)} for t, a in zip(rows["timestamp"], rows["amount"])]})
        lines += len(rows)
    if batch:
        yield batch


def assert_same(got: pd.DataFrame, want: pd.DataFrame, door: str) -> None:
    want = want.loc[got.index]
    np.testing.assert_allclose(got[FLOATS].to_numpy(float), want[FLOATS].to_numpy(float), rtol=1e-9,
                               err_msg=door)
    for col in DATES + LABELS:
        plain = lambda values: [None if pd.isna(v) else v for v in values]          # noqa: E731
        differ = [cid for cid, a, b in zip(got.index, plain(got[col]), plain(want[col])) if a != b]
        assert not differ, f"{door}: {col} differs for {differ[:5]}"


def test_score_history_equals_score_by_id_for_every_output(http, chosen):
    ids = sorted(chosen["customer_id"].unique())
    assert len(ids) >= 200
    by_id = http.post("/score", json={"customer_ids": ids, "reasons": False})
    assert by_id.status_code == 200
    expected = _frame(by_id.json()["customers"])
    answers = []
    for batch in _batches(chosen):
        posted = http.post("/score_history", json={"as_of": AS_OF, "customers": batch, "reasons": False})
        assert posted.status_code == 200, posted.text
        answers += posted.json()["customers"]
    got = _frame(answers)
    assert list(got.index) == ids
    assert_same(got, expected, "/score_history vs /score")
    assert expected["segment"].nunique() > 3 and expected["r_score"].nunique() == 5   # not a trivial case


def test_cli_score_equals_score_by_id(http, chosen, store, serving_slice, tmp_path):
    from training.cli import app

    log_file = tmp_path / "log.csv"
    serving_slice.to_csv(log_file, index=False)
    out = tmp_path / "scores.parquet"
    done = CliRunner().invoke(app, ["score", "-t", str(log_file), "--as-of", AS_OF, "--out", str(out),
                                    "--reasons", "0", "--tracking-uri", store["tracking_uri"],
                                    "--model-uri", f"models:/winback/{store['version']}"])
    assert done.exit_code == 0, done.output
    cli = pd.read_parquet(out).set_index("customer_id")
    ids = sorted(chosen["customer_id"].unique())
    expected = _frame(http.post("/score", json={"customer_ids": ids, "reasons": False}).json()["customers"])
    got = cli.loc[ids].copy()
    for col in DATES:
        got[col] = [None if pd.isna(d) else d.date().isoformat() for d in got[col]]
    assert_same(got, expected, "winback score vs /score")


def test_a_snapshot_from_another_reference_is_refused(store, cdnow_raw, tmp_path):
    from features import TransactionLog
    from features.cdnow import CDNOW_COLUMNS
    from features.job import write_features
    from serving.champion import Champion
    from serving.config import ConfigError, ServiceSettings

    log = TransactionLog.from_frame(cdnow_raw[cdnow_raw["customer_id"].astype(int) <= 3000], CDNOW_COLUMNS)
    fresh_edges = tmp_path / "fresh.parquet"
    write_features(log, "1998-06-30", fresh_edges)               # its own edges, not the model's
    settings = ServiceSettings(tracking_uri=store["tracking_uri"], snapshot=fresh_edges, poll_seconds=0)
    with pytest.raises(ConfigError, match="feature reference .* --model-uri"):
        Champion(settings)


def test_a_service_built_from_the_log_answers_as_the_snapshot(store, serving_slice, tmp_path):
    from serving.champion import Champion
    from serving.config import LogSource, ServiceSettings

    log_file = tmp_path / "log.csv"
    serving_slice.to_csv(log_file, index=False)
    source = LogSource((str(log_file),), None, AS_OF, {})
    from_log = Champion(ServiceSettings(tracking_uri=store["tracking_uri"], log_source=source, poll_seconds=0))
    from_file = Champion(ServiceSettings(tracking_uri=store["tracking_uri"], snapshot=store["snapshot"],
                                         poll_seconds=0))
    a, b = from_log.current, from_file.current
    assert a.size == b.size and a.as_of == b.as_of
    rows = list(range(0, a.size, 7))
    assert a.records(rows) == b.records(rows)


def test_score_history_days_are_the_models_time_zone(scorer, store):
    """An offset timestamp counts on the shop's day: 20:00 UTC on the as-of day is the next
    morning in Taipei, so a Taipei model does not see that purchase as of that day."""
    from serving.config import Limits
    from serving.history import score_history
    from serving.schemas import CustomerHistory

    late = {"customer_id": "tz1", "transactions": [
        {"timestamp": "1997-03-01T10:00:00+00:00", "amount": 20.0},
        {"timestamp": f"{AS_OF}T20:00:00+00:00", "amount": 30.0}]}
    customers = [CustomerHistory.model_validate(late)]
    day = dt.date.fromisoformat(AS_OF)
    taipei = dataclasses.replace(scorer.reference_, timezone="Asia/Taipei")
    utc_scorer, taipei_scorer = scorer, _with_reference(scorer, taipei)
    in_utc = score_history(utc_scorer, day, customers, Limits(), reasons=False)[0]
    in_taipei = score_history(taipei_scorer, day, customers, Limits(), reasons=False)[0]
    assert in_utc["r_score"] == 5 and in_taipei["r_score"] < 5          # last purchase: that day vs March
    assert in_utc["churn_probability"] != in_taipei["churn_probability"]


def _with_reference(scorer, reference):
    import copy

    other = copy.copy(scorer)
    other.reference_ = reference
    return other



def test_a_swap_rebuilds_the_log_snapshot_with_the_new_models_reference(tmp_path, scorer, store, serving_slice):
    """From a log, the service rebuilds its features with each new champion's own reference;
    from a snapshot file built for the old one, it keeps the old model and says why."""
    import copy

    from serving_support import register_version, set_champion

    from serving.champion import Champion
    from serving.config import LogSource, ServiceSettings

    other = copy.copy(scorer)                          # same trees, other RFM edges: every r_score moves
    edges = dict(scorer.reference_.rfm_edges, recency=[1.0, 2.0, 3.0, 4.0])
    other.reference_ = dataclasses.replace(scorer.reference_, rfm_edges=edges)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir()
    first = register_version(uri, scorer, store["example"], {"churn_auc": 0.8})
    set_champion(uri, first)
    log_file = tmp_path / "log.csv"
    serving_slice.to_csv(log_file, index=False)
    from_log = Champion(ServiceSettings(tracking_uri=uri, log_source=LogSource((str(log_file),), None, AS_OF, {}),
                                        poll_seconds=0))
    from_file = Champion(ServiceSettings(tracking_uri=uri, snapshot=store["snapshot"], poll_seconds=0))
    before = from_log.current.records([0, 1, 2])
    set_champion(uri, register_version(uri, other, store["example"], {"churn_auc": 0.9}))
    assert from_log.poll() and from_log.current.model.feature_reference == other.reference_.fingerprint()
    after = from_log.current.records([0, 1, 2])
    assert all(a["r_score"] == 1 for a in after) and any(b["r_score"] != 1 for b in before)
    assert not from_file.poll() and from_file.current.model.version == str(first)
    assert from_file.degraded and "feature reference" in from_file.registry.last_error
