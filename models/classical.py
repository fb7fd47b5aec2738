"""The classical buy-till-you-die models in one place, and loading a saved one by its class name."""

from __future__ import annotations

import json
import os
from pathlib import Path

from models.base import ClassicalModel, ConvergenceError, PurchaseModel
from models.beta_geo import BetaGeoModel
from models.gamma_gamma import GammaGammaModel
from models.mbg_cnbd import MBGCNBDModel
from models.modified_beta_geo import ModifiedBetaGeoModel
from models.pareto_nbd import ParetoNBDModel

MODEL_CLASSES: dict[str, type[ClassicalModel]] = {
    cls.__name__: cls for cls in (BetaGeoModel, ModifiedBetaGeoModel, MBGCNBDModel, ParetoNBDModel, GammaGammaModel)
}

__all__ = [
    "BetaGeoModel",
    "ClassicalModel",
    "ConvergenceError",
    "GammaGammaModel",
    "MBGCNBDModel",
    "MODEL_CLASSES",
    "ModifiedBetaGeoModel",
    "ParetoNBDModel",
    "PurchaseModel",
    "load_model",
]


def load_model(path: str | os.PathLike[str]) -> ClassicalModel:
    """Load any classical model saved with ``save(path)``, choosing the class from the file."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    name = data.get("model")
    if name not in MODEL_CLASSES:
        raise ValueError(f"{path}: unknown model {name!r}; expected one of {', '.join(MODEL_CLASSES)}")
    return MODEL_CLASSES[name].from_dict(data)
