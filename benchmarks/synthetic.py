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

A shop with attributes, engagement and an Erlang-k rhythm (:func:`synthetic_shop`)
-----------------------------------------------------------------------------------
A second, separate process (the chunked log above is unchanged by it), small and in memory
(~3,000 customers in 0.1 s), for tests where the truth behind churn is known::

    tx, customers, events = synthetic.synthetic_shop(customers=3000, seed=0, attributes=True,
                                                     events=True, erlang_k=3)

``tx`` has ``customer_id, order_id, timestamp, amount``; ``customers`` one row per customer
with ``customer_id, channel, age, gender, region``; ``events`` ``customer_id, timestamp,
event_type`` (``visit``, ``email_open``). Parameters are :class:`ShopConfig`'s fields (defaults
in brackets); time in days over ``[end - history_days + 1, end]`` (2024-01-01 .. 2025-12-31).

1. **Acquisition and attributes.** First purchase ``t0 ~ U(0, acquisition_days)`` [600: many
   customers are recent, so whether one is still alive is often unclear from purchases alone].
   ``channel`` is drawn from :data:`SHOP_CHANNELS` (web 0.4, app 0.3, store 0.15,
   marketplace 0.15), ``age = clip(round(N(40, 12)), 18, 80)``; ``gender`` (F/M) and
   ``region`` (north/central/south/east/islands) are noise with no effect.
2. **Dropout, shifted by the attributes.** After every purchase (the first included) the
   customer drops out with probability ``p_i ~ Beta(kappa * mu_i, kappa * (1 - mu_i))``,
   ``kappa = dropout_concentration`` [8], around ``mu_i = sigmoid(logit(base_dropout) +
   attribute_effect * (channel_effect[channel] + age_effect * (age - 40) / 10))``
   [``base_dropout`` 0.12; ``channel_effect`` web 0, app -1.2, store -2.4, marketplace +3.3;
   ``age_effect`` -1.2 per 10 years; ``attribute_effect`` 1]: marketplace and young customers
   leave sooner. With ``attributes=False`` or ``attribute_effect=0`` every ``p_i`` is
   ``Beta(kappa * base_dropout, kappa * (1 - base_dropout))``: with ``erlang_k=1`` the log is
   then exactly MBG/NBD's process (Batislam et al. 2007), so a classical model is the right one
   and only the attributes (or the engagement) can add to it.
3. **Erlang-k rhythm.** The purchase rate ``lambda_i ~ Gamma(r, rate=alpha)`` per day [0.9,
   30]; gaps are ``Gamma(shape=erlang_k, scale=1 / (erlang_k * lambda_i))``: mean
   ``1 / lambda_i`` as in BG/NBD, but regular for ``erlang_k > 1`` (coefficient of variation
   ``1 / sqrt(k)``); ``erlang_k=1`` is BG/NBD's exponential. A customer who drops out after a
   purchase leaves at ``t_drop = last purchase + U * next gap`` (the gap it would have had).
4. **Engagement** (``events=True``). While alive a customer visits at ``visit_rate * e_i`` per
   day and opens emails at ``email_rate * e_i`` [0.03, 0.05], with ``e_i ~ Gamma(2, 1/2)``
   (mean 1). The rates fade linearly to 0 over the ``fade_days`` [45] before ``t_drop`` and
   stay 0 after it; before each purchase ``Poisson(purchase_visits)`` [2] extra visits fall in
   the ``burst_days`` [5] before it. So engagement rises before purchases and fades before
   dropout, which the transactions alone show only later.
5. **Spend.** Customer mean ``m_i ~ LogNormal(log(mean_order), 0.5)`` [40]; each order
   ``m_i * LogNormal(-s^2/2, s)`` with ``s`` 0.4, floored at 0.50, in cents.

Same ``(customers, seed, erlang_k, config)``, same frames (one generator seeded with
``SeedSequence([seed, 19])``); ``attributes`` and ``attribute_effect`` change only the
dropout probabilities, ``events`` only whether engagement is drawn after everything else.
From the command line, ``--shop`` writes the three files (``--out`` and its siblings
``<stem>_customers.<ext>``, ``<stem>_events.<ext>``)::

    .venv/bin/python benchmarks/synthetic.py --shop --customers 3000 --seed 0 --erlang-k 3 \\
        --out /tmp/shop.csv          # also /tmp/shop_customers.csv and /tmp/shop_events.csv

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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

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
    "SHOP_CHANNELS",
    "ShopConfig",
    "synthetic_shop",
    "write_shop",
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
# a shop with attributes, engagement and an Erlang-k rhythm (see the module docstring)

#: channel -> (share of customers, effect on the log-odds of dropping out after a purchase)
SHOP_CHANNELS: dict[str, tuple[float, float]] = {
    "web": (0.40, 0.0), "app": (0.30, -1.2), "store": (0.15, -2.4), "marketplace": (0.15, 3.3)}
_REGIONS = ("north", "central", "south", "east", "islands")


@dataclass(frozen=True)
class ShopConfig:
    """Parameters of :func:`synthetic_shop` (see the module docstring)."""

    end: str = "2025-12-31"
    history_days: int = 731
    acquisition_days: float = 600.0
    r: float = 0.9
    alpha: float = 30.0
    base_dropout: float = 0.12
    dropout_concentration: float = 8.0
    attribute_effect: float = 1.0
    age_effect: float = -1.2
    channels: dict = field(default_factory=lambda: dict(SHOP_CHANNELS))
    visit_rate: float = 0.03
    email_rate: float = 0.05
    fade_days: float = 45.0
    purchase_visits: float = 2.0
    burst_days: float = 5.0
    mean_order: float = 40.0
    spend_sigma: float = 0.4

    @property
    def start(self) -> np.datetime64:
        return np.datetime64(self.end, "D") + 1 - int(self.history_days)


def _timestamps(cfg: ShopConfig, t: np.ndarray) -> np.ndarray:
    sec = np.floor(t * _SECONDS_PER_DAY).astype(np.int64)
    return (cfg.start.astype("datetime64[s]") + sec.astype("timedelta64[s]")).astype("datetime64[ns]")


def _ids(numbers: np.ndarray, prefix: str, width: int) -> np.ndarray:
    return np.char.add(prefix, np.char.zfill(numbers.astype(str), width)).astype(object)


def synthetic_shop(customers: int = 3000, seed: int = 0, attributes: bool = True, events: bool = True,
                   erlang_k: float = 3, config: ShopConfig | None = None,
                   **overrides) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None]:
    """``(transactions, customers, events)`` of a shop whose churn has a known cause.

    ``attributes`` makes the customers' channel and age shift their dropout (and returns the
    customers frame; else None and no effect); ``events`` returns the engagement log that
    fades before dropout (else None); ``erlang_k`` is the shape of the gaps between purchases
    (1: exponential). ``overrides`` are :class:`ShopConfig` fields. Frames are sorted by
    customer and time; ids are ``C0000001``... and ``O00000001``...
    """
    cfg = dataclasses.replace(config or ShopConfig(), **overrides) if overrides else (config or ShopConfig())
    if customers < 1 or erlang_k <= 0:
        raise ValueError("customers must be >= 1 and erlang_k > 0")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 19]))
    n, horizon = int(customers), float(cfg.history_days)

    # --- customers: attributes and dropout --------------------------------------------------
    t0 = rng.uniform(0.0, min(float(cfg.acquisition_days), horizon), n)
    names = list(cfg.channels)
    shares = np.array([cfg.channels[c][0] for c in names])
    channel = _choice(rng, shares, n)
    age = np.clip(np.round(rng.normal(40.0, 12.0, n)), 18, 80).astype(np.int64)
    gender = np.where(rng.random(n) < 0.5, "F", "M").astype(object)
    region = np.array(_REGIONS, dtype=object)[_choice(rng, np.ones(len(_REGIONS)), n)]
    base = np.log(cfg.base_dropout / (1.0 - cfg.base_dropout))
    effect = np.array([cfg.channels[c][1] for c in names])[channel] + cfg.age_effect * (age - 40.0) / 10.0
    mean = 1.0 / (1.0 + np.exp(-(base + (cfg.attribute_effect * effect if attributes else 0.0))))
    kappa = cfg.dropout_concentration                                     # p ~ Beta around the mean
    mean = np.broadcast_to(mean, (n,))
    p = np.clip(rng.beta(kappa * mean, kappa * (1.0 - mean)), 1e-6, 0.999)
    lam = np.maximum(rng.gamma(cfg.r, 1.0 / cfg.alpha, n), 1e-4)

    # --- purchases: Erlang-k gaps until dropout or the end ------------------------------------
    n_purch = rng.geometric(p)                                            # >= 1, first purchase included
    shape = np.full(n, float(erlang_k))
    scale = 1.0 / (float(erlang_k) * lam)
    r_idx, r_t = _renewal_arrivals(rng, t0, horizon, shape, scale, n_purch - 1)
    cust = np.concatenate((np.arange(n), r_idx))
    t = np.concatenate((t0, r_t))
    order = np.lexsort((t, cust))
    cust, t = cust[order], t[order]
    made = np.bincount(cust, minlength=n)
    last = np.full(n, -np.inf)
    np.maximum.at(last, cust, t)
    next_gap = rng.standard_gamma(shape) * scale
    t_drop = np.where(made >= n_purch, last + rng.random(n) * next_gap, np.inf)

    m = cfg.mean_order * rng.lognormal(0.0, 0.5, n)
    s = cfg.spend_sigma
    amount = np.round(np.maximum(m[cust] * rng.lognormal(-0.5 * s * s, s, cust.size), 0.5), 2)
    ids = _ids(np.arange(1, n + 1), "C", 7)
    tx = pd.DataFrame({"customer_id": ids[cust], "order_id": _ids(np.arange(1, cust.size + 1), "O", 8),
                       "timestamp": _timestamps(cfg, t), "amount": amount})

    people = None
    if attributes:
        people = pd.DataFrame({"customer_id": ids, "channel": np.array(names, dtype=object)[channel],
                               "age": age, "gender": gender, "region": region})

    log = None
    if events:
        e = rng.gamma(2.0, 0.5, n)
        parts_c, parts_t, parts_k = [], [], []
        for kind, rate in ((0, cfg.visit_rate), (1, cfg.email_rate)):
            # constant rate from t0 to the fade (or the end), then a linear fade to 0 at t_drop
            full_end = np.minimum(np.maximum(t_drop - cfg.fade_days, t0), horizon)
            k = rng.poisson(rate * e * (full_end - t0))
            who = np.repeat(np.arange(n), k)
            parts_c.append(who)
            parts_t.append(t0[who] + rng.random(who.size) * (full_end - t0)[who])
            dropped = np.isfinite(t_drop)
            fade_start = np.where(dropped, np.maximum(np.where(dropped, t_drop, 0.0) - cfg.fade_days, t0), horizon)
            length = np.where(dropped, np.where(dropped, t_drop, 0.0) - fade_start, 0.0)
            k = rng.poisson(rate * e * length / 2.0 * (length > 0))
            who = np.repeat(np.arange(n), k)
            x = length[who] * (1.0 - np.sqrt(1.0 - rng.random(who.size)))   # density falling to 0
            parts_c.append(who)
            parts_t.append(fade_start[who] + x)
            parts_k.extend([np.full(parts_c[-2].size, kind), np.full(who.size, kind)])
        burst = rng.poisson(cfg.purchase_visits, cust.size)               # visits before each purchase
        who = np.repeat(np.arange(cust.size), burst)
        parts_c.append(cust[who])
        parts_t.append(t[who] - rng.random(who.size) * cfg.burst_days)
        parts_k.append(np.zeros(who.size, dtype=np.int64))
        ec, et, ek = (np.concatenate(x) for x in (parts_c, parts_t, parts_k))
        keep = (et >= 0) & (et < horizon)
        ec, et, ek = ec[keep], et[keep], ek[keep]
        order = np.lexsort((et, ec))
        log = pd.DataFrame({"customer_id": ids[ec[order]], "timestamp": _timestamps(cfg, et[order]),
                            "event_type": np.array(["visit", "email_open"], dtype=object)[ek[order]]})
    return tx, people, log


def write_shop(path: str | os.PathLike, customers: int = 3000, seed: int = 0, *, attributes: bool = True,
               events: bool = True, erlang_k: float = 3, **overrides) -> dict[str, str]:
    """Write :func:`synthetic_shop`'s frames: the log to ``path`` (``.csv`` or ``.parquet``),
    the customers and events beside it as ``<stem>_customers`` and ``<stem>_events``. Returns
    ``{"transactions": ..., "customers": ..., "events": ...}`` (the paths written)."""
    path = Path(path)
    frames = dict(zip(("transactions", "customers", "events"),
                      synthetic_shop(customers, seed, attributes, events, erlang_k, **overrides)))
    written = {}
    for name, frame in frames.items():
        if frame is None:
            continue
        target = path if name == "transactions" else path.with_name(f"{path.stem}_{name}{path.suffix}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        if target.suffix.lower() == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
        os.replace(tmp, target)
        written[name] = str(target)
    return written


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
    ap.add_argument("--shop", action="store_true",
                    help="write synthetic_shop's log, customers and events files instead (see the docstring)")
    ap.add_argument("--erlang-k", type=float, default=3.0, help="--shop: shape of the gaps between purchases")
    ap.add_argument("--no-attributes", action="store_true", help="--shop: no customers file, no attribute effect")
    ap.add_argument("--no-events", action="store_true", help="--shop: no events file")
    args = ap.parse_args(argv)
    if args.shop:
        started = time.perf_counter()
        written = write_shop(args.out, args.customers, args.seed, attributes=not args.no_attributes,
                             events=not args.no_events, erlang_k=args.erlang_k)
        for name, target in written.items():
            print(f"wrote {name}: {target}")
        print(f"seconds: {time.perf_counter() - started:.1f}")
        return 0

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
