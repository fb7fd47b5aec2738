"""Every benchmark in one run, and their comparison rows as one table.

Each ``bench_*.py`` script measures one job beside the alternative a user would pick and prints
its comparisons as lines with ratios (``2.10x``). This runs the scripts one after another, each
in its own process (so peak memory is its own), keeps their full output under ``--log-dir``, and
prints every ratio line in one table with the machine's load average before and after.

    python benchmarks/bench_all.py              # the small sizes (``make bench``), minutes
    python benchmarks/bench_all.py --large      # the issue's sizes: 10M/100M rows, 1M customers
    python benchmarks/bench_all.py --tiny --only models scorer    # seconds; what the tests run
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from measure import print_load  # noqa: E402

HERE = Path(__file__).parent
RATIO = re.compile(r"\d+(?:\.\d+)?x\b")

#: Flags per script: the small sizes of ``make bench`` and the large ones of the issue.
SIZES: dict[str, dict[str, list[str]]] = {
    "features": {"small": ["--rows", "1000000"], "large": ["--rows", "10000000 100000000"]},
    "daily": {"small": ["--rows", "1000000"], "large": ["--rows", "10000000"]},
    "models": {"small": ["--customers", "1000000"], "large": ["--customers", "10000000"]},
    "scorer": {"small": ["--customers", "300000"], "large": ["--customers", "1000000"]},
    "training": {"small": ["--customers", "100000"], "large": ["--customers", "1000000"]},
    "service": {"small": [], "large": []},
    "service_wrk": {"small": [], "large": []},
    "sync": {"small": ["--customers", "200000"], "large": ["--customers", "1000000"]},
    "dashboard": {"small": [], "large": []},
    "spark": {"small": [], "large": []},
}


def run(name: str, flags: list[str], log_dir: Path, timeout: float) -> tuple[int, float, list[str]]:
    """Run ``bench_<name>.py`` with ``flags``; (exit status, seconds, its ratio lines)."""
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(HERE / f"bench_{name}.py"), *flags],
                              capture_output=True, text=True, timeout=timeout)
        status, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        status, output = -1, f"{exc.stdout or ''}\ntimed out after {timeout:.0f} s"
    seconds = time.perf_counter() - started
    (log_dir / f"bench_{name}.log").write_text(output if isinstance(output, str) else output.decode())
    return status, seconds, ratio_lines(str(output))


def ratio_lines(output: str) -> list[str]:
    """The lines of a script's output that carry ratios, each once, with pipes turned into
    semicolons; a table row is preceded by its table's header ("columns: ...")."""
    lines, seen, header, shown = [], set(), None, None
    text = output.splitlines()
    for i, line in enumerate(text):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and i + 1 < len(text) and text[i + 1].lstrip().startswith("|--"):
            header = "columns: " + "; ".join(cells)
        if not RATIO.search(line) or line.lstrip().startswith(("usage", "load average")):
            continue
        row = "; ".join(cells)
        key = " ".join(line.replace("|", " ").split())       # a table printed twice, aligned or not
        if key in seen:
            continue
        if line.lstrip().startswith("|") and header and header != shown:
            lines.append(header)
            shown = header
        seen.add(key)
        lines.append(row)
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--large", action="store_true", help="the issue's sizes (an hour or more)")
    size.add_argument("--tiny", action="store_true", help="each script's --tiny (seconds; the tests)")
    ap.add_argument("--only", nargs="+", choices=list(SIZES), default=list(SIZES),
                    help="run only these benchmarks")
    ap.add_argument("--log-dir", type=Path, default=Path("out/bench"),
                    help="where each script's full output is kept")
    ap.add_argument("--timeout", type=float, default=7200, help="seconds per script")
    args = ap.parse_args(argv)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    print_load("at start")
    rows, failed = [], []
    for name in args.only:
        flags = ["--tiny"] if args.tiny else SIZES[name]["large" if args.large else "small"]
        print(f"bench_{name}.py {' '.join(flags)} ...", flush=True)
        status, seconds, lines = run(name, flags, args.log_dir, args.timeout)
        if status != 0:
            failed.append(name)
        rows += [(name, line) for line in lines] or [(name, "(no comparison printed)")]
        print(f"  exit {status} in {seconds:.0f} s; output in {args.log_dir / f'bench_{name}.log'}", flush=True)
    print("\n| benchmark | comparison (ratios are ours vs the alternative, in the same run) |")
    print("|---|---|")
    for name, line in rows:
        print(f"| {name} | {line} |")
    print()
    print_load("at end")
    if failed:
        print(f"FAILED: {', '.join(failed)} (see their logs)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
