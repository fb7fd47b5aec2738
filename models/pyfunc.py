"""The scorer as an MLflow pyfunc model, so the registry can version and serve it.

The logged model holds the saved scorer directory (JSON parameters and LightGBM text) as an
artifact; this small wrapper class is all that MLflow pickles. ``predict`` takes a transaction
log or a feature table and the as-of date as a parameter, and returns the scores with reasons
joined into text, since a pyfunc output column cannot hold lists.
"""

from __future__ import annotations

import pandas as pd
import mlflow.pyfunc

from models.scorer import WinbackScorer

ARTIFACT = "scorer"


class WinbackPyfunc(mlflow.pyfunc.PythonModel):
    """Loads a saved :class:`WinbackScorer` from the model's artifacts and scores with it."""

    def load_context(self, context) -> None:
        self.scorer = WinbackScorer.load(context.artifacts[ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        params = params or {}
        scores = self.scorer.score(model_input, params.get("as_of"), reasons=bool(params.get("reasons", False)))
        return flatten_for_pyfunc(scores)


def flatten_for_pyfunc(scores: pd.DataFrame) -> pd.DataFrame:
    """Scores with list columns joined by '; ' and dates as ISO text, for MLflow schemas."""
    out = scores.copy()
    for col in ("reasons", "reasons_zh_tw"):
        if col in out:
            out[col] = out[col].map("; ".join)
    for col in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[col]):
            out[col] = out[col].dt.strftime("%Y-%m-%d").astype(object)
    return out


def scorer_from_pyfunc(model: "mlflow.pyfunc.PyFuncModel") -> WinbackScorer:
    """The :class:`WinbackScorer` inside a loaded pyfunc model."""
    return model.unwrap_python_model().scorer


def log_scorer(scorer: WinbackScorer, example: pd.DataFrame, as_of: str,
               name: str = "scorer") -> "mlflow.models.model.ModelInfo":
    """Log ``scorer`` as a pyfunc model in the active MLflow run, with signature and example.

    ``example`` is a small transaction log (customer_id, timestamp, amount) scored as of
    ``as_of`` to infer the output schema.
    """
    import tempfile

    from mlflow.models import infer_signature

    output = flatten_for_pyfunc(scorer.score(example, as_of, reasons=True))
    signature = infer_signature(example, output, params={"as_of": as_of, "reasons": False})
    with tempfile.TemporaryDirectory() as tmp:
        saved = scorer.save(f"{tmp}/{ARTIFACT}")
        return mlflow.pyfunc.log_model(name=name, python_model=WinbackPyfunc(),
                                       artifacts={ARTIFACT: str(saved)}, signature=signature,
                                       input_example=example, pip_requirements=["winback"])
