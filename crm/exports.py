"""Batch outputs for marketers: every customer's scores, and the ranked win-back list."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pandas as pd

from features.output import atomic_path
from models.policy.winback import LIST_COLUMNS, winback_list
from models.scorer import WinbackScorer

#: Sheet names of the XLSX outputs.
SCORES_SHEET = "scores"
LIST_SHEET = {"en": "winback", "zh-TW": "挽回名單"}

#: Columns read back to their English names, whatever language the headers are in.
_CANONICAL = {zh: en for en, zh in LIST_COLUMNS.values()}
_MONEY = ("value_at_risk", "clv_12m", "expected_order_value")
_MAX_WIDTH = 60


def ranked_list(scorer: WinbackScorer, features: pd.DataFrame, as_of: pd.Timestamp, top: int,
                segments: list[str] | None = None, tiers: list[str] | None = None,
                min_value: float = 0.0, lang: str = "en") -> pd.DataFrame:
    """Score everyone, keep the ``top`` by value at risk after filters, explain only those.

    When no customer passes the filters the list is empty, with its headers.
    """
    scores = scorer.score(features, as_of, reasons=False)
    chosen = winback_list(scores, top, segments, tiers, min_value)["customer_id"]
    if chosen.empty:
        return winback_list(scores, top, segments, tiers, min_value, lang)
    subset = features[features["customer_id"].isin(set(chosen))]
    explained = scorer.score(subset, as_of, reasons=True).set_index("customer_id")
    scores = scores.set_index("customer_id")
    scores.loc[explained.index, "reasons"] = explained["reasons"]
    scores.loc[explained.index, "reasons_zh_tw"] = explained["reasons_zh_tw"]
    return winback_list(scores.reset_index(), top, segments, tiers, min_value, lang)


def default_currency(lang: str) -> str:
    """The currency symbol money is shown with when none is set: NT$ in zh-TW, else $."""
    return "NT$" if lang == "zh-TW" else "$"


def write_table(frame: pd.DataFrame, out: str | Path, *, sheet: str = SCORES_SHEET,
                currency: str | None = None, lang: str = "en") -> Path:
    """Write .parquet, .csv or .xlsx atomically, readable by the owner's group as umask allows.

    * CSV is UTF-8 with a BOM, so Excel reads Chinese. Ids stay plain text in the file
      (``00123``); Excel's double-click import still reads them as numbers and drops leading
      zeros, which no plain CSV can prevent without writing ``="00123"`` that breaks every
      other reader. For Excel, write ``.xlsx``.
    * XLSX has one sheet named ``sheet``, ids as text cells (leading zeros kept), probabilities
      (``churn_probability``, ``p_*``) as percentages, money (``value_at_risk``, ``clv_12m``,
      ``expected_order_value``) with ``currency`` (default :func:`default_currency` of
      ``lang``), fitted column widths, a frozen header row and an auto-filter on it.

    The file gets mode 0666 minus the umask, like any file a program creates, not the 0600 of
    the temporary file it is written through.
    """
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
            _write_xlsx(_listless(frame), tmp, sheet, currency or default_currency(lang))
        os.chmod(tmp, 0o666 & ~current_umask())
    return out


def _write_xlsx(frame: pd.DataFrame, path: Path, sheet: str, currency: str) -> None:
    from openpyxl.utils import get_column_letter

    frame = frame.copy()
    ids = [c for c in frame.columns if _is_id(c)]
    for col in ids:
        frame[col] = frame[col].map(lambda v: v if v is None or v != v else str(v))
    for col in frame.columns:                      # Excel has no time zones: local wall time
        if isinstance(frame[col].dtype, pd.DatetimeTZDtype):
            frame[col] = frame[col].dt.tz_localize(None)
    formats = {col: "@" for col in ids}
    formats.update({col: "0.0%" for col in frame.columns if _is_probability(col)})
    money = '"' + currency.replace('"', "") + '"#,##0.00'
    formats.update({col: money for col in frame.columns if _CANONICAL.get(col, col) in _MONEY})
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        frame.to_excel(writer, sheet_name=sheet, index=False)
        ws = writer.sheets[sheet]
        for i, col in enumerate(frame.columns, start=1):
            letter = get_column_letter(i)
            if col in formats:
                for (cell,) in ws.iter_rows(min_row=2, min_col=i, max_col=i):
                    cell.number_format = formats[col]
            texts = [str(col), *(_shown(v, formats.get(col)) for v in frame[col])]
            ws.column_dimensions[letter].width = min(max(map(_display_width, texts)) + 2, _MAX_WIDTH)
        ws.freeze_panes = "A2"
        ws.auto_filter.ref = f"A1:{get_column_letter(max(len(frame.columns), 1))}{len(frame) + 1}"


def _is_id(col) -> bool:
    name = str(_CANONICAL.get(col, col))
    return name == "id" or name.endswith("_id")


def _is_probability(col) -> bool:
    name = str(_CANONICAL.get(col, col))
    return name in ("churn_probability", "p_alive") or name.startswith("p_")


def _shown(value, number_format: str | None) -> str:
    """Roughly the text Excel shows for a cell, to size its column."""
    if value is None or (not isinstance(value, (list, str)) and pd.isna(value)):
        return ""
    if number_format == "0.0%":
        return f"{value:.1%}"
    if number_format and number_format.endswith("#,##0.00"):
        return number_format.split('"')[1] + f"{value:,.2f}"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _display_width(text: str) -> int:
    """Columns the text takes: wide (CJK) characters count two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)           # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def _listless(frame: pd.DataFrame) -> pd.DataFrame:
    """List columns (reasons) joined into text for flat formats."""
    out = frame.copy()
    for col in out.columns:
        if out[col].map(lambda v: isinstance(v, list)).any():
            out[col] = out[col].map(lambda v: "; ".join(v) if isinstance(v, list) else v)
    return out
