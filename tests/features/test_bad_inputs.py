"""A corpus of bad inputs to `winback features` (issue #9).

Every case runs the real command in-process and expects the same behaviour: exit status 2, one
message naming the file and, where there is one, the row or line and the column; no traceback;
no new file in the output directory and the table already there byte for byte the same.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.job import feature_table_metadata
from features.output import remove_stale_temp_files
from features.transactions import TEMP_PREFIX
from training.cli import app

runner = CliRunner()
HEADER = "customer_id,timestamp,amount\n"
GOOD = "A,2024-01-01,10\nB,2024-01-02,5\n"
OLD_TABLE = b"the table a previous run wrote"


@dataclass(frozen=True)
class Bad:
    """One bad input: files to write (name -> bytes, or a callable making them), extra flags,
    and the fragments the message must contain ({dir} is the input folder)."""

    files: dict[str, bytes | Callable[[Path], None]]
    flags: tuple[str, ...] = ()
    says: tuple[str, ...] = ()
    inputs: tuple[str, ...] | None = None      # -t arguments; default every file written


def csv(body: str, header: str = HEADER) -> dict[str, bytes]:
    return {"log.csv": (header + body).encode()}


def parquet(frame: dict) -> dict[str, Callable[[Path], None]]:
    return {"log.parquet": lambda path: pd.DataFrame(frame).to_parquet(path)}


def _symlink(path: Path) -> None:
    os.symlink(path.parent / "log.csv", path)


ROW2 = ("log.csv", "row 2 (line 3)")
CASES: dict[str, Bad] = {
    # empty
    "header only": Bad(csv(""), says=("no transactions in", "log.csv")),
    "empty file": Bad({"log.csv": b""}, says=("no transactions in", "log.csv")),
    "blank lines only": Bad({"log.csv": b"\n\n\n"}, says=("no transactions in", "log.csv")),
    "parquet with no rows": Bad(parquet({"customer_id": pd.Series([], dtype=str),
                                         "timestamp": pd.Series([], dtype="datetime64[ns]"),
                                         "amount": pd.Series([], dtype=float)}),
                                says=("no transactions in", "log.parquet")),
    "only refunds": Bad(csv("A,2024-01-01,-10\n"), says=("no purchases on or before", "log.csv")),
    # amounts
    "amount 1e15": Bad(csv(GOOD + "C,2024-01-03,1e15\n"), says=("log.csv", "row 3 (line 4)", "'amount'", "at most")),
    "amount 1e300": Bad(csv("A,2024-01-01,1e300\n"), says=("log.csv", "row 1 (line 2)", "'amount'", "at most")),
    "amount -1e13": Bad(csv("A,2024-01-01,-1e13\n"), says=("log.csv", "row 1", "'amount'", "at most")),
    "amount below 1/10000": Bad(csv(GOOD + "C,2024-01-03,0.00001\n"),
                                says=("log.csv", "row 3", "'amount'", "1/10,000")),
    "amount NaN": Bad(csv("A,2024-01-01,NaN\n"), says=("log.csv", "row 1 (line 2)", "'amount'", "'NaN'")),
    "amount inf": Bad(csv("A,2024-01-01,inf\n"), says=("log.csv", "row 1", "'amount'")),
    "amount -Infinity": Bad(csv(GOOD + "C,2024-01-03,-Infinity\n"), says=("log.csv", "row 3", "'amount'")),
    "amount with thousands separator": Bad(csv('A,2024-01-01,"1,234.50"\n'),
                                           says=("log.csv", "row 1", "'amount'", "1,234.50")),
    "amount with currency sign": Bad(csv("A,2024-01-01,$12\n"), says=("log.csv", "row 1", "'amount'", "$12")),
    "amount with decimal comma": Bad(csv('A,2024-01-01,"12,50"\n'), says=("log.csv", "row 1", "'amount'")),
    "amount empty": Bad(csv(GOOD + "C,2024-01-03,\n"), says=("log.csv", "row 3", "'amount'", "empty")),
    "amount words": Bad(csv("A,2024-01-01,ten\n"), says=("log.csv", "row 1", "'amount'", "'ten'")),
    "parquet amount NaN": Bad(parquet({"customer_id": ["A", "B"], "timestamp": pd.to_datetime(["2024-01-01"] * 2),
                                       "amount": [1.0, float("nan")]}), says=("log.parquet", "row 2", "'amount'")),
    "parquet amount inf": Bad(parquet({"customer_id": ["A"], "timestamp": pd.to_datetime(["2024-01-01"]),
                                       "amount": [float("inf")]}), says=("log.parquet", "row 1", "'amount'")),
    "refund with --refunds error": Bad(csv(GOOD + "C,2024-01-03,-4\n"), flags=("--refunds", "error"),
                                       says=("log.csv", "row 3", "'amount'", "refunds")),
    "quantity words": Bad(csv("A,2024-01-01,10,two\n", "customer_id,timestamp,amount,qty\n"),
                          flags=("--quantity-col", "qty"), says=("log.csv", "row 1", "'qty'")),
    # dates
    "date 2999": Bad(csv(GOOD + "C,2999-01-01,5\n"), says=("log.csv", "row 3 (line 4)", "'timestamp'", "2999-01-01")),
    "date 1900": Bad(csv("A,1900-01-01,5\n" + GOOD), says=("log.csv", "row 1", "'timestamp'", "1970-01-01")),
    "date 1969-12-31 23:59": Bad(csv("A,1969-12-31 23:59:00,5\n"), says=("log.csv", "row 1", "'timestamp'")),
    "date month first": Bad(csv("A,03/04/2024,5\n"), says=("log.csv", "row 1", "'timestamp'", "--date-format")),
    "date 30 February": Bad(csv(GOOD + "C,2024-02-30,5\n"), says=("log.csv", "row 3", "'timestamp'")),
    "date month 13": Bad(csv("A,2024-13-01,5\n"), says=("log.csv", "row 1", "'timestamp'")),
    "date empty": Bad(csv("A,,5\n"), says=("log.csv", "row 1", "'timestamp'", "empty")),
    "date words": Bad(csv("A,yesterday,5\n"), says=("log.csv", "row 1", "'timestamp'")),
    "date not in --date-format": Bad(csv("A,2024-01-01,5\n"), flags=("--date-format", "%Y%m%d"),
                                     says=("log.csv", "row 1", "'timestamp'")),
    "parquet naive 2150": Bad(parquet({"customer_id": ["A", "B"],
                                       "timestamp": pd.to_datetime(["2024-01-01", "2150-01-01"]),
                                       "amount": [1.0, 2.0]}), says=("log.parquet", "row 2", "'timestamp'")),
    "parquet zone-aware 1900": Bad(parquet({"customer_id": ["A"], "timestamp": pd.to_datetime(["1900-01-01"], utc=True),
                                            "amount": [1.0]}), says=("log.parquet", "row 1", "'timestamp'")),
    "parquet timestamp as text": Bad(parquet({"customer_id": ["A"], "timestamp": ["soon"], "amount": [1.0]}),
                                     says=("log.parquet", "row 1", "'timestamp'")),
    "unknown time zone": Bad(csv(GOOD), flags=("--timezone", "Mars/Olympus_Mons"),
                             says=("time zone", "Mars/Olympus_Mons")),
    # ids
    "customer id empty": Bad(csv(GOOD + ",2024-01-03,5\n"), says=("log.csv", "row 3", "'customer_id'", "empty")),
    "customer id blank": Bad(csv("   ,2024-01-03,5\n"), says=("log.csv", "row 1", "'customer_id'")),
    "customer id with NUL": Bad({"log.csv": (HEADER + GOOD).encode() + b"C\x00D,2024-01-03,5\n"},
                                says=("log.csv", "row 3 (line 4)", "'customer_id'", "NUL")),
    "order id with NUL": Bad({"log.csv": b"customer_id,timestamp,amount,order\nA,2024-01-01,5,o\x001\n"},
                             flags=("--order-id-col", "order"), says=("log.csv", "row 1", "'order'", "NUL")),
    "category with NUL": Bad({"log.csv": b"customer_id,timestamp,amount,cat\nA,2024-01-01,5,t\x00ea\n"},
                             flags=("--category-col", "cat"), says=("log.csv", "row 1", "'cat'", "NUL")),
    "parquet customer id null": Bad(parquet({"customer_id": ["A", None],
                                             "timestamp": pd.to_datetime(["2024-01-01"] * 2),
                                             "amount": [1.0, 2.0]}), says=("log.parquet", "row 2", "'customer_id'")),
    "parquet customer id with NUL": Bad(parquet({"customer_id": ["A\x00B"],
                                                 "timestamp": pd.to_datetime(["2024-01-01"]),
                                                 "amount": [1.0]}),
                                        says=("log.parquet", "row 1", "'customer_id'", "NUL")),
    # quoting, delimiters, shape
    "unbalanced quote mid file": Bad(csv('A,2024-01-01,10\n"B,2024-01-02,5\nC,2024-01-03,7\n'),
                                     says=("log.csv", "line 3", "quote")),
    "unbalanced quote on the last line": Bad(csv(GOOD + 'C,2024-01-03,"7\n'), says=("log.csv", "line 4", "quote")),
    "ragged short line": Bad(csv("A,2024-01-01,10\nB,2024-01-02\nC,2024-01-03,5\n"),
                             says=("log.csv", "line 3", "ragged", "2 fields", "header has 3")),
    "ragged long line": Bad(csv(GOOD + "C,2024-01-03,5,7\n"), says=("log.csv", "line 4", "ragged")),
    "ragged semicolon file": Bad({"log.csv": b"customer_id;timestamp;amount\nA;2024-01-01;10\nB;2024-01-02;5;1\n"},
                                 says=("log.csv", "line 3", "ragged")),
    "ragged tab file": Bad({"log.tsv": b"customer_id\ttimestamp\tamount\nA\t2024-01-01\n"},
                           says=("log.tsv", "line 2", "ragged")),
    "ragged line in the second of two files": Bad({"a.csv": (HEADER + GOOD).encode(),
                                                   "b.csv": (HEADER + GOOD + "C,2024-01-03\n").encode()},
                                                  says=("b.csv", "line 4", "ragged")),
    "bad amount in the second of two files": Bad({"a.csv": (HEADER + GOOD).encode(),
                                                  "b.csv": (HEADER + GOOD + "C,2024-01-03,x\n").encode()},
                                                 says=("b.csv", "row 3 (line 4)", "'amount'")),
    "bad date in a transcoded second file": Bad({"a.csv": (HEADER + GOOD).encode("big5"),
                                                 "b.csv": (HEADER + "\u738b,2999-01-01,5\n").encode("big5")},
                                                flags=("--encoding", "big5"),
                                                says=("b.csv", "row 1 (line 2)", "'timestamp'")),
    "missing column": Bad(csv("A,2024-01-01\n", "customer_id,timestamp\n"), says=("log.csv", "'amount'", "missing")),
    "repeated header column": Bad(csv("A,2024-01-01,1,2\n", "customer_id,timestamp,amount,amount\n"),
                                  says=("log.csv", "line 1", "'amount'", "more than once")),
    "wrong delimiter for the mapping": Bad({"log.csv": b"customer_id|timestamp|amount\nA|2024-01-01|10,5\n"},
                                           says=("log.csv", "row 1", "'amount'")),
    # encodings
    "latin-1 read as utf-8": Bad({"log.csv": (HEADER + "Jos\u00e9,2024-01-01,10\n").encode("latin-1")},
                                 says=("log.csv", "line 2", "--encoding")),
    "big5 read as utf-8": Bad({"log.csv": (HEADER + "A,2024-01-01,10\n"
                                           "\u738b\u5c0f\u660e,2024-01-02,5\n").encode("big5")},
                              says=("log.csv", "line 3", "--encoding")),
    "big5 header read as utf-8": Bad({"log.csv": ("\u9867\u5ba2,timestamp,amount\nA,2024-01-01,10\n").encode("big5")},
                                     says=("log.csv", "line 1", "--encoding")),
    "utf-16 read as utf-8": Bad({"log.csv": (HEADER + GOOD).encode("utf-16")},
                                says=("log.csv", "line 1", "--encoding")),
    "bad byte in a big5 file": Bad({"log.csv": (HEADER + "A,2024-01-01,10\n").encode("big5")
                                               + b"\xff\xfe,2024-01-02,5\n"},
                                   flags=("--encoding", "big5"), says=("log.csv", "line 3", "--encoding")),
    "unknown encoding": Bad(csv(GOOD), flags=("--encoding", "klingon"), says=("klingon", "encoding")),
    # paths
    "same file twice": Bad(csv(GOOD), inputs=("log.csv", "log.csv"), says=("log.csv", "twice")),
    "same file through a symlink": Bad({**csv(GOOD), "link.csv": _symlink}, inputs=("log.csv", "link.csv"),
                                       says=("log.csv", "link.csv", "same file")),
    "a glob overlapping a path": Bad(csv(GOOD), inputs=("log.csv", "*.csv"), says=("log.csv", "twice")),
    "no such file": Bad({}, inputs=("nowhere.csv",), says=("nowhere.csv", "no such file")),
    "glob matching nothing": Bad({}, inputs=("*.csv",), says=("*.csv", "no file matches")),
    "unknown extension": Bad({"log.json": b"{}"}, says=("log.json", "extension")),
    "mixed csv and parquet": Bad({**csv(GOOD), **parquet({"customer_id": ["A"],
                                                          "timestamp": pd.to_datetime(["2024-01-01"]),
                                                          "amount": [1.0]})}, says=("mixing",)),
    "text named .parquet": Bad({"log.parquet": HEADER.encode() + GOOD.encode()}, says=("log.parquet", "Parquet")),
    # cutoffs and outputs
    "cutoff month first": Bad(csv(GOOD), flags=("--cutoff", "03/04/2024"), says=("YYYY-MM-DD", "03/04/2024")),
    "cutoff day first": Bad(csv(GOOD), flags=("--cutoff", "31/03/2024"), says=("YYYY-MM-DD", "31/03/2024")),
    "cutoff empty": Bad(csv(GOOD), flags=("--cutoff", ""), says=("YYYY-MM-DD", "''")),
    "cutoff 30 February": Bad(csv(GOOD), flags=("--cutoff", "2024-02-30"), says=("cutoff", "2024-02-30")),
    "cutoff with a time": Bad(csv(GOOD), flags=("--cutoff", "2024-03-01 12:00"), says=("YYYY-MM-DD",)),
    "cutoff before all data": Bad(csv(GOOD), flags=("--cutoff", "2023-12-31"),
                                  says=("no purchases on or before", "2023-12-31", "log.csv", "2024-01-01")),
    "--out is a directory": Bad(csv(GOOD), flags=("--out", "{out}/a_directory.parquet"),
                                says=("a_directory.parquet", "directory")),
    "--out with an unknown suffix": Bad(csv(GOOD), flags=("--out", "{out}/features.xlsx"),
                                        says=("features.xlsx", ".parquet")),
}


@pytest.fixture
def workspace(tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir(), out.mkdir()
    (out / "features.parquet").write_bytes(OLD_TABLE)
    (out / "a_directory.parquet").mkdir()
    return inputs, out


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {p.name: (p.read_bytes() if p.is_file() else None) for p in folder.iterdir()}


def _transcoded_copies() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith(f"{TEMP_PREFIX}{os.getpid()}-")}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_a_bad_input_is_one_clear_message_and_leaves_the_output_alone(case, workspace):
    inputs, out = workspace
    for name, content in case.files.items():
        if callable(content):
            content(inputs / name)
        else:
            (inputs / name).write_bytes(content)
    names = case.inputs if case.inputs is not None else tuple(case.files)
    args = ["features"] + [a for n in names for a in ("-t", str(inputs / n))]
    flags = [f.replace("{out}", str(out)) for f in case.flags]
    if "--out" not in flags:
        flags += ["--out", str(out / "features.parquet")]
    before, copies = _snapshot(out), _transcoded_copies()

    result = runner.invoke(app, args + flags)

    message = result.output
    assert result.exit_code == 2, message
    assert "Traceback" not in message and result.exception is None or isinstance(result.exception, SystemExit)
    assert message.startswith("error: "), message
    text = " ".join(message.split())                       # one paragraph, however wrapped
    for fragment in case.says:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    assert len(message.strip().splitlines()) == 1, message
    assert _snapshot(out) == before                          # nothing new, the old table intact
    assert _transcoded_copies() == copies


def test_the_corpus_is_large():
    assert len(CASES) >= 40


# What the same inputs look like when they are right.

def _run(inputs: list[Path], out: Path, *flags: str):
    return runner.invoke(app, ["features", *[a for p in inputs for a in ("-t", str(p))],
                               "--out", str(out), *flags])


def test_zone_aware_parquet_timestamps_are_read_in_the_shop_zone(tmp_path):
    log = tmp_path / "log.parquet"
    pd.DataFrame({"customer_id": ["A", "A"],
                  "timestamp": pd.to_datetime(["2024-01-01T10:00:00Z", "2024-01-02T17:30:00Z"], utc=True),
                  "amount": [1.0, 2.0]}).to_parquet(log)
    out = tmp_path / "f.parquet"
    result = _run([log], out, "--timezone", "Asia/Taipei")
    assert result.exit_code == 0, result.output
    row = pd.read_parquet(out).iloc[0]
    # 17:30 UTC on 2 January is 01:30 on 3 January in Taipei: the last purchase day and the cutoff
    assert str(row["last_purchase_date"])[:10] == "2024-01-03"
    assert feature_table_metadata(out)["winback.cutoff"] == "2024-01-03"


@pytest.mark.parametrize("encoding", ["big5", "cp950", "latin-1", "cp1252", "utf-16"])
def test_a_named_encoding_reads_the_file(tmp_path, encoding):
    name = "Jos\u00e9" if encoding in ("latin-1", "cp1252") else "\u738b\u5c0f\u660e"
    if encoding == "utf-16":
        name = "\u738b\u5c0f\u660e"
    log = tmp_path / "log.csv"
    log.write_bytes((HEADER + f"{name},2024-01-01,10\n{name},2024-02-01,5\n").encode(encoding))
    out = tmp_path / "f.csv"
    copies = _transcoded_copies()
    result = _run([log], out, "--encoding", encoding)
    assert result.exit_code == 0, result.output
    assert pd.read_csv(out, encoding="utf-8-sig", dtype={"customer_id": str})["customer_id"].tolist() == [name]
    import gc

    gc.collect()
    assert _transcoded_copies() == copies                  # the UTF-8 copy is gone with the log


def test_amounts_at_the_limits_are_kept(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text(HEADER + "A,2024-01-01,1e12\nA,2024-01-02,1e12\nB,2024-01-01,0.0001\nC,2024-01-01,0\n")
    out = tmp_path / "f.csv"
    result = _run([log], out)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out, encoding="utf-8-sig", dtype={"customer_id": str}).set_index("customer_id")
    assert table.loc["A", "total_spend"] == 2e12 and table.loc["B", "total_spend"] == 1e-4
    assert table.loc["C", "total_spend"] == 0


def test_a_temp_file_from_a_killed_run_is_cleaned_by_the_next(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text(HEADER + GOOD)
    out = tmp_path / "out" / "f.parquet"
    out.parent.mkdir()
    dead = _dead_pid()
    stale = out.parent / f".f.parquet.winback-{dead}-abc123.tmp"
    stale.write_bytes(b"half a table")
    other = out.parent / ".g.parquet.winback-1-abc.tmp"              # another target: not ours
    other.write_bytes(b"x")
    transcoded = Path(tempfile.gettempdir()) / f"{TEMP_PREFIX}{dead}-zzz.csv"
    transcoded.write_bytes(b"copy")
    try:
        result = _run([log], out)
        assert result.exit_code == 0, result.output
        assert not stale.exists() and not transcoded.exists() and other.exists()
        assert sorted(p.name for p in out.parent.iterdir()) == [".g.parquet.winback-1-abc.tmp", "f.parquet"]
    finally:
        transcoded.unlink(missing_ok=True)


def test_a_running_jobs_temp_file_is_left_alone(tmp_path):
    target = tmp_path / "f.parquet"
    mine = tmp_path / f".f.parquet.winback-{os.getpid()}-abc.tmp"
    mine.write_bytes(b"being written")
    assert remove_stale_temp_files(target) == [] and mine.exists()


def _dead_pid() -> int:
    pid = 999_999
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_the_cutoff_default_is_the_last_day_and_iso_cutoffs_work(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text(HEADER + GOOD)
    for flags, day in (((), "2024-01-02"), (("--cutoff", "2024-03-01"), "2024-03-01")):
        result = _run([log], tmp_path / "f.parquet", *flags)
        assert result.exit_code == 0, result.output
        assert feature_table_metadata(tmp_path / "f.parquet")["winback.cutoff"] == day
