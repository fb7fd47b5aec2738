"""The training rows the learned models read, sampled while origins stream past (models.ml.rows)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.ml.rows import RowLimits, RowSampler


def _origin(day: str, n: int, start: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    ids = np.arange(start, start + n)
    frame = pd.DataFrame({"customer_id": ids.astype(str), "origin": pd.Timestamp(day), "row": ids})
    return frame, (ids * 2654435761 % 2**32).astype(np.uint64)        # half even, half odd


def _sampled(limits: RowLimits, sizes: list[int], seed: int = 0):
    sampler = RowSampler(limits, len(sizes), seed)
    frames = []
    for k, n in enumerate(sizes):
        frame, hashes = _origin(f"2025-0{k + 1}-01", n)
        frames.append((frame, hashes))
        sampler.add(frame, hashes)
    return sampler.result(), frames


def test_a_small_shop_keeps_every_row_in_order():
    rows, frames = _sampled(RowLimits(fit=1000, hazard=500, validation=1000), [100, 120, 130])
    stacked = pd.concat([f for f, _ in frames], ignore_index=True)
    pd.testing.assert_frame_equal(rows.frame, stacked)
    assert (rows.positions["fit"] == np.arange(350)).all() and (rows.positions["hazard"] == np.arange(350)).all()
    half = np.concatenate([h for _, h in frames]) % 2 == 0
    origin = np.repeat([0, 1, 2], [100, 120, 130])
    assert (rows.positions["cv_fit"] == np.flatnonzero((origin < 2) & half)).all()
    assert (rows.positions["valid"] == np.flatnonzero((origin == 2) & ~half)).all()
    assert rows.rows_seen == 350 and len(rows.origins) == 3


def test_a_large_shop_keeps_exact_uniform_nested_samples_and_little_else():
    limits = RowLimits(fit=3000, hazard=1000, validation=800)
    rows, _ = _sampled(limits, [10_000, 12_000, 14_000])
    p = rows.positions
    assert [len(p[k]) for k in ("fit", "hazard", "cv_fit", "cv_hazard", "valid")] == [3000, 1000, 3000, 1000, 800]
    assert set(p["hazard"]) <= set(p["fit"]) and set(p["cv_hazard"]) <= set(p["cv_fit"])   # nested: kept once
    # memory: only rows some sample takes are kept, not the 36,000 rows seen
    assert len(rows.frame) == len(set().union(*map(set, p.values())))
    assert len(rows.frame) < 3000 + 3000 + 800
    origin = rows.frame["origin"].dt.month.to_numpy() - 1
    half = rows.hashes % 2 == 0
    assert (origin[p["valid"]] == 2).all() and not half[p["valid"]].any()
    assert (origin[p["cv_fit"]] < 2).all() and half[p["cv_fit"]].all()
    # uniform over origins: each origin's share of the served sample is its share of the rows
    shares = np.bincount(origin[p["fit"]], minlength=3) / 3000
    assert np.allclose(shares, np.array([10, 12, 14]) / 36, atol=0.03)
    # the rows kept are the origins' own rows, in order
    assert (np.diff(rows.frame["row"].to_numpy()[origin == 1]) > 0).all()


def test_streaming_keeps_exactly_the_bottom_k_of_all_rows():
    """What survives the pruning after each origin is what one bottom-k over every row's key
    (drawn in the same order) gives: rows dropped early could never have been chosen."""
    limits = RowLimits(fit=500, hazard=200, validation=100)
    sizes = [3000, 1000, 2000]
    rows, frames = _sampled(limits, sizes, seed=3)
    keys = np.random.default_rng(3).random(sum(sizes))
    hashes = np.concatenate([h for _, h in frames])
    origin = np.repeat(np.arange(3), sizes)
    seen = pd.concat([f for f, _ in frames], ignore_index=True).assign(origin_index=origin)

    def bottom(member, k):
        chosen = np.flatnonzero(member)
        return set(chosen[np.argsort(keys[chosen])[:k]])

    half = hashes % 2 == 0
    expected = {"fit": bottom(origin >= 0, 500), "hazard": bottom(origin >= 0, 200),
                "cv_fit": bottom((origin < 2) & half, 500), "valid": bottom((origin == 2) & ~half, 100)}
    kept = rows.frame.assign(origin_index=rows.frame["origin"].dt.month.to_numpy() - 1)
    ident = list(zip(kept["origin_index"], kept["row"]))
    for pool, want in expected.items():
        got = {ident[i] for i in rows.positions[pool]}
        assert got == {(seen["origin_index"][i], seen["row"][i]) for i in want}, pool


def test_one_origin_has_no_cross_validation_rows():
    rows, _ = _sampled(RowLimits(fit=500, hazard=200), [6000])
    assert len(rows.positions["fit"]) == 500
    assert len(rows.positions["valid"]) == 0 and len(rows.positions["cv_fit"]) == 0


def test_origins_are_counted():
    sampler = RowSampler(RowLimits(fit=10, hazard=10), 1, 0)
    frame, hashes = _origin("2025-01-01", 5)
    sampler.add(frame, hashes)
    with pytest.raises(ValueError, match="more origins"):
        sampler.add(frame, hashes)
    with pytest.raises(ValueError, match="0 of 2"):
        RowSampler(RowLimits(fit=10, hazard=10), 2, 0).result()
