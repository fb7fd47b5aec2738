"""Edges a tester found (#20): implausible and far-future cutoffs, unmapped optional columns,
a directory given as a log, an output folder that cannot be written."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from features import ColumnMap, TransactionLog, read_transactions
from features.build import parse_cutoff
from features.job import write_features
from features.output import atomic_path
from features.transactions import TransactionDataError
from training.cli import app

ROWS = "customer_id,timestamp,amount,order_id\na,2020-01-01,5,o1\na,2020-02-01,6,o2\n"


@pytest.mark.parametrize("day", ["2100-01-01", "1969-12-31", "2999-05-05"])
def test_an_implausible_cutoff_is_refused_like_an_implausible_date(day):
    with pytest.raises(ValueError, match="not a plausible day"):
        parse_cutoff(day)


def test_a_cutoff_long_after_the_log_is_an_error_naming_the_last_day(tmp_path):
    log = TransactionLog.from_frame(pd.DataFrame({"customer_id": ["a", "a"], "amount": [1.0, 2.0],
                                                  "timestamp": pd.to_datetime(["2020-01-01", "2020-02-01"])}),
                                    ColumnMap())
    with pytest.raises(ValueError, match=r"days after the last transaction .* \(2020-02-01\)"):
        write_features(log, "2029-03-01", tmp_path / "x.parquet")
    assert not (tmp_path / "x.parquet").exists()
    assert write_features(log, "2020-12-31", tmp_path / "y.parquet").customers == 1     # within a year: fine


def test_an_unmapped_order_id_column_gets_a_hint(tmp_path):
    path = tmp_path / "o.csv"
    path.write_text(ROWS)
    assert read_transactions(path).report.hints == (
        "the log has a column 'order_id' that is not used; map it with --order-id-col order_id",)
    assert read_transactions(path, ColumnMap(order_id="order_id")).report.hints == ()
    done = CliRunner().invoke(app, ["features", "-t", str(path), "--cutoff", "2020-03-01",
                                    "--out", str(tmp_path / "x.parquet")])
    assert done.exit_code == 0 and "--order-id-col order_id" in " ".join(done.output.split())


def test_a_directory_given_as_a_log_says_so(tmp_path):
    with pytest.raises(TransactionDataError, match="is a directory"):
        read_transactions(tmp_path)
    done = CliRunner().invoke(app, ["features", "-t", str(tmp_path), "--cutoff", "2020-03-01",
                                    "--out", str(tmp_path / "x.parquet")])
    assert done.exit_code == 2 and "is a directory" in done.output and "Traceback" not in done.output


def test_an_output_folder_that_cannot_be_written_is_named():
    folder = "/proc/1"                  # exists, and no one (not even root) can create a file in it
    with pytest.raises(ValueError, match=f"cannot write x.parquet in {folder}"):
        with atomic_path(f"{folder}/x.parquet"):
            pass
