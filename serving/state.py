"""What a request reads: the served model and the snapshot it scored, as one object.

:class:`ScoredSnapshot` is built off to the side (load the model, read the snapshot, score it
once without reasons) and then swapped in by a single assignment, so a request sees either the
old model with its scores or the new one with its own, never a mix. Reasons cost ~1 ms per
customer (TreeSHAP), so they are computed only for the customers a request asks about, and kept
in a bounded cache that belongs to the snapshot (a new model starts with an empty one).
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.policy.winback import winback_mask, winback_ranking
from models.scorer import WinbackScorer


def running_service() -> Any:
    """The scoring service instance of this worker process, or None before it has started.

    BentoML builds the mounted dashboard and the middleware before it creates the service
    instance; they find it through BentoML's own record of the running service rather than
    through a module of ours that both would have to import."""
    current, not_yet = _service_lookup()
    try:
        return current()
    except not_yet:
        return None


@functools.cache
def _service_lookup():
    """``bentoml.get_current_service`` and the error it raises, looked up once: every hot lookup
    asks, and BentoML resolves its attributes lazily (a module ``__getattr__`` per access)."""
    import bentoml
    from bentoml.exceptions import BentoMLException

    return bentoml.get_current_service, BentoMLException


#: Score columns in the order the API returns them (see serving.schemas.CustomerScore).
FLOAT_COLUMNS = ("churn_probability", "p_alive", "expected_purchases_30d", "expected_purchases_90d",
                 "expected_purchases_365d", "p_purchase_7d", "p_purchase_30d", "p_purchase_90d",
                 "expected_order_value", "clv_12m", "value_at_risk")
DATE_COLUMNS = ("next_purchase_date", "next_purchase_low", "next_purchase_high", "winback_date")
OTHER_COLUMNS = ("winback_now", "priority", "r_score", "f_score", "m_score", "segment", "segment_zh_tw",
                 "tier", "tier_zh_tw")


@dataclass(frozen=True)
class ModelInfo:
    """Which registered model version answers, and what the registry says about it."""

    name: str
    version: str
    alias: str | None
    uri: str
    run_id: str | None = None
    registered_at: dt.datetime | None = None
    trained_until: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    evaluated_on: str | None = None
    horizon_days: int | None = None
    feature_reference: str | None = None


@dataclass(frozen=True)
class SnapshotFile:
    """The snapshot file read, its modification time, its as-of day and when it was loaded."""

    path: Path
    mtime_ns: int
    as_of: pd.Timestamp
    loaded_at: dt.datetime


class ScoredSnapshot:
    """A scorer, the model version it came from, and a feature snapshot scored with it.

    Lookups are by customer id from arrays held in memory; ``priority`` is the rank among the
    snapshot's customers, so a customer's answer does not depend on who else was asked about.
    """

    def __init__(self, scorer: WinbackScorer, model: ModelInfo, features: pd.DataFrame,
                 snapshot: SnapshotFile, reasons_cache: int = 100_000) -> None:
        self.scorer = scorer
        self.model = model
        self.snapshot = snapshot
        self.as_of = snapshot.as_of
        scores = scorer.score(features, snapshot.as_of, reasons=False)
        ids = scores["customer_id"].astype(str).to_numpy(object)
        if len(set(ids)) != len(ids):
            raise ValueError(f"{snapshot.path}: the snapshot has duplicate customer ids")
        self.size = len(ids)
        self._ids = ids
        self._position = {cid: i for i, cid in enumerate(ids)}
        self._blocks = ColumnBlocks({c: json_column(scores[c])
                                     for c in FLOAT_COLUMNS + DATE_COLUMNS + OTHER_COLUMNS})
        self._columns = self._blocks.columns
        # what a sync client compares: each customer's answer, and the snapshot as a whole
        self.row_hashes = row_hashes(self._columns)
        #: The snapshot's content id: the same model and data give the same id in every worker.
        self.snapshot_id = snapshot_digest(ids, self.row_hashes)
        self._value_at_risk = scores["value_at_risk"].to_numpy(float)
        self._segments = scores[["segment", "segment_zh_tw"]].to_numpy(object)
        self._tiers = scores[["tier", "tier_zh_tw"]].to_numpy(object)
        # ranked once, by the win-back list's one rule (value at risk, then id)
        self._ranking = winback_ranking(self._value_at_risk, ids)
        values = scorer.model_input(features)
        values.index = pd.Index(features["customer_id"].astype(str), name=None)
        self._values = values
        self._cache: OrderedDict[str, tuple[list[str], list[str]]] = OrderedDict()
        self._cache_size = reasons_cache
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lookups

    def positions(self, customer_ids: Sequence[str]) -> list[int | None]:
        """Each id's row in the snapshot, or None for an id it does not have."""
        get = self._position.get
        return [get(cid) for cid in customer_ids]

    def records(self, positions: Sequence[int] | np.ndarray, lead: Mapping[str, Iterable] | None = None) -> list[dict]:
        """Score fields (JSON-ready: floats, ISO dates, None) for the given rows.

        ``lead``: fields put first in each record, one value per row (e.g. the customer id and
        status an answer starts with), so each record is built once: at 1,000 ids per request
        building the dicts is most of the time this takes."""
        idx = np.asarray(positions, dtype=np.intp)
        lead = lead or {}
        names = [*lead, *self._columns]
        columns = [*lead.values(), *self._blocks.values(idx)]
        return [dict(zip(names, row)) for row in zip(*columns)]

    def cached_reasons(self, customer_ids: Sequence[str]) -> tuple[dict[str, tuple[list[str], list[str]]], list[str]]:
        """(English, Traditional Chinese) reasons already explained, and the ids still to explain."""
        found, missing = {}, []
        with self._lock:
            for cid in dict.fromkeys(customer_ids):
                hit = self._cache.get(cid)
                if hit is None:
                    missing.append(cid)
                else:
                    self._cache.move_to_end(cid)
                    found[cid] = hit
        return found, missing

    def explain(self, customer_ids: Sequence[str]) -> dict[str, tuple[list[str], list[str]]]:
        """Explain snapshot customers now (TreeSHAP) and remember the answers."""
        ids = list(dict.fromkeys(customer_ids))
        explained = self.scorer.explain(self._values.loc[ids])
        fresh = dict(zip(ids, zip(explained["reasons"], explained["reasons_zh_tw"])))
        with self._lock:
            self._cache.update(fresh)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return fresh

    def reasons(self, customer_ids: Sequence[str]) -> dict[str, tuple[list[str], list[str]]]:
        """Reasons for snapshot customers, from the cache where it has them."""
        found, missing = self.cached_reasons(customer_ids)
        if missing:
            found.update(self.explain(missing))
        return found

    def winback(self, limit: int, segments: Sequence[str] = (), tiers: Sequence[str] = (),
                min_value: float = 0.0) -> tuple[int, list[int]]:
        """Rows of the win-back list, best first: ranked by value at risk (``priority``),
        filtered by segment and tier (English or Traditional Chinese labels) and by a least
        value at risk. Returns the number matching and the first ``limit`` rows.

        The ranking and filter of :func:`models.policy.winback.winback_list` (which `winback rank`
        uses), on arrays ranked once per snapshot so a request costs no sort."""
        keep = winback_mask(self._value_at_risk, self._segments, self._tiers, segments, tiers, min_value)
        rows = self._ranking[keep[self._ranking]]
        return len(rows), rows[:limit].tolist()

    def winback_page(self, offset: int, limit: int, segments: Sequence[str] = (), tiers: Sequence[str] = (),
                     min_value: float = 0.0) -> tuple[int, list[int]]:
        """:meth:`winback` from the ``offset``-th matching row on: (number matching, rows)."""
        keep = winback_mask(self._value_at_risk, self._segments, self._tiers, segments, tiers, min_value)
        rows = self._ranking[keep[self._ranking]]
        return len(rows), rows[offset:offset + limit].tolist()

    def customer_id(self, position: int) -> str:
        """The customer id of snapshot row ``position``."""
        return self._ids[position]

    @property
    def tag(self) -> str:
        """The model version and the snapshot's id: what ``GET /scores``' ETag and the cursors name."""
        return f"{self.model.version}-{self.snapshot_id}"

    # ------------------------------------------------------------------ read-only views (the dashboard)

    @property
    def ids(self) -> np.ndarray:
        """Customer ids in snapshot order (positions index them)."""
        return self._ids

    @property
    def ranking(self) -> np.ndarray:
        """Positions in win-back order: by ``priority``, then id (the ``/winback`` order)."""
        return self._ranking

    @property
    def score_columns(self) -> dict[str, tuple[str, np.ndarray]]:
        """Every scored field as (kind, array in snapshot order), the arrays ``/score`` reads."""
        return self._columns

    def model_input(self, customer_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """The model's input rows (indexed by customer id) for ``customer_ids``, or all."""
        return self._values if customer_ids is None else self._values.loc[list(customer_ids)]


class ColumnBlocks:
    """Score columns stacked by kind into 2-D arrays (column-major, so each column is still a
    contiguous array: :attr:`columns` are views, no copy).

    Reading some rows then costs one gather per kind (five) instead of one per column (26): for
    one id per request the per-column gathers were a third of a lookup's time."""

    def __init__(self, columns: Mapping[str, tuple[str, np.ndarray]]) -> None:
        groups: dict[str, list[str]] = {}
        for name, (kind, _) in columns.items():
            groups.setdefault(kind, []).append(name)
        self.blocks: list[tuple[str, np.ndarray]] = []
        stacked: list[str] = []
        views: dict[str, tuple[str, np.ndarray]] = {}
        for kind, names in groups.items():
            first = columns[names[0]][1]
            block = np.empty((len(first), len(names)), dtype=first.dtype, order="F")
            for j, name in enumerate(names):
                block[:, j] = columns[name][1]
                views[name] = (kind, block[:, j])
            self.blocks.append((kind, block))
            stacked += names
        #: Every column as (kind, array in row order), in the order given.
        self.columns = {name: views[name] for name in columns}
        self._order = itemgetter(*(stacked.index(name) for name in columns))
        # ISO text of every day in the date columns, by day number (NaT: None): numpy's
        # datetime_as_string took 17 us for the four dates of one customer
        dated = [b.view(np.int64).ravel() for k, b in self.blocks if k == "date"]
        days = np.unique(np.concatenate(dated)) if dated else np.empty(0, np.int64)
        text = np.datetime_as_string(days.view("datetime64[D]"), unit="D").tolist()
        self._days = {day: None if iso == "NaT" else iso for day, iso in zip(days.tolist(), text)}

    def values(self, rows: np.ndarray) -> list[list]:
        """JSON values (see :func:`json_values`) of ``rows``, one list per column, in column order."""
        if len(rows) == 1:                         # a view, not a gather: most lookups ask for one id
            row = int(rows[0])
            picked = [(kind, block[row:row + 1]) for kind, block in self.blocks]
        else:
            picked = [(kind, block[rows]) for kind, block in self.blocks]
        columns = []
        for kind, part in picked:
            if kind == "date":
                days = self._days
                columns += [[days[d] for d in column] for column in part.T.view(np.int64).tolist()]
            else:
                columns += part.T.tolist()
        return list(self._order(columns)) if len(columns) > 1 else columns


def row_hashes(columns: Mapping[str, tuple[str, np.ndarray]]) -> np.ndarray:
    """A 64-bit hash of each row's values (uint64), the same in every process and run.

    Each column's values are turned into 64-bit words (a float's bits, a day number, an int;
    a text through a hash of each distinct text) and mixed row by row, vectorised: about 0.1 s
    for a million customers. Two rows hash alike only if every value is alike (but a 2**-64 chance)."""
    import hashlib

    if not columns:
        return np.zeros(0, dtype=np.uint64)
    n = len(next(iter(columns.values()))[1])
    out = np.full(n, 0xCBF29CE484222325, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    with np.errstate(over="ignore"):
        for salt, (kind, array) in enumerate(columns.values(), start=1):
            if kind == "float":
                words = array.view(np.uint64)
            elif kind in ("date", "int"):
                words = array.view(np.int64).astype(np.uint64) if kind == "date" else array.astype(np.uint64)
            elif kind == "bool":
                words = array.astype(np.uint64)
            else:                                            # text, numbers with gaps, None
                codes, uniques = pd.factorize(pd.Series(array, dtype=object), use_na_sentinel=True)
                texts = [hashlib.blake2b(f"{type(u).__name__}:{u!r}".encode(), digest_size=8).digest()
                         for u in uniques]
                table = np.frombuffer(b"".join(texts), dtype=np.uint64) if texts else np.zeros(0, np.uint64)
                words = np.where(codes < 0, np.uint64(0x9E3779B97F4A7C15), table[np.maximum(codes, 0)]
                                 if len(table) else np.uint64(0))
            out = (out ^ (words + np.uint64((salt * 0x9E3779B97F4A7C15) % 2**64))) * prime
        out ^= out >> np.uint64(33)                           # spread the last column's bits
        out *= np.uint64(0xFF51AFD7ED558CCD)
        out ^= out >> np.uint64(33)
    return out


def snapshot_digest(ids: np.ndarray, hashes: np.ndarray) -> str:
    """16 hex digits naming a scored snapshot by its content: its ids in order and their rows' hashes."""
    import hashlib

    digest = hashlib.blake2b(digest_size=8)
    digest.update("\x00".join(map(str, ids)).encode("utf-8", "surrogatepass"))
    digest.update(np.ascontiguousarray(hashes).tobytes())
    return digest.hexdigest()


def json_column(series: pd.Series) -> tuple[str, np.ndarray]:
    """A score column as (kind, array) from which :func:`json_values` makes JSON values."""
    if pd.api.types.is_datetime64_any_dtype(series):
        return "date", series.to_numpy("datetime64[D]")
    if pd.api.types.is_float_dtype(series):
        array = series.to_numpy(float)
        return ("float", array) if not np.isnan(array).any() else ("object", _nan_to_none(array))
    if pd.api.types.is_bool_dtype(series):
        return "bool", series.to_numpy(bool)
    if pd.api.types.is_integer_dtype(series):
        return "int", series.to_numpy(np.int64)
    return "object", series.astype(object).where(series.notna(), None).to_numpy(object)


def _nan_to_none(array: np.ndarray) -> np.ndarray:
    out = array.astype(object)
    out[np.isnan(array)] = None
    return out


def json_values(kind: str, array: np.ndarray) -> list:
    """Python values for JSON: floats, ints, bools, str, ISO dates; None for NaN and NaT."""
    if kind == "date":
        return [None if s == "NaT" else s for s in np.datetime_as_string(array, unit="D").tolist()]
    return array.tolist()
