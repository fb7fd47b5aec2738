"""Follow the registry: load the served version, and swap in a new one when the alias moves.

:class:`Champion` owns the current :class:`~serving.state.ScoredSnapshot`. :meth:`Champion.poll`
asks the registry which version the alias points at (and whether the snapshot file changed);
when either changed it builds a complete new snapshot and only then replaces the old one. If
the registry cannot be reached the old one keeps answering and :attr:`Champion.registry` says
so. A background thread calls :meth:`poll` every ``poll_seconds``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from serving.config import ConfigError, ServiceSettings
from serving.state import ModelInfo, ScoredSnapshot, SnapshotFile
from training.registry import ModelRef, load_version, resolve_version
from training.registry import parse_model_uri as registry_model_uri

logger = logging.getLogger("winback.serving")

def parse_model_uri(uri: str) -> ModelRef:
    """:func:`training.registry.parse_model_uri`, its error a :class:`ConfigError` naming the variable."""
    try:
        return registry_model_uri(uri)
    except ValueError:
        raise ConfigError(f"WINBACK_MODEL_URI must look like models:/winback@champion or "
                          f"models:/winback/3, got {uri!r}") from None


@dataclass(frozen=True)
class RegistryState:
    """Whether the registry answered the last poll, when, and what went wrong if not."""

    reachable: bool = True
    last_checked: dt.datetime | None = None
    last_error: str | None = None


class Champion:
    """The served model and its scored snapshot, kept current with the registry."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.ref = parse_model_uri(settings.model_uri)
        self.registry = RegistryState()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poll_lock = threading.Lock()
        #: Called with each snapshot swapped in (the service writes its sync files).
        self.on_swap: Callable[[ScoredSnapshot], object] | None = None
        self._registry_file = RegistryFile.of(settings.tracking_uri)
        if self._registry_file is not None and not self._registry_file.path.is_file():
            raise ConfigError(missing_registry_message(settings.tracking_uri))
        _use_registry(settings.tracking_uri)
        try:
            version = self._resolve()                # at start a failure is fatal: nothing to serve
        except Exception as exc:
            raise ConfigError(no_model_message(settings.tracking_uri, settings.model_uri, exc)) from exc
        self.registry = RegistryState(True, _now())
        self.current: ScoredSnapshot = self._build(version)
        logger.info("serving %s version %s on a snapshot of %d customers as of %s",
                    self.ref.name, version.version, self.current.size, self.current.as_of.date())

    # ------------------------------------------------------------------ registry

    def _client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.settings.tracking_uri, registry_uri=self.settings.tracking_uri)

    def _resolve(self):
        """The model version the URI points at now (raises when the registry cannot say).

        A sqlite registry is checked first: if its file is gone the poll fails (MLflow would
        create an empty one), and if it was replaced the pooled connections to the old file are
        closed, so the new file is read."""
        if self._registry_file is not None:
            self._registry_file.check()
        return resolve_version(self._client(), self.settings.model_uri)

    def _build(self, version, scorer=None, info: ModelInfo | None = None) -> ScoredSnapshot:
        if scorer is None:
            scorer, info = self._load_model(version)
        assert info is not None                                 # given with a scorer, or loaded with it
        if self.settings.log_source is not None:
            features, snapshot = self._features_from_log(scorer)
        else:
            features, snapshot = self._features_from_snapshot(scorer, info)
        return ScoredSnapshot(scorer, info, features, snapshot, self.settings.reasons_cache)

    def _features_from_snapshot(self, scorer, info: ModelInfo):
        """The snapshot file, if it was built with this model's feature reference."""
        from features.job import feature_table_metadata, read_feature_table

        path = self.settings.snapshot
        if not path.is_file():
            raise ConfigError(missing_snapshot_message(path))
        mtime = path.stat().st_mtime_ns
        built_with = feature_table_metadata(path).get("winback.reference_id")
        wanted = scorer.reference_.fingerprint()
        if built_with != wanted:
            raise ConfigError(
                f"{path}: the snapshot's features were built with feature reference {built_with or 'none'}, "
                f"but model version {info.version} defines them with {wanted} (RFM edges, intervals, "
                "tiers, time zone): the scores would not match /score_history. Rebuild it with "
                f"`winback features --model-uri models:/{info.name}/{info.version} ...`, or serve from "
                "the log (`winback serve --dataset cdnow` / `--transactions PATH`), which rebuilds it "
                "on every swap")
        features, as_of, freq = read_feature_table(path)
        return features, SnapshotFile(path, mtime, as_of, _now())

    def _features_from_log(self, scorer):
        """Features built here from the configured log, with this model's reference."""
        from features import build_features

        source = self.settings.log_source
        log = source.open(scorer.reference_.timezone)
        as_of = source.as_of or log.report.last_timestamp.date().isoformat()
        side = source.open_side(scorer.reference_.timezone) if scorer.reference_.side_columns else None
        features = build_features(log, as_of, reference=scorer.reference_, side=side)
        import pandas as pd

        return features, SnapshotFile(Path(source.name), 0, pd.Timestamp(as_of), _now())

    def _load_model(self, version):
        scorer = load_version(version)                        # the version, not the alias: it may move
        metrics: dict[str, float] = {}
        if version.run_id:
            try:
                metrics = dict(self._client().get_run(version.run_id).data.metrics)
            except Exception:                                  # metrics are informative only
                logger.warning("could not read the metrics of run %s", version.run_id)
        tags = dict(getattr(version, "tags", None) or {})
        info = ModelInfo(name=version.name, version=str(version.version), alias=self.ref.alias,
                         uri=self.settings.model_uri, run_id=version.run_id,
                         registered_at=_from_ms(version.creation_timestamp),
                         trained_until=getattr(scorer, "trained_until_", None), metrics=metrics,
                         evaluated_on=tags.get("evaluated_on"), horizon_days=scorer.horizon_days,
                         feature_reference=scorer.reference_.fingerprint())
        return scorer, info

    # ------------------------------------------------------------------ polling

    def poll(self) -> bool:
        """Check the alias and the snapshot file once; swap if either changed. True if swapped."""
        with self._poll_lock:
            current = self.current
            try:
                version = self._resolve() if self.ref.alias is not None else None
            except Exception as exc:
                self.registry = RegistryState(False, _now(), _short(exc))
                logger.warning("registry unreachable, still serving version %s: %s",
                               current.model.version, _short(exc))
                return False
            self.registry = RegistryState(True, _now())
            try:
                if version is not None and str(version.version) != current.model.version:
                    fresh = self._build(version)
                elif self._snapshot_changed(current):
                    fresh = self._build(None, current.scorer, current.model)
                else:
                    return False
            except Exception as exc:
                self.registry = RegistryState(True, _now(), f"could not load the new model or "
                                                            f"snapshot: {_short(exc)}")
                logger.warning("keeping version %s: loading the update failed: %s",
                               current.model.version, _short(exc))
                return False
            self.current = fresh
            logger.info("now serving %s version %s (was %s), snapshot of %d customers as of %s",
                        fresh.model.name, fresh.model.version, current.model.version, fresh.size,
                        fresh.as_of.date())
            if self.on_swap is not None:
                self.on_swap(fresh)
            return True

    def _snapshot_changed(self, current: ScoredSnapshot) -> bool:
        if self.settings.log_source is not None:
            return False                                        # rebuilt with every new model
        try:
            return self.settings.snapshot.stat().st_mtime_ns != current.snapshot.mtime_ns
        except OSError:
            return False                                        # gone for now: keep the one we have

    @property
    def degraded(self) -> bool:
        """Whether ``/info`` says ``degraded``: the registry is unreachable or an update failed to load."""
        return not self.registry.reachable or self.registry.last_error is not None

    def start(self) -> None:
        """Poll in a daemon thread every ``poll_seconds`` (not at all when 0)."""
        if self.settings.poll_seconds <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="winback-champion-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the polling thread (at its next wake-up)."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.poll_seconds):
            try:
                if self.poll():
                    freeze_heap()                               # the new snapshot, out of the collector's way
            except Exception:                                   # never let the poller die
                logger.exception("champion poll failed")


def freeze_heap() -> float:
    """Collect garbage once, then leave every object alive now out of the cyclic garbage
    collector's passes (:func:`gc.freeze`); returns the seconds it took.

    The worker holds millions of long-lived objects (MLflow, pandas, LightGBM, the scored
    snapshot). Python's full collection walks all of them, and with requests allocating it ran
    every few seconds under load: measured under wrk at 32 connections, 300-350 ms each, with the
    event loop stopped, collecting nothing, which was the service's p99. Frozen, a collection
    walks only what requests made since. Called when the service has started and after each
    swap: the swap first unfreezes, so the previous champion's objects can be collected then
    (one full pass per swap, not one every few seconds)."""
    import gc
    import time

    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    release_memory()
    gc.freeze()
    return time.perf_counter() - started


def release_memory() -> None:
    """Give memory freed after loading back to the system: Arrow's allocator keeps what reading
    the snapshot used (about 300 MB of a million customers' 1.8 GB), and glibc's heap keeps
    freed pages until asked to trim them."""
    import ctypes
    import ctypes.util

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    name = ctypes.util.find_library("c")
    if name:
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError):               # not glibc
            pass


class RegistryFile:
    """The file of a ``sqlite:///`` registry, followed by identity (device, inode).

    MLflow keeps one SQLAlchemy engine per URI for the life of the process, and its pooled
    connections keep reading a file that was replaced (``mv new.db mlflow.db``): the old inode.
    :meth:`check` notices the new inode and disposes those engines, so the next query opens the
    file by its path again."""

    def __init__(self, uri: str, path: Path) -> None:
        self.uri, self.path = uri, path
        self._identity: tuple[int, int] | None = None

    @classmethod
    def of(cls, uri: str) -> "RegistryFile | None":
        """The registry file of a ``sqlite:///`` URI, or None for other stores."""
        path = sqlite_path(uri)
        return None if path is None else cls(uri, path)

    def check(self) -> None:
        """Raise when the file is gone; dispose of pooled connections when it was replaced."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            raise FileNotFoundError(f"the registry file {self.path} is gone") from None
        identity = (stat.st_dev, stat.st_ino)
        if self._identity is not None and identity != self._identity:
            logger.warning("the registry file %s was replaced; reopening it", self.path)
            dispose_engines(self.uri)
        self._identity = identity


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI; None for other stores (and in-memory ones)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def dispose_engines(uri: str) -> None:
    """Close the pooled connections MLflow's stores hold for ``uri`` (they reconnect by path)."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    for store in (TrackingStore, RegistryStore):
        with store._engine_map_lock:
            engines = [e for key, e in store._engine_map.items() if key == uri]
        for engine in engines:
            engine.dispose()


def missing_registry_message(uri: str) -> str:
    """The start-up error for a sqlite registry file that does not exist."""
    return (f"WINBACK_TRACKING_URI: there is no registry database at {sqlite_path(uri)} ({uri}). "
            "MLflow would create an empty one and find no model in it: check the path (a relative "
            "sqlite:/// path is relative to the directory the service starts in), or train and "
            "register a model first (`winback train ...`).")


def no_model_message(uri: str, model_uri: str, exc: BaseException) -> str:
    """The start-up error for a model URI the registry does not resolve."""
    return (f"WINBACK_MODEL_URI: the registry at {uri} has no {model_uri} ({_short(exc)}). Check the "
            "model name and alias (or version), or promote a version first "
            "(`winback promote ...`); see `winback models` for what is registered.")


def check_startup(settings: ServiceSettings) -> None:
    """Raise :class:`ConfigError` with one paragraph if the service could not start with
    ``settings``: a sqlite registry file that does not exist, a model URI the registry does not
    resolve, or a missing snapshot. Reads the registry; loads nothing."""
    parse_model_uri(settings.model_uri)                 # a malformed URI is a ConfigError here
    path = sqlite_path(settings.tracking_uri)
    if path is not None and not path.is_file():
        raise ConfigError(missing_registry_message(settings.tracking_uri))
    if settings.log_source is None and not settings.snapshot.is_file():
        raise ConfigError(missing_snapshot_message(settings.snapshot))
    from mlflow import MlflowClient

    client = MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
    try:
        resolve_version(client, settings.model_uri)
    except Exception as exc:
        raise ConfigError(no_model_message(settings.tracking_uri, settings.model_uri, exc)) from None


def missing_snapshot_message(path: Path) -> str:
    """The start-up error for a snapshot file that does not exist."""
    return (f"WINBACK_SNAPSHOT: no feature table at {path.resolve()}; build one with "
            "`winback features --model-uri models:/winback@champion ... --out X.parquet` "
            "(make demo writes the default), or serve from a log (WINBACK_DATASET, "
            "WINBACK_TRANSACTIONS)")


def _use_registry(uri: str) -> None:
    """Point this process's MLflow at the store (pyfunc.load_model reads the global URI)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _from_ms(ms: int | None) -> dt.datetime | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text[:300]
