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
from pathlib import Path
from typing import Iterator

import httpx

from serving.run import free_port


@contextlib.contextmanager
def running_mlflow_server(root: Path, timeout: float = 240.0) -> Iterator[str]:
    """Start ``mlflow server`` with its store and artifacts under ``root``; yield its URL."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"     # no job runner: seven huey consumers
    log = root / "server.log"
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"mlflow server exited with status {process.returncode}:\n"
                                       f"{log.read_text(errors='replace')[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"mlflow server at {url} did not answer /health in {timeout:.0f} s")
                time.sleep(0.3)
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
