"""Every script in benchmarks/ runs at its ``--tiny`` size, so none can rot.

Each one runs as a user would run it (``python benchmarks/X.py --tiny``, from the project
folder) in its own process; the test checks the exit status and that the table came out with
its rows, the ratio beside the alternative, and the load average before and after. The figures
themselves are not checked: at this size they measure start-up, not speed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOAD = re.compile(r"load average \(1/5/15 min\) at (start|end): \d+\.\d\d \d+\.\d\d \d+\.\d\d")
RATIO = re.compile(r"\d+\.\d+x")


def run_benchmark(script: str, *flags: str, timeout: float = 180) -> str:
    """Run ``benchmarks/<script> --tiny <flags>``; its stdout, after checking it succeeded."""
    done = subprocess.run([sys.executable, f"benchmarks/{script}", "--tiny", *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{script} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    loads = [m.group(1) for m in LOAD.finditer(done.stdout)]
    assert loads[0] == "start" and loads[-1] == "end", f"{script} did not print the load average:\n{done.stdout}"
    return done.stdout


def line_with(output: str, label: str) -> str:
    lines = [line for line in output.splitlines() if label in line]
    assert lines, f"no line with {label!r} in:\n{output}"
    return lines[0]


def test_bench_features(tmp_path):
    out = run_benchmark("bench_features.py", "--data-dir", str(tmp_path))
    row = line_with(out, "| 2,1")  # ~2,000 rows: the table's only row
    assert len(RATIO.findall(row)) == 2  # lifetimes / ours, without and with lifetimes' read
    assert "-> OK" in line_with(out, "parity at")


def test_bench_daily(tmp_path):
    out = run_benchmark("bench_daily.py", "--data-dir", str(tmp_path))
    row = line_with(out, "| 2,1")  # ~2,000 rows of history: the table's only row
    assert RATIO.search(row)  # the full rebuild's time over the incremental run's
    assert "tables equal: OK" in out and "mode incremental" in out


def test_bench_models():
    out = run_benchmark("bench_models.py")
    for label in ("BG/NBD", "MBG/NBD", "Pareto/NBD", "Gamma-Gamma"):
        assert RATIO.search(line_with(out, f"{label} ")), label
    assert "customers/s" in out


def test_bench_scorer():
    out = run_benchmark("bench_scorer.py")
    for label in ("winback scorer, every output", "same + reasons for the top 1,000",
                  "lifetimes: P(alive) + 3 horizons + CLV only"):
        assert RATIO.search(line_with(out, label)), label


def test_bench_training(tmp_path):
    out = run_benchmark("bench_training.py", "--data-dir", str(tmp_path))
    row = line_with(out, "|     2,000 |")
    assert re.search(r"\| +0\.\d{4} \| +0\.\d{4} \(", row), row  # churn AUC, best baseline AUC
    assert "-> champion" in out
    assert [p.name for p in tmp_path.iterdir()] == ["tx_c2000_s42.parquet"]  # the store is removed


def test_bench_service():
    """Starts the real scoring service and a plain BentoML one on 127.0.0.1, a few requests each."""
    out = run_benchmark("bench_service.py", timeout=300)
    for label in ("single call, 1 client", "1 customer/request, 32 clients",
                  "1,000 customers/request, 4 clients"):
        assert RATIO.search(line_with(out, label)), label
    assert "same, with reasons" in out
    assert "errors" not in line_with(out, "1 customer/request, 32 clients")


def test_bench_service_wrk():
    """Wrk (installed from Debian when missing) loads the bare echo and the real service for two
    seconds each; every row and the issue's two ratios are printed, with no error."""
    out = run_benchmark("bench_service_wrk.py", timeout=400)
    for label in ("| 1 | bare echo |", "| 1 | winback |"):
        row = line_with(out, label)
        assert row.rstrip().endswith("| 0 |"), row                       # no wrk errors or non-2xx
    assert RATIO.search(line_with(out, "winback / bare echo requests/s (target >= 0.5x)"))
    assert RATIO.search(line_with(out, "winback p99 / bare echo p99 (target <= 3x)"))


def test_bench_sync():
    """The service on a small synthetic snapshot: /score pages, GET /scores (NDJSON, Parquet,
    since) with their ratios, the service's memory, and the one-truth sample."""
    out = run_benchmark("bench_sync.py", timeout=400)
    for label in ("GET /scores, NDJSON |", "GET /scores, Parquet |", "first GET /scores"):
        assert RATIO.search(line_with(out, label)), label
    assert line_with(out, "/score, 1,000 ids/request").rstrip().endswith("1.00x")
    assert "GiB after start" in out and "one truth: a sample of stream lines equal /score's answers: OK" in out


def test_bench_soak():
    """The soak: valid and invalid requests mixed against the real service; none may get a 5xx or
    an unexpected status (the script exits non-zero if one did)."""
    out = run_benchmark("bench_soak.py", timeout=300)
    for label in ("score 1 id", "score_history", "bad: unknown field", "bad: text/plain", "bad: wrong key"):
        assert line_with(out, label).split()[-1] == "0", label
    assert "errors (5xx or an unexpected status): 0" in out
    assert re.search(r"service RSS after warm-up \d+ MiB, at end \d+ MiB", out)


def test_bench_dashboard():
    out = run_benchmark("bench_dashboard.py")
    for label in ("| default order |", "| filtered |", "| sorted by churn, ascending |"):
        assert RATIO.search(line_with(out, label)), label


def test_bench_spark(tmp_path):
    out = run_benchmark("bench_spark.py", "--data-dir", str(tmp_path), timeout=400)
    table = out.split("| Spark / DuckDB |", 1)[1]
    assert RATIO.search(table.splitlines()[2]), table      # the measured row, after the rule
    assert "-> OK" in line_with(out, "parity")


def test_bench_all_gathers_every_comparison_in_one_table(tmp_path):
    out = run_benchmark("bench_all.py", "--only", "models", "scorer", "--log-dir", str(tmp_path))
    table = out.split("| benchmark |", 1)[1]
    assert RATIO.search(line_with(table, "| models | BG/NBD"))
    assert RATIO.search(line_with(table, "| scorer | winback scorer, every output"))
    assert (tmp_path / "bench_models.log").read_text().strip()
    assert out.count("load average") == 2
