"""How the feature job runs: DuckDB settings reach the connection, and the shortcuts taken for
speed (per-day totals kept per log, duplicates checked by order id) never change a value."""

from __future__ import annotations

import pandas as pd
import pytest

from features import ColumnMap, build_features, read_transactions
from features.transactions import TransactionLog


def _setting(log: TransactionLog, name: str):
    return log.con.execute(f"SELECT current_setting('{name}')").fetchone()[0]


def test_threads_and_memory_limit_reach_duckdb(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("customer_id,timestamp,amount\nA,2024-01-01,10\n")
    log = read_transactions(path, memory_limit="300MB", threads=1)
    assert _setting(log, "threads") == 1
    assert _setting(log, "memory_limit") in ("286.1 MiB", "300.0 MB")
    frame = TransactionLog.from_frame(pd.DataFrame({"customer_id": ["A"], "timestamp": ["2024-01-01"],
                                                    "amount": [1.0]}), threads=1)
    assert _setting(frame, "threads") == 1


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_bad_threads_are_refused(tmp_path, threads):
    path = tmp_path / "log.csv"
    path.write_text("customer_id,timestamp,amount\nA,2024-01-01,10\n")
    with pytest.raises(ValueError, match="threads must be a whole number"):
        read_transactions(path, threads=threads)


def test_bad_memory_limit_is_refused(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("customer_id,timestamp,amount\nA,2024-01-01,10\n")
    with pytest.raises(ValueError, match="memory_limit must be a size"):
        read_transactions(path, memory_limit="lots")


def _log_frame(order_ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": ["A", "A", "A", "B", "B", "A"],
        "timestamp": ["2024-01-01 09:00", "2024-01-01 10:00", "2024-01-05", "2024-01-02",
                      "2024-01-20", "2024-02-01"],
        "amount": [10.0, 5.0, 7.5, 3.0, -3.0, 2.0],
        "order_id": order_ids,
        "category": ["tea", "coffee", "tea", "tea", "tea", "tea"],
    })


def test_multi_line_orders_take_the_exact_path_and_agree(tmp_path):
    # ids unique per customer and day: the fast path; one order of two lines: the DISTINCT path
    columns = ColumnMap(order_id="order_id", category="category")
    fast = read_transactions(_write(tmp_path / "a.csv", _log_frame(["o1", "o2", "o3", "o4", "r4", "o5"])), columns)
    exact = read_transactions(_write(tmp_path / "b.csv", _log_frame(["o1", "o1", "o3", "o4", "r4", "o5"])), columns)
    a, b = build_features(fast, "2024-01-31"), build_features(exact, "2024-01-31")
    assert a.set_index("customer_id").loc["A", "orders"] == 3 and b.set_index("customer_id").loc["A", "orders"] == 2
    pd.testing.assert_frame_equal(a.drop(columns=["orders", "avg_order_value", "orders_30d", "orders_90d",
                                                  "orders_180d", "orders_365d"]),
                                  b.drop(columns=["orders", "avg_order_value", "orders_30d", "orders_90d",
                                                  "orders_180d", "orders_365d"]), check_exact=True)
    assert fast.report.duplicates_dropped == exact.report.duplicates_dropped == 0


def test_one_log_at_many_cutoffs_equals_a_fresh_log_each_time(tmp_path):
    path = _write(tmp_path / "log.csv", _log_frame(["o1", "o2", "o3", "o4", "r4", "o5"]))
    columns = ColumnMap(order_id="order_id", category="category")
    shared = read_transactions(path, columns)
    for cutoff in ("2024-02-29", "2024-01-03", "2024-01-31", "2024-01-05"):
        pd.testing.assert_frame_equal(build_features(shared, cutoff),
                                      build_features(read_transactions(path, columns), cutoff),
                                      check_exact=True)


def _write(path, frame: pd.DataFrame):
    frame.to_csv(path, index=False)
    return path


def test_category_intervals_from_the_histogram_equal_the_median():
    import duckdb
    import numpy as np

    from features import replenishment

    con, rng = duckdb.connect(), np.random.default_rng(7)
    for _ in range(25):
        n = int(rng.integers(1, 80))
        days = pd.DataFrame({"customer_id": rng.choice(list("abcde"), n),
                             "category": rng.choice(["x", "y", "z"], n),
                             "day": (pd.Timestamp("2024-01-01")
                                     + pd.to_timedelta(rng.integers(0, 200, n), "D")).date}).drop_duplicates()
        con.register("days", days)
        con.execute(f"CREATE OR REPLACE TABLE cat_days AS SELECT *, {replenishment.GAP} AS gap FROM days")
        median = dict(con.execute("SELECT category, median(gap) FROM cat_days "
                                  "WHERE gap IS NOT NULL GROUP BY category").fetchall())
        assert dict(con.execute(replenishment.category_intervals_sql()).fetchall()) == median
