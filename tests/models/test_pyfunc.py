"""The logged pyfunc model: loadable where the project is not installed, any input it promises.

A small scorer (1,500 CDNOW customers) is logged to a temporary MLflow store and loaded in a fresh
Python process whose working directory is a temporary folder and from which the project is not
importable (the editable install's finder is not loaded), so only the code bundled with the model
can make it work.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models.utils import _enforce_schema

from features import TransactionLog, build_features, labelled_features, prepare
from features.cdnow import CDNOW_COLUMNS
from models.ml.churn import ChurnModel
from models.pyfunc import default_as_of, flatten_for_pyfunc, log_scorer, output_schema
from models.scorer import WinbackScorer

HORIZON = 60
LAST_DAY = "1998-01-31"


@pytest.fixture(scope="module")
def raw_slice(cdnow_raw) -> pd.DataFrame:
    """The first 1,500 CDNOW customers until LAST_DAY, as a plain transaction frame."""
    raw = cdnow_raw[(cdnow_raw["customer_id"].astype(int) <= 1500) & (cdnow_raw["date"] <= LAST_DAY)]
    return raw.reset_index(drop=True)


@pytest.fixture(scope="module")
def small_scorer(raw_slice) -> WinbackScorer:
    log = TransactionLog.from_frame(raw_slice, CDNOW_COLUMNS)
    _, _, reference = prepare(log, "1997-09-30")
    train = pd.concat([labelled_features(log, c, HORIZON, reference) for c in ("1997-05-31", "1997-06-30")])
    calibration = labelled_features(log, "1997-09-30", HORIZON, reference)
    return WinbackScorer(horizon_days=HORIZON, churn=ChurnModel(n_estimators=40, learning_rate=0.08),
                         hazard_estimators=20, churn_tree_candidates=()).fit(train, calibration, reference)


def transactions(raw: pd.DataFrame) -> pd.DataFrame:
    """CDNOW rows in the pyfunc's column names, with integer customer ids."""
    return pd.DataFrame({"customer_id": raw["customer_id"].astype(int), "timestamp": raw["date"],
                         "amount": raw["dollar_value"]})


@pytest.fixture(scope="module")
def logged(small_scorer, raw_slice, tmp_path_factory) -> tuple[str, str]:
    """(tracking URI, model URI) of the scorer logged in a temporary store."""
    from training.registry import experiment_id, use_tracking

    store = tmp_path_factory.mktemp("store")
    uri = use_tracking(f"sqlite:///{store / 'mlflow.db'}")
    example = transactions(raw_slice[raw_slice["customer_id"].astype(int) <= 3])
    with mlflow.start_run(experiment_id=experiment_id(uri)):
        info = log_scorer(small_scorer, example, LAST_DAY)
    return uri, info.model_uri


def test_default_as_of_is_the_inputs_last_day(raw_slice, small_scorer):
    assert default_as_of(transactions(raw_slice)) == LAST_DAY
    texts = pd.DataFrame({"customer_id": [1, 2], "timestamp": ["1998-01-30T23:00:00+08:00",
                                                               "1998-01-30T20:00:00-05:00"]})
    assert default_as_of(texts, "Asia/Taipei") == "1998-01-31"      # 1998-01-31 09:00 in Taipei
    table = build_features(TransactionLog.from_frame(raw_slice, CDNOW_COLUMNS), "1997-12-15",
                           reference=small_scorer.reference_)
    assert default_as_of(table) == "1997-12-15"                      # first purchase + T
    assert default_as_of(table.assign(as_of=pd.Timestamp("1997-12-15"))) == "1997-12-15"
    with pytest.raises(ValueError, match="as_of"):
        default_as_of(table.drop(columns=["T"]))


def test_output_schema_holds_even_when_a_date_column_is_empty(small_scorer, raw_slice):
    scores = small_scorer.score(transactions(raw_slice), LAST_DAY, reasons=False)
    scores["next_purchase_date"] = pd.NaT                          # nobody expected back in time
    flat = flatten_for_pyfunc(scores)
    schema = {c.name: c.type.name for c in output_schema(flat).inputs}
    assert schema["next_purchase_date"] == schema["as_of"] == schema["winback_date"] == "string"
    assert schema["priority"] == schema["r_score"] == "long" and schema["winback_now"] == "boolean"
    assert schema["reasons"] == "string" and (flat["reasons"] == "").all()
    assert flat["next_purchase_date"].map(lambda v: v is None).all()
    assert flat["as_of"].eq(LAST_DAY).all()


def test_signature_and_requirements(logged):
    uri, model_uri = logged
    mlflow.set_tracking_uri(uri)
    info = mlflow.models.get_model_info(model_uri)
    assert info.signature.inputs is None                           # transactions or a feature table
    outputs = {c.name: c.type.name for c in info.signature.outputs.inputs}
    assert outputs["next_purchase_date"] == "string" and outputs["priority"] == "long"
    assert {p.name: p.default for p in info.signature.params.params} == {"as_of": "", "reasons": False}
    local = mlflow.artifacts.download_artifacts(model_uri)
    with open(f"{local}/requirements.txt") as f:
        requirements = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    assert not any(r.split("=")[0] == "winback" for r in requirements)
    names = {r.split("==")[0] for r in requirements}
    assert {"lifetimes", "lightgbm", "scikit-learn", "pandas", "duckdb", "mlflow"} <= names
    assert all("==" in r for r in requirements if r.split("==")[0] in names - {"cloudpickle"})
    assert {"features", "models"} <= {p.name for p in Path(local, "code").iterdir()}


LOAD_ELSEWHERE = textwrap.dedent("""
    import json, sys
    sys.path.append(SITE_PACKAGES)          # third-party libraries only: no .pth, no editable finder
    try:
        import features
    except ImportError:
        pass
    else:
        raise SystemExit("the project is importable without the model's code: " + features.__file__)
    import mlflow, pandas as pd
    mlflow.set_tracking_uri(TRACKING_URI)
    model = mlflow.pyfunc.load_model(MODEL_URI)
    raw = pd.read_json(sys.argv[1], orient="split", convert_dates=["timestamp"])
    scores = model.predict(raw)                                   # integer ids, no params
    assert scores["customer_id"].tolist() == sorted(str(c) for c in raw["customer_id"].unique())
    import features as bundled
    table = bundled.build_features(raw, scores["as_of"].iloc[0],
                                   reference=model.unwrap_python_model().scorer.reference_)
    table["customer_id"] = table["customer_id"].astype(int)
    again = model.predict(table)                                  # a feature table, no params
    print(json.dumps({"transactions": scores.to_dict("list"), "features": again.to_dict("list"),
                      "code": bundled.__file__}, default=str))
""")


def test_loads_and_scores_where_the_project_is_not_installed(logged, raw_slice, small_scorer, tmp_path):
    uri, model_uri = logged
    recent = transactions(raw_slice[raw_slice["customer_id"].astype(int).between(10, 60)])
    data = tmp_path / "transactions.json"
    recent.to_json(data, orient="split", date_format="iso", index=False)
    script = (f"SITE_PACKAGES = {sysconfig.get_paths()['purelib']!r}\nTRACKING_URI = {uri!r}\n"
              f"MODEL_URI = {model_uri!r}\n" + LOAD_ELSEWHERE)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "MLFLOW_TRACKING_URI": uri}
    # -I: no PYTHONPATH, no user site, no script folder; -S: no site-packages .pth files
    done = subprocess.run([sys.executable, "-I", "-S", "-c", script, str(data)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "/work/main/" not in result["code"] and "/code/features/" in result["code"]
    last_day = str(recent["timestamp"].max().date())
    expected = flatten_for_pyfunc(small_scorer.score(recent.assign(customer_id=recent["customer_id"].astype(str)),
                                                     last_day, reasons=False))
    for name in ("transactions", "features"):
        got = pd.DataFrame(result[name])
        assert got["as_of"].eq(last_day).all()                    # the input's last day, not training's
        assert got["customer_id"].tolist() == expected["customer_id"].tolist()
        np.testing.assert_allclose(got["churn_probability"], expected["churn_probability"], rtol=1e-9)
        assert got["next_purchase_date"].tolist() == expected["next_purchase_date"].tolist()


def test_predict_matches_the_logged_output_schema(logged, raw_slice):
    uri, model_uri = logged
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(model_uri)
    scores = model.predict(transactions(raw_slice), params={"reasons": True})
    schema = model.metadata.get_output_schema()
    assert list(scores.columns) == schema.input_names()
    _enforce_schema(scores, schema)                                # raises on a type mismatch
    assert scores["reasons"].str.len().gt(0).all()


def test_training_run_records_its_dataset_and_commit(cdnow_raw, tmp_path):
    from mlflow import MlflowClient

    from training.pipeline import TrainConfig, _git_commit, fingerprint, train

    log = TransactionLog.from_frame(cdnow_raw[cdnow_raw["customer_id"].astype(int) <= 1500], CDNOW_COLUMNS)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = TrainConfig(cutoff="1997-12-31", horizon_days=120, origins=2, origin_step_days=30,
                         churn_estimators=30, hazard_estimators=10)
    result = train(log, config, store)
    run = MlflowClient(store).get_run(result.run_id)
    (used,) = run.inputs.dataset_inputs
    seen = fingerprint(log)
    assert used.dataset.digest == seen["hash"] and used.dataset.name == "transactions"
    assert json.loads(used.dataset.source) == {"uri": log.source}
    assert json.loads(used.dataset.profile)["rows"] == seen["rows"]
    assert {t.key: t.value for t in used.tags}["mlflow.data.context"] == "training"
    assert run.info.run_name == "cutoff 1997-12-31 h120 mbgnbd"
    commit = _git_commit()                                         # None when not a git checkout
    assert run.data.tags.get("mlflow.source.git.commit") == commit
    if subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
                      capture_output=True).returncode == 0:
        assert commit is not None and len(commit) == 40
