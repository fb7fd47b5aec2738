"""Measurement helpers shared by the benchmark scripts (peak memory, CPU time, size flags)."""

from __future__ import annotations

import resource
import sys


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
