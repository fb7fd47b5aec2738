"""The classical customer-base models: buy-till-you-die purchase models and Gamma-Gamma spend.

One file per model (likelihood, P(alive), conditional expectations, a simulator where it has
one), as pymc-marketing's ``clv/models/`` and BTYDplus lay them out; :mod:`models.clv.base` is
their shared estimator base, :mod:`models.clv.data` the summary checks and distinct histories,
:mod:`models.clv.fitting` the likelihood maximiser. This module lists the models and loads a
saved one by its class name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from models.clv.base import ClassicalModel, PurchaseModel
from models.clv.beta_geo import BetaGeoModel
from models.clv.fitting import ConvergenceError
from models.clv.gamma_gamma import GammaGammaModel
from models.clv.mbg_cnbd import MBGCNBDModel
from models.clv.modified_beta_geo import ModifiedBetaGeoModel
from models.clv.pareto_nbd import ParetoNBDModel

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
