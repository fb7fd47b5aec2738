"""`winback features`, `train` and `score --engine spark` on a real standalone Spark cluster.

One cluster for the module: a master and one worker (one core, 1 GiB for executors) on
127.0.0.1, started from the pinned pyspark by ``tests/spark_support.py``. Each Spark command
runs as a user runs it: the ``winback`` program in a process of its own with
``--spark-master spark://127.0.0.1:PORT``, executors sized by ``$SPARK_CONF_DIR/spark-defaults.conf``,
the driver on 127.0.0.1 (``SPARK_LOCAL_IP``), nothing else set. Each must show up in the
master's record as a finished application whose executor on the worker ran tasks, and equal
``--engine duckdb`` on the same log: the same feature file, the same training run (every
metric and parameter MLflow records, the same registered champion), the same scores.

The log is CDNOW's first 2,000 customers as a CSV file, and training takes one origin: the
time goes to starting a driver and an executor per command and to Spark's planning, not to
the data. A master Spark cannot use (none answering, ``yarn`` without its configuration) is
refused in one line, exit status 2, before any JVM starts.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from training.cli import app

sys.path.append(str(Path(__file__).resolve().parents[1]))
import spark_support  # noqa: E402

CUSTOMERS = 2000
LOG_FLAGS = ("--timestamp-col", "date", "--amount-col", "dollar_value", "--quantity-col", "number_of_cds")
CUTOFF, HORIZON, AS_OF = "1997-12-31", "120", "1998-06-30"
TRAIN_FLAGS = ("--cutoff", CUTOFF, "--horizon-days", HORIZON, "--origins", "1", "--origin-step-days", "30")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    spark_support.require_java()
    with spark_support.running_cluster(tmp_path_factory.mktemp("spark-cluster"), cores=1, memory="1g") as running:
        yield running


@pytest.fixture(scope="module")
def log_file(cdnow_raw, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("log") / "cdnow.csv"
    cdnow_raw[cdnow_raw["customer_id"].astype(int) <= CUSTOMERS].to_csv(path, index=False)
    return path


def on_cluster(cluster: spark_support.StandaloneCluster, cwd: Path, *args: str) -> tuple[str, str]:
    """``winback ARGS --engine spark --spark-master URL`` in a fresh process, as from a user's
    shell: its output and what its executor on the worker logged. Fails unless it exits 0 and
    ran as one application on the cluster whose executor finished tasks."""
    before = {a["id"] for a in cluster.state()["completedapps"] + cluster.state()["activeapps"]}
    argv = [str(Path(sys.executable).with_name("winback")), *args, "--engine", "spark", "--spark-master", cluster.url]
    done = subprocess.run(argv, cwd=cwd, env=cluster.client_env(), capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, \
        f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    deadline = time.monotonic() + 30                  # the master marks an app finished when its driver is gone
    while not (apps := [a for a in cluster.state()["completedapps"] if a["id"] not in before]):
        assert time.monotonic() < deadline, f"no application finished on {cluster.url}:\n{cluster.log('master')}"
        time.sleep(0.5)
    assert [(a["name"], a["state"]) for a in apps] == [("winback", "FINISHED")]
    executor_log = cluster.executor_logs(apps[0]["id"])
    assert "Finished task" in executor_log, "no task ran on the worker's executor"
    return done.stdout, executor_log


def locally(*args: str) -> str:
    """``winback ARGS`` (the DuckDB engine) through the same CLI, in this process."""
    done = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert done.exit_code == 0, done.output
    return done.output


def test_the_feature_job_on_the_cluster_writes_duckdbs_file(cluster, log_file, tmp_path):
    common = ("features", "--transactions", str(log_file), *LOG_FLAGS, "--cutoff", "1997-09-30")
    on_cluster(cluster, tmp_path, *common, "--out", str(tmp_path / "spark.parquet"))
    locally(*common, "--out", str(tmp_path / "duckdb.parquet"))
    got, want = pq.read_table(tmp_path / "spark.parquet"), pq.read_table(tmp_path / "duckdb.parquet")
    assert got.schema.metadata == want.schema.metadata            # cutoff, reference id, feature definitions
    assert [(f.name, f.type) for f in got.schema] == [(f.name, f.type) for f in want.schema]
    assert want.num_rows == CUSTOMERS
    spark_support.assert_same_table(got.to_pandas(), want.to_pandas())


@pytest.fixture(scope="module")
def trained(cluster, log_file, tmp_path_factory) -> tuple[str, str]:
    """``winback train --engine spark`` on the cluster into an empty registry: (store, output)."""
    root = tmp_path_factory.mktemp("train-spark")
    store = f"sqlite:///{root / 'mlflow.db'}"
    output, _ = on_cluster(cluster, root, "train", "--transactions", str(log_file), *LOG_FLAGS, *TRAIN_FLAGS,
                        "--tracking-uri", store)
    return store, output


def champion_run(store: str):
    client = MlflowClient(store, registry_uri=store)
    version = client.get_model_version_by_alias("winback", "champion")
    return version, client.get_run(version.run_id)


def test_training_on_the_cluster_registers_what_duckdb_trains(trained, log_file, tmp_path):
    store, output = trained
    assert "version 1:" in output and "→ champion" in output
    local_store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    locally("train", "--transactions", str(log_file), *LOG_FLAGS, *TRAIN_FLAGS, "--tracking-uri", local_store)
    (ours, our_run), (theirs, their_run) = champion_run(store), champion_run(local_store)
    assert str(ours.version) == str(theirs.version) == "1"
    assert our_run.data.params == their_run.data.params                # origins, trees chosen, served models
    assert set(our_run.data.metrics) == set(their_run.data.metrics) and len(their_run.data.metrics) > 30
    assert our_run.data.metrics == pytest.approx(their_run.data.metrics, rel=1e-9, abs=1e-12)


def test_scoring_on_the_cluster_gives_duckdbs_scores(cluster, trained, log_file, tmp_path):
    store, _ = trained
    common = ("score", "--transactions", str(log_file), *LOG_FLAGS, "--as-of", AS_OF, "--tracking-uri", store)
    printed, executor_log = on_cluster(cluster, tmp_path, *common, "--out", str(tmp_path / "scores"))
    assert f"scored {CUSTOMERS:,} customers as of {AS_OF} on Spark with model version 1" in " ".join(printed.split())
    assert "Starting Python task execution" in executor_log      # the scorer ran in Python on the worker
    locally(*common, "--reasons", "0", "--out", str(tmp_path / "scores.parquet"))
    got = pd.read_parquet(tmp_path / "scores" / f"as_of={AS_OF}").sort_values("customer_id", ignore_index=True)
    want = pd.read_parquet(tmp_path / "scores.parquet").sort_values("customer_id", ignore_index=True)
    assert len(want) == CUSTOMERS and want["priority"].nunique() > 100 and want["churn_probability"].nunique() > 100
    spark_support.assert_same_table(got, want.drop(columns="as_of"))


@pytest.mark.parametrize("master, says", [
    ("spark://127.0.0.1:{port}", "Spark master spark://127.0.0.1:{port}: no master answers at 127.0.0.1:{port}"),
    ("spark://127.0.0.1", "expected spark://HOST:PORT"),
    ("yarn", "Spark master yarn: set HADOOP_CONF_DIR"),
])
def test_a_master_spark_cannot_use_is_one_line_and_exit_2(log_file, tmp_path, monkeypatch, master, says):
    """Not a minute of Spark's retries ending in a Java stack trace: refused before the JVM starts."""
    from serving.run import free_port

    for name in ("HADOOP_CONF_DIR", "YARN_CONF_DIR", "SPARK_REMOTE"):
        monkeypatch.delenv(name, raising=False)
    port = free_port()                                  # nothing listens there
    started = time.perf_counter()
    done = CliRunner().invoke(app, ["features", "--transactions", str(log_file), *LOG_FLAGS, "--engine", "spark",
                                    "--spark-master", master.format(port=port), "--out", str(tmp_path / "f.parquet")])
    assert done.exit_code == 2, done.output
    assert says.format(port=port) in " ".join(done.output.split()) and "Traceback" not in done.output
    assert time.perf_counter() - started < 30 and not (tmp_path / "f.parquet").exists()
