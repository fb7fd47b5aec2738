"""The `winback features` command: a whole file or none, and a clear exit status."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from features import build_features, read_transactions
from features.job import write_features
from features.output import atomic_path
from training.cli import app

runner = CliRunner()


def test_cdnow_job_writes_the_table_and_checks_parity(tmp_path):
    out = tmp_path / "features.parquet"
    result = runner.invoke(app, ["features", "--dataset", "cdnow", "--cutoff", "1997-09-30",
                                 "--freq", "W", "--out", str(out), "--check-lifetimes"])
    assert result.exit_code == 0, result.output
    assert "equal" in result.output and "23,570 customers" in result.output
    table = pd.read_parquet(out)
    assert len(table) == 23_570 and table["T"].max() == 39


def test_job_output_equals_build_features(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("customer_id,timestamp,amount,category\nA,2024-01-01,10,tea\nA,2024-02-01,5,tea\n"
                   "B,2024-01-15,7,coffee\n")
    out = tmp_path / "f.csv"
    result = runner.invoke(app, ["features", "-t", str(log), "--category-col", "category",
                                 "--cutoff", "2024-03-01", "--out", str(out)])
    assert result.exit_code == 0, result.output
    from features import ColumnMap

    expected = build_features(read_transactions(log, ColumnMap(category="category")), "2024-03-01")
    assert out.read_bytes().startswith(b"\xef\xbb\xbf")          # BOM: Excel reads the zh-TW labels
    written = pd.read_csv(out, encoding="utf-8-sig", dtype={"customer_id": str})
    assert list(written.columns) == list(expected.columns)
    pd.testing.assert_series_equal(written["total_spend"], expected["total_spend"])


@pytest.mark.parametrize("args, message", [
    (["--cutoff", "2024-02-30"], "cutoff must be a date"),
    (["--freq", "M"], "--freq must be one of D, W"),
    (["--amount-col", "price"], "column 'price' (the amount) is missing"),
    (["--refunds", "net"], "--refunds must be one of exclude, error"),
])
def test_user_mistakes_exit_2_with_a_message_and_no_file(tmp_path, args, message):
    log = tmp_path / "log.csv"
    log.write_text("customer_id,timestamp,amount\nA,2024-01-01,10\n")
    out = tmp_path / "f.parquet"
    result = runner.invoke(app, ["features", "-t", str(log), "--out", str(out), *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == [log]


def test_the_installed_command_prints_no_traceback(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("customer_id,timestamp,amount\nA,2024-01-01,ten\n")
    done = subprocess.run([sys.executable, "-m", "training.cli", "features", "-t", str(log),
                           "--out", str(tmp_path / "f.parquet")], capture_output=True, text=True)
    assert done.returncode == 2
    assert "row 1 (line 2), column 'amount'" in done.stderr and "Traceback" not in done.stderr


def test_a_failing_write_leaves_the_old_file_untouched(tmp_path):
    target = tmp_path / "f.parquet"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_bad_output_extension_is_refused_before_anything_is_written(cdnow, tmp_path):
    with pytest.raises(ValueError, match="must end in .parquet or .csv"):
        write_features(cdnow, "1997-09-30", tmp_path / "f.xlsx")
    assert not any(tmp_path.iterdir())
