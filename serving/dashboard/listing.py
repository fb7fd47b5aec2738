"""The win-back list over a scored snapshot: filtered, sorted and paged on the server.

A :class:`ListIndex` is built once per :class:`serving.state.ScoredSnapshot` (labels as small
integer codes, one sort order per sortable column, made when first asked for), so a page of the
list costs a few vectorised comparisons over the snapshot and a slice, not a sort: at a million
customers a page answers in milliseconds (``benchmarks/bench_dashboard.py``). The default order
is the snapshot's own win-back ranking (:func:`models.policy.winback.winback_ranking`: value at risk, then
id), the one ``/winback`` and `winback rank` use.
"""

from __future__ import annotations

import datetime as dt
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from serving.state import ScoredSnapshot

#: Columns the list can be sorted by; ``value_at_risk`` is the snapshot's ranking.
SORTABLE = ("value_at_risk", "churn_probability", "clv_12m", "winback_date", "next_purchase_date",
            "customer_id")
PER_PAGE = (25, 50, 100)


class FilterError(ValueError):
    """A list parameter cannot be used; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class ListQuery:
    """What a marketer asked of the list: filters (English labels), order and page."""

    segments: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    winback_from: dt.date | None = None
    winback_to: dt.date | None = None
    min_value: float = 0.0
    sort: str = "value_at_risk"
    descending: bool = True
    page: int = 1
    per_page: int = 50

    @classmethod
    def from_params(cls, params: Mapping[str, Sequence[str]]) -> "ListQuery":
        """From query parameters (each a list of strings); :class:`FilterError` names a bad one."""
        def one(name: str) -> str | None:
            values = [v for v in params.get(name, ()) if v != ""]
            return values[-1] if values else None

        def many(name: str) -> tuple[str, ...]:
            return tuple(dict.fromkeys(v for v in params.get(name, ()) if v))

        sort = one("sort") or "value_at_risk"
        if sort not in SORTABLE:
            raise FilterError("sort", f"one of {', '.join(SORTABLE)}, got {sort!r}")
        order = one("order") or "desc"
        if order not in ("asc", "desc"):
            raise FilterError("order", f"asc or desc, got {order!r}")
        return cls(segments=many("segment"), tiers=many("tier"), categories=many("category"),
                   winback_from=_date(one("winback_from"), "winback_from"),
                   winback_to=_date(one("winback_to"), "winback_to"),
                   min_value=_number(one("min_value"), "min_value", 0.0),
                   sort=sort, descending=order == "desc",
                   page=int(_number(one("page"), "page", 1, whole=True, least=1)),
                   per_page=_per_page(one("per_page")))

    def params(self, **changes) -> dict[str, list[str]]:
        """Query parameters that give this query back, with ``changes`` applied (for links)."""
        q = {**self.__dict__, **changes}
        out = {"segment": list(q["segments"]), "tier": list(q["tiers"]), "category": list(q["categories"]),
               "sort": [q["sort"]], "order": ["desc" if q["descending"] else "asc"],
               "page": [str(q["page"])], "per_page": [str(q["per_page"])]}
        if q["winback_from"]:
            out["winback_from"] = [q["winback_from"].isoformat()]
        if q["winback_to"]:
            out["winback_to"] = [q["winback_to"].isoformat()]
        if q["min_value"]:
            out["min_value"] = [repr(q["min_value"])]
        return out


def _date(text: str | None, field: str) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise FilterError(field, f"a date like 2026-01-31, got {text!r}") from None


def _number(text: str | None, field: str, default: float, whole: bool = False, least: float = 0) -> float:
    if text is None:
        return default
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        raise FilterError(field, f"a {'whole ' if whole else ''}number, got {text!r}") from None
    if not (np.isfinite(value) and value >= least):
        raise FilterError(field, f"at least {least}, got {text!r}")
    return value


def _per_page(text: str | None) -> int:
    if text is None:
        return 50
    if text not in {str(n) for n in PER_PAGE}:
        raise FilterError("per_page", f"one of {', '.join(map(str, PER_PAGE))}, got {text!r}")
    return int(text)


def snapshot_column(state: ScoredSnapshot, name: str) -> np.ndarray:
    """One column of a scored snapshot as an array in snapshot row order.

    Score columns come from the arrays ``/score`` answers from; feature columns (such as
    ``top_category``) from the model input the snapshot keeps for explaining.
    """
    columns = state.score_columns
    if name in columns:
        return columns[name][1]
    return state.model_input()[name].to_numpy()


class _Labels:
    """An object column as integer codes, to filter by a set of labels with one lookup."""

    def __init__(self, values: np.ndarray) -> None:
        codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
        self.codes = codes.astype(np.int32)
        self.labels = [str(u) for u in uniques]

    def mask(self, wanted: Sequence[str]) -> np.ndarray:
        table = np.zeros(len(self.labels) + 1, dtype=bool)     # last slot: missing (-1)
        for i, label in enumerate(self.labels):
            table[i] = label in wanted
        return table[self.codes]


class ListIndex:
    """One scored snapshot's arrays arranged for the list: codes for labels, lazy sort orders."""

    def __init__(self, state: ScoredSnapshot) -> None:
        self.state = state
        self.size = state.size
        self.value_at_risk = snapshot_column(state, "value_at_risk")
        self.winback_date = snapshot_column(state, "winback_date")
        self.segments = _Labels(snapshot_column(state, "segment"))
        self.tiers = _Labels(snapshot_column(state, "tier"))
        try:
            categories = snapshot_column(state, "top_category")
        except KeyError:                                        # a reference without categories
            categories = np.full(self.size, None, dtype=object)
        self.categories = _Labels(categories)
        self._orders: dict[tuple[str, bool], np.ndarray] = {}
        self._lock = threading.Lock()

    def order(self, sort: str, descending: bool) -> np.ndarray:
        """Row positions in the asked order; missing values last either way, ties by ranking."""
        key = (sort, descending)
        with self._lock:
            if key not in self._orders:
                self._orders[key] = self._make_order(sort, descending)
            return self._orders[key]

    def _make_order(self, sort: str, descending: bool) -> np.ndarray:
        ranking = self.state.ranking                           # the /winback ranking
        if sort == "value_at_risk":
            return ranking if descending else ranking[::-1].copy()
        if sort == "customer_id":
            order = np.argsort(self.state.ids, kind="stable")
            return order[::-1].copy() if descending else order
        values = snapshot_column(self.state, sort)
        if values.dtype.kind == "M":
            missing = np.isnat(values)
            numbers = values.astype("int64").astype(float)
        else:
            numbers = np.asarray(values, dtype=float)
            missing = np.isnan(numbers)
        numbers = np.where(missing, 0.0, -numbers if descending else numbers)[ranking]
        within = np.lexsort((numbers, missing[ranking]))        # present first, then by value, ties by ranking
        return ranking[within]

    def mask(self, query: ListQuery) -> np.ndarray:
        """Which rows pass the query's filters, in snapshot row order."""
        keep = self.value_at_risk >= query.min_value
        if query.segments:
            keep &= self.segments.mask(query.segments)
        if query.tiers:
            keep &= self.tiers.mask(query.tiers)
        if query.categories:
            keep &= self.categories.mask(query.categories)
        if query.winback_from is not None:
            keep &= self.winback_date >= np.datetime64(query.winback_from, "D")
        if query.winback_to is not None:
            keep &= self.winback_date <= np.datetime64(query.winback_to, "D")
        return keep

    def select(self, query: ListQuery, limit: int | None = None, offset: int | None = None) -> tuple[int, np.ndarray]:
        """(rows matching, their positions for the query's page), or ``limit`` rows from ``offset``."""
        order = self.order(query.sort, query.descending)
        chosen = order[self.mask(query)[order]]
        start = (query.page - 1) * query.per_page if offset is None else offset
        stop = start + (query.per_page if limit is None else limit)
        return len(chosen), chosen[start:stop]


class ListIndexes:
    """One :class:`ListIndex` per scored snapshot, dropped with the snapshot after a swap."""

    def __init__(self) -> None:
        self._indexes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def of(self, state: ScoredSnapshot) -> ListIndex:
        """The index of ``state``'s list, built once per snapshot."""
        with self._lock:
            index = self._indexes.get(state)
            if index is None:
                index = self._indexes[state] = ListIndex(state)
            return index


def list_rows(state: ScoredSnapshot, positions: Sequence[int], lang: str) -> list[dict]:
    """Snapshot records of the rows, with id and reasons in ``lang`` (explained on demand)."""
    ids = [state.customer_id(p) for p in positions]
    explained = state.reasons(ids) if ids else {}
    rows = []
    for cid, record in zip(ids, state.records(list(positions))):
        en, zh = explained[cid]
        rows.append({**record, "customer_id": cid, "reasons": zh if lang == "zh-TW" else en})
    return rows


def export_frame(rows: list[dict], lang: str) -> pd.DataFrame:
    """The rows as the win-back list's table, headers in ``lang`` (:data:`models.policy.winback.LIST_COLUMNS`)."""
    from models.policy.winback import LIST_COLUMNS

    zh = lang == "zh-TW"
    frame = pd.DataFrame({
        "priority": [r["priority"] for r in rows],
        "customer_id": [r["customer_id"] for r in rows],
        "value_at_risk": [r["value_at_risk"] for r in rows],
        "churn_probability": [r["churn_probability"] for r in rows],
        "clv_12m": [r["clv_12m"] for r in rows],
        "winback_date": [r["winback_date"] for r in rows],
        "next_purchase_date": [r["next_purchase_date"] for r in rows],
        "segment": [r["segment_zh_tw" if zh else "segment"] for r in rows],
        "tier": [r["tier_zh_tw" if zh else "tier"] for r in rows],
        "reasons": [r["reasons"] for r in rows],
    })
    return frame.rename(columns={k: v[1 if zh else 0] for k, v in LIST_COLUMNS.items()})
