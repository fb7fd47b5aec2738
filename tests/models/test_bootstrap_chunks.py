"""The paired bootstraps hold a bounded number of resampled rows at once, with the same resamples."""

from __future__ import annotations

import numpy as np

from models import metrics


def test_smaller_chunks_give_the_same_intervals(monkeypatch):
    rng = np.random.default_rng(0)
    n = 3001                                                   # odd: numpy's generator pairs 32-bit draws
    y = rng.random(n) < 0.3
    a, b = rng.random(n) + y * 0.3, rng.random(n) + y * 0.2
    days, event = rng.integers(1, 90, n).astype(float), rng.random(n) < 0.6
    runs = []
    for cells in (1 << 22, 7 * n, n):                          # 100, 7 and 1 resamples at a time
        monkeypatch.setattr(metrics, "BOOTSTRAP_CHUNK_CELLS", cells)
        drawn = list(metrics.bootstrap_indices(n, 20, seed=1))
        runs.append(([len(rows) for rows in drawn], np.concatenate(drawn),
                     metrics.bootstrap_auc_difference(y, a, b, 60, seed=1),
                     metrics.bootstrap_brier_difference(y, a / 2, b / 2, 60, seed=1),
                     metrics.bootstrap_cindex_difference(days, event, a, b, 20, seed=1)))
    assert [r[0] for r in runs] == [[20], [7, 7, 6], [1] * 20]
    assert all((r[1] == runs[0][1]).all() for r in runs)                    # the very same resamples
    # the same intervals (a matrix product of another shape may round the last bit differently)
    assert all(np.allclose(r[2:], runs[0][2:], rtol=0, atol=1e-12) for r in runs)
