"""Check our BG/NBD summary against ``lifetimes`` on the same transactions."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from features.build import cutoff_literal, parse_cutoff
from features.summary import COLUMNS
from features.transactions import TransactionLog


def lifetimes_parity(log: TransactionLog, features: pd.DataFrame, cutoff: dt.date | str,
                     freq: str) -> dict[str, float]:
    """Largest absolute difference per summary column between ``features`` and lifetimes.

    Runs ``summary_data_from_transaction_data`` on the log's transactions up to the cutoff
    (lifetimes itself would also read later purchases of the cutoff's week at ``W``). Returns
    ``inf`` for every column if the customer sets differ. Meant for logs that fit in memory.
    """
    from lifetimes.utils import summary_data_from_transaction_data

    c = cutoff_literal(cutoff)
    seen = log.con.execute(
        f"SELECT customer_id, ts, amount FROM transactions WHERE ts < {c} + INTERVAL 1 DAY").df()
    ref = summary_data_from_transaction_data(
        seen, "customer_id", "ts", monetary_value_col="amount",
        observation_period_end=parse_cutoff(cutoff), freq=freq).sort_index()
    ours = features.set_index("customer_id").sort_index()
    if not ref.index.equals(ours.index):
        return {col: float("inf") for col in COLUMNS}
    return {col: float((ref[col] - ours[col]).abs().max()) if len(ref) else 0.0 for col in COLUMNS}
