"""Numbers, money, percentages and dates in the reader's locale (English or Traditional Chinese).

One home for display formatting: the dashboard pages, the exports' headers and the reports
(:mod:`crm.reports`) all format through here, and only at display: the values
themselves stay the snapshot's, so a number on screen is the API's number, rounded.

Both locales group thousands with a comma and use a dot for decimals (Taiwan writes numbers as
English does); they differ in dates (``2026/01/31`` vs ``Jan 31, 2026``), the currency sign
(``NT$`` by default for zh-TW) and words such as "customers" that the templates supply.
"""

from __future__ import annotations

import datetime as dt
import math

#: The languages the dashboard speaks.
LANGUAGES = ("en", "zh-TW")

#: The currency sign each language uses unless the service is configured otherwise.
DEFAULT_CURRENCY = {"en": "$", "zh-TW": "NT$"}

_MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _check_lang(lang: str) -> str:
    if lang not in LANGUAGES:
        raise ValueError(f"lang must be one of {', '.join(LANGUAGES)}, got {lang!r}")
    return lang


def _missing(x: object) -> bool:
    """True for None and NaN: both show as "–"."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def format_number(x: float | int | None, lang: str, digits: int = 0) -> str:
    """``1234567.8`` -> ``1,234,568`` (digits=0) or ``1,234,567.80`` (digits=2); "–" if missing."""
    _check_lang(lang)
    if _missing(x):
        return "–"
    return f"{x:,.{digits}f}"


def format_money(x: float | int | None, lang: str, currency: str | None = None, digits: int = 0) -> str:
    """``1234.5`` -> ``NT$1,235`` (zh-TW) or ``$1,235`` (en); a negative amount as ``-NT$12``."""
    sign = DEFAULT_CURRENCY[_check_lang(lang)] if currency is None else currency
    if x is None or _missing(x):
        return "–"
    text = format_number(abs(x), lang, digits)
    return f"-{sign}{text}" if x < 0 and text.strip("0.,") else f"{sign}{text}"


def format_percent(x: float | None, lang: str, digits: int = 1) -> str:
    """A fraction as a percentage: ``0.1234`` -> ``12.3%`` (both locales write it so)."""
    _check_lang(lang)
    if x is None or _missing(x):
        return "–"
    return f"{x * 100:,.{digits}f}%"


def format_date(d: dt.date | dt.datetime | str | None, lang: str) -> str:
    """``2026-01-31`` -> ``2026/01/31`` (zh-TW) or ``Jan 31, 2026`` (en); ISO strings accepted."""
    _check_lang(lang)
    if d is None or (isinstance(d, float) and math.isnan(d)):
        return "–"
    day = (dt.date.fromisoformat(d[:10]) if isinstance(d, str)
           else d.date() if isinstance(d, dt.datetime) else d)          # datetime, pandas Timestamp
    if lang == "zh-TW":
        return f"{day.year}/{day.month:02d}/{day.day:02d}"
    return f"{_MONTHS_EN[day.month - 1]} {day.day}, {day.year}"


def format_month(d: dt.date | dt.datetime | str, lang: str) -> str:
    """A month: ``2026-01`` -> ``2026年1月`` (zh-TW) or ``Jan 2026`` (en)."""
    _check_lang(lang)
    if isinstance(d, str):
        d = dt.date.fromisoformat(d[:7] + "-01")
    if lang == "zh-TW":
        return f"{d.year}年{d.month}月"
    return f"{_MONTHS_EN[d.month - 1]} {d.year}"
