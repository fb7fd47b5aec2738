"""Training settings the tests share: small models on a real CDNOW slice."""

from __future__ import annotations

from training.pipeline import TrainConfig

CUTOFF, HORIZON = "1997-12-31", 120


def quick_config(**overrides) -> TrainConfig:
    """Small models: the tests check the pipeline's decisions, not model quality."""
    settings = dict(cutoff=CUTOFF, horizon_days=HORIZON, origins=2, origin_step_days=30,
                    churn_estimators=40, hazard_estimators=15, next_purchase="auto")
    return TrainConfig(**{**settings, **overrides})
