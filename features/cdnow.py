"""The CDNOW transaction log that ships inside ``lifetimes``: our demo and reference data.

23,570 customers who first bought at CDNOW in Q1 1997, 69,659 purchases to 1998-06-30 (Fader,
Hardie & Lee 2005). Read with ``importlib.resources``: ``import lifetimes.datasets`` needs
``pkg_resources``.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pandas as pd

from features.settings import ColumnMap, IngestPolicy
from features.transactions import TransactionLog

CDNOW_COLUMNS = ColumnMap(customer_id="customer_id", timestamp="date", amount="dollar_value",
                          quantity="number_of_cds")


def cdnow_path() -> Path:
    """Where the bundled ``CDNOW_master.txt`` is on this machine."""
    return Path(str(importlib.resources.files("lifetimes") / "datasets" / "CDNOW_master.txt"))


def load_cdnow() -> pd.DataFrame:
    """The full CDNOW log as a DataFrame: customer_id (str, zero-padded), date, number_of_cds, dollar_value."""
    frame = pd.read_csv(
        cdnow_path(), sep=r"\s+", skiprows=1, header=None,
        names=["customer_id", "date", "number_of_cds", "dollar_value"],
        dtype={"customer_id": str, "date": str, "number_of_cds": "int64", "dollar_value": "float64"},
    )
    frame["date"] = pd.to_datetime(frame["date"], format="%Y%m%d")
    return frame


def cdnow_log(policy: IngestPolicy = IngestPolicy(), *, threads: int | None = None,
              memory_limit: str | None = None) -> TransactionLog:
    """The CDNOW log, validated and ready for :func:`features.build_features`."""
    return TransactionLog.from_frame(load_cdnow(), CDNOW_COLUMNS, policy, source=str(cdnow_path()),
                                     threads=threads, memory_limit=memory_limit)
