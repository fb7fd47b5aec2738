"""A real MLflow store with a scorer trained on a CDNOW slice, a feature snapshot, and the
service running on 127.0.0.1 against them, started once per session. The swap test moves
the alias (to the same scorer, logged again) and the outage test breaks the store for a few
seconds, then restores it; other tests read the version from the answers."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pandas as pd
import pytest
from serving_support import AS_OF, KEYS, VIEWER_KEY, register_version, set_champion

from features import TransactionLog, labelled_features, prepare
from features.cdnow import CDNOW_COLUMNS
from features.job import write_features
from models.ml.churn import ChurnModel
from models.scorer import WinbackScorer
from serving.run import running, service_env

HORIZON = 60
CANONICAL = {"date": "timestamp", "dollar_value": "amount"}


@pytest.fixture(scope="session")
def serving_slice(cdnow_raw) -> pd.DataFrame:
    """The first 3,000 CDNOW customers' transactions, canonical columns."""
    raw = cdnow_raw[cdnow_raw["customer_id"].astype(int) <= 3000]
    return raw.rename(columns=CANONICAL)[["customer_id", "timestamp", "amount"]]


@pytest.fixture(scope="session")
def scorer(cdnow_raw) -> WinbackScorer:
    """Tiny models: fast to fit, still the real scorer."""
    log = TransactionLog.from_frame(cdnow_raw[cdnow_raw["customer_id"].astype(int) <= 3000], CDNOW_COLUMNS)
    _, _, reference = prepare(log, AS_OF)
    train = labelled_features(log, "1997-06-30", HORIZON, reference)
    calibration = labelled_features(log, AS_OF, HORIZON, reference)
    model = WinbackScorer(horizon_days=HORIZON, churn=ChurnModel(n_estimators=30, learning_rate=0.1),
                          hazard_estimators=15)
    return model.fit(train, calibration, reference)


@pytest.fixture(scope="session")
def store(tmp_path_factory, scorer, cdnow_raw, serving_slice) -> dict:
    """mlruns/ with version 1 of ``winback`` as champion, and the snapshot as of 1997-09-30."""
    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    (root / "mlruns").mkdir()
    example = serving_slice[serving_slice["customer_id"].isin(["00001", "00002", "00003"])]
    version = register_version(uri, scorer, example, {"churn_auc": 0.8, "next_purchase_cindex": 0.7})
    set_champion(uri, version)
    log = TransactionLog.from_frame(cdnow_raw[cdnow_raw["customer_id"].astype(int) <= 3000], CDNOW_COLUMNS)
    snapshot = root / "snapshot.parquet"
    write_features(log, AS_OF, snapshot, "D", reference=scorer.reference_)
    triggers = f"sqlite:///{root / 'triggers.db'}"
    _record_trigger_events(triggers)
    return {"root": root, "tracking_uri": uri, "snapshot": snapshot, "example": example, "version": version,
            "triggers": triggers}


def _record_trigger_events(state_uri: str) -> None:
    """Two events of a day in the outbox, one of them held out, for ``GET /triggers``."""
    import json

    from crm.outbox import Outbox
    from crm.rules import EVENT_COLUMNS, idempotency_key

    rows = [(cid, group) for cid, group in (("00001", "send"), ("00002", "holdout"))]
    events = pd.DataFrame([{"idempotency_key": idempotency_key(cid, "winback_due", "1997-09-30"),
                            "customer_id": cid, "rule": "winback_due", "as_of": "1997-09-30", "group": group,
                            "template": "winback_offer", "priority": 10,
                            "fields": json.dumps({"churn_probability": 0.9})} for cid, group in rows])
    Outbox(state_uri).record(events[list(EVENT_COLUMNS)])


def _env(tmp: Path, store: dict, tracking_uri: str | None = None, poll: float = 1.0) -> dict:
    home = tmp / "bentoml"
    home.mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WINBACK_", "MLFLOW_", "BENTOML_"))}
    env = service_env(tracking_uri or store["tracking_uri"], snapshot=store["snapshot"], poll_seconds=poll,
                      base=base)
    env.update(BENTOML_HOME=str(home), WINBACK_API_KEYS=",".join([*KEYS, f"viewer:{VIEWER_KEY}"]),
               WINBACK_SYNC_DIR=str(tmp / "sync"), WINBACK_MAX_IDS="2000",
               WINBACK_MAX_CUSTOMERS="50", WINBACK_MAX_TRANSACTIONS="500", WINBACK_MAX_LIMIT="500",
               WINBACK_MAX_BODY_BYTES="1000000", WINBACK_TRIGGERS_STATE=store["triggers"])
    return env


@pytest.fixture(scope="session")
def _service(tmp_path_factory, store):
    tmp = tmp_path_factory.mktemp("server")
    with running(_env(tmp, store), log=tmp / "server.log") as url:
        yield url, tmp / "server.log"


@pytest.fixture(scope="session")
def server(_service) -> str:
    """The service on a free loopback port; the base URL."""
    return _service[0]


@pytest.fixture(scope="session")
def server_log(_service) -> Path:
    """What the service wrote to stdout and stderr."""
    return _service[1]


@pytest.fixture(scope="session")
def auth() -> dict:
    return {"Authorization": f"Bearer {KEYS[1]}"}


@pytest.fixture
def http(server, auth):
    with httpx.Client(base_url=server, headers=auth, timeout=60) as client:
        yield client
