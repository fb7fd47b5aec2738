"""The feature job: a transaction log in, one Parquet (or CSV) row per customer out."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from features.build import parse_cutoff, prepare
from features.output import atomic_path
from features.reference import FeatureReference
from features.settings import FeatureSettings, Freq
from features.transactions import TransactionLog, sql_escape


@dataclass(frozen=True)
class FeatureJobSummary:
    """What the job wrote: counts a person checks at a glance."""

    out: Path
    customers: int
    segments: dict[str, int] = field(default_factory=dict)
    tiers: dict[str, int] = field(default_factory=dict)


def write_features(log: TransactionLog, cutoff: dt.date | str, out: str | Path, freq: Freq = "D",
                   settings: FeatureSettings = FeatureSettings(),
                   reference: FeatureReference | None = None) -> FeatureJobSummary:
    """Build the feature table and write it to ``out`` (``.parquet`` or ``.csv``) atomically.

    DuckDB streams the result straight to the file, so the table never has to fit in memory.
    """
    out = Path(out)
    day = parse_cutoff(cutoff).date().isoformat()
    writers = {".parquet": (f"(FORMAT parquet, KV_METADATA {{'winback.cutoff': '{day}', "
                            f"'winback.freq': '{freq}'}})", "read_parquet"),
               ".csv": ("(FORMAT csv, HEADER true)", "read_csv")}
    if out.suffix.lower() not in writers:
        raise ValueError(f"--out must end in .parquet or .csv, got {out.name!r}")
    options, reader = writers[out.suffix.lower()]
    log, query, _ = prepare(log, cutoff, freq, settings, reference)
    with atomic_path(out) as tmp:
        written = f"{reader}('{sql_escape(str(tmp))}')"
        log.con.execute(f"COPY ({query}) TO '{sql_escape(str(tmp))}' {options}")
        counts = log.con.execute(
            f"SELECT 'segment', segment, count(*) FROM {written} GROUP BY ALL UNION ALL "
            f"SELECT 'tier', tier, count(*) FROM {written} GROUP BY ALL ORDER BY 3 DESC").fetchall()
    segments = {name: n for kind, name, n in counts if kind == "segment"}
    tiers = {name: n for kind, name, n in counts if kind == "tier"}
    return FeatureJobSummary(out, sum(segments.values()), segments, tiers)


def read_feature_table(path: str | Path) -> tuple[pd.DataFrame, pd.Timestamp, str]:
    """A feature table written by :func:`write_features` as Parquet, with its cutoff and freq."""
    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    if b"winback.cutoff" not in meta:
        raise ValueError(f"{path}: not a feature table written by `winback features` (no cutoff recorded)")
    return (table.to_pandas(date_as_object=False), pd.Timestamp(meta[b"winback.cutoff"].decode()),
            meta.get(b"winback.freq", b"D").decode())
