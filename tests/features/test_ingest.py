"""Reading logs: every bad input gets a clear error naming file, row and column; policies hold."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features import ColumnMap, IngestPolicy, TransactionDataError, build_features, read_transactions


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


GOOD = "customer_id,timestamp,amount\nA,2024-01-01,10\nB,2024-01-02,20\n"


@pytest.mark.parametrize("body, column, row, found", [
    ("A,2024-01-01,10\nB,2024-01-02,abc\n", "amount", 2, "'abc'"),
    ("A,2024-01-01,10\nB,2024-13-45,5\n", "timestamp", 2, "'2024-13-45'"),
    ("A,2024-01-01,10\n ,2024-01-02,3\n", "customer_id", 2, "an empty value"),
    ("A,2024-01-01,10\nB,2024-01-02,\n", "amount", 2, "an empty value"),
    ("A,2024-01-01,10\nB,2024-01-02,5\nC,2024-01-03,inf\n", "amount", 3, "'inf'"),
])
def test_bad_values_name_file_row_and_column(tmp_path, body, column, row, found):
    path = write_csv(tmp_path / "log.csv", "customer_id,timestamp,amount\n" + body)
    with pytest.raises(TransactionDataError) as info:
        read_transactions(path)
    err = info.value
    assert (err.source, err.row, err.column) == (str(path), row, column)
    message = str(err)
    assert f"{path}: row {row} (line {row + 1}), column '{column}'" in message and found in message


def test_missing_column_is_named_with_the_columns_there(tmp_path):
    path = write_csv(tmp_path / "log.csv", GOOD)
    with pytest.raises(TransactionDataError, match=r"column 'price' \(the amount\) is missing; "
                                                   r"the columns are: customer_id, timestamp, amount"):
        read_transactions(path, ColumnMap(amount="price"))


def test_glob_names_the_file_that_is_bad(tmp_path):
    write_csv(tmp_path / "a.csv", GOOD)
    bad = write_csv(tmp_path / "b.csv", "customer_id,timestamp,amount\nC,2024-01-01,1\nD,nope,2\n")
    with pytest.raises(TransactionDataError) as info:
        read_transactions(str(tmp_path / "*.csv"))
    assert info.value.source == str(bad) and info.value.row == 2


def test_parquet_rows_are_numbered_too(tmp_path):
    path = tmp_path / "log.parquet"
    pd.DataFrame({"customer_id": ["A", "B", "C"], "timestamp": ["2024-01-01", "2024-01-02", "x"],
                  "amount": [1.0, 2.0, 3.0]}).to_parquet(path)
    with pytest.raises(TransactionDataError, match=r"row 3, column 'timestamp'"):
        read_transactions(path)


def test_dataframe_rows_are_numbered_from_one():
    frame = pd.DataFrame({"customer_id": ["A", None], "timestamp": pd.to_datetime(["2024-01-01"] * 2),
                          "amount": [1.0, 2.0]})
    with pytest.raises(TransactionDataError, match=r"row 2, column 'customer_id'"):
        build_features(frame, "2024-01-31")


def test_unmatched_glob_and_unknown_extension(tmp_path):
    with pytest.raises(TransactionDataError, match="no file matches"):
        read_transactions(str(tmp_path / "*.csv"))
    with pytest.raises(TransactionDataError, match="cannot tell the format"):
        read_transactions(write_csv(tmp_path / "log.json", "{}"))


def test_refunds_are_excluded_by_default_or_rejected(tmp_path):
    path = write_csv(tmp_path / "log.csv", GOOD + "A,2024-01-05,-10\n")
    log = read_transactions(path)
    assert log.report.refunds_excluded == 1 and log.report.rows_used == 2
    assert build_features(log, "2024-01-31").set_index("customer_id").loc["A", "orders"] == 1
    with pytest.raises(TransactionDataError, match=r"row 3 \(line 4\), column 'amount': expected no refunds"):
        read_transactions(path, policy=IngestPolicy(refunds="error"))


def test_zero_amounts_are_purchases_unless_excluded(tmp_path):
    path = write_csv(tmp_path / "log.csv", GOOD + "A,2024-01-05,0\n")
    kept = build_features(read_transactions(path), "2024-01-31").set_index("customer_id")
    assert kept.loc["A", "frequency"] == 1 and kept.loc["A", "monetary_value"] == 0
    log = read_transactions(path, policy=IngestPolicy(zero_amounts="exclude"))
    assert log.report.zero_amounts_excluded == 1
    assert build_features(log, "2024-01-31").set_index("customer_id").loc["A", "frequency"] == 0


def test_exact_duplicates_drop_only_with_an_order_id(tmp_path):
    body = "customer_id,timestamp,amount,order_id\nA,2024-01-01,10,o1\nA,2024-01-01,10,o1\nA,2024-01-09,5,o2\n"
    path = write_csv(tmp_path / "log.csv", body)
    with_id = read_transactions(path, ColumnMap(order_id="order_id"))
    assert with_id.report.duplicates_dropped == 1
    assert build_features(with_id, "2024-01-31").loc[0, "total_spend"] == 15
    without_id = read_transactions(path)                      # identical lines may be two purchases
    assert without_id.report.duplicates_dropped == 0
    assert build_features(without_id, "2024-01-31").loc[0, "total_spend"] == 25
    forced = read_transactions(path, policy=IngestPolicy(duplicates="drop"))
    assert forced.report.duplicates_dropped == 1


@pytest.mark.parametrize("ids, dropped, orders", [
    (["o1"], 0, 1),
    (["o1", "o2"], 0, 2),
    (["o1", "o2", "o3"], 0, 3),                   # three rows a day: checked exactly
    (["o1", "o2", "o3", "o4"], 0, 4),
    (["o1", "o1"], 1, 1),                         # two rows, one id: the same order twice
    (["o1", "o2", "o1"], 1, 2),
    (["o1", "o2", "o3", "o2", "o3"], 2, 3),
])
def test_order_ids_on_one_customer_day_decide_duplicates(tmp_path, ids, dropped, orders):
    rows = "".join(f"A,2024-01-01 09:00:00,10,{oid}\n" for oid in ids)
    body = "customer_id,timestamp,amount,order_id\n" + rows + "B,2024-01-02,5,o1\n"
    log = read_transactions(write_csv(tmp_path / "log.csv", body), ColumnMap(order_id="order_id"))
    assert log.report.duplicates_dropped == dropped
    row = build_features(log, "2024-01-31").set_index("customer_id").loc["A"]
    assert (row["orders"], row["total_spend"]) == (orders, 10 * orders)


def test_an_order_over_several_rows_counts_once(tmp_path):
    body = ("customer_id,timestamp,amount,order_id\nA,2024-01-01 09:00,10,o1\n"
            "A,2024-01-01 09:00,4,o1\nA,2024-01-01 10:00,1,o2\n")
    log = read_transactions(write_csv(tmp_path / "log.csv", body), ColumnMap(order_id="order_id"))
    assert log.report.duplicates_dropped == 0
    row = build_features(log, "2024-01-31").loc[0]
    assert (row["orders"], row["total_spend"]) == (2, 15)


def test_time_zones_set_the_day_a_purchase_falls_on(tmp_path):
    # 2024-01-31 20:00 UTC is 2024-02-01 04:00 in Taipei: after a Jan 31 cutoff there
    path = write_csv(tmp_path / "log.csv", "customer_id,timestamp,amount\nA,2024-01-10T00:00:00Z,1\n"
                                            "A,2024-01-31T20:00:00+00:00,2\nA,2024-01-20 09:00,4\n")
    utc = build_features(read_transactions(path), "2024-01-31").loc[0]
    taipei = build_features(read_transactions(path, policy=IngestPolicy(timezone="Asia/Taipei")),
                            "2024-01-31").loc[0]
    assert utc["total_spend"] == 7 and taipei["total_spend"] == 5
    with pytest.raises(TransactionDataError, match="unknown time zone"):
        read_transactions(path, policy=IngestPolicy(timezone="Mars/Olympus"))


def test_date_format_reads_compact_dates(tmp_path):
    path = write_csv(tmp_path / "log.csv", "customer_id,timestamp,amount\nA,19970101,1\nA,19970110,2\n")
    with pytest.raises(TransactionDataError, match="--date-format"):
        read_transactions(path)
    f = build_features(read_transactions(path, policy=IngestPolicy(date_format="%Y%m%d")), "1997-01-31")
    assert f.loc[0, "recency"] == 9


def test_optional_columns_are_mapped(tmp_path):
    path = write_csv(tmp_path / "log.csv", "cid,when,paid,oid,qty,cat,ch\nA,2024-01-01,10,o1,2,tea,web\n"
                                            "A,2024-01-01,5,o1,1,tea,web\nA,2024-02-01,5,o2,x,tea,app\n")
    columns = ColumnMap(customer_id="cid", timestamp="when", amount="paid", order_id="oid",
                        quantity="qty", category="cat", channel="ch")
    with pytest.raises(TransactionDataError, match=r"row 3 \(line 4\), column 'qty': expected a number"):
        read_transactions(path, columns)
