"""The figures every training run logs: what an ML engineer looks at before trusting a model."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from models.clv.beta_geo import BetaGeoModel  # noqa: E402


def calibration_curve(churned: np.ndarray, probability: np.ndarray, bins: int = 10) -> Figure:
    """Observed churn rate against predicted probability, in equal-count bins."""
    order = np.argsort(probability, kind="stable")
    groups = [g for g in np.array_split(order, bins) if len(g)]
    predicted = [probability[g].mean() for g in groups]
    observed = [churned[g].mean() for g in groups]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect")
    ax.plot(predicted, observed, marker="o", label="winback")
    ax.set(xlabel="predicted churn probability", ylabel="observed churn rate", title="Calibration")
    ax.legend()
    return fig


def gains_chart(churned: np.ndarray, scores: dict[str, np.ndarray]) -> Figure:
    """Share of all churners found when contacting the top x % by each score."""
    fig, ax = plt.subplots(figsize=(6, 5))
    share = np.arange(1, len(churned) + 1) / len(churned)
    for name, score in scores.items():
        found = np.cumsum(churned[np.argsort(-score, kind="stable")]) / churned.sum()
        ax.plot(share, found, label=name)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="random")
    ax.set(xlabel="share of customers contacted", ylabel="share of churners reached", title="Gains")
    ax.legend(fontsize=8)
    return fig


def feature_importance(names: list[str], gains: np.ndarray, top: int = 20) -> Figure:
    """Total split gain per feature of the churn model."""
    order = np.argsort(gains)[-top:]
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.barh(np.asarray(names)[order], gains[order])
    ax.set(xlabel="total gain", title="Churn model: feature importance")
    fig.tight_layout()
    return fig


def p_alive_matrix(model: BetaGeoModel, max_frequency: int, max_T: float) -> Figure:
    """BG/NBD P(alive) over frequency × recency for a customer of age ``max_T``."""
    freqs = np.arange(0, max_frequency + 1)
    recencies = np.linspace(0, max_T, 60)
    f, r = np.meshgrid(freqs, recencies, indexing="ij")
    r = np.where(f == 0, 0.0, r)
    grid = pd.DataFrame({"frequency": f.ravel().astype(float), "recency": r.ravel(),
                         "T": np.full(f.size, float(max_T))})
    p = model.predict_p_alive(grid).reshape(f.shape)
    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(p, origin="lower", aspect="auto", vmin=0, vmax=1,
                      extent=(0, max_T, 0, max_frequency))
    fig.colorbar(image, ax=ax, label="P(alive)")
    ax.set(xlabel="recency (days from first to last purchase)", ylabel="frequency (repeat purchase days)",
           title=f"BG/NBD P(alive) at T = {max_T:.0f} days")
    return fig


def cumulative_purchases(days: np.ndarray, actual: np.ndarray, predicted: np.ndarray) -> Figure:
    """Cumulative purchases over the holdout: what happened vs what BG/NBD expected."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(days, actual, label="actual")
    ax.plot(days, predicted, ls="--", label="BG/NBD expected")
    ax.set(xlabel="days after the cutoff", ylabel="cumulative repeat purchase days",
           title="Holdout purchases")
    ax.legend()
    return fig
