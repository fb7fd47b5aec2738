"""Customer attributes as features (issue 19, item 3): values, typing, the reference's schema,
no leakage through ``valid_from``, and bad customers files as clear errors."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal
from typer.testing import CliRunner

from features import (
    CustomerAttributes,
    FeatureReference,
    SideData,
    TransactionDataError,
    attributes_as_of,
    build_features,
    labelled_features,
    prepare,
    read_customers,
)
from features.job import feature_table_metadata, read_feature_table, write_features
from features.labels import labelled_features_arrow
from features.transactions import TransactionLog
from training.cli import app

runner = CliRunner()

TX = pd.DataFrame({
    "customer_id": ["A", "A", "B", "C", "D", "D"],
    "timestamp": pd.to_datetime(["2024-01-05", "2024-02-10", "2024-01-20", "2024-03-01", "2024-02-01", "2024-04-20"]),
    "amount": [10.0, 20.0, 5.0, 7.5, 12.0, 8.0],
})
CUTOFF = "2024-03-31"


def attrs(frame: dict, **kw) -> CustomerAttributes:
    return CustomerAttributes.from_frame(pd.DataFrame(frame), **kw)


PLAIN = {"customer_id": ["A", "B", "C", "Z"], "channel": ["web", "app", "web", "store"],
         "birth_year": [1980, 1991, None, 1970], "Signup Source": ["ad", None, "friend", "ad"]}


def test_attributes_become_typed_columns_after_the_transaction_features():
    base = build_features(TX, CUTOFF)
    table = build_features(TX, CUTOFF, customers=attrs(PLAIN))
    assert list(table.columns) == list(base.columns) + ["attr_channel", "attr_birth_year", "attr_signup_source"]
    assert_frame_equal(table[base.columns], base)
    rows = table.set_index("customer_id")
    assert rows.loc["A", "attr_channel"] == "web" and rows.loc["B", "attr_birth_year"] == 1991
    assert pd.isna(rows.loc["C", "attr_birth_year"]) and pd.isna(rows.loc["B", "attr_signup_source"])
    assert str(table["attr_channel"].dtype) == "category"
    assert list(table["attr_channel"].cat.categories) == ["app", "store", "web"]
    assert table["attr_birth_year"].dtype == "float64"
    assert "Z" not in rows.index                        # attributes never add customers


def test_a_customer_without_an_attribute_row_has_missing_values():
    table = build_features(TX, CUTOFF, customers=attrs(PLAIN)).set_index("customer_id")
    assert table.loc["D", ["attr_channel", "attr_birth_year", "attr_signup_source"]].isna().all()


def test_without_side_data_the_table_and_the_reference_are_as_before():
    _, _, plain = prepare(TX, CUTOFF)
    assert "attributes" not in plain.to_dict() and plain.side_columns == []
    _, _, with_attrs = prepare(TX, CUTOFF, side=SideData(customers=attrs(PLAIN)))
    assert with_attrs.fingerprint() != plain.fingerprint()
    assert FeatureReference.from_dict(with_attrs.to_dict()) == with_attrs
    assert [(a.name, a.feature, a.kind) for a in with_attrs.attributes] == [
        ("channel", "attr_channel", "categorical"), ("birth_year", "attr_birth_year", "numeric"),
        ("Signup Source", "attr_signup_source", "categorical")]
    assert with_attrs.attributes[0].categories == ("app", "store", "web")


def test_an_unseen_category_at_scoring_is_missing_not_an_error():
    _, _, reference = prepare(TX, CUTOFF, side=SideData(customers=attrs(PLAIN)))
    later = attrs({"customer_id": ["A", "B"], "channel": ["tiktok", "app"], "birth_year": [1980, 1991],
                   "Signup Source": ["ad", "ad"]})
    table = build_features(TX, CUTOFF, reference=reference, customers=later).set_index("customer_id")
    assert pd.isna(table.loc["A", "attr_channel"]) and table.loc["B", "attr_channel"] == "app"
    assert list(table["attr_channel"].cat.categories) == ["app", "store", "web"]


def test_a_model_with_attributes_scored_without_them_gets_the_same_columns_missing():
    _, _, reference = prepare(TX, CUTOFF, side=SideData(customers=attrs(PLAIN)))
    table = build_features(TX, CUTOFF, reference=reference)
    assert table[reference.attribute_columns].isna().all().all()
    assert list(table.columns[-3:]) == reference.attribute_columns


def test_attributes_for_a_model_trained_without_them_are_not_read():
    _, _, reference = prepare(TX, CUTOFF)
    assert_frame_equal(build_features(TX, CUTOFF, reference=reference, customers=attrs(PLAIN)),
                       build_features(TX, CUTOFF, reference=reference))


def test_valid_from_uses_the_latest_row_known_on_the_cutoff():
    dated = attrs({"customer_id": ["A", "A", "A", "B"], "tier_name": ["bronze", "silver", "gold", "silver"],
                   "valid_from": [None, "2024-02-01", "2024-04-01", "2024-03-31 23:00"]})
    seen = attributes_as_of(dated, CUTOFF).set_index("customer_id")["tier_name"]
    assert seen.to_dict() == {"A": "silver", "B": "silver"}
    assert attributes_as_of(dated, "2024-01-31").set_index("customer_id")["tier_name"].to_dict() == {"A": "bronze"}
    table = build_features(TX, CUTOFF, customers=dated).set_index("customer_id")
    assert table.loc["A", "attr_tier_name"] == "silver"
    assert "gold" not in table["attr_tier_name"].cat.categories       # known only later


attribute_row = st.tuples(st.sampled_from(list("ABCDE")), st.sampled_from(["web", "app", "store"]),
                          st.integers(1950, 2005), st.one_of(st.none(), st.integers(0, 200)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(attribute_row, min_size=1, max_size=25, unique_by=lambda r: (r[0], r[3])))
def test_a_value_known_only_after_the_cutoff_is_never_used(rows):
    """Features with every attribute row equal features with only the rows known by the cutoff."""
    frame = pd.DataFrame({"customer_id": [r[0] for r in rows], "channel": [r[1] for r in rows],
                          "birth_year": [r[2] for r in rows],
                          "valid_from": [None if r[3] is None else pd.Timestamp("2024-01-01") + pd.Timedelta(days=r[3])
                                         for r in rows]})
    frame["valid_from"] = pd.to_datetime(frame["valid_from"])
    known = frame[frame["valid_from"].isna() | (frame["valid_from"] < pd.Timestamp(CUTOFF) + pd.Timedelta(days=1))]
    full = build_features(TX, CUTOFF, customers=attrs(frame))
    if known.empty:
        assert full.filter(like="attr_").isna().all().all()
        return
    assert_frame_equal(full, build_features(TX, CUTOFF, customers=attrs(known)))


def test_labelled_features_carry_the_attributes_as_categoricals():
    log_end = pd.concat([TX, pd.DataFrame({"customer_id": ["A"], "timestamp": pd.to_datetime(["2024-07-31"]),
                                           "amount": [1.0]})])
    side = SideData(customers=attrs(PLAIN))
    _, _, reference = prepare(log_end, CUTOFF, side=side)
    table = labelled_features(log_end, CUTOFF, 90, reference=reference, side=side)
    assert str(table["attr_channel"].dtype) == "category" and "purchased" in table
    arrow = labelled_features_arrow(log_end, CUTOFF, 90, reference,
                                    ["attr_channel", "attr_birth_year", "purchased"], side=side)
    assert arrow.schema.field("attr_channel").type == pa.dictionary(pa.int32(), pa.string())
    frame = arrow.to_pandas()
    assert list(frame["attr_channel"].cat.categories) == ["app", "store", "web"]
    assert frame.set_index("customer_id").loc["A", "attr_channel"] == "web"


def test_the_feature_job_records_the_attributes_and_reads_them_back_typed(tmp_path):
    path = tmp_path / "customers.parquet"
    pd.DataFrame(PLAIN).to_parquet(path)
    side = SideData(customers=read_customers(path))
    log = TransactionLog.from_frame(TX)
    summary = write_features(log, CUTOFF, tmp_path / "f.parquet", side=side)
    recorded = json.loads(feature_table_metadata(summary.out)["winback.reference"])
    assert [a["feature"] for a in recorded["attributes"]] == ["attr_channel", "attr_birth_year", "attr_signup_source"]
    table, _, _ = read_feature_table(summary.out)
    assert str(table["attr_channel"].dtype) == "category"
    assert_frame_equal(table, build_features(TX, CUTOFF, customers=side.customers), check_dtype=False)


# ------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("name", ["churned", "churn_flag", "purchased", "label", "target", "Is Churn", "y",
                                  "days_to_next_purchase", "horizon_spend"])
def test_a_column_named_like_a_label_is_refused(name):
    with pytest.raises(TransactionDataError, match=f"'{name}' is named like a label"):
        attrs({"customer_id": ["A", "B"], name: [1, 0]})


def test_a_column_that_looks_like_an_id_is_refused():
    ids = [f"c{i:03d}" for i in range(30)]
    with pytest.raises(TransactionDataError, match="'email' looks like an id"):
        attrs({"customer_id": ids, "email": [f"{i}@x.tw" for i in ids], "gender": ["F", "M"] * 15})
    attrs({"customer_id": ids[:5], "city": ["a", "b", "c", "d", "e"]})          # too few to tell: kept


def test_duplicate_customers_without_valid_from_are_refused_with_the_row():
    with pytest.raises(TransactionDataError, match=r"row 3, column 'customer_id'.*one row per customer.*'A' again"):
        attrs({"customer_id": ["A", "B", "A"], "gender": ["F", "M", "F"]})
    with pytest.raises(TransactionDataError, match=r"row 2, .*one row per customer and 'valid_from'"):
        attrs({"customer_id": ["A", "A"], "gender": ["F", "M"], "valid_from": ["2024-01-01", "2024-01-01"]})


def test_numbers_with_a_typo_are_an_error_not_a_text_column():
    years = [str(1950 + i) for i in range(19)] + ["19x0"]
    with pytest.raises(TransactionDataError, match=r"row 20, column 'birth_year': expected a number.*'19x0'"):
        attrs({"customer_id": [f"c{i}" for i in range(20)], "birth_year": years})


# ------------------------------------------------------------------- bad files via the CLI

GOOD_TX = "customer_id,timestamp,amount\nA,2024-01-01,10\nB,2024-01-02,5\n"
BAD_CUSTOMERS = {
    "id-like column": ("customer_id,email\n" + "".join(f"c{i},{i}@x.tw\n" for i in range(25)),
                       ("customers.csv", "'email'", "looks like an id")),
    "label column": ("customer_id,churned\nA,1\nB,0\n", ("customers.csv", "'churned'", "label")),
    "duplicate customer": ("customer_id,gender\nA,F\nB,M\nA,M\n",
                           ("customers.csv", "row 3 (line 4)", "'customer_id'", "one row per customer")),
    "missing id column": ("member,gender\nA,F\n", ("customers.csv", "'customer_id'", "missing", "--customers-id-col")),
    "empty id": ("customer_id,gender\nA,F\n,M\n", ("customers.csv", "row 2 (line 3)", "'customer_id'", "empty")),
    "NUL in a value": ("customer_id,gender\nA,F\nB,M\x00\n", ("customers.csv", "row 2 (line 3)", "'gender'", "NUL")),
    "bad valid_from": ("customer_id,gender,valid_from\nA,F,2024-01-01\nB,M,soon\n",
                       ("customers.csv", "row 2 (line 3)", "'valid_from'", "'soon'")),
    "valid_from 2999": ("customer_id,gender,valid_from\nA,F,2999-01-01\n", ("customers.csv", "row 1", "'valid_from'")),
    "ragged line": ("customer_id,gender\nA,F\nB,M,x\n", ("customers.csv", "line 3", "ragged")),
    "header only": ("customer_id,gender\n", ("no customers in", "customers.csv")),
    "empty file": ("", ("no customers in", "customers.csv")),
    "only the id": ("customer_id\nA\n", ("customers.csv", "no attribute columns")),
    "latin-1 as utf-8": (None, ("customers.csv", "line 2", "--encoding")),
}


@pytest.mark.parametrize("case", list(BAD_CUSTOMERS), ids=list(BAD_CUSTOMERS))
def test_a_bad_customers_file_is_one_clear_message_exit_2_and_nothing_written(case, tmp_path):
    body, says = BAD_CUSTOMERS[case]
    (tmp_path / "log.csv").write_text(GOOD_TX)
    customers = tmp_path / "customers.csv"
    customers.write_bytes(("customer_id,name\nJos\u00e9,x\n").encode("latin-1") if body is None else body.encode())
    out = tmp_path / "out"
    out.mkdir()
    result = runner.invoke(app, ["features", "-t", str(tmp_path / "log.csv"), "--customers", str(customers),
                                 "--out", str(out / "features.parquet")])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert text.startswith("error: ") and "Traceback" not in text
    for fragment in says:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    assert list(out.iterdir()) == []


def test_the_customers_id_column_can_be_named(tmp_path):
    (tmp_path / "log.csv").write_text(GOOD_TX)
    (tmp_path / "c.csv").write_text("member_no,gender\nA,F\nB,M\n")
    out = tmp_path / "f.parquet"
    result = runner.invoke(app, ["features", "-t", str(tmp_path / "log.csv"), "--customers", str(tmp_path / "c.csv"),
                                 "--customers-id-col", "member_no", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert pd.read_parquet(out).set_index("customer_id")["attr_gender"].to_dict() == {"A": "F", "B": "M"}


def test_spark_refuses_side_data_clearly(tmp_path):
    (tmp_path / "log.csv").write_text(GOOD_TX)
    (tmp_path / "c.csv").write_text("customer_id,gender\nA,F\n")
    result = runner.invoke(app, ["features", "-t", str(tmp_path / "log.csv"), "--customers", str(tmp_path / "c.csv"),
                                 "--engine", "spark", "--out", str(tmp_path / "f.parquet")])
    assert result.exit_code == 2 and "--engine spark does not read --customers" in result.output


def test_the_cli_says_when_a_model_reads_attributes_it_is_not_given(capsys):
    from training.cli import _check_side

    _, _, reference = prepare(TX, CUTOFF, side=SideData(customers=attrs(PLAIN)))
    _check_side(reference, None)
    assert "without --customers they are missing" in " ".join(capsys.readouterr().err.split())
    _check_side(reference, SideData(customers=attrs(PLAIN)))
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="--engine spark does not build"):
        _check_side(reference, None, "spark")
    _check_side(prepare(TX, CUTOFF)[2], None, "spark")                  # a model without them: nothing to say
    assert capsys.readouterr().err == ""
    _check_side(prepare(TX, CUTOFF)[2], SideData(customers=attrs(PLAIN)))
    assert "does not read customer attributes; --customers is ignored" in " ".join(capsys.readouterr().err.split())


def test_a_door_scoring_with_a_models_reference_does_not_screen_the_columns():
    """The reference decides what is read; a later file's new city is missing, not an error."""
    ids = [f"c{i:03d}" for i in range(30)]
    scoring = attrs({"customer_id": ids, "city": [f"city {i}" for i in range(30)], "churned": [0] * 30}, screen=False)
    assert [a.name for a in scoring.columns] == ["city", "churned"]


def test_attributes_sent_per_customer_give_the_file_s_features(tmp_path):
    """One truth: the same attributes through a CSV file, a Parquet file and a request."""
    path = tmp_path / "customers.csv"
    pd.DataFrame(PLAIN).to_csv(path, index=False)
    from_csv = read_customers(path)
    _, _, reference = prepare(TX, CUTOFF, side=SideData(customers=from_csv))
    pd.DataFrame(PLAIN).to_parquet(tmp_path / "customers.parquet")
    sent = {cid: {k: (None if pd.isna(v) else v) for k, v in zip(list(PLAIN)[1:], values)}
            for cid, *values in zip(*PLAIN.values())}
    expected = build_features(TX, CUTOFF, reference=reference, customers=from_csv)
    for other in (read_customers(tmp_path / "customers.parquet"), CustomerAttributes.from_records(sent)):
        assert_frame_equal(build_features(TX, CUTOFF, reference=reference, customers=other), expected)
