"""The RFM summary as the classical models read it: checked columns and distinct histories.

A fit collapses the summary to its distinct ``(frequency, recency, T)`` rows, each weighted by
the number of customers sharing it (the likelihood is the same); :class:`Histories` holds them
on a rescaled time axis with the per-frequency, per-age and per-pair indexes the likelihoods
use to evaluate costly terms once per distinct value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

HISTORY_COLUMNS = ("frequency", "recency", "T")
"""Columns of an RFM summary: repeat purchases, time of the last one, age (time units)."""

# --------------------------------------------------------------------------- validation


def require_columns(summary: pd.DataFrame, columns: Iterable[str]) -> None:
    """Raise ``ValueError`` naming every column of ``columns`` missing from ``summary``."""
    columns = tuple(columns)
    missing = [name for name in columns if name not in summary]
    if missing:
        raise ValueError(
            f"summary is missing column(s) {', '.join(repr(m) for m in missing)}; "
            f"expected columns {', '.join(columns)}"
        )


def _row_label(summary: pd.DataFrame, bad: NDArray[np.bool_]) -> Any:
    """Index label (or position) of the first ``True`` in ``bad``."""
    position = int(np.argmax(bad))
    index = getattr(summary, "index", None)
    return index[position] if index is not None else position


def reject_rows(summary: pd.DataFrame, bad: NDArray[np.bool_], column: str, expected: str) -> None:
    """Raise ``ValueError`` if any row is flagged in ``bad``, naming column, count and first row."""
    if bad.any():
        raise ValueError(
            f"column {column!r} must be {expected}; {int(bad.sum())} row(s) are not "
            f"(first at row {_row_label(summary, bad)!r})"
        )


def column_values(summary: pd.DataFrame, column: str) -> FloatArray:
    """Column ``column`` of ``summary`` as a float64 array, checked finite and non-negative."""
    try:
        values = np.asarray(summary[column], dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"column {column!r} must be numeric") from error
    reject_rows(summary, ~(np.isfinite(values) & (values >= 0)), column, "finite and >= 0")
    return values


def history_arrays(summary: pd.DataFrame) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Validated ``frequency``, ``recency`` and ``T`` arrays of an RFM summary.

    Parameters
    ----------
    summary : pandas.DataFrame
        One row per customer with ``frequency`` (repeat purchases, whole number),
        ``recency`` (age at the last purchase, 0 without repeat purchase) and ``T`` (age at
        the cutoff), as produced by ``lifetimes.utils.summary_data_from_transaction_data``.

    Returns
    -------
    tuple of numpy.ndarray
        ``(x, t_x, T)`` as float64 arrays.

    Raises
    ------
    ValueError
        If a column is missing or a value is impossible; the message names the column, the
        number of bad rows and the first bad row's index label.
    """
    require_columns(summary, HISTORY_COLUMNS)
    x, t_x, T = (column_values(summary, name) for name in HISTORY_COLUMNS)
    reject_rows(summary, x != np.floor(x), "frequency", "a whole number of repeat purchases")
    reject_rows(summary, t_x > T, "recency", "<= T")
    reject_rows(summary, (x == 0) & (t_x != 0), "recency", "0 when frequency is 0")
    return x, t_x, T


def distinct_rows(columns: Mapping[str, FloatArray]) -> tuple[dict[str, FloatArray], FloatArray]:
    """Collapse equal rows into one row with a count.

    Fader and Hardie fit their models on the distinct (x, t_x, T) patterns weighted by how
    many customers share each one; the likelihood is the same, the work scales with the
    number of distinct histories instead of customers.

    When every column holds whole numbers >= 0 (a daily summary), the rows are packed into
    one int64 key and counted with ``numpy.unique`` (about 20x faster than a pandas
    ``value_counts`` at 10 million rows); otherwise pandas counts them.

    Parameters
    ----------
    columns : mapping of str to numpy.ndarray
        Equal-length columns.

    Returns
    -------
    distinct : dict of str to numpy.ndarray
        The distinct rows, column by column (sorted by the columns, in order, on the
        whole-number path; in pandas' order otherwise).
    weights : numpy.ndarray
        Number of original rows equal to each distinct row (float64).
    """
    arrays = {name: np.asarray(values, dtype=np.float64) for name, values in columns.items()}
    packed = _pack_whole_numbers(list(arrays.values()))
    if packed is None:
        counts = pd.DataFrame(arrays).value_counts(sort=False)
        distinct = {
            name: counts.index.get_level_values(name).to_numpy(dtype=np.float64) for name in arrays
        }
        return distinct, counts.to_numpy(dtype=np.float64)
    key, sizes = packed
    keys, counts = np.unique(key, return_counts=True)
    decoded = []
    for size in reversed(sizes):
        keys, digit = np.divmod(keys, size)
        decoded.append(digit.astype(np.float64))
    return dict(zip(arrays, reversed(decoded))), counts.astype(np.float64)


def _pack_whole_numbers(arrays: list[FloatArray]) -> tuple[NDArray[np.int64], list[int]] | None:
    """Mixed-radix int64 key of equal-length whole-number columns, with each column's radix.

    ``None`` if a column holds a fraction, a negative or non-finite value, or the key would
    not fit in 62 bits.
    """
    if not arrays or arrays[0].size == 0:
        return None
    sizes = []
    for values in arrays:
        low, high = values.min(), values.max()
        if not (np.isfinite(low) and np.isfinite(high) and low >= 0 and high < 2**31):
            return None
        if not np.array_equal(values, np.floor(values)):
            return None
        sizes.append(int(high) + 1)
    if np.sum(np.log2(sizes)) > 62:
        return None
    key = arrays[0].astype(np.int64)
    for values, size in zip(arrays[1:], sizes[1:]):
        key *= size
        key += values.astype(np.int64)
    return key, sizes


def on_distinct_pairs(
    function: Callable[[FloatArray, FloatArray], FloatArray], x: FloatArray, y: FloatArray
) -> FloatArray:
    """``function(x, y)`` evaluated once per distinct ``(x, y)`` pair and spread back to every row.

    The costly terms of the purchase models (Gauss hypergeometric functions) depend on two
    columns only, e.g. frequency and T; a customer base has far fewer distinct pairs than
    customers, so this is where scoring time goes down. ``function`` must be elementwise
    along its first axis.
    """
    if x.size == 0:
        return function(x, y)
    codes, _ = pd.factorize(x + 1j * y)
    first = np.empty(codes.max() + 1, dtype=np.int64)
    first[codes[::-1]] = np.arange(codes.size - 1, -1, -1)
    return function(x[first], y[first])[codes]


# --------------------------------------------------------------------------- likelihood fits


class Histories:
    """Distinct histories on a rescaled time axis, as the purchase models' likelihoods read them.

    Rows are split into first-time buyers (``x == 0``, whose ``t_x`` is 0) and repeat buyers;
    repeat rows also carry the position of their frequency in ``x_values``, so that terms that
    depend on the frequency alone (gamma functions) are evaluated once per distinct frequency
    and weighted by ``x_weights``, the customers having it.

    ``T`` and ``t_x`` also carry the position of their value among the distinct ones: a daily
    summary has a few hundred ages, so ``log(alpha + T)`` is computed per age and gathered.

    Time is divided by the largest ``T`` (``lifetimes``' scaling), which keeps the optimiser's
    start (all parameters 1) reasonable for daily and weekly summaries alike.
    """

    def __init__(self, x: FloatArray, t_x: FloatArray, T: FloatArray, weights: FloatArray,
                 scale: float | None = None) -> None:
        self.scale = 1.0 / float(T.max()) if scale is None else scale
        self._rows = (x, t_x, T, weights)
        first = x == 0
        self.first_T = T[first] * self.scale
        self.first_weights = weights[first]
        repeat = ~first
        self.x, self.weights = x[repeat], weights[repeat]
        self.t_x, self.T = t_x[repeat] * self.scale, T[repeat] * self.scale
        self.x_values, self.x_index = np.unique(self.x, return_inverse=True)
        self.T_values, self.T_index = np.unique(self.T, return_inverse=True)
        self.t_x_values, self.t_x_index = np.unique(self.t_x, return_inverse=True)
        self.x_weights = np.bincount(self.x_index, self.weights, minlength=self.x_values.size)
        self.total = float(weights.sum())
        self.first_total = float(self.first_weights.sum())
        self._pairs: dict[int, tuple[NDArray[np.intp], FloatArray, FloatArray]] = {}

    def thinned(self, customers: int, seed: int = 0) -> Histories:
        """The histories of about ``customers`` customers drawn at random (binomial thinning
        of the weights), on the same time scale: a cheap problem whose maximum is close."""
        x, t_x, T, weights = self._rows
        kept = np.random.default_rng(seed).binomial(weights.astype(np.int64), min(1.0, customers / self.total))
        keep = kept > 0
        return Histories(x[keep], t_x[keep], T[keep], kept[keep].astype(np.float64), self.scale)

    def pairs(self, y: FloatArray) -> tuple[NDArray[np.intp], FloatArray, FloatArray]:
        """Distinct ``(x, y)`` pairs of the repeat rows (``y`` is ``t_x`` or ``T``), cached.

        Returns each row's pair code and the pairs' ``x`` and ``y``: terms costly to evaluate
        (hypergeometric functions) are computed once per pair.
        """
        key = id(y)
        if key not in self._pairs:
            codes, _ = pd.factorize(self.x + 1j * y)
            first = np.empty(codes.max() + 1 if codes.size else 0, dtype=np.int64)
            first[codes[::-1]] = np.arange(codes.size - 1, -1, -1)
            self._pairs[key] = (codes, self.x[first], y[first])
        return self._pairs[key]

    def by_frequency(self, values: FloatArray) -> FloatArray:
        """Sum of ``values`` (one per repeat row) within each distinct frequency."""
        return np.bincount(self.x_index, values, minlength=self.x_values.size).astype(np.float64, copy=False)


