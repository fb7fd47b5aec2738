"""What marketers open: the files `winback score` and `winback rank` write (issue #9, exports)."""

from __future__ import annotations

import datetime as dt
import os
import stat

import openpyxl
import pandas as pd
import pytest
from training_support import quick_config
from typer.testing import CliRunner

from crm.exports import LIST_SHEET, write_table
from training.cli import app
from training.pipeline import train

OPENPYXL_DEFAULT_WIDTH = 13


def _list(lang: str = "en") -> pd.DataFrame:
    """Two rows shaped like `models.policy.winback.winback_list`'s output."""
    frame = pd.DataFrame({
        "priority": [1, 2], "customer_id": ["00001", "00420"], "value_at_risk": [1234.5, 12.25],
        "churn_probability": [0.9312, 0.125], "clv_12m": [1325.7, 98.0],
        "winback_date": [dt.date(1998, 7, 1), dt.date(1998, 8, 15)],
        "next_purchase_date": [dt.date(1998, 9, 1), None], "segment": ["at_risk", "hibernating"],
        "tier": ["gold", "regular"],
        "reasons": ["no purchase for 180 days, twice the usual gap; spend fell by half", ""],
    })
    if lang == "zh-TW":
        from models.policy.winback import LIST_COLUMNS

        frame = frame.rename(columns={k: v[1] for k, v in LIST_COLUMNS.items()})
    return frame


def _column(ws, header: str) -> str:
    return next(cell.column_letter for cell in ws[1] if cell.value == header)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


@pytest.mark.parametrize("name", ["list.csv", "list.xlsx", "scores.parquet"])
def test_outputs_are_created_with_the_umask_not_private_to_the_owner(tmp_path, umask_027, name):
    out = write_table(_list(), tmp_path / name)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640            # 0o666 & ~0o027, not mkstemp's 0600
    assert os.umask(0o027) == 0o027                             # reading the umask left it as it was
    assert [p.name for p in tmp_path.iterdir()] == [name]       # no temporary file left behind


def test_csv_starts_with_a_bom_and_keeps_ids_as_written(tmp_path):
    out = write_table(_list("zh-TW"), tmp_path / "list.csv")
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and "顧客編號".encode() in raw
    assert b"\n1,00001," in raw.replace(b"\r\n", b"\n")         # leading zeros in the file itself


@pytest.mark.parametrize("lang, currency, symbol", [("en", None, "$"), ("zh-TW", None, "NT$"),
                                                     ("en", "€", "€")])
def test_xlsx_is_formatted_for_people(tmp_path, lang, currency, symbol):
    frame = _list(lang)
    out = write_table(frame, tmp_path / "list.xlsx", sheet=LIST_SHEET[lang], currency=currency, lang=lang)
    ws = openpyxl.load_workbook(out).active
    assert ws.title == ("挽回名單" if lang == "zh-TW" else "winback")
    assert ws.freeze_panes == "A2"
    assert ws.auto_filter.ref == "A1:J3"
    names = dict(zip(frame.columns, _list().columns))
    header = {names[c.value]: c.value for c in ws[1]}

    ident = ws[f"{_column(ws, header['customer_id'])}2"]
    assert ident.data_type == "s" and ident.value == "00001"
    churn = ws[f"{_column(ws, header['churn_probability'])}2"]
    assert churn.value == pytest.approx(0.9312) and "%" in churn.number_format
    for money in ("value_at_risk", "clv_12m"):
        cell = ws[f"{_column(ws, header[money])}2"]
        assert cell.number_format == f'"{symbol}"#,##0.00'
    assert ws[f"{_column(ws, header['priority'])}2"].number_format == "General"
    reasons = ws.column_dimensions[_column(ws, header["reasons"])].width
    assert reasons > OPENPYXL_DEFAULT_WIDTH and reasons <= 60


def test_scores_xlsx_names_its_sheet_and_formats_every_probability(tmp_path):
    scores = pd.DataFrame({"customer_id": ["007"], "as_of": [pd.Timestamp("1998-06-30")],
                           "churn_probability": [0.5], "p_alive": [0.25], "p_purchase_30d": [0.1],
                           "expected_purchases_30d": [0.3], "expected_order_value": [30.0]})
    ws = openpyxl.load_workbook(write_table(scores, tmp_path / "scores.xlsx")).active
    assert ws.title == "scores" and ws["A2"].value == "007" and ws["A2"].data_type == "s"
    formats = {c.value: ws.cell(2, c.column).number_format for c in ws[1]}
    assert all("%" in formats[c] for c in ("churn_probability", "p_alive", "p_purchase_30d"))
    assert "%" not in formats["expected_purchases_30d"]
    assert formats["expected_order_value"] == '"$"#,##0.00'


def test_an_empty_list_is_written_with_its_headers(tmp_path):
    empty = _list("zh-TW").iloc[0:0]
    csv = write_table(empty, tmp_path / "list.csv")
    assert csv.read_bytes().startswith(b"\xef\xbb\xbf")
    assert list(pd.read_csv(csv, encoding="utf-8-sig").columns) == list(empty.columns)
    ws = openpyxl.load_workbook(write_table(empty, tmp_path / "list.xlsx", lang="zh-TW")).active
    assert ws.max_row == 1 and ws.auto_filter.ref == "A1:J1"


# ---------------------------------------------------------------- the commands, on a real model

@pytest.fixture(scope="module")
def champion(small_log, tmp_path_factory) -> str:
    store = f"sqlite:///{tmp_path_factory.mktemp('mlruns') / 'mlflow.db'}"
    train(small_log, quick_config(), store)
    return store


@pytest.fixture(scope="module")
def log_file(cdnow_raw, tmp_path_factory):
    path = tmp_path_factory.mktemp("log") / "tx.csv"
    cdnow_raw[cdnow_raw["customer_id"].astype(int) <= 4000].to_csv(path, index=False)
    return path


def _data(log_file) -> list[str]:
    return ["-t", str(log_file), "--timestamp-col", "date", "--amount-col", "dollar_value",
            "--as-of", "1998-06-30"]


def test_rank_with_no_match_writes_the_headers_and_says_so(champion, log_file, tmp_path):
    out = tmp_path / "winback.csv"
    done = CliRunner().invoke(app, ["rank", *_data(log_file), "--segment", "nobody", "--out", str(out),
                                    "--tracking-uri", champion])
    assert done.exit_code == 0, done.output
    assert "0 customers match --segment nobody" in done.output
    listed = pd.read_csv(out, encoding="utf-8-sig")
    assert listed.empty and "customer_id" in listed.columns


def test_rank_xlsx_in_zh_tw_keeps_ids_and_shows_money(champion, log_file, tmp_path):
    out = tmp_path / "winback.xlsx"
    done = CliRunner().invoke(app, ["rank", *_data(log_file), "--top", "5", "--lang", "zh-TW",
                                    "--out", str(out), "--tracking-uri", champion])
    assert done.exit_code == 0, done.output
    ws = openpyxl.load_workbook(out).active
    assert ws.title == "挽回名單" and ws.max_row == 6
    ids = [ws.cell(r, 2) for r in range(2, 7)]
    assert ws["B1"].value == "顧客編號"
    assert all(c.data_type == "s" and len(c.value) == 5 for c in ids)   # CDNOW ids: 00001 …
    assert ws["C2"].number_format == '"NT$"#,##0.00'


def test_score_and_rank_read_the_log_under_the_training_rules(champion, log_file, cdnow_raw, tmp_path):
    runner = CliRunner()
    flags = ["--quantity-col", "number_of_cds", "--duplicates", "keep", "--refunds", "error",
             "--zero-amounts", "exclude", "--encoding", "utf-8"]
    scores = tmp_path / "scores.csv"
    done = runner.invoke(app, ["score", *_data(log_file), *flags, "--reasons", "0", "--out", str(scores),
                               "--tracking-uri", champion])
    assert done.exit_code == 0, done.output
    assert scores.read_bytes().startswith(b"\xef\xbb\xbf")
    raw = cdnow_raw[cdnow_raw["customer_id"].astype(int) <= 4000].copy()
    spent = raw.loc[raw["dollar_value"] > 0, "customer_id"].nunique()
    assert spent < 4000 and len(pd.read_csv(scores, encoding="utf-8-sig")) == spent  # zeros excluded

    workbook = tmp_path / "scores.xlsx"
    done = runner.invoke(app, ["score", *_data(log_file), "--reasons", "3", "--currency", "NT$",
                               "--out", str(workbook), "--tracking-uri", champion])
    assert done.exit_code == 0, done.output
    ws = openpyxl.load_workbook(workbook).active
    assert ws.title == "scores" and ws.max_row == 4001 and ws["A2"].value == "00001"
    header = [c.value for c in ws[1]]
    assert ws.cell(2, header.index("clv_12m") + 1).number_format == '"NT$"#,##0.00'

    refunded = tmp_path / "refunded.csv"
    raw.loc[raw.index[0], "dollar_value"] = -5.0
    raw.to_csv(refunded, index=False)
    for command in ("score", "rank"):
        data = _data(refunded) + ["--refunds", "error", "--out", str(tmp_path / "x.csv")]
        done = runner.invoke(app, [command, *data, "--tracking-uri", champion])
        assert done.exit_code == 2 and "error:" in done.output, done.output
