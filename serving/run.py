"""Start the scoring service: in the foreground for ``winback serve``, or as a child process
for tests, the smoke check and the benchmark.

Both run ``bentoml serve serving.service:WinbackService`` with the settings passed as the
environment variables :mod:`serving.config` reads, so the two ways to start it cannot differ.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from serving.config import LogSource

SERVICE = "serving.service:WinbackService"
PROJECT = Path(__file__).resolve().parent.parent


def service_env(tracking_uri: str | None = None, model_uri: str | None = None,
                snapshot: str | Path | None = None, api_keys_file: str | Path | None = None,
                poll_seconds: float | None = None, workers: int | None = None,
                base: Mapping[str, str] | None = None,
                log_source: "LogSource | None" = None) -> dict[str, str]:
    """The environment for a service process: ``base`` (default ``os.environ``) plus the given
    settings; None keeps what ``base`` says (or the service's default). A ``log_source``
    replaces the snapshot: the service builds its features from the log."""
    env = dict(os.environ if base is None else base)
    if log_source is not None:
        for name in ("WINBACK_TRANSACTIONS", "WINBACK_DATASET", "WINBACK_AS_OF", "WINBACK_INGEST"):
            env.pop(name, None)
        if log_source.dataset:
            env["WINBACK_DATASET"] = log_source.dataset
        else:
            env["WINBACK_TRANSACTIONS"] = os.pathsep.join(log_source.paths)
        if log_source.as_of:
            env["WINBACK_AS_OF"] = log_source.as_of
        if log_source.ingest:
            env["WINBACK_INGEST"] = json.dumps(log_source.ingest)
    for name, value in (("WINBACK_TRACKING_URI", tracking_uri), ("WINBACK_MODEL_URI", model_uri),
                        ("WINBACK_SNAPSHOT", snapshot), ("WINBACK_API_KEYS_FILE", api_keys_file),
                        ("WINBACK_POLL_SECONDS", poll_seconds)):
        if value is not None:
            env[name] = str(Path(value).resolve()) if isinstance(value, Path) else str(value)
    if workers is not None:
        env["BENTOML_CONFIG_OPTIONS"] = " ".join(
            filter(None, [env.get("BENTOML_CONFIG_OPTIONS"), f"services.winback.workers={int(workers)}"]))
    env.setdefault("BENTOML_DO_NOT_TRACK", "True")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")]))
    return env


def command(host: str, port: int, service: str = SERVICE) -> list[str]:
    """The ``bentoml serve`` command line for ``service`` on ``host:port``."""
    return [sys.executable, "-m", "bentoml", "serve", service, "--host", host, "--port", str(port)]


def serve(host: str = "127.0.0.1", port: int = 3000, tracking_uri: str | None = None,
          model_uri: str | None = None, snapshot: str | Path | None = None,
          api_keys_file: str | Path | None = None, poll_seconds: float | None = None,
          workers: int | None = None, log_source: "LogSource | None" = None) -> int:
    """Run the service in the foreground until interrupted; return its exit status.

    API keys come from ``WINBACK_API_KEYS`` in the environment (never a flag, so they do not
    show in ``ps``) and from ``api_keys_file``. Unset arguments keep the environment's
    ``WINBACK_*`` settings, then the defaults (see :mod:`serving.config`).
    """
    if snapshot is not None and not Path(snapshot).is_file():
        raise FileNotFoundError(f"--snapshot: no feature table at {snapshot}; build one with "
                                "`winback features ... --out X.parquet`")
    from serving.champion import check_startup
    from serving.config import ServiceSettings
    from training.registry import resolve_tracking_uri

    tracking_uri = tracking_uri or os.environ.get("WINBACK_TRACKING_URI") or resolve_tracking_uri(None)
    env = service_env(_absolute_sqlite(tracking_uri), model_uri, _absolute(snapshot),
                      _absolute(api_keys_file), poll_seconds, workers, log_source=log_source)
    check_startup(ServiceSettings.from_env(env))         # fail here, once, not in a worker loop
    return supervise(command(host, port), env)


def supervise(argv: list[str], env: Mapping[str, str], grace: float = 20.0) -> int:
    """Run ``argv`` in its own process group until it exits; SIGTERM and SIGINT sent to us are
    passed to the whole group (the BentoML arbiter and its workers), then we wait for it.

    Without the group a signal to ``winback serve`` ended only this process and left the server
    and its workers running on the port. If the group is still there ``grace`` seconds after a
    signal it is killed. A server that stops on its own (a worker found the configuration
    unusable) gives a non-zero status."""
    process = subprocess.Popen(argv, env=dict(env), start_new_session=True)
    asked = []

    def forward(signum, _frame):
        asked.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        deadline = None
        while True:
            try:
                status = process.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if asked and deadline is None:
                    deadline = time.monotonic() + grace
                if deadline is not None and time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        with contextlib.suppress(ProcessLookupError):      # no worker outlives the arbiter
            os.killpg(process.pid, signal.SIGKILL)
    if asked:
        return max(status, 0)                               # stopped because we were asked to
    return status or 1


@contextlib.contextmanager
def running(env: Mapping[str, str], host: str = "127.0.0.1", port: int | None = None,
            timeout: float = 180.0, log: Path | None = None, service: str = SERVICE) -> Iterator[str]:
    """Start the service as a child process with ``env`` (see :func:`service_env`), wait until
    ``/readyz`` answers, yield its base URL, and stop it on exit. ``service`` is the BentoML
    import path (another service for benchmarks)."""
    port = port or free_port(host)
    out = open(log, "wb") if log else subprocess.DEVNULL
    process = subprocess.Popen(command(host, port, service), env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)
    url = f"http://{host}:{port}"
    try:
        wait_ready(url, process, timeout, log)
        yield url
    finally:
        stop(process)
        if not isinstance(out, int):
            out.close()


def wait_ready(url: str, process: subprocess.Popen, timeout: float, log: Path | None = None) -> None:
    """Wait until ``/readyz`` answers 200; raise with the log's tail if the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"the service exited with status {process.returncode} before it was "
                               f"ready\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    stop(process)
    raise TimeoutError(f"the service at {url} was not ready after {timeout:.0f} s")


def stop(process: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM the service's process group (it has worker children), then SIGKILL if needed."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def free_port(host: str = "127.0.0.1") -> int:
    """A free TCP port on ``host``."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _absolute(path: str | Path | None) -> Path | None:
    return None if path is None else Path(path).resolve()


def _absolute_sqlite(uri: str | None) -> str | None:
    """A relative ``sqlite:///`` path made absolute: the service runs from the project folder."""
    if uri and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return uri
