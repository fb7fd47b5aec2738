"""One small local Spark session for the whole test run, shared by the Spark tests.

``local[2]`` with two shuffle partitions, no UI and quiet logs: starting Spark costs seconds, so
every test module gets the same session from :func:`spark`. Without Java the Spark tests are
skipped on a developer's machine and fail under CI (``CI=true``), where Java is required.

:func:`running_cluster` starts a real standalone cluster instead (a master and one worker on
127.0.0.1, from the pinned pyspark's own ``bin/spark-class``) for the tests that drive the CLI
against ``spark://`` as a user would.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

#: The JIT's quick tier only: the tests' JVMs live a minute on a small table, where the optimizing
#: compiler's threads cost more than they win (a session and four training origins on CDNOW's
#: first 2,000 customers: 45 s with it, 118 s without, one run each at load 12 on 2 cores).
QUICK_JVM = "-XX:TieredStopAtLevel=1"


def java_missing() -> bool:
    return shutil.which("java") is None and not os.environ.get("JAVA_HOME")


def require_java() -> None:
    """Skip the calling test without Java, or fail it under CI (``CI=true``), where Java is required."""
    if java_missing():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("Java 17 is required for the Spark tests under CI (install openjdk-17-jre-headless)")
        pytest.skip("Java is not installed: the Spark tests need Java 17")


@functools.cache
def _session():
    from features.spark import spark_session

    session = spark_session("local[2]", app_name="winback-tests", conf={
        "spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2",
        "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.driver.memory": "1g", "spark.driver.extraJavaOptions": QUICK_JVM})
    session.sparkContext.setLogLevel("ERROR")
    return session


def spark():
    """The shared session; skips the calling test without Java unless CI is set."""
    require_java()
    return _session()


# ---------------------------------------------------------------------------------------------
# A real standalone cluster


def spark_home() -> Path:
    """The pinned pyspark's folder, which is a Spark distribution: ``bin/spark-class``, ``jars/``."""
    import pyspark

    return Path(pyspark.__file__).parent


class StandaloneCluster:
    """A Spark standalone master and one worker on 127.0.0.1, under ``root``.

    Started as the Spark docs' "Starting a Cluster Manually" does it, by ``bin/spark-class
    org.apache.spark.deploy.master.Master`` and ``...worker.Worker spark://127.0.0.1:PORT``,
    on free ports, the worker with ``cores`` cores and ``memory`` for its executors, its
    executors' folders under ``root/work``. Each daemon runs in a process group of its own
    (the worker's executors with it), so :meth:`stop` ends everything it started.
    """

    def __init__(self, root: Path, cores: int = 1, memory: str = "1g"):
        from serving.run import free_port

        self.root, self.cores, self.memory = root, cores, memory
        self.port, self.ui_port, self.worker_ui_port = free_port(), free_port(), free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.ui = f"http://127.0.0.1:{self.ui_port}"
        self.work = root / "work"
        self.conf_dir = root / "conf"
        self.processes: dict[str, subprocess.Popen] = {}

    def daemon_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK_", "PYSPARK_"))}
        return {**env, "SPARK_HOME": str(spark_home()), "SPARK_CONF_DIR": str(self.conf_dir),
                "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_DAEMON_MEMORY": "256m", "SPARK_DAEMON_JAVA_OPTS": QUICK_JVM}

    def client_env(self) -> dict[str, str]:
        """What a user's shell would hold to run ``winback ... --spark-master`` against this
        cluster: the driver on 127.0.0.1 and ``$SPARK_CONF_DIR/spark-defaults.conf`` sizing the
        executors to the worker. ``PYSPARK_PYTHON`` is left to the code, and this venv is not
        on ``PATH`` (``winback`` called by its path), so the ``python3`` Spark would otherwise
        start on the executors is not this venv's by chance."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK_", "PYSPARK_", "MLFLOW_"))}
        venv_bin = str(Path(sys.executable).parent)
        path = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
        return {**env, "PATH": path, "SPARK_CONF_DIR": str(self.conf_dir), "SPARK_LOCAL_IP": "127.0.0.1"}

    def start(self, timeout: float = 180.0) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        (self.conf_dir / "spark-defaults.conf").write_text(
            "spark.executor.memory 512m\n"
            f"spark.cores.max {self.cores}\n"
            f"spark.sql.shuffle.partitions {2 * self.cores}\n"
            f"spark.default.parallelism {2 * self.cores}\n"
            "spark.driver.memory 1g\n"
            f"spark.driver.extraJavaOptions {QUICK_JVM}\n"
            f"spark.executor.extraJavaOptions {QUICK_JVM}\n"
            "spark.ui.enabled false\n", encoding="utf-8")
        spark_class = str(spark_home() / "bin" / "spark-class")
        self._launch("master", [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                "--port", str(self.port), "--webui-port", str(self.ui_port)])
        self._launch("worker", [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                                "--webui-port", str(self.worker_ui_port), "--cores", str(self.cores),
                                "--memory", self.memory, "--work-dir", str(self.work), self.url])
        deadline = time.monotonic() + timeout
        while True:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"the Spark {name} exited with status {process.returncode}:\n{self.log(name)}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if self.state().get("aliveworkers", 0) >= 1:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no worker registered with the Spark master {self.url} in {timeout:.0f} s:\n"
                                   f"{self.log('master')}\n{self.log('worker')}")
            time.sleep(0.5)

    def _launch(self, name: str, argv: list[str]) -> None:
        with open(self.root / f"{name}.log", "ab") as out:
            self.processes[name] = subprocess.Popen(argv, env=self.daemon_env(), cwd=self.root, stdout=out,
                                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                    start_new_session=True)

    def state(self) -> dict:
        """The master's own account (its web UI's ``/json/``): workers, running and finished apps."""
        return httpx.get(f"{self.ui}/json/", timeout=5).json()

    def log(self, name: str, tail: int = 4000) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def executor_logs(self, app_id: str) -> str:
        """Everything the worker's executors for ``app_id`` wrote to stderr."""
        return "\n".join(p.read_text(errors="replace") for p in sorted((self.work / app_id).glob("*/stderr")))

    def stop(self) -> None:
        """Signal the worker's and then the master's process group; SIGKILL what outlives 30 s."""
        for name in ("worker", "master"):
            process = self.processes.get(name)
            if process is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):          # executors, a hung daemon
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def running_cluster(root: Path, cores: int = 1, memory: str = "1g") -> Iterator[StandaloneCluster]:
    """Start a :class:`StandaloneCluster` under ``root``; yield it; stop it, also on failure."""
    cluster = StandaloneCluster(root, cores, memory)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def assert_same_table(got, want, exact_types: bool = True) -> None:
    """The same columns in the same order and the same rows: floats to 1e-9, dates to the
    microsecond, everything else exactly; with ``exact_types`` the same dtypes too."""
    import pandas as pd

    assert list(got.columns) == list(want.columns)
    assert len(want) > 0 and len(got) == len(want)
    if exact_types:
        assert got.dtypes.to_dict() == want.dtypes.to_dict()
    for col in want.columns:
        if pd.api.types.is_float_dtype(want[col]):
            pd.testing.assert_series_equal(got[col], want[col], check_exact=False, rtol=0, atol=1e-9,
                                           check_dtype=exact_types)
        elif pd.api.types.is_datetime64_any_dtype(want[col]):
            pd.testing.assert_series_equal(got[col].astype("datetime64[us]"), want[col].astype("datetime64[us]"))
        else:
            assert got[col].tolist() == want[col].tolist(), col
