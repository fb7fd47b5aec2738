"""Which training rows the learned models read, kept while the training origins stream past.

The learned models never read every training row of a large shop: the churn trees fit on at
most :data:`models.ml.churn.MAX_FIT_ROWS` rows, the hazard model on at most
:data:`models.ml.next_purchase.MAX_FIT_CUSTOMERS` customers, and the time-series
cross-validation validates on at most :data:`MAX_VALIDATION_ROWS` customers. Only the classical
models need a whole origin, and they are fit one origin at a time. So the scorer reads the
origins one after another (:meth:`models.scorer.WinbackScorer.fit`) and keeps, from each, only
the rows some learned fit will read: memory grows with those limits, not with the shop
(10.8M customers × 3 origins held as one table was 8.6 GiB before a single tree).

Each limit is a uniform random sample of its population drawn as a *bottom-k* sample: every row
gets a seeded uniform key, and a population's sample is its ``limit`` rows with the smallest
keys. That sample is exactly uniform, and it can be kept while rows arrive in batches, without
knowing how many will come: a row whose key is above the ``limit``-th smallest key seen so far
in its population can never be chosen and is dropped at once. The samples share the keys, so
a smaller limit over the same population is a subset of a larger one (the hazard model's
customers are among the churn trees' rows) and few rows are kept twice over. A population no
larger than its limit is kept whole, in order: on a small shop the learned models see exactly
the rows they saw before these limits existed.

The populations (``origin`` counts the training origins oldest first, ``half`` is the even
half of a hash of the customer id, as the cross-validation splits customers):

* ``fit`` and ``hazard``: every training row (the served churn trees; the hazard model);
* ``cv_fit`` and ``cv_hazard``: the earlier origins' rows of one half of the customers (what
  the cross-validation fits on);
* ``valid``: the latest origin's rows of the other half (what it validates on).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

#: Customers the time-series cross-validation validates on at most (a uniform sample of the
#: latest training origin's validation half). The selection's paired bootstraps cost
#: resamples × rows: at 500,000 rows an AUC interval is about ±0.002 wide, more rows narrow it
#: little and cost minutes (the 1M-customer synthetic shop has 499,363 such rows, all kept).
MAX_VALIDATION_ROWS = 500_000

#: The populations and which limit each takes (see the module docstring).
POOLS = {"fit": "fit", "hazard": "hazard", "cv_fit": "fit", "cv_hazard": "hazard", "valid": "validation"}


@dataclass(frozen=True)
class RowLimits:
    """How many rows each learned fit reads at most (None: every row)."""

    fit: int | None
    hazard: int | None
    validation: int | None = MAX_VALIDATION_ROWS


@dataclass(frozen=True)
class TrainingRows:
    """The kept rows, oldest origin first, and each population's sample as sorted positions
    in ``frame``; ``origins`` the training origins' dates and ``hashes`` the customer hash of
    each kept row (what split them)."""

    frame: pd.DataFrame
    positions: dict[str, NDArray[np.int64]]
    origins: list[pd.Timestamp]
    hashes: NDArray[np.uint64]
    rows_seen: int


class RowSampler:
    """Bottom-k samples of every population of :data:`POOLS`, fed one origin at a time.

    Parameters
    ----------
    limits : the sample sizes.
    origins : how many training origins will be added (the last one validates).
    seed : seeds the rows' keys (drawn in the order rows are added).
    """

    def __init__(self, limits: RowLimits, origins: int, seed: int) -> None:
        self.limits = limits
        self.origins = origins
        self._rng = np.random.default_rng(seed)
        self._smallest = {pool: np.empty(0) for pool in POOLS}    # each pool's smallest keys so far
        self._pieces: list[tuple[pd.DataFrame, NDArray, NDArray, NDArray]] = []
        self._pending: tuple[NDArray, NDArray, NDArray] | None = None
        self._dates: list[pd.Timestamp] = []
        self._seen = 0

    def add(self, frame: pd.DataFrame, hashes: NDArray[np.uint64]) -> None:
        """One origin's rows (all of them, in order) and their customers' hashes:
        :meth:`select` and :meth:`keep` in one."""
        self.keep(frame.take(self.select(hashes, frame["origin"].iloc[0] if len(frame) else pd.NaT)))

    def select(self, hashes: NDArray[np.uint64], origin: pd.Timestamp) -> NDArray[np.int64]:
        """Draw the next origin's keys (one per row, ``hashes`` its customers' hashes in row
        order) and return the positions of its rows some sample may still take: only those
        rows need to be kept, or computed further (the scorer adds the classical models'
        outputs to them alone). Hand them to :meth:`keep` next."""
        index = len(self._dates)
        if index >= self.origins:
            raise ValueError(f"more origins added than the {self.origins} announced")
        if self._pending is not None:
            raise ValueError("keep the rows of the origin selected before selecting the next")
        self._dates.append(pd.Timestamp(origin))
        keys = self._rng.random(len(hashes))
        members = self._membership(index, hashes)
        for pool, member in members.items():
            limit = self._limit(pool)
            if limit is None:
                continue
            pooled = np.concatenate([self._smallest[pool], keys[member]])
            self._smallest[pool] = np.partition(pooled, limit - 1)[:limit] if len(pooled) > limit else pooled
        self._seen += len(hashes)
        kept = self._kept(keys, members)
        self._pending = (keys[kept], hashes[kept], np.full(int(kept.sum()), index, dtype=np.int16))
        return np.flatnonzero(kept)

    def keep(self, rows: pd.DataFrame) -> None:
        """The rows :meth:`select` returned the positions of, in that order (any columns)."""
        if self._pending is None or len(rows) != len(self._pending[0]):
            raise ValueError("keep takes the rows at the positions select returned, once")
        self._pieces.append((rows, *self._pending))
        self._pending = None
        self._prune()

    def result(self) -> TrainingRows:
        """The kept rows and every population's sample."""
        if len(self._dates) != self.origins:
            raise ValueError(f"{len(self._dates)} of {self.origins} origins were added")
        frames = [piece[0] for piece in self._pieces]
        frame = (pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True))
        keys, hashes, index = (np.concatenate([piece[i] for piece in self._pieces]) for i in (1, 2, 3))
        self._pieces.clear()
        members = self._membership(index, hashes)
        positions = {pool: np.flatnonzero(member & (keys <= self._threshold(pool)))
                     for pool, member in members.items()}
        return TrainingRows(frame, positions, list(self._dates), hashes, self._seen)

    def _membership(self, index: int | NDArray, hashes: NDArray[np.uint64]) -> dict[str, NDArray[np.bool_]]:
        index = np.broadcast_to(np.asarray(index), hashes.shape)
        half = hashes % np.uint64(2) == 0
        every = np.ones(len(hashes), dtype=bool)
        earlier = (index < self.origins - 1) & half
        latest = (index == self.origins - 1) & ~half if self.origins > 1 else np.zeros(len(hashes), dtype=bool)
        return {"fit": every, "hazard": every, "cv_fit": earlier, "cv_hazard": earlier, "valid": latest}

    def _limit(self, pool: str) -> int | None:
        return getattr(self.limits, POOLS[pool])

    def _threshold(self, pool: str) -> float:
        """The largest key a member of ``pool`` may have to be in its sample (so far)."""
        limit, smallest = self._limit(pool), self._smallest[pool]
        return np.inf if limit is None or len(smallest) < limit else float(smallest.max())

    def _kept(self, keys: NDArray, members: dict[str, NDArray[np.bool_]]) -> NDArray[np.bool_]:
        kept = np.zeros(len(keys), dtype=bool)
        for pool, member in members.items():
            kept |= member & (keys <= self._threshold(pool))
        return kept

    def _prune(self) -> None:
        """Drop the rows of earlier origins that no sample can take any more."""
        for i, (frame, keys, hashes, index) in enumerate(self._pieces[:-1]):
            kept = self._kept(keys, self._membership(index, hashes))
            if not kept.all():
                self._pieces[i] = (frame.take(np.flatnonzero(kept)), keys[kept], hashes[kept], index[kept])
