"""Writing outputs so that a failure never leaves half a file behind."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: Temporary outputs are named ``.<target>.winback-<pid>-<random>.tmp`` beside the target, so a
#: run killed before it could clean up (kill -9, power loss) is recognised and cleaned by the next.
TEMP_MARK = "winback-"


def temp_prefix(target: Path) -> str:
    """The name prefix of this process's temporary outputs for ``target`` (see :data:`TEMP_MARK`)."""
    return f".{target.name}.{TEMP_MARK}{os.getpid()}-"


def check_output_path(target: str | Path, suffixes: tuple[str, ...] = (".parquet", ".csv")) -> Path:
    """Refuse an output path that cannot be written, before any work is done."""
    target = Path(target)
    if target.suffix.lower() not in suffixes:
        raise ValueError(f"--out must end in {' or '.join(suffixes)}, got {target.name!r}")
    if target.is_dir():
        example = target / ("features" + suffixes[0])
        raise ValueError(f"--out {target} is a directory; name the file to write, e.g. {example}")
    parent = next((p for p in target.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise ValueError(f"--out {target}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"--out {target}: cannot write in {parent}")
    return target


def remove_stale_temp_files(target: str | Path) -> list[Path]:
    """Delete temporary outputs for ``target`` left by runs whose process is gone."""
    target = Path(target)
    removed = []
    pattern = re.compile(rf"\.{re.escape(target.name)}\.{TEMP_MARK}(\d+)-.*\.tmp")
    with contextlib.suppress(OSError):
        for entry in target.parent.iterdir():
            match = pattern.fullmatch(entry.name)
            if match and not pid_alive(int(match.group(1))):
                with contextlib.suppress(OSError):
                    entry.unlink()
                    removed.append(entry)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this id is running (on this machine)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``.

    The rename is atomic on one file system, so readers see the old file or the whole new one.
    On any exception the temporary file is removed and ``target`` is left as it was. Temporary
    files that killed runs left for the same target are removed first.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target), suffix=".tmp", dir=target.parent)
    except OSError as exc:          # name the folder, not the temporary file nobody asked for
        raise ValueError(f"cannot write {target.name} in {target.parent}: {exc.strerror}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)
