"""Metrics for time-to-event predictions that scikit-learn does not have.

Used by the scorer to choose its next-purchase model and by training to report it.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def concordance_index(time: ArrayLike, event: ArrayLike, predicted_time: ArrayLike) -> float:
    """Harrell's C for right-censored times: how often the earlier event is predicted earlier.

    A pair is comparable when the shorter observed time is an event; it is concordant when
    that customer also has the shorter predicted time, and counts one half on a predicted tie.
    0.5 is random ordering, 1 perfect. Runs in O(n log n).

    Parameters
    ----------
    time : observed days to the event or to censoring.
    event : True where the event (a purchase) was observed.
    predicted_time : the model's time prediction (e.g. restricted mean time to purchase).
    """
    t = np.asarray(time, dtype=float)
    e = np.asarray(event, dtype=bool)
    p = np.asarray(predicted_time, dtype=float)
    if not (len(t) == len(e) == len(p)):
        raise ValueError("time, event and predicted_time must have the same length")
    # ranks of predictions, so a Fenwick tree can count smaller / equal predictions
    uniq, p_rank = np.unique(p, return_inverse=True)
    tree = np.zeros(len(uniq) + 1, dtype=np.int64)

    def add(i: int) -> None:
        i += 1
        while i < len(tree):
            tree[i] += 1
            i += i & -i

    def count_le(i: int) -> int:
        i += 1
        total = 0
        while i > 0:
            total += tree[i]
            i -= i & -i
        return int(total)

    order = np.argsort(-t, kind="stable")          # longest times first
    concordant = tied = comparable = 0.0
    inserted = 0
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and t[order[j]] == t[order[i]]:
            j += 1
        group = order[i:j]
        for k in group:                            # compare with strictly longer times
            if e[k]:
                comparable += inserted
                le = count_le(p_rank[k])
                eq = le - (count_le(p_rank[k] - 1) if p_rank[k] > 0 else 0)
                concordant += inserted - le        # the longer-lived predicted longer
                tied += eq
        for k in group:
            add(p_rank[k])
        inserted += len(group)
        i = j
    if comparable == 0:
        return float("nan")
    return float((concordant + 0.5 * tied) / comparable)


def brier_scores(event_by: NDArray[np.bool_], prob: NDArray[np.float64]) -> NDArray[np.float64]:
    """Brier score per column: mean squared error of P(event by t_j) against what happened."""
    return np.mean((np.asarray(prob, float) - np.asarray(event_by, float)) ** 2, axis=0)


def expected_calibration_error(y: ArrayLike, prob: ArrayLike, bins: int = 10) -> float:
    """Mean gap between predicted and observed rates over equal-count bins, weighted by size."""
    y = np.asarray(y, dtype=float)
    prob = np.asarray(prob, dtype=float)
    order = np.argsort(prob, kind="stable")
    total = 0.0
    for chunk in np.array_split(order, bins):
        if len(chunk):
            total += len(chunk) * abs(prob[chunk].mean() - y[chunk].mean())
    return float(total / len(y))
