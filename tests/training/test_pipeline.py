"""`winback train` end to end into a temporary MLflow store, on real CDNOW data."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from training_support import CUTOFF, HORIZON, quick_config
from typer.testing import CliRunner

from features import TransactionLog, labelled_features
from features.cdnow import CDNOW_COLUMNS as _CDNOW
from models.scorer import LEARNED_ONLY_COLUMNS, TRAINING_COLUMNS
from training import pipeline
from training.cli import app
from training.pipeline import fingerprint, plan_origins, train
from training.registry import (
    BACKTEST_ARTIFACT,
    CHALLENGER,
    CHAMPION,
    MODEL_NAME,
    Gate,
    gate,
    incomparable_reason,
    version_for,
)

REQUIRED_METRICS = ("churn_auc", "churn_pr_auc", "churn_brier", "churn_ece", "next_purchase_cindex",
                    "next_purchase_mae_days", "next_purchase_coverage80",
                    "baseline_recency_gap_churn_auc", "baseline_bgnbd_expected_purchases_churn_auc",
                    "baseline_pareto_nbd_expected_purchases_churn_auc", "baseline_bgnbd_p_alive_churn_auc",
                    "baseline_pareto_nbd_p_alive_churn_auc", "baseline_mean_gap_due_date_churn_auc")


def test_origins_never_let_a_label_window_reach_the_evaluation_window():
    cutoff = pd.Timestamp("1997-12-31")
    train_origins, calibration = plan_origins(cutoff, 120, 3, 30, pd.Timestamp("1997-01-01"))
    assert calibration + pd.Timedelta(days=120) == cutoff
    assert all(o + pd.Timedelta(days=120) < calibration + pd.Timedelta(days=120) for o in train_origins)
    assert train_origins == sorted(train_origins)
    with pytest.raises(ValueError, match="not enough history"):      # the papers' 39-week split
        plan_origins(pd.Timestamp("1997-09-30"), 273, 3, 30, pd.Timestamp("1997-01-01"))
    with pytest.raises(ValueError, match="at least 30"):              # refused before any fitting
        plan_origins(cutoff, 20, 3, 30, pd.Timestamp("1997-01-01"))


def test_the_fingerprint_ignores_row_order_but_counts_duplicates(cdnow_raw):
    rows = cdnow_raw.head(500)
    base = fingerprint(TransactionLog.from_frame(rows, _CDNOW))
    shuffled = fingerprint(TransactionLog.from_frame(rows.sample(frac=1, random_state=1), _CDNOW))
    pair = pd.concat([rows, rows.iloc[[7, 7]]])                         # one line twice more: XOR cancels it
    doubled = fingerprint(TransactionLog.from_frame(pair, _CDNOW))
    assert shuffled["hash"] == base["hash"]
    assert doubled["hash"] != base["hash"] and doubled["rows"] == base["rows"] + 2


def test_first_run_becomes_champion_and_records_everything(small_log, store):
    result = train(small_log, quick_config(), store)
    client = MlflowClient(store)
    assert result.alias == CHAMPION and version_for(client, CHAMPION).version == result.version
    run = client.get_run(result.run_id)
    assert set(REQUIRED_METRICS) <= set(run.data.metrics)
    m = run.data.metrics
    # values, not just names (CDNOW at 180 days gives 0.805 / 0.80 / 0.775 / 0.76 / 0.72)
    assert 0.75 < m["churn_auc"] < 0.95
    assert m["baseline_pareto_nbd_expected_purchases_churn_auc"] > 0.75
    assert m["baseline_bgnbd_p_alive_churn_auc"] < 0.5          # BG/NBD's blind spot shows up as such
    assert 0.7 < m["next_purchase_cindex"] < 0.9
    assert 0.5 < m["next_purchase_coverage80_buyers"] <= 1.0
    covered = sorted((m["next_purchase_coverage80_buyers"], m["next_purchase_coverage80_nonbuyers"]))
    assert covered[0] < m["next_purchase_coverage80"] < covered[1]       # non-buyers count too
    assert 0.5 < m["value_gini"] <= 1.0
    assert m["churn_auc_diff_low"] <= m["churn_auc_diff"] <= m["churn_auc_diff_high"]
    # never worse than a formula (#19): the served choice is never below the best baseline by more
    # than its interval's width, for churn and for the next purchase
    for diff in ("churn_auc_diff", "next_purchase_cindex_diff"):
        assert m[diff] >= -(m[f"{diff}_high"] - m[f"{diff}_low"]), diff
    assert m["mbgcnbd_k"] == 1 and "mbgcnbd_forecast_error" in m      # CDNOW buys irregularly
    assert run.data.params["cutoff"] == CUTOFF and "version.lightgbm" in run.data.tags
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"data_profile.json", "comparison.json", "plots"} <= artifacts
    plots = {a.path.split("/")[-1] for a in client.list_artifacts(result.run_id, "plots")}
    assert {"calibration.png", "gains.png", "feature_importance.png", "p_alive_matrix.png",
            "cumulative_purchases.png"} <= plots
    # the logged model is parameters and LightGBM text, no pickled data beyond the wrapper class
    mlflow.set_tracking_uri(store)
    local = mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}/{result.version}")
    from pathlib import Path
    sizes = {p.name: p.stat().st_size for p in Path(local).rglob("*") if p.is_file()}
    assert "scorer.json" in sizes and "churn_model.txt" in sizes
    assert sum(sizes.values()) < 5_000_000
    # the baselines are in the comparison table, and the verdict says by how much, with an interval
    assert "best baseline" in result.verdict and len(result.table) >= 7
    assert "95% CI" in result.verdict and any(w in result.verdict for w in ("beats", "ties", "loses"))
    # the served version is the recipe refit on the freshest data; the backtest is logged beside it
    tags = client.get_model_version(MODEL_NAME, result.version).tags
    assert result.trained_until == tags["trained_until"] == "1998-06-30"      # the log's last day
    assert tags["backtest_trained_until"] == CUTOFF and tags["horizon_days"] == str(HORIZON)
    assert tags["evaluated_on"] == result.evaluated_on == "(1997-12-31, 1998-04-30]"
    from models.pyfunc import scorer_from_pyfunc
    backtest = scorer_from_pyfunc(mlflow.pyfunc.load_model(f"runs:/{result.run_id}/{BACKTEST_ARTIFACT}"))
    assert backtest.trained_until_ == CUTOFF
    # the refit keeps the tree count the backtest's cross-validation chose, without validating again
    served = scorer_from_pyfunc(mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{result.version}"))
    assert backtest.churn_tuning_ and served.churn_tuning_ == {}
    assert served.churn_model_.n_estimators == backtest.churn_tuning_["chosen"] == int(
        run.data.params["served_churn_trees"])
    # ... and the backtest's choice of served candidates, with its record (#19)
    assert served.churn_score_ == backtest.churn_score_ == run.data.params["served_churn"]
    assert served.next_purchase_method_ == backtest.next_purchase_method_
    assert served.selection_ == backtest.selection_ == result.selection and set(result.selection) == {
        "churn", "next_purchase"}
    assert run.data.tags["winback.served_churn"] == result.selection["churn"]["reason"]
    assert {f"cv_churn_{name}" for name in result.selection["churn"]["figures"]} <= set(m)
    # one path from a registry URI to a scorer: the alias is resolved once, that version loaded
    from training.registry import load_scorer, load_version, resolve_version
    resolved = resolve_version(client, f"models:/{MODEL_NAME}@{CHAMPION}")
    assert str(resolved.version) == str(result.version) == load_scorer(None, store)[1]
    assert load_version(resolved).selection_ == served.selection_
    # the gate compares like with like only
    champion = version_for(client, CHAMPION)
    assert incomparable_reason(client, champion, HORIZON, CUTOFF) is None
    assert "different horizon" in incomparable_reason(client, champion, HORIZON + 30, CUTOFF)
    assert "overlapping windows" in incomparable_reason(client, champion, HORIZON, "1997-11-30")
    assert gate(client, champion, {"churn_auc": 1.0}, {"churn_auc": 0.5}, blocked="different horizon") == CHALLENGER
    assert gate(client, champion, {"churn_auc": 0.0}, None, blocked="unusable: old format") == CHAMPION


def test_a_worse_challenger_does_not_move_the_champion(small_log, store):
    first = train(small_log, quick_config(), store)
    worse = train(small_log, quick_config(churn_estimators=1, next_purchase="classical",
                                          gate=Gate(("churn_auc",), min_improvement=0.0)), store)
    client = MlflowClient(store)
    assert worse.alias == CHALLENGER
    assert worse.champion_evaluation is not None
    assert worse.evaluation.metrics["churn_auc"] <= worse.champion_evaluation.metrics["churn_auc"]
    assert version_for(client, CHAMPION).version == first.version
    assert version_for(client, CHALLENGER).version == worse.version


def test_same_data_and_config_give_the_same_metrics(small_log, store):
    a = train(small_log, quick_config(), store)
    b = train(small_log, quick_config(), store)
    keys = [k for k in a.evaluation.metrics if not k.startswith("champion")]
    assert {k: a.evaluation.metrics[k] for k in keys} == pytest.approx({k: b.evaluation.metrics[k] for k in keys})


def test_an_interrupted_run_moves_no_alias_and_registers_nothing(small_log, store, monkeypatch):
    first = train(small_log, quick_config(), store)

    def crash(*args, **kwargs):
        raise RuntimeError("disk full while logging plots")
    monkeypatch.setattr(pipeline, "_log_plots", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        train(small_log, quick_config(), store)
    client = MlflowClient(store)
    versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
    assert [v.version for v in versions] == [first.version]
    assert version_for(client, CHAMPION).version == first.version
    failed = client.search_runs([client.get_experiment_by_name("winback").experiment_id],
                                "attributes.status = 'FAILED'")
    assert len(failed) == 1


def test_cli_train_models_promote_score_and_rank(small_log, store, tmp_path, cdnow_raw):
    log_file = tmp_path / "tx.csv"
    cdnow_raw[cdnow_raw["customer_id"].astype(int) <= 4000].to_csv(log_file, index=False)
    data = ["-t", str(log_file), "--timestamp-col", "date", "--amount-col", "dollar_value"]
    runner = CliRunner()
    for _ in range(2):
        done = runner.invoke(app, ["train", *data, "--cutoff", CUTOFF, "--horizon-days", str(HORIZON),
                                   "--origins", "2", "--origin-step-days", "30", "--tracking-uri", store])
        assert done.exit_code == 0, done.output
        assert "best baseline" in done.output and "baseline: recency_gap" in done.output
    listed = runner.invoke(app, ["models", "--tracking-uri", store])
    assert listed.exit_code == 0 and "champion" in listed.output
    client = MlflowClient(store)
    target = "1" if str(version_for(client, CHAMPION).version) != "1" else "2"
    promoted = runner.invoke(app, ["promote", target, "--tracking-uri", store])
    assert promoted.exit_code == 0
    assert f"version {target} of winback is now champion (replacing version" in promoted.output
    assert str(version_for(client, CHAMPION).version) == target
    missing = runner.invoke(app, ["promote", "99", "--tracking-uri", store])
    assert missing.exit_code == 2 and "cannot promote version 99" in missing.output

    scores = tmp_path / "scores.parquet"
    done = runner.invoke(app, ["score", *data, "--as-of", "1998-06-30", "--out", str(scores),
                               "--tracking-uri", store])
    assert done.exit_code == 0, done.output
    table = pd.read_parquet(scores)
    assert len(table) == 4000 and (table["model_version"].astype(str) == target).all()

    ranked = tmp_path / "winback.csv"
    done = runner.invoke(app, ["rank", *data, "--as-of", "1998-06-30", "--top", "25", "--lang", "zh-TW",
                               "--out", str(ranked), "--tracking-uri", store])
    assert done.exit_code == 0, done.output
    raw = ranked.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")                      # BOM: Excel reads it as UTF-8
    listed = pd.read_csv(ranked, encoding="utf-8-sig", dtype={"顧客編號": str})
    assert len(listed) == 25 and listed["風險價值"].is_monotonic_decreasing
    top = table.sort_values("value_at_risk", ascending=False).head(25)
    assert set(listed["顧客編號"]) == set(top["customer_id"])
    assert listed["原因"].str.len().gt(0).all()

    bad = runner.invoke(app, ["rank", *data, "--as-of", "1998-06-30", "--lang", "fr", "--out", str(ranked),
                              "--tracking-uri", store])
    assert bad.exit_code == 2 and "--lang must be one of en, zh-TW" in bad.output


def test_a_log_whose_amounts_are_all_equal_trains_and_says_so(cdnow_raw, store):
    raw = (cdnow_raw[cdnow_raw["customer_id"].astype(int) <= 4000]   # one 10-dollar visit a day at most
           .drop_duplicates(["customer_id", "date"]).assign(dollar_value=10.0))
    result = train(TransactionLog.from_frame(raw, _CDNOW), quick_config(), store)
    assert result.spend_note and "mean order value 10" in result.spend_note
    assert result.evaluation.metrics["churn_auc"] > 0.7
    run = MlflowClient(store).get_run(result.run_id)
    assert run.data.params["spend_model"].startswith("every repeat buyer spends the same")


def test_a_log_without_amounts_trains_and_scores_from_the_cli(cdnow_raw, store, tmp_path):
    visits = tmp_path / "visits.csv"
    (cdnow_raw[cdnow_raw["customer_id"].astype(int) <= 4000][["customer_id", "date"]]
     .to_csv(visits, index=False))                                       # no amount column at all
    data = ["-t", str(visits), "--timestamp-col", "date", "--amount-col", "none"]
    runner = CliRunner()
    done = runner.invoke(app, ["train", *data, "--cutoff", CUTOFF, "--horizon-days", str(HORIZON),
                               "--origins", "2", "--origin-step-days", "30", "--tracking-uri", store])
    assert done.exit_code == 0, done.output
    assert "served model trained until 1998-06-30" in done.output   # value: lines per purchase day
    out = tmp_path / "scores.parquet"
    done = runner.invoke(app, ["score", *data, "--as-of", "1998-06-30", "--out", str(out), "--reasons", "0",
                               "--tracking-uri", store])
    assert done.exit_code == 0, done.output
    scores = pd.read_parquet(out)
    assert len(scores) == 4000 and scores["churn_probability"].between(0, 1).all()


def test_training_rows_are_the_labelled_features_of_each_origin_stacked(small_log):
    _, _, reference = pipeline.prepare(small_log, "1997-09-30")
    origins = [pd.Timestamp("1997-05-31"), pd.Timestamp("1997-06-30")]
    got = pipeline.training_frame(small_log, origins, HORIZON, reference, lambda *_: None)
    want = pd.concat([labelled_features(small_log, o, HORIZON, reference, columns=TRAINING_COLUMNS)
                      for o in origins], ignore_index=True)
    assert list(got.columns) == ["customer_id", "origin", *TRAINING_COLUMNS]
    # numbers, not Python objects (DuckDB's HUGEINT sums arrive in Arrow as decimals)
    assert all(pd.api.types.is_numeric_dtype(t) or pd.api.types.is_bool_dtype(t)
               for t in got[list(TRAINING_COLUMNS)].dtypes)
    assert (got["origin"].to_numpy() == want["origin"].to_numpy()).all()
    # the learned models' own float columns narrowed to float32; the classical models' inputs not
    narrowed = {c for c in LEARNED_ONLY_COLUMNS if want[c].dtype == "float64"}
    assert narrowed and {c for c in TRAINING_COLUMNS if got[c].dtype == "float32"} == narrowed
    assert all(got[c].dtype == "float64" for c in ("frequency", "recency", "T", "monetary_value"))
    pd.testing.assert_frame_equal(got.drop(columns="origin").astype(float, errors="ignore"),
                                  want.drop(columns="origin").astype(float, errors="ignore"),
                                  check_dtype=False)


def test_threads_reach_duckdb_and_lightgbm_and_every_fit_reports_its_rate(cdnow_raw):
    log = TransactionLog.from_frame(cdnow_raw[cdnow_raw["customer_id"].astype(int) <= 3000], _CDNOW)
    config = quick_config(threads=1, memory_limit="1GB", next_purchase="hazard")
    pipeline.use_engine_settings(log, config.threads, config.memory_limit)
    assert log.con.execute("SELECT current_setting('threads')").fetchone()[0] == 1
    assert log.con.execute("SELECT current_setting('memory_limit')").fetchone()[0] in ("1000.0 MB", "953.6 MiB")
    reports, lines = [], []
    cutoff = pd.Timestamp(CUTOFF)
    origins, calibration = plan_origins(cutoff, HORIZON, 2, 30, pd.Timestamp("1997-01-01"))
    scorer = pipeline.fit_recipe(log, config, origins, calibration,
                                 lambda *a: (reports.append(a), pipeline.progress_lines(lines.append)(*a)))
    assert scorer.churn_model_.num_threads == 1 and scorer.hazard_model_.num_threads == 1
    ended = {task: (rows, seconds) for task, rows, seconds in reports if rows is not None}
    started = [task for task, rows, _ in reports if rows is None]
    assert set(started) == set(ended)                                  # every step that starts ends
    assert {"churn model", "next-purchase models", f"features, origin {origins[0].date()}",
            f"classical models, origin {origins[0].date()}"} <= set(ended)
    assert all(rows > 0 and seconds >= 0 for rows, seconds in ended.values())
    assert any("rows/s" in line for line in lines)
    with pytest.raises(ValueError, match="threads"):
        pipeline.use_engine_settings(log, -1)
    with pytest.raises(ValueError, match="memory_limit"):
        pipeline.use_engine_settings(log, 0, "lots")
