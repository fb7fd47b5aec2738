"""Batch outputs for marketers: every customer's scores, and the ranked win-back list."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.output import atomic_path
from models.policy import winback_list
from models.scorer import WinbackScorer


def ranked_list(scorer: WinbackScorer, features: pd.DataFrame, as_of: pd.Timestamp, top: int,
                segments: list[str] | None = None, tiers: list[str] | None = None,
                min_value: float = 0.0, lang: str = "en") -> pd.DataFrame:
    """Score everyone, keep the ``top`` by value at risk after filters, explain only those."""
    scores = scorer.score(features, as_of, reasons=False)
    chosen = winback_list(scores, top, segments, tiers, min_value)["customer_id"]
    subset = features[features["customer_id"].isin(set(chosen))]
    explained = scorer.score(subset, as_of, reasons=True).set_index("customer_id")
    scores = scores.set_index("customer_id")
    scores.loc[explained.index, "reasons"] = explained["reasons"]
    scores.loc[explained.index, "reasons_zh_tw"] = explained["reasons_zh_tw"]
    return winback_list(scores.reset_index(), top, segments, tiers, min_value, lang)


def write_table(frame: pd.DataFrame, out: str | Path) -> Path:
    """Write .parquet, .csv (UTF-8 with BOM, so Excel reads Chinese) or .xlsx, atomically."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".csv", ".xlsx"):
        raise ValueError(f"--out must end in .parquet, .csv or .xlsx, got {out.name!r}")
    with atomic_path(out) as tmp:
        if suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        elif suffix == ".csv":
            _listless(frame).to_csv(tmp, index=False, encoding="utf-8-sig")
        else:
            _listless(frame).to_excel(tmp, index=False, engine="openpyxl")
    return out


def _listless(frame: pd.DataFrame) -> pd.DataFrame:
    """List columns (reasons) joined into text for flat formats."""
    out = frame.copy()
    for col in out.columns:
        if out[col].map(lambda v: isinstance(v, list)).any():
            out[col] = out[col].map(lambda v: "; ".join(v) if isinstance(v, list) else v)
    return out
