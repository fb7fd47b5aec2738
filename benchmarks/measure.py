"""Measurement helpers shared by the benchmark scripts: peak memory, CPU time, load average,
size flags and ``--tiny``."""

from __future__ import annotations

import argparse
import os
import resource
import sys
from pathlib import Path


def peak_rss() -> int:
    """Peak resident set size of this process since it started, in bytes.

    On Linux this is ``VmHWM`` of the process's own address space: ``ru_maxrss`` is not used
    there because it keeps the high-water mark of the pre-exec copy of the parent, so every
    measured subprocess would report at least the driver's own RSS.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def outside_repo(path: str) -> Path:
    """``--data-dir`` resolved and created; refused when inside the repo, so generated logs and
    DuckDB spill files never land where they could be committed."""
    data_dir = Path(path).resolve()
    repo = Path(__file__).resolve().parent.parent
    if repo in [data_dir, *data_dir.parents]:
        raise SystemExit(f"--data-dir {data_dir} is inside the repo; use a directory outside it")
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir


def cpu_seconds() -> float:
    """User plus system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def parse_counts(values: list[str], flag: str) -> list[int]:
    """Positive counts from flag values like ``1000000 10_000_000`` or ``1e6,1e7``."""
    counts = [int(float(part.replace("_", "")))
              for value in values for part in value.replace(",", " ").split()]
    if not counts or min(counts) <= 0:
        raise SystemExit(f"{flag} needs positive counts")
    return counts


def load_average() -> str:
    """The machine's 1, 5 and 15-minute load averages, as ``"1.15 0.45 0.18"``."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # not every platform has one
        return "unavailable"


def print_load(when: str) -> None:
    """One line with the load average; every benchmark prints it at start and at end."""
    print(f"load average (1/5/15 min) {when}: {load_average()}", flush=True)


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None,
               tiny: dict[str, object]) -> argparse.Namespace:
    """Parse ``argv`` after adding ``--tiny``, which makes ``tiny`` the defaults.

    ``--tiny`` is the size the test suite runs (tests/benchmarks/): the same code paths in a few
    seconds, so no benchmark can rot. Flags given explicitly still win over it.
    """
    shown = " ".join(f"--{name.replace('_', '-')} "
                     + (" ".join(map(str, value)) if isinstance(value, list) else str(value))
                     for name, value in tiny.items())
    parser.add_argument("--tiny", action="store_true",
                        help=f"the seconds-long run the tests use: {shown}")
    known, _ = parser.parse_known_args(argv)
    if known.tiny:
        parser.set_defaults(**tiny)
    return parser.parse_args(argv)
