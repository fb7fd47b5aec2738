"""Seeded synthetic transaction-log generator for Winback scale benchmarks.

Writes a plain transaction log (one row per order, plus optional refund rows)
that looks enough like e-commerce data to exercise feature building, BG/NBD /
Gamma-Gamma fitting, model training and serving at 1k .. 100M rows, with
bounded memory and fully vectorised numpy (no Python loop per customer or per
transaction).

Usage
-----
::

    .venv/bin/python benchmarks/synthetic.py --customers 1000000 --seed 42 \\
        --out /tmp/tx_1m.parquet [--format parquet|csv] [--no-refunds] [--no-channel]

From another benchmark script (``benchmarks/`` is not a package)::

    sys.path.insert(0, str(Path(__file__).parent))
    import synthetic
    for df in synthetic.generate_transactions(100_000, seed=1):   # pandas chunks
        ...
    stats = synthetic.write_transactions("/tmp/tx.parquet", 1_000_000, seed=42)

Output schema
-------------
==============  =====================  ==========================================
column          type                   notes
==============  =====================  ==========================================
customer_id     string                 ``"C0000001"``; 7 digits, wider when
                                       ``n_customers >= 10**7`` (fixed width, so
                                       lexicographic order == numeric order)
order_id        string, unique         ``"O000000000001"`` for orders,
                                       ``"R000000000123"`` for refund rows (global
                                       row number, 12 digits)
timestamp       timestamp, naive       second resolution; ``datetime64[ns]`` in
                                       the pandas chunks, ``timestamp[us]`` in
                                       Parquet (DuckDB ``TIMESTAMP``),
                                       ``YYYY-MM-DD HH:MM:SS`` in CSV
amount          float64                2 decimals, > 0 for orders, < 0 refunds
quantity        int64                  >= 1 for orders, negated for refunds
category        string                 one of :data:`CATEGORIES`
channel         string                 ``web`` / ``app`` / ``store`` (dropped
                                       with ``channel=False`` / ``--no-channel``)
==============  =====================  ==========================================

Rows are ordered by ``customer_id`` then ``timestamp`` (not globally by time:
the log is generated in customer chunks; each chunk is one Parquet row group).

The generating process (defaults in :class:`SyntheticConfig`)
-------------------------------------------------------------
Time is measured in days.  The observation window is
``[end - history_days + 1 day, end + 1 day)``, i.e. by default
2024-01-01 00:00:00 .. 2025-12-31 23:59:59 (``history_days=731``).

1. **Acquisition.** Customer *i* makes its first purchase at ``t0_i`` uniform over
   the first ``acquisition_days`` (365) of the window, so every customer is
   observed for 1-2 years (``acquisition_days = history_days`` spreads
   acquisition over the whole window).
2. **Purchase rate / dropout (BG/NBD).** ``lambda_i ~ Gamma(shape=r, rate=alpha)``
   per day and ``p_i ~ Beta(a, b)``.  After *every* purchase (the first one
   included) the customer drops out for good with probability ``p_i``, so the
   number of purchases it would make with an infinite horizon is
   ``M_i ~ Geometric(p_i)`` (support 1, 2, ...).  Inter-purchase times are
   ``Exponential(lambda_i)``; purchases stop at dropout or at the end of the
   window.  Defaults ``r=0.8, alpha=30, a=0.8, b=8.0`` give a mean rate of
   0.027/day (~10 orders/year while alive) and a mean dropout probability of
   0.09 (heavy mass near 0: some customers never churn).  CDNOW (Fader, Hardie
   & Lee 2005, weeks converted to days) is ``r=0.24, alpha=30, a=0.8, b=2.4``;
   with the replenishers below it gives only ~4 rows/customer (~2.6 without
   them), so the defaults are busier, ~9 rows/customer (~10M customers ->
   ~90M rows).  Pass ``--r 0.24 --b 2.4`` for the classic sparse CDNOW shape.
3. **Categories and replenishment.** Eight categories (:data:`CATEGORIES`) have a
   popularity weight, a price multiplier and a typical replenishment cycle
   (coffee 30 d, pet food 28 d, baby care 21 d, household 45 d, skincare 60 d,
   vitamins 90 d, fashion and electronics none).  Each customer has a favourite
   category drawn by popularity.  If the favourite has a cycle, the customer is
   a *replenisher* with probability ``replenisher_share`` (0.35): its
   inter-purchase times are ``Gamma(shape=replenish_shape=4, mean=c_i)`` (much
   more regular than exponential) with a personal cycle
   ``c_i = cycle * LogNormal(0, 0.2)``, and its dropout probability is
   ``p_i * replenisher_dropout_factor`` (0.5: replenishers are stickier).
   Each order's category is the favourite with probability ``fav_prob`` (0.6;
   ``fav_prob_replenisher`` 0.85 for replenishers), else a popularity draw.
4. **Spend (Gamma-Gamma style, heavy tail).** Customer mean order value
   ``m_i = spend_p / nu_i`` with ``nu_i ~ Gamma(shape=spend_q, rate=spend_gamma)``
   (inverse-gamma mixing: Pareto-like right tail with index ``spend_q``);
   defaults ``spend_p=6, spend_q=3.5, spend_gamma=20`` give a population mean of
   ``spend_p*spend_gamma/(spend_q-1) = 48``.  Each order amount is
   ``m_i * price_mult[category] * LogNormal(-s^2/2, s)`` with ``s=spend_sigma=0.45``
   (mean-preserving), floored at 0.50 and rounded to cents.
   ``quantity ~ Geometric(0.65)`` (1, 2, 3, ...; mean ~1.5).
5. **Channel.** Each customer has a favourite channel (web 0.5, app 0.35,
   store 0.15); each order uses it with probability 0.75, else a fresh draw.
6. **Refunds** (``refunds=True``).  Each order is refunded with probability
   ``refund_rate`` (0.5 %): an extra row with ``amount = -amount``,
   ``quantity = -quantity``, same category/channel, an ``R`` order id, and a
   timestamp ``1 + Exponential(mean 9)`` days after the order (dropped if that
   falls after the end of the window).  Refunds are *additional* rows, so
   ``--no-refunds`` yields exactly the order rows of the same seed.

Determinism
-----------
Chunk *k* (customers ``k*chunk_customers + 1 ..``) draws from
``numpy.random.default_rng(SeedSequence([seed, k]))``, so the same
``(n_customers, seed, chunk_customers, config)`` gives byte-identical output,
and a smaller run is a prefix of a bigger one when ``n_customers`` is a
multiple of ``chunk_customers``.  Chunks are independent of each other.

Scale (measured, 2 cores, defaults, Parquet zstd)
-------------------------------------------------
~1M rows/s single-threaded: 1M customers -> 9.27M rows, 93 MB, ~8-10 s;
10M customers -> 92.6M rows, 0.93 GB, 75-100 s.  Peak RSS is bounded by one
chunk, independent of ``n_customers``: ~700 MB with the default 200k-customer
chunks (~1.85M rows each), ~300 MB with ``--chunk-customers 50000``.  Full
``--customers`` -> rows / size / seconds table in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

__all__ = [
    "CATEGORIES",
    "CHANNELS",
    "SyntheticConfig",
    "WriteStats",
    "generate_tables",
    "generate_transactions",
    "write_transactions",
    "main",
    "schema",
]

#: name -> (popularity weight, price multiplier, replenishment cycle in days or None)
CATEGORIES: dict[str, tuple[float, float, float | None]] = {
    "coffee": (0.16, 0.6, 30.0),
    "pet_food": (0.14, 0.9, 28.0),
    "baby_care": (0.08, 0.8, 21.0),
    "household": (0.14, 0.6, 45.0),
    "skincare": (0.12, 1.0, 60.0),
    "vitamins": (0.10, 0.7, 90.0),
    "fashion": (0.16, 1.5, None),
    "electronics": (0.10, 3.0, None),
}

#: name -> popularity weight
CHANNELS: dict[str, float] = {"web": 0.50, "app": 0.35, "store": 0.15}

SCHEMA_FIELDS = [
    ("customer_id", pa.string()),
    ("order_id", pa.string()),
    ("timestamp", pa.timestamp("ns")),
    ("amount", pa.float64()),
    ("quantity", pa.int64()),
    ("category", pa.string()),
    ("channel", pa.string()),
]

_SECONDS_PER_DAY = 86_400
_ORDER_ID_DIGITS = 12


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the generating process (see the module docstring)."""

    end: str = "2025-12-31"  # last observed day (inclusive)
    history_days: int = 731  # window length; default 2024-01-01 .. 2025-12-31
    acquisition_days: float = 365.0  # first purchases uniform over the window's first N days
    # BG/NBD, daily scale
    r: float = 0.8
    alpha: float = 30.0
    a: float = 0.8
    b: float = 8.0
    # replenishment
    replenisher_share: float = 0.35
    replenish_shape: float = 4.0
    replenish_cycle_sigma: float = 0.2
    replenisher_dropout_factor: float = 0.5
    fav_prob: float = 0.6
    fav_prob_replenisher: float = 0.85
    # spend
    spend_p: float = 6.0
    spend_q: float = 3.5
    spend_gamma: float = 20.0
    spend_sigma: float = 0.45
    min_amount: float = 0.50
    quantity_p: float = 0.65
    # channel
    channel: bool = True
    channel_loyalty: float = 0.75
    # refunds
    refunds: bool = True
    refund_rate: float = 0.005
    refund_delay_mean_days: float = 9.0
    # chunking
    chunk_customers: int = 200_000
    categories: dict = field(default_factory=lambda: dict(CATEGORIES))

    @property
    def start(self) -> np.datetime64:
        return np.datetime64(self.end, "D") + 1 - int(self.history_days)


@dataclass
class WriteStats:
    path: str
    format: str
    rows: int
    customers: int
    bytes: int
    seconds: float

    @property
    def rows_per_customer(self) -> float:
        return self.rows / self.customers if self.customers else float("nan")


# ---------------------------------------------------------------------------
# vectorised helpers


_DIGITS4 = np.array([list(f"{i:04d}".encode()) for i in range(10_000)], dtype=np.uint8)


def _fixed_width_strings(prefix: str | np.ndarray, numbers: np.ndarray, width: int) -> pa.Array:
    """``prefix + zero-padded numbers`` as an Arrow string array, without Python strings.

    ``prefix`` is a string, or a per-row uint8 array of single ASCII characters.
    """
    numbers = np.asarray(numbers, dtype=np.int64)
    n = numbers.size
    if isinstance(prefix, str):
        pre = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
        lp = pre.size
    else:
        pre = np.asarray(prefix, dtype=np.uint8).reshape(n, 1)
        lp = 1
    row = lp + width
    padded = -(-width // 4) * 4  # digits rounded up to a multiple of 4
    digits = np.empty((n, padded), dtype=np.uint8)
    x = numbers.copy()
    for pos in range(padded - 4, -1, -4):
        digits[:, pos : pos + 4] = _DIGITS4[x % 10_000]
        x //= 10_000
    if n and (x.max() > 0 or numbers.min() < 0 or (padded > width and digits[:, : padded - width].max() > 48)):
        raise ValueError(f"number does not fit in {width} digits")
    buf = np.empty((n, row), dtype=np.uint8)
    buf[:, :lp] = pre
    buf[:, lp:] = digits[:, padded - width :]
    offsets = np.arange(0, (n + 1) * row, row, dtype=np.int32 if (n + 1) * row < 2**31 else np.int64)
    cls = pa.StringArray if offsets.dtype == np.int32 else pa.LargeStringArray
    arr = cls.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf.ravel()))
    return arr if cls is pa.StringArray else arr.cast(pa.string())


def _segment_starts(counts: np.ndarray) -> np.ndarray:
    ends = np.cumsum(counts)
    return ends - counts


def _renewal_arrivals(
    rng: np.random.Generator,
    t0: np.ndarray,
    horizon: float,
    shape: np.ndarray,
    scale: np.ndarray,
    max_n: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Arrivals of per-customer renewal processes with Gamma(shape, scale) gaps.

    Customer *j* starts at ``t0[j]`` and has at most ``max_n[j]`` arrivals, all
    ``< horizon``.  Gaps are drawn in vectorised rounds: each round draws
    ``expected + 3 sd + 2`` gaps per still-open customer (capped by its
    remaining budget) and segment-cumsums them; customers whose draws did not
    reach the horizon or their budget go to the next round (rare).
    Returns ``(customer_index, time)`` grouped by round, not sorted.
    """
    out_idx: list[np.ndarray] = []
    out_t: list[np.ndarray] = []
    idx = np.flatnonzero(max_n > 0)
    cur = t0[idx]
    remaining = max_n[idx].astype(np.int64)
    while idx.size:
        sh, sc = shape[idx], scale[idx]
        m = np.maximum(horizon - cur, 0.0) / (sh * sc)  # expected arrivals left
        want = np.ceil(m + 3.0 * np.sqrt(m / sh) + 2.0)
        k = np.minimum(remaining, want.astype(np.int64))
        rep = np.repeat(np.arange(idx.size), k)
        gaps = rng.standard_gamma(sh[rep]) * sc[rep]
        cs = np.cumsum(gaps)
        starts = _segment_starts(k)
        base = np.concatenate(([0.0], cs))[starts]
        t = cur[rep] + (cs - base[rep])
        ok = t < horizon
        out_idx.append(idx[rep[ok]])
        out_t.append(t[ok])
        last = t[starts + k - 1]
        more = (last < horizon) & (k < remaining)
        idx, cur, remaining = idx[more], last[more], (remaining - k)[more]
    if not out_idx:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    return np.concatenate(out_idx), np.concatenate(out_t)


def _choice(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    cdf = np.cumsum(weights / weights.sum())
    return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), len(weights) - 1)


# ---------------------------------------------------------------------------
# generation


def _generate_chunk(
    chunk_index: int,
    first_customer: int,
    n: int,
    seed: int,
    cfg: SyntheticConfig,
    id_width: int,
    first_row: int,
) -> pa.Table:
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(chunk_index)]))
    horizon = float(cfg.history_days)

    cat_names = list(cfg.categories)
    cat_w = np.array([v[0] for v in cfg.categories.values()], dtype=float)
    cat_price = np.array([v[1] for v in cfg.categories.values()], dtype=float)
    cat_cycle = np.array([np.nan if v[2] is None else v[2] for v in cfg.categories.values()], dtype=float)

    # --- customer level -----------------------------------------------------
    t0 = rng.uniform(0.0, min(float(cfg.acquisition_days), horizon), n)
    lam = rng.gamma(cfg.r, 1.0 / cfg.alpha, n)
    p = rng.beta(cfg.a, cfg.b, n)
    fav = _choice(rng, cat_w, n)
    has_cycle = ~np.isnan(cat_cycle[fav])
    replen = has_cycle & (rng.random(n) < cfg.replenisher_share)
    cycle = np.where(replen, np.nan_to_num(cat_cycle[fav], nan=1.0), 1.0) * rng.lognormal(
        0.0, cfg.replenish_cycle_sigma, n
    )
    p = np.where(replen, p * cfg.replenisher_dropout_factor, p)
    p = np.clip(p, 1e-12, 1.0)
    m_spend = cfg.spend_p / rng.gamma(cfg.spend_q, 1.0 / cfg.spend_gamma, n)
    fav_ch = _choice(rng, np.array(list(CHANNELS.values())), n)

    # total purchases with an infinite horizon (dropout after each purchase, first included)
    n_purch = rng.geometric(p)  # >= 1
    shape = np.where(replen, cfg.replenish_shape, 1.0)
    scale = np.where(replen, cycle / cfg.replenish_shape, 1.0 / np.maximum(lam, 1e-12))
    r_idx, r_t = _renewal_arrivals(rng, t0, horizon, shape, scale, n_purch - 1)

    cust = np.concatenate((np.arange(n, dtype=np.int64), r_idx))
    t = np.concatenate((t0, r_t))
    sec = np.floor(t * _SECONDS_PER_DAY).astype(np.int64)
    shift = int(horizon * _SECONDS_PER_DAY).bit_length()  # sort key = (customer, second)
    order = np.argsort((cust << shift) + sec, kind="stable")
    cust, sec = cust[order], sec[order]
    n_orders = cust.size

    # --- order level ----------------------------------------------------------
    fp = np.where(replen, cfg.fav_prob_replenisher, cfg.fav_prob)[cust]
    cat = np.where(rng.random(n_orders) < fp, fav[cust], _choice(rng, cat_w, n_orders))
    sigma = cfg.spend_sigma
    amount = m_spend[cust] * cat_price[cat] * rng.lognormal(-0.5 * sigma * sigma, sigma, n_orders)
    amount = np.round(np.maximum(amount, cfg.min_amount), 2)
    qty = rng.geometric(cfg.quantity_p, n_orders).astype(np.int64)
    ch = None
    if cfg.channel:
        ch = np.where(
            rng.random(n_orders) < cfg.channel_loyalty,
            fav_ch[cust],
            _choice(rng, np.array(list(CHANNELS.values())), n_orders),
        )
    is_refund = np.zeros(n_orders, dtype=bool)

    if cfg.refunds and cfg.refund_rate > 0:
        src = np.flatnonzero(rng.random(n_orders) < cfg.refund_rate)
        delay = 1.0 + rng.exponential(cfg.refund_delay_mean_days, src.size)
        rsec = sec[src] + np.floor(delay * _SECONDS_PER_DAY).astype(np.int64)
        keep = rsec < int(horizon * _SECONDS_PER_DAY)
        src, rsec = src[keep], rsec[keep]
        if src.size:
            cust = np.concatenate((cust, cust[src]))
            sec = np.concatenate((sec, rsec))
            cat = np.concatenate((cat, cat[src]))
            amount = np.concatenate((amount, -amount[src]))
            qty = np.concatenate((qty, -qty[src]))
            if ch is not None:
                ch = np.concatenate((ch, ch[src]))
            is_refund = np.concatenate((is_refund, np.ones(src.size, dtype=bool)))
            order = np.argsort((cust << shift) + sec, kind="stable")
            cust, sec, cat, amount, qty, is_refund = (
                cust[order], sec[order], cat[order], amount[order], qty[order], is_refund[order]
            )
            if ch is not None:
                ch = ch[order]

    rows = cust.size
    row_no = np.arange(first_row + 1, first_row + rows + 1, dtype=np.int64)
    order_id = _fixed_width_strings(np.where(is_refund, ord("R"), ord("O")), row_no, _ORDER_ID_DIGITS)
    ts = (cfg.start.astype("datetime64[s]") + sec.astype("timedelta64[s]")).astype("datetime64[ns]")

    cols = {
        "customer_id": _fixed_width_strings("C", first_customer + np.arange(1, n + 1), id_width).take(
            pa.array(cust)
        ),
        "order_id": order_id,
        "timestamp": pa.array(ts, type=pa.timestamp("ns")),
        "amount": pa.array(amount, type=pa.float64()),
        "quantity": pa.array(qty, type=pa.int64()),
        "category": pa.array(cat_names, type=pa.string()).take(pa.array(cat.astype(np.int32))),
    }
    if ch is not None:
        cols["channel"] = pa.array(list(CHANNELS), type=pa.string()).take(pa.array(ch.astype(np.int32)))
    return pa.table(cols)


def _config(config: SyntheticConfig | None, overrides: dict) -> SyntheticConfig:
    cfg = config or SyntheticConfig()
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def schema(channel: bool = True) -> pa.Schema:
    return pa.schema([f for f in SCHEMA_FIELDS if channel or f[0] != "channel"])


def generate_tables(
    n_customers: int, seed: int = 42, config: SyntheticConfig | None = None, **overrides
) -> Iterator[pa.Table]:
    """Yield the log as Arrow tables, one per chunk of ``chunk_customers`` customers.

    ``overrides`` are :class:`SyntheticConfig` fields (``refunds=False``,
    ``channel=False``, ``r=0.24``, ``chunk_customers=50_000``, ...).
    """
    cfg = _config(config, overrides)
    if n_customers < 0:
        raise ValueError("n_customers must be >= 0")
    id_width = max(7, len(str(n_customers)))
    chunk = int(cfg.chunk_customers)
    if chunk <= 0 or chunk >= (1 << 30):
        raise ValueError("chunk_customers out of range")
    first_row = 0
    for k, first in enumerate(range(0, n_customers, chunk)):
        n = min(chunk, n_customers - first)
        tbl = _generate_chunk(k, first, n, seed, cfg, id_width, first_row)
        first_row += tbl.num_rows
        yield tbl


def generate_transactions(
    n_customers: int,
    seed: int = 42,
    config: SyntheticConfig | None = None,
    *,
    arrow_strings: bool = True,
    **overrides,
) -> Iterator[pd.DataFrame]:
    """Yield the log as pandas DataFrames, one per customer chunk.

    String columns are ``string[pyarrow]`` (zero-copy) unless
    ``arrow_strings=False`` (plain ``object``, slower).  Concatenate with
    ``pd.concat(list(...), ignore_index=True)`` for small sizes.
    """
    mapper = {pa.string(): pd.StringDtype("pyarrow")}.get if arrow_strings else None
    for tbl in generate_tables(n_customers, seed, config, **overrides):
        yield tbl.to_pandas(types_mapper=mapper)


def write_transactions(
    path: str | os.PathLike,
    n_customers: int,
    seed: int = 42,
    config: SyntheticConfig | None = None,
    *,
    fmt: str | None = None,
    compression: str = "zstd",
    **overrides,
) -> WriteStats:
    """Generate and write the log atomically (temp file in the same dir, then ``os.replace``).

    ``fmt`` is ``"parquet"`` or ``"csv"`` (default: from the suffix, else
    parquet).  Parquet gets one row group per customer chunk.
    """
    t_start = time.perf_counter()
    path = Path(path)
    if fmt is None:
        fmt = "csv" if path.suffix.lower() == ".csv" else "parquet"
    fmt = fmt.lower()
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"unknown format {fmt!r}")
    cfg = _config(config, overrides)
    sch = schema(cfg.channel)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    rows = 0
    try:
        if fmt == "parquet":
            # microseconds in the file: DuckDB reads TIMESTAMP (not TIMESTAMP_NS), Spark-compatible
            pq_schema = sch.set(sch.get_field_index("timestamp"), pa.field("timestamp", pa.timestamp("us")))
            with pq.ParquetWriter(tmp, pq_schema, compression=compression) as w:
                for tbl in generate_tables(n_customers, seed, cfg):
                    w.write_table(tbl.cast(pq_schema), row_group_size=max(tbl.num_rows, 1))
                    rows += tbl.num_rows
        else:
            csv_schema = sch.set(sch.get_field_index("timestamp"), pa.field("timestamp", pa.timestamp("s")))
            opts = pacsv.WriteOptions(quoting_style="none")  # ids/names never contain , " or newlines
            with pacsv.CSVWriter(tmp, csv_schema, write_options=opts) as w:
                for tbl in generate_tables(n_customers, seed, cfg):
                    w.write_table(tbl.cast(csv_schema))
                    rows += tbl.num_rows
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return WriteStats(
        path=str(path),
        format=fmt,
        rows=rows,
        customers=n_customers,
        bytes=path.stat().st_size,
        seconds=time.perf_counter() - t_start,
    )


# ---------------------------------------------------------------------------
# CLI


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def main(argv: list[str] | None = None) -> int:
    d = SyntheticConfig()
    ap = argparse.ArgumentParser(
        description="Seeded synthetic transaction log (BG/NBD purchases, heavy-tailed spend, "
        "replenishment categories) for scale benchmarks.",
    )
    ap.add_argument("--customers", type=int, required=True, help="number of customers")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", required=True, help="output file (.parquet or .csv)")
    ap.add_argument("--format", choices=["parquet", "csv"], default=None, help="default: from --out suffix")
    ap.add_argument("--no-refunds", action="store_true", help="no negative refund rows")
    ap.add_argument("--no-channel", action="store_true", help="omit the channel column")
    ap.add_argument("--chunk-customers", type=int, default=d.chunk_customers)
    ap.add_argument("--compression", default="zstd", help="parquet codec (zstd, snappy, none, ...)")
    ap.add_argument("--end", default=d.end, help="last observed day (inclusive)")
    ap.add_argument("--history-days", type=int, default=d.history_days)
    ap.add_argument("--acquisition-days", type=float, default=d.acquisition_days)
    for name in ("r", "alpha", "a", "b"):
        ap.add_argument(f"--{name}", type=float, default=getattr(d, name), help="BG/NBD parameter (daily scale)")
    ap.add_argument("--refund-rate", type=float, default=d.refund_rate)
    args = ap.parse_args(argv)

    stats = write_transactions(
        args.out,
        args.customers,
        args.seed,
        fmt=args.format,
        compression=args.compression,
        refunds=not args.no_refunds,
        channel=not args.no_channel,
        chunk_customers=args.chunk_customers,
        end=args.end,
        history_days=args.history_days,
        acquisition_days=args.acquisition_days,
        r=args.r,
        alpha=args.alpha,
        a=args.a,
        b=args.b,
        refund_rate=args.refund_rate,
    )
    print(
        f"wrote {stats.path} ({stats.format})\n"
        f"rows:          {stats.rows:,}\n"
        f"customers:     {stats.customers:,}\n"
        f"rows/customer: {stats.rows_per_customer:.2f}\n"
        f"file size:     {_human(stats.bytes)} ({stats.bytes:,} bytes)\n"
        f"seconds:       {stats.seconds:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
