"""Model health statistics: drift of features and scores, performance before and after labels.

NannyML's layout: a calculator is fitted once on a reference (:meth:`DriftCalculator.fit`) and
then asked about any number of analysis batches (:meth:`DriftCalculator.calculate`), returning
a table. The statistics are a few hundred lines of NumPy and SciPy, not a dependency tree:

* **Drift** is the population stability index (PSI) of each column between the reference and
  the batch, over the reference's deciles (numeric) or categories (categorical), with missing
  values as a bin of their own. Its threshold accounts for sample size: two samples of one
  distribution give ``PSI ≈ (1/n_ref + 1/n) · χ²(bins − 1)`` (PSI is, to second order, the
  chi-square distance of the two share vectors), so a column drifts when its PSI is above both
  the chi-square quantile at ``alpha`` (divided by the columns tested, Bonferroni) and the
  practitioners' floor of 0.1 (an effect too small to matter is not an alarm on a large base).
* **Missing values and ranges**: the share of missing values and of values outside the
  reference's range, each flagged when it exceeds the reference's by more than chance allows.
* **Estimated performance (CBPE)**, Confidence-Based Performance Estimation: if the churn
  probabilities are calibrated, customer *i* churns with probability ``p_i``, so the expected
  AUC, Brier score and churn rate follow from the probabilities alone, before any label exists
  (:func:`estimated_auc`).
* **Realized performance** once the horizon has closed: AUC, Brier, calibration
  (:func:`realized_churn_metrics`), with the Hanley-McNeil standard error of an AUC
  (:func:`auc_standard_error`) for the interval a backtest promised.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats
from sklearn.metrics import brier_score_loss, roc_auc_score

from models.metrics import expected_calibration_error

#: PSI below this is not a shift worth acting on, whatever the sample size (the usual
#: 0.1 / 0.25 bands: below 0.1 "no significant change").
PSI_FLOOR = 0.1
MISSING = "(missing)"
OTHER = "(other)"


# --------------------------------------------------------------------------- PSI

def psi(reference_counts: ArrayLike, counts: ArrayLike) -> float:
    """Population stability index of two count vectors over the same bins.

    ``Σ (a − r) · ln(a / r)`` of the shares, each count smoothed by one half (Jeffreys) so an
    empty bin neither divides by zero nor dominates.
    """
    r = np.asarray(reference_counts, float) + 0.5
    a = np.asarray(counts, float) + 0.5
    r, a = r / r.sum(), a / a.sum()
    return float(np.sum((a - r) * np.log(a / r)))


def psi_threshold(n_reference: int, n: int, bins: int, alpha: float = 0.001,
                  floor: float = PSI_FLOOR) -> float:
    """The PSI above which two samples of these sizes over ``bins`` bins differ: the larger of
    the chi-square quantile ``(1/n_ref + 1/n) · χ²₁₋α(bins − 1)`` and ``floor``."""
    if n_reference < 1 or n < 1:
        return float("inf")
    chance = (1 / n_reference + 1 / n) * stats.chi2.ppf(1 - alpha, max(bins - 1, 1))
    return float(max(chance, floor))


def _rate_threshold(reference_rate: float, n_reference: int, n: int, alpha: float,
                    floor: float = 0.01) -> float:
    """How far above the reference's a share may rise by chance (one-sided normal bound of the
    difference of two proportions), at least ``floor``."""
    p = min(max(reference_rate, 1 / max(n_reference, 1)), 1.0)
    se = np.sqrt(p * (1 - p) * (1 / max(n_reference, 1) + 1 / max(n, 1)))
    return float(max(stats.norm.ppf(1 - alpha) * se, floor))


# --------------------------------------------------------------------------- column profiles

@dataclass(frozen=True)
class NumericProfile:
    """Decile edges, bin counts, missing count, range and size of a numeric reference column."""

    edges: list[float]
    counts: list[int]
    missing: int
    low: float
    high: float
    n: int
    kind: str = "numeric"

    @classmethod
    def fit(cls, values: ArrayLike, bins: int = 10) -> "NumericProfile":
        """The profile of ``values``: quantile bin edges of the reference and its shares."""
        x = np.asarray(values, float)
        present = x[np.isfinite(x)]
        if len(present) == 0:
            return cls([], [0], len(x), float("nan"), float("nan"), len(x))
        edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))
        counts = np.bincount(np.searchsorted(edges, present, side="left"), minlength=len(edges) + 1)
        return cls([float(e) for e in edges], [int(c) for c in counts], int(len(x) - len(present)),
                   float(present.min()), float(present.max()), len(x))

    def counts_of(self, values: ArrayLike) -> tuple[np.ndarray, int, int, int]:
        """Bin counts of ``values`` on these edges, then missing, out-of-range and total counts."""
        x = np.asarray(values, float)
        present = x[np.isfinite(x)]
        counts = np.bincount(np.searchsorted(np.asarray(self.edges), present, side="left"),
                             minlength=len(self.edges) + 1)
        outside = int(((present < self.low) | (present > self.high)).sum()) if np.isfinite(self.low) else 0
        return counts, int(len(x) - len(present)), outside, len(x)


@dataclass(frozen=True)
class CategoricalProfile:
    """Counts per category of a reference column (the rarest pooled as ``(other)``)."""

    categories: list[str]
    counts: list[int]
    missing: int
    n: int
    kind: str = "categorical"

    @classmethod
    def fit(cls, values: ArrayLike, max_categories: int = 20) -> "CategoricalProfile":
        """The profile of ``values``: the most common categories' shares, the rest pooled."""
        s = pd.Series(values, dtype=object)
        missing = int(s.isna().sum())
        found = s.dropna().astype(str).value_counts()
        kept = found.iloc[:max_categories]
        categories = [str(c) for c in kept.index] + [OTHER]
        counts = [int(c) for c in kept.to_numpy()] + [int(found.iloc[max_categories:].sum())]
        return cls(categories, counts, missing, len(s))

    def counts_of(self, values: ArrayLike) -> tuple[np.ndarray, int, int, int]:
        """Counts per reference category (new ones in ``(other)``), then missing, unseen
        categories' count and total."""
        s = pd.Series(values, dtype=object)
        present = s.dropna().astype(str)
        index = {c: i for i, c in enumerate(self.categories)}
        codes = present.map(index).fillna(len(self.categories) - 1).to_numpy(int)
        unseen = int((~present.isin(self.categories[:-1])).sum()) if self.counts[-1] == 0 else 0
        return np.bincount(codes, minlength=len(self.categories)), int(s.isna().sum()), unseen, len(s)


Profile = NumericProfile | CategoricalProfile


def profile_from_dict(data: dict) -> Profile:
    """A numeric or categorical profile from its dictionary (``kind`` tells which)."""
    data = dict(data)
    return (CategoricalProfile if data.pop("kind") == "categorical" else NumericProfile)(**data)


# --------------------------------------------------------------------------- drift calculator

DRIFT_COLUMNS = ("column", "kind", "psi", "threshold", "drifted", "missing_reference", "missing",
                 "missing_flag", "out_of_range", "range_flag", "n_reference", "n")


@dataclass
class DriftCalculator:
    """PSI, missing-value and range checks of named columns against a reference table.

    ``numeric`` and ``categorical`` name the columns; ``alpha`` is the family-wise false-alarm
    rate of one batch (divided among the columns); ``floor`` the least PSI that counts.
    """

    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    alpha: float = 0.01
    floor: float = PSI_FLOOR
    bins: int = 10
    profiles_: dict[str, Profile] = field(default_factory=dict, init=False, repr=False)

    def fit(self, reference: pd.DataFrame) -> "DriftCalculator":
        """Profile every column of the reference table; returns self."""
        missing = [c for c in (*self.numeric, *self.categorical) if c not in reference.columns]
        if missing:
            raise ValueError(f"the reference table lacks column(s) {', '.join(missing)}")
        self.profiles_ = {c: NumericProfile.fit(reference[c].to_numpy(float), self.bins) for c in self.numeric}
        self.profiles_.update({c: CategoricalProfile.fit(reference[c]) for c in self.categorical})
        return self

    @property
    def column_alpha(self) -> float:
        """The per-column significance level (Bonferroni over the profiled columns)."""
        return self.alpha / max(len(self.profiles_), 1)

    def calculate(self, analysis: pd.DataFrame) -> pd.DataFrame:
        """One row per column (:data:`DRIFT_COLUMNS`): PSI and its threshold, missing share and
        out-of-range share (numeric: outside the reference's [min, max]; categorical: a
        category the reference never had), each with its flag. A column the batch lacks counts
        as all missing."""
        if not self.profiles_:
            raise ValueError("DriftCalculator is not fitted yet; call fit(reference)")
        a = self.column_alpha
        rows = []
        for name, prof in self.profiles_.items():
            values = analysis[name] if name in analysis.columns else pd.Series([np.nan] * len(analysis))
            if prof.kind == "numeric":
                values = pd.to_numeric(values, errors="coerce").to_numpy(float)
            counts, missing, outside, n = prof.counts_of(values)
            ref = np.append(prof.counts, prof.missing)
            now = np.append(counts, missing)
            bins = int((ref > 0).sum() + ((now > 0) & (ref == 0)).sum())
            value = psi(ref, now)
            threshold = psi_threshold(prof.n, n, bins, a, self.floor)
            ref_missing = prof.missing / max(prof.n, 1)
            miss = missing / max(n, 1)
            out = outside / max(n, 1)
            rows.append({
                "column": name, "kind": prof.kind, "psi": value, "threshold": threshold,
                "drifted": bool(value > threshold), "missing_reference": ref_missing, "missing": miss,
                "missing_flag": bool(miss - ref_missing > _rate_threshold(ref_missing, prof.n, n, a)),
                "out_of_range": out,
                "range_flag": bool(out > _rate_threshold(1 / max(prof.n, 1), prof.n, n, a)),
                "n_reference": prof.n, "n": n})
        return pd.DataFrame(rows, columns=list(DRIFT_COLUMNS))

    def to_dict(self) -> dict:
        """Settings and fitted profiles as plain JSON."""
        return {"numeric": list(self.numeric), "categorical": list(self.categorical), "alpha": self.alpha,
                "floor": self.floor, "bins": self.bins,
                "profiles": {k: {**vars(p)} for k, p in self.profiles_.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> "DriftCalculator":
        """A fitted calculator from :meth:`to_dict`."""
        calc = cls(tuple(data["numeric"]), tuple(data["categorical"]), data["alpha"], data["floor"], data["bins"])
        calc.profiles_ = {k: profile_from_dict(v) for k, v in data["profiles"].items()}
        return calc


# --------------------------------------------------------------------------- performance

def estimated_auc(probability: ArrayLike, score: ArrayLike | None = None) -> float:
    """The AUC expected if each customer churns with their calibrated ``probability`` (CBPE).

    Every ordered pair (i, j) counts with weight ``p_i (1 − p_j)``, the chance that i churns and
    j does not, and is concordant when i's ``score`` (default: the probability) is higher,
    one half on a tie: ``Σ p_i (1 − p_j) [s_i > s_j] / Σ p_i (1 − p_j)`` over i ≠ j, computed in
    O(n log n) from cumulative sums over the sorted scores.
    """
    p = np.asarray(probability, float)
    s = p if score is None else np.asarray(score, float)
    order = np.argsort(s, kind="stable")
    p, s = p[order], s[order]
    q = 1 - p
    # groups of tied scores
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    group = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1
    q_group = np.add.reduceat(q, starts)
    q_below = np.r_[0.0, np.cumsum(q_group)[:-1]]           # Σ (1 − p_j) over lower scores
    # each i: lower scores count 1, its tie group 1/2 (itself excluded)
    concordant = np.sum(p * (q_below[group] + 0.5 * (q_group[group] - q)))
    total = p.sum() * q.sum() - np.sum(p * q)
    return float(concordant / total) if total > 0 else float("nan")


def estimated_churn_metrics(probability: ArrayLike) -> dict[str, float]:
    """What calibrated churn probabilities promise before labels exist: AUC (CBPE), Brier
    (``mean p(1 − p)``), churn rate (``mean p``) and the expected counts of each class."""
    p = np.asarray(probability, float)
    return {"estimated_churn_auc": estimated_auc(p), "estimated_churn_brier": float(np.mean(p * (1 - p))),
            "estimated_churn_rate": float(p.mean()), "expected_churners": float(p.sum()),
            "expected_buyers": float((1 - p).sum())}


def realized_churn_metrics(churned: ArrayLike, probability: ArrayLike) -> dict[str, float]:
    """AUC, Brier, expected calibration error, and calibration in the large (mean probability
    minus the churn rate) of churn probabilities once outcomes are known."""
    y = np.asarray(churned, bool)
    p = np.asarray(probability, float)
    two_classes = 0 < y.sum() < len(y)
    return {"realized_churn_auc": float(roc_auc_score(y, p)) if two_classes else float("nan"),
            "realized_churn_brier": float(brier_score_loss(y, p)),
            "realized_churn_ece": expected_calibration_error(y, p) if two_classes else float("nan"),
            "realized_calibration_in_the_large": float(p.mean() - y.mean()),
            "realized_churn_rate": float(y.mean())}


def auc_standard_error(auc: float, n_positive: float, n_negative: float) -> float:
    """Hanley & McNeil's (1982) standard error of an AUC from the class sizes."""
    if n_positive < 1 or n_negative < 1 or not np.isfinite(auc):
        return float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    var = (auc * (1 - auc) + (n_positive - 1) * (q1 - auc ** 2) + (n_negative - 1) * (q2 - auc ** 2)) / (
        n_positive * n_negative)
    return float(np.sqrt(max(var, 0.0)))


def auc_floor(promised: float, n_positive: float, n_negative: float, tolerance: float = 0.0,
              z: float = 1.96) -> float:
    """The least AUC a batch of this size may show by chance when the model still ranks as the
    backtest promised: ``promised − z · SE − tolerance`` (SE by Hanley-McNeil at the batch's
    class sizes)."""
    se = auc_standard_error(promised, n_positive, n_negative)
    return float(promised - z * (se if np.isfinite(se) else 0.0) - tolerance)


# --------------------------------------------------------------------------- gain

def main_features(names: list[str], gains: ArrayLike, share: float = 0.8) -> list[str]:
    """The fewest features whose split gain adds up to ``share`` of the model's total,
    highest gain first."""
    g = np.asarray(gains, float)
    order = np.argsort(-g, kind="stable")
    if g.sum() <= 0:
        return []
    cumulative = np.cumsum(g[order]) / g.sum()
    k = int(np.searchsorted(cumulative, share, side="left")) + 1
    return [names[i] for i in order[:k]]
