"""The whole scorer on real CDNOW data: outputs, behaviour, persistence, one feature path."""

from __future__ import annotations

import gc
import json
import weakref

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score

from features import build_features, labelled_features
from models.ml.churn import ChurnModel
from models.scorer import TRAINING_COLUMNS, SchemaMismatchError, WinbackScorer

HORIZON = 60          # as in conftest.fitted_scorer
AS_OF = "1998-01-31"


@pytest.fixture(scope="module")
def scores(fitted_scorer, cdnow_slice) -> pd.DataFrame:
    return fitted_scorer.score(cdnow_slice, AS_OF, reasons=50)


def test_every_output_is_there_and_sane(scores):
    assert len(scores) == 6000 and scores["customer_id"].is_unique
    for col in ("churn_probability", "p_alive", "p_purchase_7d", "p_purchase_30d", "p_purchase_90d"):
        assert scores[col].between(0, 1).all(), col
    assert (scores["p_purchase_7d"] <= scores["p_purchase_30d"] + 1e-12).all()
    assert (scores["p_purchase_30d"] <= scores["p_purchase_90d"] + 1e-12).all()
    assert (scores["expected_purchases_30d"] <= scores["expected_purchases_90d"]).all()
    assert (scores["clv_12m"] >= 0).all() and np.isfinite(scores["clv_12m"]).all()
    assert np.allclose(scores["value_at_risk"], scores["churn_probability"] * scores["clv_12m"])
    assert scores["priority"].min() == 1 and scores["priority"].max() <= 6000
    top = scores.sort_values("priority")
    assert top["value_at_risk"].is_monotonic_decreasing
    dated = scores.dropna(subset=["next_purchase_date"])
    assert (dated["next_purchase_low"] <= dated["next_purchase_date"]).all()
    assert (scores["winback_date"].dropna() >= pd.Timestamp(AS_OF)).all()
    assert (scores.loc[scores["winback_now"], "winback_date"] == pd.Timestamp(AS_OF)).all()


def test_reasons_come_in_both_languages_for_the_top_customers(scores):
    top = scores[scores["priority"] <= 50]
    assert top["reasons"].map(len).gt(0).all()
    assert (top["reasons"].map(len) == top["reasons_zh_tw"].map(len)).all()
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in r[0]) for r in top["reasons_zh_tw"])
    assert scores.loc[scores["priority"] > 50, "reasons"].map(len).eq(0).all()


# Month ends whose 60-day labels all lie after the last label the scorer saw (calibration as of
# 1997-09-30, labels to 1997-11-29).
OUT_OF_TIME = ("1997-11-30", "1997-12-31", "1998-01-31", "1998-02-28", "1998-03-31", "1998-04-30")


def test_churn_model_beats_the_recency_baseline_out_of_time(fitted_scorer, cdnow_slice):
    """Any model that ranks customers by days since the last purchase has exactly the recency
    AUC (margin 0); ours must rank better, month after month.

    Measured on the fixture (commit ef77fb3, MBG/NBD P(alive)): AUC 0.809 to 0.864; minus the
    recency AUC, per month above: +0.0137, +0.0170, +0.0101, +0.0064, +0.0068, +0.0058 (mean
    +0.0100; the BG/NBD scorer before it: mean +0.0083, least +0.0054), each with a
    paired-bootstrap standard error of about 0.004. The mean must exceed +0.005, half the
    measured gain; "no worse than recency - 0.01" let a model worse than recency pass.
    """
    margins = {}
    for as_of in OUT_OF_TIME:
        truth = labelled_features(cdnow_slice, as_of, HORIZON)
        scores = fitted_scorer.score(cdnow_slice, as_of, reasons=False)
        assert list(scores["customer_id"]) == list(truth["customer_id"])
        churned = ~truth["purchased"].to_numpy()
        ours = roc_auc_score(churned, scores["churn_probability"])
        recency = roc_auc_score(churned, truth["days_since_last_purchase"])
        assert ours > 0.78, (as_of, ours)
        margins[as_of] = ours - recency
    assert min(margins.values()) > 0, margins
    assert np.mean(list(margins.values())) > 0.005, margins


def test_churn_probability_is_calibrated_out_of_time(cdnow_slice, scores):
    churned = ~labelled_features(cdnow_slice, AS_OF, HORIZON)["purchased"].to_numpy()
    # measured: 0.864 predicted, 0.872 observed
    assert abs(scores["churn_probability"].mean() - churned.mean()) < 0.02


def test_scoring_transactions_equals_scoring_their_features(fitted_scorer, cdnow_slice, scores):
    table = build_features(cdnow_slice, AS_OF, reference=fitted_scorer.reference_)
    pd.testing.assert_frame_equal(fitted_scorer.score(table, AS_OF, reasons=50), scores)


def test_save_and_load_give_identical_scores(fitted_scorer, cdnow_slice, scores, tmp_path):
    fitted_scorer.save(tmp_path / "scorer")
    saved = json.loads((tmp_path / "scorer" / "scorer.json").read_text())
    assert "pickle" not in json.dumps(saved) and (tmp_path / "scorer" / "churn_model.txt").exists()
    loaded = WinbackScorer.load(tmp_path / "scorer")
    pd.testing.assert_frame_equal(loaded.score(cdnow_slice, AS_OF, reasons=50), scores)


def test_load_refuses_a_different_feature_schema(fitted_scorer, tmp_path):
    fitted_scorer.save(tmp_path / "scorer")
    path = tmp_path / "scorer" / "scorer.json"
    state = json.loads(path.read_text())
    state["feature_schema"] = state["feature_schema"][:-1]
    path.write_text(json.dumps(state))
    with pytest.raises(SchemaMismatchError, match="replenish_due_in_days"):
        WinbackScorer.load(tmp_path / "scorer")


def test_relabelling_customers_changes_no_score(fitted_scorer, cdnow_raw):
    raw = cdnow_raw[cdnow_raw["customer_id"].astype(int) <= 300].rename(
        columns={"date": "timestamp", "dollar_value": "amount"})[["customer_id", "timestamp", "amount"]]
    renamed = raw.assign(customer_id="shop-" + raw["customer_id"].str[::-1])
    original = dict(zip(renamed["customer_id"], raw["customer_id"]))
    a = fitted_scorer.score(raw, AS_OF, reasons=False).set_index("customer_id")
    b = fitted_scorer.score(renamed, AS_OF, reasons=False)
    b = b.set_index(b["customer_id"].map(original)).drop(columns="customer_id").loc[a.index]
    pd.testing.assert_frame_equal(a, b, check_names=False)     # floats to 1e-5: sums may reorder


def test_a_more_recent_last_purchase_never_raises_churn(fitted_scorer):
    history = [("2024-01-05", 30.0), ("2024-02-10", 45.0)]
    probabilities = []
    for last_day in pd.date_range("2024-02-20", "2024-06-29", freq="7D"):
        rows = history + [(last_day, 25.0)]
        log = pd.DataFrame({"customer_id": "c", "timestamp": pd.to_datetime([d for d, _ in rows]),
                            "amount": [a for _, a in rows]})
        probabilities.append(fitted_scorer.score(log, "2024-06-30", reasons=False)["churn_probability"].iloc[0])
    assert all(later <= earlier + 1e-12 for earlier, later in zip(probabilities, probabilities[1:])), probabilities
    assert probabilities[-1] < probabilities[0]


def test_a_one_purchase_customer_gets_finite_sensible_outputs(fitted_scorer):
    log = pd.DataFrame({"customer_id": ["solo"], "timestamp": pd.to_datetime(["1997-12-01"]), "amount": [20.0]})
    row = fitted_scorer.score(log, AS_OF).iloc[0]
    numeric = row[["churn_probability", "p_alive", "expected_purchases_30d", "p_purchase_30d",
                   "expected_order_value", "clv_12m", "value_at_risk"]].astype(float)
    assert np.isfinite(numeric).all()
    assert 0 < row["p_alive"] <= 1 and 0 < row["churn_probability"] < 1   # 1 under BG/NBD, < 1 under MBG/NBD
    assert 0 < row["expected_order_value"] < 200 and row["priority"] == 1
    later = fitted_scorer.score(log, "1998-06-30", reasons=False).iloc[0]     # the same purchase, older
    assert later["p_alive"] <= row["p_alive"] and later["churn_probability"] >= row["churn_probability"]


def test_unfitted_scorer_and_bad_inputs_say_so(fitted_scorer):
    with pytest.raises(NotFittedError):
        WinbackScorer().score(pd.DataFrame({"customer_id": []}), AS_OF)
    with pytest.raises(ValueError, match="as_of is required"):
        fitted_scorer.score(pd.DataFrame({"customer_id": ["a"], "timestamp": [pd.Timestamp("2020-01-01")],
                                          "amount": [1.0]}))
    with pytest.raises(SchemaMismatchError, match="lacks column"):
        fitted_scorer.score(pd.DataFrame({"customer_id": ["a"], "frequency": [1]}), AS_OF)


def test_the_training_columns_alone_streamed_by_origin_fit_the_same_scorer(fitted_scorer, cdnow_slice, scores):
    """Training fetches only TRAINING_COLUMNS, one origin at a time; a scorer fit so scores
    exactly as one fit on the whole labelled tables stacked (conftest.fitted_scorer), so
    nothing the fit reads is left out, and no origin's table outlives its turn."""
    reference = fitted_scorer.reference_
    calibration = labelled_features(cdnow_slice, "1997-09-30", HORIZON, reference, columns=TRAINING_COLUMNS)
    assert list(calibration.columns) == ["customer_id", "origin", *TRAINING_COLUMNS]
    tables: list[weakref.ref] = []
    alive_when_next_read = []

    def origin(day: str):
        def load() -> pd.DataFrame:
            gc.collect()
            alive_when_next_read.extend(ref() is not None for ref in tables)
            table = labelled_features(cdnow_slice, day, HORIZON, reference, columns=TRAINING_COLUMNS)
            tables.append(weakref.ref(table))
            return table
        return load

    scorer = WinbackScorer(horizon_days=HORIZON, churn=ChurnModel(n_estimators=80, learning_rate=0.08),
                           hazard_estimators=40).fit([origin("1997-05-31"), origin("1997-06-30")], calibration,
                                                     reference)
    assert len(tables) == 2 and alive_when_next_read == [False]     # the first origin was freed
    gc.collect()
    assert tables[1]() is None
    again = scorer.score(cdnow_slice, AS_OF, reasons=50)
    pd.testing.assert_frame_equal(again, scores)
