"""The uplift models in the MLflow registry: each rule's learned model, gated like the churn model.

:func:`register_uplift` logs one rule's result (:class:`crm.learn.LearnResult`) to the experiment
``winback-uplift`` and registers the refit model as a version of ``winback-uplift``; the alias named
after the rule moves to it only if it beat churn risk and value at risk out of time and is at least
as good as the model the alias points at on the same judged events, else the version is tagged
``challenger``. :func:`registered_model` reads the aliased model back for ``winback triggers run``.
"""

from __future__ import annotations

import pandas as pd

from crm.learn import EXPERIMENT, LEARNED, UPLIFT_MODEL, LearnResult
from crm.uplift import MetaLearner, feature_matrix
from crm.uplift_metrics import qini_coefficient


def register_uplift(result: LearnResult, frame: pd.DataFrame, day: pd.Timestamp, tracking_uri: str | None = None,
                    seed: int = 0) -> LearnResult:
    """Log ``result`` (one rule, ``frame`` its training events) to MLflow and register its model;
    the result with its version and alias (see the module docstring)."""
    import dataclasses

    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from training.registry import CHALLENGER, DONE, GATE_TAG, experiment_id, use_tracking, version_for

    model = result.model
    if model is None:
        raise ValueError(f"rule {result.rule}: no model to register ({result.status})")
    uri = use_tracking(tracking_uri)
    client = MlflowClient(uri, registry_uri=uri)
    rows = result.comparison.set_index("ranking")
    judged = frame[pd.to_datetime(frame["as_of"]) >= pd.Timestamp(result.split_day)]
    current = version_for(client, result.rule, UPLIFT_MODEL)
    current_qini = None
    if current is not None:                  # the champion judged on the same events
        try:
            old = MetaLearner.from_dict(mlflow.artifacts.load_dict(f"{current.source}/model.json"))
            current_qini = qini_coefficient(old.predict(feature_matrix(judged)), judged["treatment"],
                                            judged["y"], seed)
        except (MlflowException, ValueError, KeyError, OSError):
            current_qini = None              # a model this code cannot read is replaced
    with mlflow.start_run(experiment_id=experiment_id(uri, EXPERIMENT),
                          run_name=f"uplift-{result.rule}-{day.date()}") as run:
        mlflow.set_tags({"rule": result.rule, "status": result.status, "learned_until": str(day.date())})
        mlflow.log_params({"rule": result.rule, "learner": model.kind, "split_day": result.split_day,
                           "n_treated": result.n_treated, "n_holdout": result.n_holdout, "seed": seed,
                           **{f"learner_{k}": v for k, v in model.get_params().items()}})
        metrics = {}
        for name, row in rows.iterrows():
            for col in ("qini", "qini_low", "qini_high", "auuc", "auuc_low", "auuc_high"):
                metrics[f"{name}_{col}"] = float(row[col])
        if current_qini is not None:
            metrics["current_model_qini"] = float(current_qini)
        mlflow.log_metrics(metrics)
        mlflow.log_dict(model.to_dict(), "uplift/model.json")
        mlflow.log_text(result.comparison.to_csv(index=False), "uplift/comparison.csv")
        mlflow.log_text(result.curve.to_csv(index=False), "uplift/qini_curve.csv")
        source = f"{run.info.artifact_uri}/uplift"
    try:
        client.create_registered_model(UPLIFT_MODEL)
    except MlflowException:
        pass                                  # it exists
    version = client.create_model_version(UPLIFT_MODEL, source, run_id=run.info.run_id,
                                          tags={"rule": result.rule, GATE_TAG: "pending",
                                                "learner": model.kind, "status": result.status})
    better = current_qini is None or float(rows.loc[LEARNED, "qini"]) >= current_qini
    alias = result.rule if result.beats and better else f"{result.rule}-{CHALLENGER}"
    client.set_registered_model_alias(UPLIFT_MODEL, alias, version.version)
    client.set_model_version_tag(UPLIFT_MODEL, version.version, GATE_TAG, DONE)
    return dataclasses.replace(result, version=str(version.version), alias=alias)


def registered_model(rule: str, tracking_uri: str | None = None) -> tuple[MetaLearner, str] | None:
    """The model ``winback-uplift@<rule>`` and its name (``winback-uplift/3``), or None."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from training.registry import resolve_tracking_uri, version_for

    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///"):
        from pathlib import Path

        if not Path(uri.removeprefix("sqlite:///")).exists():
            return None
    mlflow.set_tracking_uri(uri)
    try:
        found = version_for(MlflowClient(uri, registry_uri=uri), rule, UPLIFT_MODEL)
        if found is None:
            return None
        return (MetaLearner.from_dict(mlflow.artifacts.load_dict(f"{found.source}/model.json")),
                f"{UPLIFT_MODEL}/{found.version}")
    except (MlflowException, ValueError, KeyError, OSError):
        return None
