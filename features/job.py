"""The feature job: a transaction log in, one Parquet (or CSV) row per customer out."""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from features.attributes import categorize
from features.build import parse_cutoff, prepare
from features.output import atomic_path, check_output_path
from features.reference import FeatureReference
from features.settings import FeatureSettings, Freq
from features.side import SideData
from features.transactions import TransactionLog, one_row, sql_escape


@dataclass(frozen=True)
class FeatureJobSummary:
    """What the job wrote: counts a person checks at a glance."""

    out: Path
    customers: int
    segments: dict[str, int] = field(default_factory=dict)
    tiers: dict[str, int] = field(default_factory=dict)
    reference_id: str = ""


def write_features(log: TransactionLog, cutoff: dt.date | str, out: str | Path, freq: Freq | None = None,
                   settings: FeatureSettings | None = None,
                   reference: FeatureReference | None = None,
                   side: SideData | None = None) -> FeatureJobSummary:
    """Build the feature table and write it to ``out`` (``.parquet`` or ``.csv``) atomically.

    DuckDB streams the result straight to the file, so the table never has to fit in memory.
    The output path is checked before any work; a cutoff before every purchase is an error,
    not an empty table. A Parquet table records its cutoff, ``freq`` and the feature reference it was built with
    (a model's, when ``reference`` is given), which the service checks against its model.
    ``side`` (customer attributes, events) adds the reference's ``attr_*``, ``events_*`` and
    ``days_since_*`` columns (the recorded reference names them and their categories).
    """
    out = check_output_path(out)
    day = parse_cutoff(cutoff).date().isoformat()
    log, query, used = prepare(log, cutoff, freq, settings, reference, side)
    if not one_row(log.con, "SELECT count(*) FROM daily")[0]:
        raise no_customers(log, day)
    check_cutoff_within(log, day)
    return copy_table(log.con, query, out, day, used)


#: How far past the log's last day a feature table's cutoff may lie: beyond it every customer
#: would look lapsed for want of data, not for want of purchases.
MAX_DAYS_PAST_LOG = 366


def check_cutoff_within(log: TransactionLog, day: str, max_days: int = MAX_DAYS_PAST_LOG) -> None:
    """Refuse a cutoff more than ``max_days`` after the log's last day (a typo'd year, a stale export)."""
    last = log.report.last_timestamp
    if last is not None and (pd.Timestamp(day) - last.normalize()).days > max_days:
        raise ValueError(f"the cutoff {day} is {(pd.Timestamp(day) - last.normalize()).days:,} days after the last "
                         f"transaction in {log.source} ({last:%Y-%m-%d}); more than {max_days} days past the log, "
                         "every customer would look lapsed. Choose a cutoff within the log, or load the newer data")


def no_customers(log: TransactionLog, day: str) -> ValueError:
    """The error for a cutoff before every purchase: an empty table would hide the mistake."""
    first = log.report.first_timestamp
    starts = f"; the log starts on {first:%Y-%m-%d}" if first is not None else ""
    return ValueError(f"no purchases on or before the cutoff {day} in {log.source}{starts}, "
                      "so there is no customer to write; choose a later --cutoff")


def table_metadata(day: str, used: FeatureReference) -> dict[str, str]:
    """What a feature table records of how it was built (:func:`feature_table_metadata` reads it)."""
    return {"winback.cutoff": day, "winback.freq": used.freq, "winback.reference_id": used.fingerprint(),
            "winback.reference": json.dumps(used.to_dict(), ensure_ascii=False)}


def copy_table(con: duckdb.DuckDBPyConnection, query: str, out: Path, day: str,
               used: FeatureReference) -> FeatureJobSummary:
    """Write the rows of ``query`` to ``out`` (``.parquet`` with :func:`table_metadata`, or ``.csv``
    with a BOM) atomically, and count its segments and tiers from the written file."""
    if out.suffix.lower() == ".parquet":
        pairs = ", ".join(f"'{k}': '{sql_escape(v)}'" for k, v in table_metadata(day, used).items())
        options, reader = f"(FORMAT parquet, KV_METADATA {{{pairs}}})", "read_parquet"
    else:
        options, reader = "(FORMAT csv, HEADER true)", "read_csv"
    with atomic_path(out) as tmp:
        written = f"{reader}('{sql_escape(str(tmp))}')"
        con.execute(f"COPY ({query}) TO '{sql_escape(str(tmp))}' {options}")
        counts = con.execute(
            f"SELECT 'segment', segment, count(*) FROM {written} GROUP BY ALL UNION ALL "
            f"SELECT 'tier', tier, count(*) FROM {written} GROUP BY ALL ORDER BY 3 DESC").fetchall()
        if reader == "read_csv":
            with_bom(tmp)
    segments = {name: n for kind, name, n in counts if kind == "segment"}
    tiers = {name: n for kind, name, n in counts if kind == "tier"}
    return FeatureJobSummary(out, sum(segments.values()), segments, tiers, used.fingerprint())


def with_bom(path: Path) -> None:
    """Put a UTF-8 byte-order mark before a CSV file's text, so Excel reads its zh-TW labels as
    UTF-8 (streamed through a sibling file: the table need not fit in memory)."""
    import shutil

    staged = path.with_name(path.name + ".bom")
    try:
        with open(path, "rb") as src, open(staged, "wb") as dst:
            dst.write(b"\xef\xbb\xbf")
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


def feature_table_metadata(path: str | Path) -> dict[str, str]:
    """What :func:`write_features` recorded in a Parquet table: ``winback.cutoff``,
    ``winback.freq`` and, since feature references exist, ``winback.reference_id``."""
    meta = pq.read_schema(path).metadata or {}
    found = {k.decode(): v.decode() for k, v in meta.items() if k.startswith(b"winback.")}
    if "winback.cutoff" not in found:
        raise ValueError(f"{path}: not a feature table written by `winback features` (no cutoff recorded)")
    return found


def read_feature_table(path: str | Path) -> tuple[pd.DataFrame, pd.Timestamp, str]:
    """A feature table written by :func:`write_features` as Parquet, with its cutoff and freq;
    text attributes as categoricals with the recorded reference's categories."""
    meta = feature_table_metadata(path)
    table = pq.read_table(path).to_pandas(date_as_object=False)
    if "winback.reference" in meta:
        used = FeatureReference.from_dict(json.loads(meta["winback.reference"]))
        table = categorize(table, used) if used.attributes else table
    return table, pd.Timestamp(meta["winback.cutoff"]), meta.get("winback.freq", "D")
