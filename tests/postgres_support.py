"""A real PostgreSQL for the tests: Debian's server started in a temporary folder on a free
loopback port, as a user that is not root, and stopped at the end.

``make install`` installs Debian's ``postgresql`` when ``initdb`` is missing. Tests run as root on
CI; PostgreSQL refuses to run as root, so the cluster belongs to the ``postgres`` user the package
creates (or to the current user when that is not root). Clients connect over TCP as the
superuser ``winback`` with trust authentication on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from serving.run import free_port

SUPERUSER = "winback"


def binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: on PATH, else Debian's newest version."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def _as_owner(owner: str | None, argv: list[str]) -> list[str]:
    return argv if owner is None else ["runuser", "-u", owner, "--", *argv]


class Postgres:
    """A running cluster: :meth:`uri` names a database, :meth:`create_database` makes a new one."""

    def __init__(self, port: int, directory: Path):
        self.port, self.directory = port, directory

    def uri(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database (dropped first if a previous test left it); its SQLAlchemy URI."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)


@contextlib.contextmanager
def running_postgres(timeout: float = 120.0) -> Iterator[Postgres]:
    """Start a new cluster in a temporary folder; yield it; stop it and remove the folder."""
    bin_dir = binaries()
    if bin_dir is None:
        raise FileNotFoundError("no PostgreSQL server (initdb, pg_ctl): `make install` installs Debian's "
                                "postgresql, or run `apt-get install postgresql` as root")
    owner = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("running as root and there is no `postgres` user to own the cluster "
                               "(Debian's postgresql package creates it)") from None
        owner = "postgres"
    # not under pytest's tmp_path: its folders are private to root; this one belongs to the owner
    directory = Path(tempfile.mkdtemp(prefix="winback-postgres-"))
    if owner:
        shutil.chown(directory, owner)
    data, log = directory / "data", directory / "server.log"
    port = free_port()
    try:
        subprocess.run(_as_owner(owner, [str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER,
                                         "-A", "trust", "-E", "UTF8", "--locale", "C.UTF-8", "--no-sync"]),
                       check=True, capture_output=True, text=True, timeout=timeout)
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={directory} "
                   "-c max_connections=50 -c shared_buffers=32MB")
        started = subprocess.run(_as_owner(owner, [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log),
                                                   "-o", options, "-w", "-t", str(int(timeout)), "start"]),
                                 capture_output=True, text=True, timeout=timeout + 10)
        if started.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {started.stderr.strip()}\n{tail}")
        server = Postgres(port, directory)
        _wait_for_connections(server, timeout)
        yield server
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(_as_owner(owner, [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast",
                                             "-w", "stop"]), capture_output=True, timeout=60)
        shutil.rmtree(directory, ignore_errors=True)


def _wait_for_connections(server: Postgres, timeout: float) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(f"host=127.0.0.1 port={server.port} user={SUPERUSER} dbname=postgres",
                            connect_timeout=5).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
