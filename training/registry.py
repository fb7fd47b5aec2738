"""MLflow as the record: where runs go, and which model version is served.

The embedded default store lives in ``mlruns/`` under the working directory: tracking in
``sqlite:///mlruns/mlflow.db``, artifacts in ``mlruns/artifacts``. ``--tracking-uri`` or
``MLFLOW_TRACKING_URI`` points elsewhere. Nothing here runs at import time.

The registered model ``winback`` has two aliases: ``champion`` (served) and ``challenger``
(the latest version that did not beat the champion). A version becomes champion only through
:func:`gate` or a person's explicit :func:`promote`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

MODEL_NAME = "winback"
EXPERIMENT = "winback"
CHAMPION, CHALLENGER = "champion", "challenger"
#: Each run logs the backtest model (trained before its evaluation window) under this name beside
#: the served, refit one: the gate compares recipes on their backtests.
BACKTEST_ARTIFACT = "backtest"
#: A version's gating state: registered with ``gate=pending``, ``gate=done`` once an alias is set.
GATE_TAG, PENDING, DONE = "gate", "pending", "done"
#: Prefix of an :func:`incomparable_reason` that lets the challenger replace the champion: a
#: champion this code cannot load or judge cannot be served either.
UNUSABLE = "unusable"
DEFAULT_STORE = Path("mlruns")


def resolve_tracking_uri(tracking_uri: str | None = None, store: Path = DEFAULT_STORE) -> str:
    """The URI to use: the flag, else ``MLFLOW_TRACKING_URI``, else the embedded SQLite store."""
    if tracking_uri:
        return tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{store.resolve() / 'mlflow.db'}"


def use_tracking(tracking_uri: str | None = None, store: Path = DEFAULT_STORE) -> str:
    """Point MLflow at the store (creating a SQLite one safely if it is new); return the URI."""
    uri = resolve_tracking_uri(tracking_uri, store)
    if uri.startswith("sqlite:///"):
        create_sqlite_store(Path(uri.removeprefix("sqlite:///")))
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def create_sqlite_store(path: Path) -> None:
    """Create a new SQLite store so that a kill at any moment leaves none or a whole one.

    MLflow builds its schema in many steps; killed half-way, a store answered ``duplicate column
    name`` forever. So the schema is built in a temporary file beside the store and renamed onto
    it when complete, under a lock so two processes never race; temporary files a killed
    creation left behind are removed on the next one.
    """
    import fcntl

    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for stale in path.parent.glob(f".{path.name}.init-*"):
            stale.unlink(missing_ok=True)
        if path.exists():
            return
        tmp = path.parent / f".{path.name}.init-{os.getpid()}"
        client = MlflowClient(f"sqlite:///{tmp}", registry_uri=f"sqlite:///{tmp}")
        client.search_experiments()                       # builds the tracking schema
        client.search_registered_models()                 # and the registry's
        os.replace(tmp, path)                             # committed: the rename is all or nothing


def experiment_id(tracking_uri: str, name: str = EXPERIMENT) -> str:
    """The experiment's id, created on first use; on the embedded store its artifacts go
    under the store's ``artifacts/`` folder."""
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        location = (Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def version_for(client: MlflowClient, alias: str, name: str = MODEL_NAME) -> ModelVersion | None:
    """The version an alias points at, or None when the model or alias does not exist."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


@dataclass(frozen=True)
class Gate:
    """A candidate becomes champion only if it is at least as good on every gated metric
    (higher is better) and better on one by ``min_improvement``."""

    metrics: tuple[str, ...] = ("churn_auc", "next_purchase_cindex")
    min_improvement: float = 0.0

    def passes(self, candidate: dict[str, float], champion: dict[str, float] | None) -> bool:
        """Whether ``candidate``'s metrics clear the gate against the champion's (or no champion)."""
        if champion is None:
            return True
        missing = [m for m in self.metrics if m not in candidate]
        if missing:
            raise ValueError(f"the candidate lacks gated metric(s) {', '.join(missing)}")
        deltas = [candidate[m] - champion.get(m, float("-inf")) for m in self.metrics]
        return all(d >= 0 for d in deltas) and any(d > self.min_improvement for d in deltas)


def incomparable_reason(client: MlflowClient, champion: ModelVersion, horizon_days: int,
                        cutoff, name: str = MODEL_NAME) -> str | None:
    """Why the champion cannot be compared with a candidate evaluated on (cutoff, cutoff + H],
    or None when it can: it must predict the same horizon, and its backtest must have been
    trained on data that ends by the cutoff (else it is judged on what it was trained on)."""
    import pandas as pd

    tags = client.get_model_version(name, champion.version).tags
    if "horizon_days" not in tags or "backtest_trained_until" not in tags:
        return (f"{UNUSABLE}: version {champion.version} was registered by an older Winback without "
                "its horizon and training window")
    if int(tags["horizon_days"]) != int(horizon_days):
        return (f"different horizon: the champion predicts {tags['horizon_days']} days, this run "
                f"{horizon_days}; promote by hand (`winback promote`) if the horizon should change")
    trained_until = pd.Timestamp(tags["backtest_trained_until"])
    if trained_until > pd.Timestamp(cutoff):
        return (f"overlapping windows: the champion's backtest was trained on data until "
                f"{trained_until.date()}, after this evaluation window starts ({pd.Timestamp(cutoff).date()}); "
                "evaluate on a later --cutoff to compare")
    return None


def gate(client: MlflowClient, version: ModelVersion, candidate: dict[str, float],
         champion_metrics: dict[str, float] | None, rule: Gate = Gate(),
         name: str = MODEL_NAME, blocked: str | None = None) -> str:
    """Point ``champion`` at ``version`` if it passes the gate, else ``challenger``; return which.

    ``champion_metrics`` must be the current champion evaluated on the same data as the
    candidate (None when there is no champion yet). ``blocked`` says why the champion could not
    be compared (:func:`incomparable_reason`): the candidate then stays challenger, unless the
    champion is unusable by this code.
    """
    if blocked is not None:
        alias = CHAMPION if blocked.startswith(UNUSABLE) else CHALLENGER
    else:
        alias = CHAMPION if rule.passes(candidate, champion_metrics) else CHALLENGER
    client.set_registered_model_alias(name, alias, version.version)
    client.set_model_version_tag(name, version.version, GATE_TAG, DONE)
    return alias


def fail_abandoned_runs(client: MlflowClient, experiment: str) -> list[str]:
    """End as FAILED the runs of this machine still marked RUNNING whose process is gone
    (a ``kill -9``, a power cut); return their ids. Runs record ``winback.host``/``winback.pid``."""
    import socket

    from features.transactions import pid_alive

    host = socket.gethostname()
    ended = []
    for run in client.search_runs([experiment], "attributes.status = 'RUNNING'"):
        tags = run.data.tags
        if tags.get("winback.host") != host or not tags.get("winback.pid", "").isdigit():
            continue
        if not pid_alive(int(tags["winback.pid"])):
            client.set_terminated(run.info.run_id, "FAILED")
            ended.append(run.info.run_id)
    return ended


def promote(client: MlflowClient, version: str | int, name: str = MODEL_NAME,
            force: bool = False) -> ModelVersion | None:
    """Make ``version`` the champion by hand; return the version it replaced (or None).

    A version whose run was killed between registering it and gating it is marked
    ``gate=pending``: it was never compared with anything, so promoting it needs ``force``.
    """
    target = client.get_model_version(name, str(version))          # raises if it does not exist
    if target.status != "READY":
        raise ValueError(f"version {version} of {name} is {target.status}, not READY")
    if (target.tags or {}).get(GATE_TAG) == PENDING and not force:
        raise ValueError(f"version {version} of {name} was never gated (its training run stopped after "
                         "registering it); check its run, then promote it with --force")
    previous = version_for(client, CHAMPION, name)
    client.set_registered_model_alias(name, CHAMPION, target.version)
    return previous


_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class ModelRef:
    """A registry model URI: ``models:/NAME@ALIAS`` (followed) or ``models:/NAME/VERSION`` (fixed)."""

    name: str
    alias: str | None = None
    version: str | None = None


def parse_model_uri(uri: str) -> ModelRef:
    """:class:`ModelRef` of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``; ValueError otherwise."""
    match = _MODEL_URI.match(uri)
    if not match:
        raise ValueError(f"a model URI must look like models:/winback@champion or models:/winback/3, got {uri!r}")
    return ModelRef(match["name"], match["alias"], match["version"])


def resolve_version(client: MlflowClient, model_uri: str) -> ModelVersion:
    """The registered version ``model_uri`` points at now: an alias is read once, here.

    Every door that loads a model resolves it with this and then loads that version
    (:func:`load_version`), so what it says it used is what it used even if the alias moves.
    Raises MLflow's exception when the registry has no such model, alias or version.
    """
    ref = parse_model_uri(model_uri)
    if ref.alias is not None:
        return client.get_model_version_by_alias(ref.name, ref.alias)
    return client.get_model_version(ref.name, str(ref.version))


def load_version(version: ModelVersion):
    """The :class:`~models.scorer.WinbackScorer` of one registered version, loaded by its
    number (``models:/NAME/N``), never by an alias, which may have moved since it was resolved."""
    from models.pyfunc import scorer_from_pyfunc

    return scorer_from_pyfunc(mlflow.pyfunc.load_model(f"models:/{version.name}/{version.version}"))


def load_scorer(model_uri: str | None = None, tracking_uri: str | None = None):
    """The scorer behind ``model_uri`` (default ``models:/winback@champion``) and its version.

    A registry URI is resolved to a version once (:func:`resolve_version`) and that version is
    loaded (:func:`load_version`); another MLflow URI (``runs:/...``) is loaded as it is, with
    no version. Returns ``(WinbackScorer, version or None)``; raises ``ValueError`` with a hint
    when there is no such model yet or it cannot be read.
    """
    from models.pyfunc import scorer_from_pyfunc

    uri = use_tracking(tracking_uri)
    model_uri = model_uri or f"models:/{MODEL_NAME}@{CHAMPION}"
    try:
        if model_uri.startswith("models:/"):
            version = resolve_version(MlflowClient(uri, registry_uri=uri), model_uri)
            return load_version(version), str(version.version)
        return scorer_from_pyfunc(mlflow.pyfunc.load_model(model_uri)), None
    except MlflowException as exc:
        raise ValueError(f"cannot load {model_uri} from {uri}: {exc.message}. "
                         "Train one first with `winback train`.") from None
    except (ValueError, KeyError, OSError) as exc:               # a bad URI, or a scorer this code cannot read
        raise ValueError(f"cannot load {model_uri} from {uri}: {type(exc).__name__}: {exc}. A scorer saved "
                         "by another version of Winback must be retrained with `winback train`.") from None
