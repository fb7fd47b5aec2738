"""The daily feature state (features.incremental): each day's table equals a full rebuild exactly,
on CDNOW day by day for a month and on a synthetic log with late rows, refunds of old orders,
rows that arrive before their day and duplicates; what cannot be carried forward is rebuilt,
with the reason; a run killed at any moment leaves a state the next run can use."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from features import ColumnMap, FeatureReference, FeatureSettings, IngestPolicy, TransactionDataError, read_transactions
from features.cdnow import CDNOW_COLUMNS
from features.incremental import daily_features
from features.job import feature_table_metadata, write_features

sys.path.append(str(Path(__file__).resolve().parents[2] / "benchmarks"))

import synthetic  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SYNTHETIC_COLUMNS = ColumnMap(customer_id="customer_id", timestamp="timestamp", amount="amount", order_id="order_id",
                              quantity="quantity", category="category", channel="channel")


def fitted_reference(files, day, columns, policy=IngestPolicy(), tmp=None) -> FeatureReference:
    """The reference a model trained on these files as of ``day`` would carry."""
    out = Path(tmp) / "reference_table.parquet"
    write_features(read_transactions(files, columns, policy), day, out)
    return FeatureReference.from_dict(json.loads(feature_table_metadata(out)["winback.reference"]))


def assert_equals_a_full_rebuild(table: Path, files, day: str, reference, columns, policy=IngestPolicy()):
    full = table.with_name("full_" + table.name)
    write_features(read_transactions(files, columns, policy), day, full, reference=reference)
    got, want = pd.read_parquet(table), pd.read_parquet(full)
    assert list(got.columns) == list(want.columns) and list(got.dtypes) == list(want.dtypes)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    meta = lambda path: {k: v for k, v in feature_table_metadata(path).items()}
    assert meta(table) == meta(full)


@pytest.fixture(scope="module")
def cdnow_days(cdnow_raw, tmp_path_factory):
    """CDNOW to 1997-03-01 in one file, then one file per day for the next 30 days."""
    root = tmp_path_factory.mktemp("cdnow_days")
    start = pd.Timestamp("1997-03-01")
    cdnow_raw[cdnow_raw["date"] <= start].to_parquet(root / "history.parquet")
    for i in range(1, 31):
        day = start + pd.Timedelta(days=i)
        cdnow_raw[cdnow_raw["date"] == day].to_parquet(root / f"day_{day:%Y-%m-%d}.parquet")
    return root


def cdnow_files(root: Path, day: str) -> list[str]:
    return [str(root / "history.parquet")] + sorted(
        str(p) for p in root.glob("day_*.parquet") if p.stem[4:] <= day)


def test_cdnow_day_by_day_for_a_month_equals_a_full_rebuild(cdnow_days, tmp_path):
    reference = fitted_reference(cdnow_files(cdnow_days, "1997-03-01"), "1997-03-01", CDNOW_COLUMNS, tmp=tmp_path)
    modes = []
    for day in pd.date_range("1997-03-01", "1997-03-31").strftime("%Y-%m-%d"):
        files = cdnow_files(cdnow_days, day)
        done = daily_features(files, day, tmp_path / f"features_{day}.parquet", reference, tmp_path / "state",
                              CDNOW_COLUMNS)
        modes.append(done.mode)
        assert_equals_a_full_rebuild(tmp_path / f"features_{day}.parquet", files, day, reference, CDNOW_COLUMNS)
    assert modes == ["full"] + ["incremental"] * 30
    assert done.files_read == (str(cdnow_days / "day_1997-03-31.parquet"),) and "1 file new" in done.describe()


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A synthetic log with categories, order ids and refunds, to 2024-09-30 in one file."""
    root = tmp_path_factory.mktemp("shop")
    frame = pd.concat(list(synthetic.generate_transactions(1500, seed=5, arrow_strings=False)), ignore_index=True)
    frame = pd.concat([frame, frame.sample(frac=0.01, random_state=1)])         # exact duplicates
    lines = frame.sample(frac=0.02, random_state=2).assign(category="household", amount=4.5)
    frame = pd.concat([frame, lines], ignore_index=True)                         # a second line of an order
    frame["day"] = frame["timestamp"].dt.strftime("%Y-%m-%d")
    return root, frame


def test_a_synthetic_month_with_late_rows_refunds_early_rows_and_duplicates(shop, tmp_path):
    _, frame = shop
    tx = tmp_path / "tx"
    tx.mkdir()
    write = lambda rows, name: rows.drop(columns="day").to_parquet(tx / name, index=False)
    write(frame[frame["day"] <= "2024-09-30"], "history.parquet")
    days = list(pd.date_range("2024-10-01", "2024-10-31").strftime("%Y-%m-%d"))
    for day in days:
        rows = frame[frame["day"] == day]
        if day == "2024-10-03":         # refunds of old orders: one dated today, one dated in August
            old = frame[frame["day"] < "2024-09-01"].head(2).copy()
            old["amount"] = -old["amount"].abs()
            old.loc[old.index[0], "timestamp"] = pd.Timestamp(day) + pd.Timedelta(hours=5)
            rows = pd.concat([rows, old])
        if day == "2024-10-05":         # rows of the 9th arrive early (and again, duplicated, on the 9th)
            rows = pd.concat([rows, frame[frame["day"] == "2024-10-09"].head(5)])
        if day == "2024-10-12":         # a late order dated before the state's day
            late = frame[frame["day"] == "2024-10-02"].head(1).assign(order_id="LATE-1")
            rows = pd.concat([rows, late])
        write(rows, f"day_{day}.parquet")
        if day == "2024-10-16":         # the same export twice, in a second file
            write(rows.head(10), f"day_{day}_again.parquet")
    reference = fitted_reference([tx / "history.parquet"], "2024-09-30", SYNTHETIC_COLUMNS, tmp=tmp_path)
    runs = ["2024-09-30"] + [d for d in days if not "2024-10-20" < d < "2024-10-26"]   # a 6-day catch-up
    results = {}
    for day in runs:
        files = [str(tx / "history.parquet")] + sorted(str(p) for p in tx.glob("day_*.parquet") if p.stem[4:14] <= day)
        results[day] = daily_features(files, day, tmp_path / f"features_{day}.parquet", reference, tmp_path / "state",
                                      SYNTHETIC_COLUMNS)
        assert_equals_a_full_rebuild(tmp_path / f"features_{day}.parquet", files, day, reference, SYNTHETIC_COLUMNS)
    rebuilt = {day: r.reason for day, r in results.items() if r.mode == "full"}
    assert list(rebuilt) == ["2024-09-30", "2024-10-12"]
    assert "1 new row(s) are dated on or before 2024-10-11" in rebuilt["2024-10-12"]
    assert "earliest 2024-10-02" in rebuilt["2024-10-12"] and "day_2024-10-12.parquet" in rebuilt["2024-10-12"]
    assert results["2024-10-03"].mode == "incremental" and results["2024-10-03"].report.refunds_excluded == 2


def small_day(tmp_path, cdnow_raw, through="1997-02-28"):
    root = tmp_path / "tx"
    root.mkdir(exist_ok=True)
    cdnow_raw[cdnow_raw["date"] <= through].to_parquet(root / "history.parquet")
    for day in ("1997-03-01", "1997-03-02"):
        cdnow_raw[cdnow_raw["date"] == day].to_parquet(root / f"day_{day}.parquet")
    reference = fitted_reference([root / "history.parquet"], through, CDNOW_COLUMNS, tmp=tmp_path)
    first = daily_features([root / "history.parquet"], through, tmp_path / "f0.parquet", reference,
                           tmp_path / "state", CDNOW_COLUMNS)
    assert first.mode == "full" and first.reason.startswith("no feature state")
    return root, reference


def test_what_cannot_be_carried_forward_is_rebuilt_and_said(cdnow_raw, tmp_path):
    root, reference = small_day(tmp_path, cdnow_raw)
    history, day1 = root / "history.parquet", root / "day_1997-03-01.parquet"
    run = lambda files, day="1997-03-01", **kw: daily_features(
        files, day, tmp_path / f"f_{day}.parquet", kw.pop("reference", reference), tmp_path / "state",
        kw.pop("columns", CDNOW_COLUMNS), kw.pop("policy", IngestPolicy()), **kw)
    assert run([history, day1]).mode == "incremental"
    assert run([history, day1]).mode == "incremental"             # the same day again: nothing new
    assert "asked for" in run([history, day1], full_rebuild=True).reason
    os.utime(history, ns=(time.time_ns(), time.time_ns()))       # a file read before is rewritten
    assert "has changed since" in run([history, day1]).reason
    assert "is no longer among the transactions" in run([day1]).reason
    assert "is before 1997-03-01" in run([day1, history], "1997-02-27").reason
    other = dataclasses.replace(reference, settings=FeatureSettings(windows_days=(7, 30)))
    assert "settings differ" in run([history, day1], "1997-03-01", reference=other).reason
    assert "policy differ" in run([history, day1], policy=IngestPolicy(zero_amounts="exclude"), reference=other).reason
    (tmp_path / "f_1997-03-01.parquet").write_bytes((tmp_path / "f0.parquet").read_bytes())
    assert "was rewritten since" in run([history, day1], policy=IngestPolicy(zero_amounts="exclude"),
                                        reference=other).reason
    # other RFM edges and category intervals (a retrained model) leave the state as it is
    edges = dataclasses.replace(other, rfm_edges={k: [x + 1 for x in v] for k, v in other.rfm_edges.items()})
    day2 = root / "day_1997-03-02.parquet"
    done = run([history, day1, day2], "1997-03-02", reference=edges, policy=IngestPolicy(zero_amounts="exclude"))
    assert done.mode == "incremental"
    assert_equals_a_full_rebuild(tmp_path / "f_1997-03-02.parquet", [history, day1, day2], "1997-03-02", edges,
                                 CDNOW_COLUMNS, IngestPolicy(zero_amounts="exclude"))


def test_a_bad_new_file_is_named_and_the_state_kept(cdnow_raw, tmp_path):
    root, reference = small_day(tmp_path, cdnow_raw)
    bad = root / "day_bad.csv"
    bad.write_text("customer_id,date,number_of_cds,dollar_value\n00001,1997-03-01,1,12.5\n00002,1997-03-01,1,abc\n")
    with pytest.raises(TransactionDataError) as info:
        daily_features([root / "history.parquet", bad], "1997-03-01", tmp_path / "f.parquet", reference,
                       tmp_path / "state", CDNOW_COLUMNS)
    assert (info.value.source, info.value.row, info.value.column) == (str(bad), 2, "dollar_value")
    good = root / "day_1997-03-01.parquet"
    done = daily_features([root / "history.parquet", good], "1997-03-01", tmp_path / "f.parquet", reference,
                          tmp_path / "state", CDNOW_COLUMNS)
    assert done.mode == "incremental"


KILLED = """
import json, sys
from features import FeatureReference
from features.cdnow import CDNOW_COLUMNS
from features.incremental import daily_features
files, out, state, reference = sys.argv[1].split(","), sys.argv[2], sys.argv[3], sys.argv[4]
print("started", flush=True)
daily_features(files, "1997-03-01", out, FeatureReference.from_dict(json.loads(open(reference).read())), state,
               CDNOW_COLUMNS)
"""


def test_a_run_killed_at_any_moment_leaves_a_usable_state(cdnow_raw, tmp_path):
    root, reference = small_day(tmp_path, cdnow_raw)
    files = [str(root / "history.parquet"), str(root / "day_1997-03-01.parquet")]
    (tmp_path / "reference.json").write_text(json.dumps(reference.to_dict()))
    out, state = tmp_path / "f.parquet", tmp_path / "state"
    saved = tmp_path / "state_saved"
    import shutil

    shutil.copytree(state, saved)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start():
        shutil.rmtree(state)
        shutil.copytree(saved, state)
        out.unlink(missing_ok=True)
        child = subprocess.Popen([sys.executable, "-c", KILLED, ",".join(files), str(out), str(state),
                                  str(tmp_path / "reference.json")], env=env, stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "started"           # imports done: the run itself begins
        return child, time.perf_counter()

    child, began = start()
    assert child.wait() == 0
    took = time.perf_counter() - began                                 # how long an unkilled run takes
    modes = set()
    for share in (0.0, 0.2, 0.4, 0.55, 0.65, 0.72, 0.78, 0.84, 0.88):  # kill -9 at moments across it
        child, began = start()
        time.sleep(max(0.0, share * took - (time.perf_counter() - began)))
        child.send_signal(signal.SIGKILL)
        child.wait()
        done = daily_features(files, "1997-03-01", out, reference, state, CDNOW_COLUMNS)
        modes.add(done.mode)
        assert_equals_a_full_rebuild(out, files, "1997-03-01", reference, CDNOW_COLUMNS)
        again = daily_features(files, "1997-03-01", out, reference, state, CDNOW_COLUMNS)
        assert again.mode == "incremental"                            # the state it left is usable
    assert "incremental" in modes
    leftovers = [p.name for p in state.iterdir() if p.name != "CURRENT"]
    assert len(leftovers) == 1, leftovers                              # killed runs' files are cleaned


def test_a_weekly_reference_is_refused(cdnow_raw, tmp_path):
    root, reference = small_day(tmp_path, cdnow_raw)
    with pytest.raises(ValueError, match="weekly"):
        daily_features([root / "history.parquet"], "1997-02-28", tmp_path / "w.parquet",
                       dataclasses.replace(reference, freq="W"), tmp_path / "state", CDNOW_COLUMNS)
