"""A real ``mlflow server`` for the tests: started from the venv on a free loopback port with a
SQLite backend and a local artifact root that it serves itself (clients send and fetch artifacts
over HTTP, as with a remote server), stopped at the end. Its job runner (GenAI evaluation jobs,
seven worker processes) is switched off: the registry does not use it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from serving.run import free_port


class MlflowServer:
    """``mlflow server`` with its store and artifacts under ``root``, on ``port``; :meth:`stop`
    and :meth:`start` again keep the store and the URL."""

    def __init__(self, root: Path, port: int | None = None):
        self.root, self.port = root, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 240.0) -> None:
        argv = [sys.executable, "-m", "mlflow", "server",
                "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination", str(self.root / "artifacts"), "--serve-artifacts",
                "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        log = self.root / "server.log"
        with open(log, "ab") as out:
            self.process = subprocess.Popen(argv, env=env, cwd=self.root, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with status {self.process.returncode}:\n"
                                   f"{log.read_text(errors='replace')[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"mlflow server at {self.url} did not answer /health in {timeout:.0f} s")
            time.sleep(0.3)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the server's process group (SIGKILL for a crash), then wait for it."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        with contextlib.suppress(ProcessLookupError):        # no uvicorn child outlives it
            os.killpg(self.process.pid, signal.SIGKILL)


@contextlib.contextmanager
def running_mlflow_server(root: Path) -> Iterator[MlflowServer]:
    """Start ``mlflow server`` with its store and artifacts under ``root``; yield it; stop it."""
    server = MlflowServer(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
