"""The scorer as an MLflow pyfunc model, so the registry can version and serve it.

The logged model holds the saved scorer directory (JSON parameters and LightGBM text) as an
artifact, the ``features`` and ``models`` packages as code (so it loads where this project is not
installed) and pinned requirements of the libraries they import; this small wrapper class is all
that MLflow pickles.

``predict`` takes either input the scorer takes:

* a transaction log (``customer_id``, ``timestamp``, ``amount``, optional columns as
  :func:`features.read_transactions` maps them), scored as of its last day: the day of the
  latest ``timestamp``, in the model's shop time zone;
* a feature table from :func:`features.build_features` (daily, built with the model's
  reference), scored as of its cutoff: a column ``as_of`` if it has one, otherwise the day
  ``first_purchase_date + T`` (with daily features ``T`` is the days from the first purchase to
  the cutoff, so every row gives the same day).

``params={"as_of": "YYYY-MM-DD"}`` overrides either default; ``params={"reasons": True}`` adds
the reasons. Customer ids of any type are read as text. The output has one row per customer and
flat columns only: dates as ``YYYY-MM-DD`` text (missing: None), counts as 64-bit integers,
reasons joined by ``"; "`` (empty when not asked for) — the output schema logged with the model.
"""

from __future__ import annotations

import tempfile
from importlib import metadata
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PyFuncModel, PythonModel
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from models.scorer import WinbackScorer

ARTIFACT = "scorer"
REASON_COLUMNS = ("reasons", "reasons_zh_tw")
#: The distributions the ``features`` and ``models`` packages import, pinned at log time.
REQUIREMENTS = ("lifetimes", "lightgbm", "scikit-learn", "pandas", "numpy", "scipy", "duckdb",
                "pyarrow", "mlflow", "lleaves", "llvmlite")
#: Parameters of ``predict``; an empty ``as_of`` means the input's own last day or cutoff.
PARAMS = ParamSchema([ParamSpec("as_of", "string", ""), ParamSpec("reasons", "boolean", False)])


class WinbackPyfunc(PythonModel):
    """Loads a saved :class:`WinbackScorer` from the model's artifacts and scores with it."""

    def load_context(self, context) -> None:
        """Load the saved scorer from the model's artifacts."""
        self.scorer = WinbackScorer.load(context.artifacts[ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Score ``model_input`` (transactions or a feature table) as of ``params['as_of']``."""
        params = params or {}
        data = pd.DataFrame(model_input).copy()
        if "customer_id" not in data.columns:
            raise ValueError("the input lacks column customer_id: pass transactions (customer_id, "
                             "timestamp, amount) or a feature table from features.build_features")
        data["customer_id"] = data["customer_id"].astype(str)
        as_of = params.get("as_of") or default_as_of(data, self.scorer.reference_.timezone)
        if "timestamp" not in data.columns:
            data = _with_dates(data, self.scorer.feature_schema_)
        scores = self.scorer.score(data, as_of, reasons=bool(params.get("reasons", False)))
        return flatten_for_pyfunc(scores)


def default_as_of(data: pd.DataFrame, timezone: str = "UTC") -> str:
    """The day to score ``data`` as of when none is given (see the module docstring)."""
    if "timestamp" in data.columns:
        stamps = _timestamps(data["timestamp"])
        if stamps.isna().all():
            raise ValueError("no timestamp in the transactions: cannot tell the day to score as of; "
                             "pass params={'as_of': 'YYYY-MM-DD'}")
        if stamps.dt.tz is not None:
            stamps = stamps.dt.tz_convert(timezone)
        return str(stamps.max().date())
    if "as_of" in data.columns:
        days = pd.to_datetime(data["as_of"]).dt.normalize().dropna().unique()
    elif {"first_purchase_date", "T"} <= set(data.columns):
        days = (pd.to_datetime(data["first_purchase_date"]).dt.normalize()
                + pd.to_timedelta(data["T"].astype(float), unit="D")).dropna().unique()
    else:
        raise ValueError("a feature table needs its cutoff: pass params={'as_of': 'YYYY-MM-DD'} or a "
                         "column as_of (or keep first_purchase_date and T, from which it follows)")
    if len(days) != 1:
        raise ValueError(f"the feature table's rows are as of {len(days)} different days "
                         f"({', '.join(str(pd.Timestamp(d).date()) for d in days[:3])}…); score one "
                         "cutoff at a time or pass params={'as_of': 'YYYY-MM-DD'}")
    return str(pd.Timestamp(days[0]).date())


def _timestamps(column: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(column):
        return column
    try:
        parsed = pd.to_datetime(column, format="ISO8601")
    except (ValueError, TypeError):
        parsed = None
    if parsed is None or not pd.api.types.is_datetime64_any_dtype(parsed):
        parsed = pd.to_datetime(column, format="ISO8601", utc=True)      # mixed offsets: in UTC
    return parsed


def _with_dates(features: pd.DataFrame, schema: list[list[str]]) -> pd.DataFrame:
    """Date columns of a feature table that arrived as text (JSON) back as dates."""
    for name, dtype in schema:
        if dtype.startswith("datetime64") and name in features and \
                not pd.api.types.is_datetime64_any_dtype(features[name]):
            features[name] = pd.to_datetime(features[name]).astype(dtype)
    return features


def flatten_for_pyfunc(scores: pd.DataFrame) -> pd.DataFrame:
    """Scores with flat, fixed types: see :func:`output_schema`.

    Reasons are joined by '; ' (empty text when not explained), dates become ``YYYY-MM-DD`` text
    or None (also when a whole column is empty), integers 64-bit, categories text.
    """
    out = scores.copy()
    for col in REASON_COLUMNS:
        out[col] = out[col].map("; ".join) if col in out else ""
    for col in out.columns:
        values = out[col]
        if pd.api.types.is_datetime64_any_dtype(values):
            text = values.dt.strftime("%Y-%m-%d").astype(object)
            out[col] = text.where(values.notna(), None)
        elif pd.api.types.is_bool_dtype(values):
            out[col] = values.astype(bool)
        elif pd.api.types.is_integer_dtype(values):
            out[col] = values.astype(np.int64)
        elif pd.api.types.is_float_dtype(values):
            out[col] = values.astype(np.float64)
        else:
            out[col] = values.astype(object).where(values.notna(), None).map(
                lambda v: v if v is None else str(v))
    return out


def output_schema(flat: pd.DataFrame) -> Schema:
    """The MLflow schema of :func:`flatten_for_pyfunc`'s output, from its column types."""
    def kind(values: pd.Series) -> str:
        if pd.api.types.is_bool_dtype(values):
            return "boolean"
        if pd.api.types.is_integer_dtype(values):
            return "long"
        if pd.api.types.is_float_dtype(values):
            return "double"
        return "string"
    return Schema([ColSpec(kind(flat[c]), c) for c in flat.columns])


def scorer_from_pyfunc(model: PyFuncModel) -> WinbackScorer:
    """The :class:`WinbackScorer` inside a loaded pyfunc model."""
    return model.unwrap_python_model().scorer


def pip_requirements() -> list[str]:
    """The libraries the bundled code imports, pinned to the versions installed now."""
    return [f"{name}=={metadata.version(name)}" for name in REQUIREMENTS]


def code_paths() -> list[str]:
    """The project packages a loaded model needs: ``features`` and ``models``."""
    import features
    import models
    return [str(Path(str(package.__file__)).parent) for package in (features, models)]


def log_scorer(scorer: WinbackScorer, example: pd.DataFrame, as_of: str | None = None,
               name: str = "scorer") -> "mlflow.models.model.ModelInfo":
    """Log ``scorer`` as a pyfunc model in the active MLflow run, with signature and example.

    ``example`` is a small transaction log (customer_id, timestamp, amount), scored to fix the
    output schema. The signature declares no input schema, since either transactions or a
    feature table may come in (the scorer checks them itself), the output schema of
    :func:`flatten_for_pyfunc` and the parameters ``as_of`` and ``reasons``. ``as_of`` is the
    day the example is scored as of (default: its last day).
    """
    as_of = as_of or default_as_of(example, scorer.reference_.timezone)
    output = flatten_for_pyfunc(scorer.score(example, as_of, reasons=True))
    signature = ModelSignature(inputs=None, outputs=output_schema(output), params=PARAMS)
    with tempfile.TemporaryDirectory() as tmp:
        saved = scorer.save(f"{tmp}/{ARTIFACT}")
        return mlflow.pyfunc.log_model(name=name, python_model=WinbackPyfunc(),
                                       artifacts={ARTIFACT: str(saved)}, signature=signature,
                                       input_example=example, code_paths=code_paths(),
                                       pip_requirements=pip_requirements())
