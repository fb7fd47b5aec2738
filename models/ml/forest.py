"""LightGBM trees at batch-scoring speed: compiled to machine code once a batch is big enough.

LightGBM's own ``predict`` walks every tree through a generic interpreter; `lleaves`_ compiles
the same model text with LLVM (``llvmlite`` ships LLVM, so no C compiler and no network are
needed) into one function per forest, about five times faster on our hazard model. Its
results equal LightGBM's up to float rounding (measured: 3e-16).

Compiling costs a few seconds (80 hazard trees: 2.4-3.9 s on the loaded 2-core machine), which
small batches (single lookups, CDNOW's demo) would never win back, so it happens lazily, on the
first batch of at least :data:`COMPILE_FROM_ROWS` rows, or when asked (:meth:`Forest.compile`,
e.g. when a batch job loads a scorer); below that, and whenever ``lleaves`` is not installed or
cannot compile, LightGBM predicts.

.. _lleaves: https://github.com/siboehm/lleaves
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from numpy.typing import NDArray

COMPILE_FROM_ROWS = 200_000
"""Rows in one call from which compiling the forest pays for itself."""


def feature_matrix(X: pd.DataFrame, names: list[str], dtype: type = np.float64,
                   rows: NDArray[np.integer] | None = None) -> NDArray:
    """Columns ``names`` of ``X`` (only the positions ``rows``, if given) as one C-ordered matrix.

    Column by column into one buffer: ``X[names].to_numpy()`` first copies the frame's blocks
    (``take``) and then interleaves them, two passes over a wide mixed-type table. Training
    asks for ``float32``, half the memory; LightGBM bins the values, so the trees are the same
    up to a value within float32 rounding of a bin edge.
    """
    out: np.ndarray = np.empty((len(X) if rows is None else len(rows), len(names)), dtype=dtype)
    for j, name in enumerate(names):
        column = X[name].to_numpy(dtype=np.float64)
        out[:, j] = column if rows is None else column[rows]
    return out


def sample_positions(n: int, limit: int | None, seed: int) -> NDArray[np.int64] | None:
    """Sorted positions of ``limit`` of ``n`` rows drawn uniformly without replacement (seeded),
    or None when all ``n`` are to be kept (``limit`` None or not below ``n``).

    The learned models fit on such a subsample above their row limit: a uniform draw keeps
    every rate the model learns, so it needs no weights, only fewer rows.
    """
    if limit is None or n <= limit:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def thread_count(num_threads: int) -> int:
    """LightGBM's convention (0 or less: every core) as a positive number of threads."""
    return num_threads if num_threads > 0 else (os.cpu_count() or 1)


class Forest:
    """A LightGBM booster that predicts big batches through a compiled copy of itself.

    Parameters
    ----------
    booster : the trained LightGBM model.
    num_threads : threads for prediction (0: every core).
    """

    def __init__(self, booster: lgb.Booster, num_threads: int = 0) -> None:
        self.booster = booster
        self.num_threads = num_threads
        self._compiled: Any = None
        self._compile_failed = False

    def predict(self, matrix: NDArray[np.float64], batch_rows: int | None = None) -> NDArray[np.float64]:
        """The booster's prediction (probability for a binary objective) for each row.

        ``batch_rows``: size of the whole batch this call is a part of (default: this call's
        rows); it decides whether compiling is worth it. Once compiled, every batch uses the
        compiled trees (one thread under 10,000 rows, where threads cost more than they save).
        """
        rows = len(matrix)
        big = (batch_rows or rows) >= COMPILE_FROM_ROWS
        compiled = self._compiled_model() if big else self._compiled
        if compiled is not None:
            threads = 1 if rows < 10_000 else thread_count(self.num_threads)
            return compiled.predict(np.ascontiguousarray(matrix, dtype=np.float64), n_jobs=threads)
        return np.asarray(self.booster.predict(matrix, num_threads=self.num_threads), dtype=np.float64)

    def compile(self) -> bool:
        """Compile now (e.g. when a service or batch job loads the model); True if compiled."""
        return self._compiled_model() is not None

    def _compiled_model(self) -> Any:
        """The ``lleaves`` model, compiled on first use; None if ``lleaves`` is unavailable."""
        if self._compiled is None and not self._compile_failed:
            try:
                self._compiled = _compile(self.booster)
            except Exception as error:  # noqa: BLE001  (LightGBM predicts the same, only slower)
                self._compile_failed = True
                warnings.warn(f"could not compile the LightGBM model with lleaves ({error!r}); "
                              "LightGBM predicts instead", RuntimeWarning, stacklevel=3)
        return self._compiled


def forest_for(owner: Any, booster: lgb.Booster, num_threads: int) -> Forest:
    """The :class:`Forest` of ``owner``'s booster, kept on ``owner`` so it compiles at most once
    (a new booster, e.g. after a refit, gets a new forest)."""
    forest = getattr(owner, "_forest_cache", None)
    if forest is None or forest.booster is not booster:
        forest = Forest(booster, num_threads)
        owner._forest_cache = forest
    forest.num_threads = num_threads
    return forest


def _compile(booster: lgb.Booster) -> Any:
    """``lleaves.Model`` of ``booster``, compiled for this machine's CPU."""
    import lleaves

    with tempfile.TemporaryDirectory(prefix="winback-forest-") as folder:
        path = Path(folder) / "model.txt"
        path.write_text(booster.model_to_string(), encoding="utf-8")
        model = lleaves.Model(model_file=str(path))
        model.compile()
    return model


class CompiledTrees:
    """Mixin: ``compile_trees`` for an estimator that predicts its fitted ``booster_`` through
    :func:`forest_for` (the churn model, the hazard model), written once."""

    booster_: lgb.Booster
    num_threads: int

    def compile_trees(self) -> bool:
        """Compile the trees for big batches now rather than on the first one; True if
        compiled, False if LightGBM will predict."""
        if not hasattr(self, "booster_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit first")
        return forest_for(self, self.booster_, self.num_threads).compile()
