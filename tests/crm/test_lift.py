"""The trigger lift report on real CDNOW, where nobody was contacted: an A/A test (issue #10).

Pseudo-rules fire on customers known at the day; a seeded hash puts 10 % in the holdout. With
no treatment, the 95 % intervals of the differences must cover 0; once synthetic purchases give
the send group a +20 % relative uplift, the rate interval must exclude 0 and find the uplift.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from crm.lift import lift_report, newcombe_interval
from features import TransactionLog, build_labels
from features.cdnow import CDNOW_COLUMNS

DAYS = ("1997-10-01", "1997-11-01", "1997-12-01")
WINDOWS = (30, 60, 90)
Z95 = stats.norm.ppf(0.975)


def uniform(salt: str, keys: pd.Series) -> np.ndarray:
    """A seeded hash of each key, as a number in [0, 1): the same key and salt, the same number."""
    hashed = pd.util.hash_array((salt + ":" + keys.astype(str)).to_numpy(object))
    return (hashed >> np.uint64(11)).astype(np.float64) / 2.0 ** 53


def known_at(log: TransactionLog, day: str) -> pd.Series:
    """Customers with a purchase on or before ``day``."""
    return log.con.execute(f"""SELECT DISTINCT customer_id FROM transactions
        WHERE ts < DATE '{day}' + INTERVAL 1 DAY ORDER BY customer_id""").df()["customer_id"]


def aa_events(log: TransactionLog, rules: list[str], holdout: float = 0.10) -> pd.DataFrame:
    """Each rule fires once per customer, on one of :data:`DAYS` chosen by a hash: so a rule's
    events are independent, as the intervals assume; ``holdout`` of them held out by another hash."""
    frames = []
    for rule in rules:
        for i, day in enumerate(DAYS):
            ids = known_at(log, day)
            ids = ids[np.floor(uniform(f"{rule}:day", ids) * len(DAYS)) == i]
            group = np.where(uniform(f"{rule}:holdout", ids) < holdout, "holdout", "send")
            frames.append(pd.DataFrame({"customer_id": ids.to_numpy(), "rule": rule, "as_of": day,
                                        "group": group}))
    return pd.concat(frames, ignore_index=True)


def covers_zero(report: pd.DataFrame, measure: str) -> pd.Series:
    return (report[f"{measure}_diff_low"] <= 0) & (report[f"{measure}_diff_high"] >= 0)


@pytest.fixture(scope="module")
def aa_report(cdnow) -> pd.DataFrame:
    return lift_report(aa_events(cdnow, ["winback", "tier_drop", "replenish"]), cdnow, WINDOWS)


def test_newcombe_interval_reproduces_newcombe_1998_table_ii():
    # Newcombe (1998), Table II, method 10 (hybrid score, no continuity correction).
    for (x1, n1, x0, n0), (low, high) in {(56, 70, 48, 80): (0.0524, 0.3339),
                                          (9, 10, 3, 10): (0.1705, 0.8090)}.items():
        diff, lo, hi = newcombe_interval(x1, n1, x0, n0, Z95)
        assert diff == pytest.approx(x1 / n1 - x0 / n0)
        assert (lo, hi) == pytest.approx((low, high), abs=5e-5)


def test_outcomes_match_the_labels_and_the_welch_interval_matches_scipy(cdnow):
    """One outcome definition: (d, d+W] as in build_labels; revenue interval as scipy's Welch t-test."""
    events = aa_events(cdnow, ["check"])
    report = lift_report(events, cdnow, (30, 90), by_day=True)
    for day in DAYS:
        for window in (30, 90):
            labels = build_labels(cdnow, day, window).set_index("customer_id")
            day_events = events[events["as_of"] == day]
            row = report[(report["as_of"] == day) & (report["window_days"] == window)].iloc[0]
            spend = {g: labels.loc[day_events.loc[day_events["group"] == g, "customer_id"], "horizon_spend"]
                     for g in ("send", "holdout")}
            bought = {g: labels.loc[day_events.loc[day_events["group"] == g, "customer_id"], "purchased"]
                      for g in ("send", "holdout")}
            assert row["n_send"] == len(spend["send"]) == row["messages_sent"]
            assert row["n_holdout"] == len(spend["holdout"])
            assert row["purchase_rate_send"] == pytest.approx(bought["send"].mean())
            assert row["purchase_rate_holdout"] == pytest.approx(bought["holdout"].mean())
            assert row["revenue_per_customer_send"] == pytest.approx(spend["send"].mean())
            assert row["revenue_per_customer_holdout"] == pytest.approx(spend["holdout"].mean())
            welch = stats.ttest_ind(spend["send"], spend["holdout"], equal_var=False).confidence_interval(0.95)
            assert (row["revenue_per_customer_diff_low"], row["revenue_per_customer_diff_high"]) == \
                pytest.approx((welch.low, welch.high), rel=1e-9)


def test_aa_every_interval_covers_zero(aa_report):
    """18 intervals (3 rules x 3 windows x rate and revenue), correlated across windows, all
    cover 0 with these salts (the first ones tried). With other salts all 18 cover in 11 of 20
    draws, as 95 % intervals should: a new salt may fail here without a bug; the calibrated
    check is the twenty-rule test below."""
    assert len(aa_report) == 9 and aa_report["observed"].all()
    assert (aa_report["n_holdout"] > 2000).all()           # ~10 % of ~23,500 customers per rule
    assert (aa_report["messages_sent"] == aa_report["n_send"]).all()
    assert covers_zero(aa_report, "purchase_rate").all(), aa_report
    assert covers_zero(aa_report, "revenue_per_customer").all(), aa_report


def test_aa_coverage_across_twenty_rules_is_about_95_percent(cdnow):
    report = lift_report(aa_events(cdnow, [f"rule_{i:02d}" for i in range(20)]), cdnow, WINDOWS)
    for window in WINDOWS:
        rows = report[report["window_days"] == window]
        assert len(rows) == 20
        assert covers_zero(rows, "purchase_rate").sum() >= 17
        assert covers_zero(rows, "revenue_per_customer").sum() >= 17


def test_a_twenty_percent_uplift_on_the_send_group_is_detected(cdnow_raw, cdnow):
    """Every customer fires on each day, half held out; send customers without a purchase in the
    30 days get one with the probability that lifts the day's purchase rate by 20 %."""
    frames = []
    for day in DAYS:
        ids = known_at(cdnow, day)
        group = np.where(uniform(f"uplift:{day}", ids) < 0.5, "holdout", "send")
        frames.append(pd.DataFrame({"customer_id": ids.to_numpy(), "rule": "uplift", "as_of": day,
                                    "group": group}))
    events = pd.concat(frames, ignore_index=True)

    rng = np.random.default_rng(20)
    extra, baseline = [], {}
    for day, day_events in events.groupby("as_of"):
        labels = build_labels(cdnow, day, 30).set_index("customer_id")
        baseline[day] = p = labels["purchased"].mean()
        send = day_events.loc[day_events["group"] == "send", "customer_id"]
        idle = send[~labels.loc[send, "purchased"].to_numpy()].to_numpy()
        chosen = idle[rng.random(len(idle)) < 0.2 * p / (1 - p)]
        offsets = pd.to_timedelta(rng.integers(1, 31, len(chosen)), unit="D")
        extra.append(pd.DataFrame({"customer_id": chosen, "date": pd.Timestamp(day) + offsets,
                                   "number_of_cds": 1, "dollar_value": 15.0}))
    treated = TransactionLog.from_frame(pd.concat([cdnow_raw, *extra], ignore_index=True), CDNOW_COLUMNS)

    report = lift_report(events, treated, (30,))
    row = report.iloc[0]
    simulated = 0.2 * np.mean(list(baseline.values()))
    assert row["purchase_rate_diff_low"] > 0                              # detected
    assert row["purchase_rate_diff_low"] <= simulated <= row["purchase_rate_diff_high"]
    assert row["purchase_rate_diff"] / row["purchase_rate_holdout"] == pytest.approx(0.2, abs=0.07)
    assert row["revenue_per_customer_diff"] > 0
    before = lift_report(events, cdnow, (30,)).iloc[0]                    # the same events, untreated
    assert before["purchase_rate_diff_low"] <= 0 <= before["purchase_rate_diff_high"]


def test_windows_past_the_log_are_not_observed_and_not_counted_as_no_purchase(cdnow):
    last = cdnow.report.last_timestamp.normalize()
    assert last == pd.Timestamp("1998-06-30")
    ids = known_at(cdnow, "1998-05-01")[:400]
    events = pd.concat([pd.DataFrame({"customer_id": ids, "rule": "late", "as_of": day,
                                      "group": np.where(np.arange(len(ids)) % 4 == 0, "holdout", "send")})
                        for day in ("1998-05-01", "1998-06-15")], ignore_index=True)

    daily = lift_report(events, cdnow, by_day=True).set_index(["as_of", "window_days"])
    assert daily["observed"].to_dict() == {
        ("1998-05-01", 30): True, ("1998-05-01", 60): True,     # ends on the log's last day
        ("1998-05-01", 90): False, ("1998-06-15", 30): False,
        ("1998-06-15", 60): False, ("1998-06-15", 90): False}
    unobserved = daily[~daily["observed"]]
    assert (unobserved[["n_send", "n_holdout"]] == 0).all().all()
    assert (unobserved["messages_sent"] == 300).all()           # the cost is known at once
    assert unobserved[["purchase_rate_send", "purchase_rate_diff", "revenue_per_customer_diff_low"]].isna().all().all()

    pooled = lift_report(events, cdnow).set_index("window_days")
    assert not pooled["observed"].any()                        # the June events are still open
    assert (pooled["messages_sent"] == 600).all()
    assert pooled.loc[30, "n_send"] == 300 and pooled.loc[90, "n_send"] == 0
    assert pooled.loc[60, "purchase_rate_send"] == pytest.approx(daily.loc[("1998-05-01", 60), "purchase_rate_send"])


def test_bad_events_are_refused_with_the_row(cdnow):
    good = pd.DataFrame({"customer_id": ["00001"], "rule": ["r"], "as_of": ["1997-10-01"], "group": ["send"]})
    with pytest.raises(ValueError, match="lack the column"):
        lift_report(good.drop(columns="group"), cdnow)
    with pytest.raises(ValueError, match="row 0: group"):
        lift_report(good.assign(group="treated"), cdnow)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        lift_report(good.assign(as_of="10/01/1997"), cdnow)
    with pytest.raises(ValueError, match="row 1: .* twice"):
        lift_report(pd.concat([good, good]), cdnow)
    with pytest.raises(ValueError, match="windows"):
        lift_report(good, cdnow, windows=(30, 0))


# -- the budget and the uplift per rule (issue #21) -------------------------------------------------

def test_skipped_budget_events_are_left_out_of_the_lift_and_counted_in_the_budget(cdnow):
    from crm.lift import budget_report

    events = aa_events(cdnow, ["winback"])
    skipped = events.sample(n=500, random_state=0).index
    marked = events.copy()
    marked.loc[skipped, "group"] = "skipped_budget"
    kept = events.drop(index=skipped)
    pd.testing.assert_frame_equal(lift_report(marked, cdnow, (30,)), lift_report(kept, cdnow, (30,)))
    budget = budget_report(marked, 1000).set_index("rule")
    assert budget.loc["winback", "skipped_budget"] == 500
    assert budget.loc["winback", "sent"] + budget.loc["winback", "held_out"] == len(kept)
    assert budget.loc["winback", "busiest_day_sends"] == kept[kept["group"] == "send"].groupby("as_of").size().max()


def test_uplift_report_on_cdnow_is_an_aa_test_and_its_curve_ends_at_the_uplift(cdnow):
    import json

    from crm.lift import uplift_report
    from crm.rules import TriggerRules

    rules = TriggerRules.from_toml()
    events = aa_events(cdnow, ["winback_due"])
    rng = np.random.default_rng(0)
    events["fields"] = [json.dumps({"expected_uplift": 0.0, "churn_probability": float(p),
                                    "value_at_risk": float(v)}) for p, v in zip(rng.random(len(events)),
                                                                                 100 * rng.random(len(events)))]
    table, curves = uplift_report(events, cdnow, rules, n_boot=50)
    rows = table.set_index("ranking")
    assert set(rows.index) == {"recorded_uplift", "churn_risk", "value_at_risk"}
    assert (rows["qini_low"] <= 0).all() and (rows["qini_high"] >= 0).all()     # nobody was contacted
    assert (rows["window_days"] == 30).all()
    curve = curves["winback_due"]
    assert len(curve) == 11 and curve["share_targeted"].iloc[-1] == 1.0
    sent, held = rows["n_send"].iloc[0], rows["n_holdout"].iloc[0]
    # the Qini curve's last point is the uplift times the share sent
    assert curve["qini"].iloc[-1] == pytest.approx(rows["uplift"].iloc[0] * sent / (sent + held), abs=1e-9)
    # churn risk's and value at risk's curves beside it (the dashboard's Qini plot), from 0 to the same end
    for column in ("qini_churn_risk", "qini_value_at_risk"):
        assert curve[column].iloc[0] == 0 and curve[column].iloc[-1] == pytest.approx(curve["qini"].iloc[-1], abs=1e-12)


def test_budget_per_day_and_the_ranking_each_rule_used_last():
    import json

    from crm.lift import budget_report

    note = {"value_at_risk": "prior uplift 0: ranked by value at risk",
            "uplift_model": "winback-uplift/2 (x_learner) beat churn risk and value at risk on Qini out of time"}
    rows = [("a", "winback_due", "2025-01-01", "send", "value_at_risk"),
            ("b", "winback_due", "2025-01-01", "skipped_budget", "value_at_risk"),
            ("c", "tier_keep", "2025-01-01", "send", "value_at_risk"),
            ("a", "winback_due", "2025-02-01", "holdout", "uplift_model"),
            ("d", "winback_due", "2025-02-01", "send", "uplift_model")]
    events = pd.DataFrame([{"customer_id": c, "rule": r, "as_of": d, "group": g,
                            "fields": json.dumps({"ranking": k, "uplift_note": note[k],
                                                  "uplift_model": "winback-uplift/2" if k == "uplift_model" else None})}
                           for c, r, d, g, k in rows])
    days = budget_report(events, 2, by_day=True)
    assert days[["as_of", "rule", "sent", "held_out", "skipped_budget", "day_sends"]].values.tolist() == [
        ["2025-01-01", "tier_keep", 1, 0, 0, 2], ["2025-01-01", "winback_due", 1, 0, 1, 2],
        ["2025-02-01", "winback_due", 1, 1, 0, 1]]
    assert (days["max_sends_per_day"] == 2).all()
    rules = budget_report(events, 2).set_index("rule")
    assert rules.loc["winback_due", ["sent", "held_out", "skipped_budget", "days", "busiest_day_sends"]].tolist() == [
        2, 1, 1, 2, 2]
    # the latest day's ranking, model and why, from the events' own fields
    assert rules.loc["winback_due", ["last_day", "ranking", "uplift_model", "uplift_note"]].tolist() == [
        "2025-02-01", "uplift_model", "winback-uplift/2", note["uplift_model"]]
    assert rules.loc["tier_keep", ["last_day", "ranking", "uplift_model"]].tolist() == [
        "2025-01-01", "value_at_risk", ""]
