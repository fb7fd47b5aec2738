"""The service's configuration: environment variables, read when the service starts.

``bentoml serve serving.service:WinbackService`` and ``winback serve`` both start the service
in worker processes that BentoML spawns, so the environment is how settings reach them.

=============================  =====================================================  ==========================
variable                       meaning                                                default
=============================  =====================================================  ==========================
``WINBACK_TRACKING_URI``       MLflow tracking and registry URI                       ``MLFLOW_TRACKING_URI``, else
                                                                                      ``sqlite:///<cwd>/mlruns/mlflow.db``
``WINBACK_MODEL_URI``          model to serve; an ``@alias`` URI is polled            ``models:/winback@champion``
``WINBACK_SNAPSHOT``           Parquet feature table from ``winback features          ``out/cdnow_features.parquet``
                              --model-uri`` (built with the model's reference)
``WINBACK_TRANSACTIONS``       instead of a snapshot: log file(s) or glob(s), joined   none
                              by ``:``; features are built in the service with the
                              served model's reference, again after every swap
``WINBACK_DATASET``            instead of a snapshot: ``cdnow`` (the bundled log)      none
``WINBACK_AS_OF``              the as-of day for a log source                         the log's last day
``WINBACK_TRIGGERS_STATE``     where ``winback triggers run`` records events, for      none (404)
                              ``GET /triggers?date=`` (a SQLAlchemy URI)
``WINBACK_TRIGGERS_RULES``     the rules file ``winback triggers run --rules`` used:   the shipped
                              the Campaigns page's budget and uplift settings         ``crm/triggers_default.toml``
``WINBACK_INGEST``             a log source's column map and input policy as JSON:    CDNOW/canonical names
                              ``{"columns": {...}, "policy": {...}}`` (the time zone
                              is always the model's)
``WINBACK_API_KEYS``           accepted keys, comma-separated, each ``KEY`` or         none (every scoring call is 401)
                              ``ROLE:KEY`` (see *Roles* below)
``WINBACK_API_KEYS_FILE``      file with more keys, one a line (``#`` comments)        none
``WINBACK_CURRENCY``           currency sign of the dashboard, in every language      ``NT$`` in zh-TW, ``$`` in en
``WINBACK_MLFLOW_UI_URL``      where the dashboard's Model page links to              ``http://127.0.0.1:5000``
``WINBACK_SESSION_HOURS``      how long a dashboard sign-in lasts                     ``8``
``WINBACK_SESSION_SECRET``     key that signs dashboard sessions                      derived from the viewer and
                                                                                      admin keys
``WINBACK_POLL_SECONDS``       how often to check the alias and the snapshot file     ``30`` (``0``: never)
``WINBACK_MAX_IDS``            ids per ``/score`` request                              ``10000``
``WINBACK_MAX_CUSTOMERS``      customers per ``/score_history`` request                ``1000``
``WINBACK_MAX_TRANSACTIONS``   transactions per ``/score_history`` request             ``100000``
``WINBACK_MAX_LIMIT``          largest ``limit`` of ``/winback``                       ``10000``
``WINBACK_MAX_BODY_BYTES``     request body size                                      ``16777216`` (16 MiB)
``WINBACK_REASONS_CACHE``      explained customers kept per model version             ``100000``
``WINBACK_RATE_LIMIT``         requests per key and period, e.g. ``600/60s``,          none (unlimited)
                              ``10/s``, ``1000/min`` (429 with ``Retry-After``)
``WINBACK_SYNC_DIR``           where ``GET /scores`` keeps each snapshot's files       ``$BENTOML_HOME/winback-sync/``
                              (NDJSON, Parquet, ids and row hashes for ``since``)     ``<id>``, one per registry,
                                                                                      model URI and snapshot
=============================  =====================================================  ==========================

Roles: a key written ``viewer:KEY`` signs in to the dashboard (``/ui``) only; ``scorer:KEY``
calls the scoring API only (CRM systems); ``admin:KEY`` does both. A bare ``KEY`` is a scorer
key, as every key was before roles existed. Only the three role names are prefixes: any other
text before a colon is part of a bare key.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crm.rules import TriggerRules
    from serving.ratelimit import RateLimit

DEFAULT_MODEL_URI = "models:/winback@champion"
DEFAULT_SNAPSHOT = Path("out/cdnow_features.parquet")


class ConfigError(ValueError):
    """A setting cannot be used; the message names the variable."""


#: What each role may use: the scoring API, the dashboard, or both.
ROLES = ("viewer", "scorer", "admin")
API_ROLES = frozenset({"scorer", "admin"})
DASHBOARD_ROLES = frozenset({"viewer", "admin"})


@dataclass(frozen=True)
class ApiKey:
    """A configured key and its role; the key never shows in a repr."""

    role: str
    key: str = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> "ApiKey":
        """``viewer:KEY``, ``scorer:KEY``, ``admin:KEY``, or a bare ``KEY`` (a scorer key)."""
        role, sep, rest = text.partition(":")
        if sep and role.strip().lower() in ROLES and rest.strip():
            return cls(role.strip().lower(), rest.strip())
        return cls("scorer", text)


@dataclass(frozen=True)
class DashboardSettings:
    """The dashboard's settings: currency sign (None: per language), MLflow UI link, sessions."""

    currency: str | None = None
    mlflow_ui_url: str = "http://127.0.0.1:5000"
    session_hours: float = 8.0
    session_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str], keys: tuple[ApiKey, ...] = ()) -> "DashboardSettings":
        """From ``env``; without ``WINBACK_SESSION_SECRET`` the secret is derived from the
        dashboard keys, so every worker (and a restart) accepts the same sessions, and changing
        the keys ends them all."""
        secret = env.get("WINBACK_SESSION_SECRET")
        hours = _number(env, "WINBACK_SESSION_HOURS", 8.0)
        if hours <= 0:
            raise ConfigError(f"WINBACK_SESSION_HOURS must be more than 0, got {hours!r}")
        signers = sorted(f"{k.role}:{k.key}" for k in keys if k.role in DASHBOARD_ROLES)
        derived = hashlib.sha256("\0".join(["winback-dashboard-session", *signers]).encode()).digest()
        return cls(currency=env.get("WINBACK_CURRENCY") or None,
                   mlflow_ui_url=env.get("WINBACK_MLFLOW_UI_URL") or cls.mlflow_ui_url,
                   session_hours=hours,
                   **({"session_secret": secret.encode() if secret else derived} if secret or signers else {}))


@dataclass(frozen=True)
class LogSource:
    """Build the served snapshot from a transaction log, with the served model's reference.

    ``paths`` (files or globs) or ``dataset`` (``"cdnow"``); ``as_of`` None means the log's last
    day. ``ingest`` holds ``columns`` (a :class:`features.ColumnMap`'s fields) and ``policy``
    (a :class:`features.IngestPolicy`'s fields but the time zone, which is the model's).
    """

    paths: tuple[str, ...] = ()
    dataset: str | None = None
    as_of: str | None = None
    ingest: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The source as a name for messages and ``/info``: the dataset, or the paths."""
        return self.dataset or ", ".join(self.paths)

    def open(self, timezone: str):
        """The validated log, read in ``timezone``."""
        from features import ColumnMap, IngestPolicy, cdnow_log, read_transactions

        policy = IngestPolicy(**{**self.ingest.get("policy", {}), "timezone": timezone})
        if self.dataset:
            return cdnow_log(policy)
        return read_transactions(list(self.paths), ColumnMap(**self.ingest.get("columns", {})), policy)

    def open_side(self, timezone: str):
        """The customers file and events log given with the log (``ingest["side"]``: the
        arguments of :func:`features.side.open_side`), read in ``timezone``; None without them."""
        from features import IngestPolicy
        from features.side import open_side

        side = self.ingest.get("side") or {}
        if not side:
            return None
        policy = IngestPolicy(**{**self.ingest.get("policy", {}), "timezone": timezone})
        return open_side(**side, policy=policy, screen=False)          # a scoring door: the reference names the columns

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "LogSource | None":
        """The log source the environment names, or None (then the snapshot file is read)."""
        paths = tuple(p for p in env.get("WINBACK_TRANSACTIONS", "").split(os.pathsep) if p)
        dataset = env.get("WINBACK_DATASET") or None
        if not paths and not dataset:
            return None
        if paths and dataset:
            raise ConfigError("set WINBACK_TRANSACTIONS or WINBACK_DATASET, not both")
        if dataset and dataset != "cdnow":
            raise ConfigError(f"WINBACK_DATASET must be cdnow, got {dataset!r}")
        try:
            ingest = json.loads(env.get("WINBACK_INGEST") or "{}")
        except ValueError:
            raise ConfigError("WINBACK_INGEST must be JSON like {\"columns\": {...}, \"policy\": {...}}") from None
        as_of = env.get("WINBACK_AS_OF") or None
        if as_of is not None:
            from features.build import parse_cutoff

            try:
                parse_cutoff(as_of)
            except ValueError as exc:
                raise ConfigError(f"WINBACK_AS_OF: {exc}") from None
        return cls(paths, dataset, as_of, ingest)


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (``WINBACK_MAX_*``); over a limit is a 400 (or 413 for bytes)."""

    max_ids: int = 10_000
    max_customers: int = 1_000
    max_transactions: int = 100_000
    max_limit: int = 10_000
    max_body_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class ServiceSettings:
    """Everything the service reads from the environment (see the module's table)."""

    tracking_uri: str
    model_uri: str = DEFAULT_MODEL_URI
    snapshot: Path = DEFAULT_SNAPSHOT
    log_source: LogSource | None = None
    triggers_state: str | None = None
    #: the trigger rules the Campaigns page reports with (None: the shipped file)
    triggers_rules: "TriggerRules | None" = None
    api_keys: tuple[ApiKey, ...] = field(default=(), repr=False)
    poll_seconds: float = 30.0
    limits: Limits = Limits()
    reasons_cache: int = 100_000
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    rate_limit: "RateLimit | None" = None
    sync_dir: Path | None = None

    @property
    def sync_folder(self) -> Path:
        """``sync_dir``, or ``$BENTOML_HOME/winback-sync/<id>`` (BentoML's home defaults to
        ``~/bentoml``) with an id of the registry, the model URI and the snapshot source: the
        same for every worker of the service, another for another service."""
        if self.sync_dir is not None:
            return self.sync_dir
        source = self.log_source.name if self.log_source is not None else str(self.snapshot.resolve())
        name = hashlib.blake2b("\0".join([self.tracking_uri, self.model_uri, source]).encode(),
                               digest_size=6).hexdigest()
        home = Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml")
        return home / "winback-sync" / name

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "ServiceSettings":
        """Settings from ``env`` (default ``os.environ``); see the module's table."""
        from training.registry import resolve_tracking_uri

        env = os.environ if env is None else env
        keys = _split_keys(env.get("WINBACK_API_KEYS", ""))
        if env.get("WINBACK_API_KEYS_FILE"):
            keys += read_keys_file(Path(env["WINBACK_API_KEYS_FILE"]))
        api_keys = tuple(dict.fromkeys(ApiKey.parse(k) for k in keys))
        limits = Limits(**{name: _positive_int(env, f"WINBACK_{name.upper()}", default)
                           for name, default in vars(Limits()).items()})
        return cls(
            tracking_uri=resolve_tracking_uri(env.get("WINBACK_TRACKING_URI") or env.get("MLFLOW_TRACKING_URI")),
            model_uri=env.get("WINBACK_MODEL_URI") or DEFAULT_MODEL_URI,
            snapshot=Path(env.get("WINBACK_SNAPSHOT") or DEFAULT_SNAPSHOT),
            log_source=LogSource.from_env(env),
            triggers_state=env.get("WINBACK_TRIGGERS_STATE") or None,
            triggers_rules=_triggers_rules(env),
            api_keys=api_keys,
            poll_seconds=_number(env, "WINBACK_POLL_SECONDS", 30.0),
            limits=limits,
            reasons_cache=_positive_int(env, "WINBACK_REASONS_CACHE", 100_000),
            dashboard=DashboardSettings.from_env(env, api_keys),
            rate_limit=_rate_limit(env),
            sync_dir=Path(env["WINBACK_SYNC_DIR"]) if env.get("WINBACK_SYNC_DIR") else None,
        )


def _triggers_rules(env: Mapping[str, str]) -> "TriggerRules | None":
    """``WINBACK_TRIGGERS_RULES`` read and checked at start: a missing or invalid file stops the
    service with one line naming it, rather than a Campaigns page with the wrong budget."""
    from crm.rules import TriggerRules

    path = env.get("WINBACK_TRIGGERS_RULES", "").strip()
    if not path:
        return None
    try:
        return TriggerRules.from_toml(path)
    except OSError as exc:
        raise ConfigError(f"WINBACK_TRIGGERS_RULES: cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"WINBACK_TRIGGERS_RULES: {exc}") from None


def _rate_limit(env: Mapping[str, str]) -> "RateLimit | None":
    from serving.ratelimit import RateLimit

    text = env.get("WINBACK_RATE_LIMIT", "").strip()
    if not text or text.lower() in ("0", "off", "none"):
        return None
    try:
        return RateLimit.parse(text)
    except ValueError as exc:
        raise ConfigError(f"WINBACK_RATE_LIMIT: {exc}") from None


def _split_keys(text: str) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()]


def read_keys_file(path: Path) -> list[str]:
    """API keys from a file: one a line or comma-separated, each ``KEY`` or ``ROLE:KEY``;
    blank lines and ``#`` comments skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"WINBACK_API_KEYS_FILE: cannot read {path}: {exc.strerror}") from None
    return [k for line in lines if not line.lstrip().startswith("#") for k in _split_keys(line)]


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise ConfigError(f"{name} must be 0 or more, got {text!r}")
    return value


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {text!r}") from None
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}")
    return value
