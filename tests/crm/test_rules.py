"""The trigger rules (issue #10): each rule fires exactly on its boundary days, filters,
cooldowns, the weekly cap, the once-per-silence win-back, holdout groups and idempotency keys."""

from __future__ import annotations

import json
import re
import tomllib

import numpy as np
import pandas as pd
import pytest

from crm.rules import (
    DEFAULT_RULES_PATH,
    EVENT_COLUMNS,
    RULE_KEYS,
    TriggerRules,
    UpliftRanking,
    evaluate,
    holdout_group,
    idempotency_key,
)

AS_OF = "2025-06-30"
DAY = pd.Timestamp(AS_OF)


def rules_with(only: str | None = None, salt: str = "test", cap: int = 1, **changes) -> TriggerRules:
    """The default rules, every holdout share 0 (so groups don't hide events), optionally only
    ``only`` enabled, with ``changes`` to its table."""
    data = TriggerRules.from_toml().to_dict()
    data["global"].update(salt=salt, max_per_customer_per_week=cap)
    data["budget"]["max_sends_per_day"] = 1_000_000          # the budget has its own tests
    for name in RULE_KEYS:
        data[name]["holdout_share"] = 0.0
        if only is not None:
            data[name]["enabled"] = name == only
    if changes:
        data[only].update(changes)
    return TriggerRules.from_dict(data)


def customers(n: int = 1, **columns) -> pd.DataFrame:
    """``n`` quiet customers (no rule fires for them), with ``columns`` set."""
    base = {
        "customer_id": [f"c{i:03d}" for i in range(n)],
        "churn_probability": 0.5, "value_at_risk": 100.0, "winback_date": pd.NaT,
        "segment": "loyal", "tier": "silver", "days_since_last_purchase": 100.0,
        "last_purchase_date": DAY - pd.Timedelta(days=100),
        "amount_to_next_tier": np.nan, "amount_to_keep_tier": 0.0,
        "replenish_due_in_days": np.nan, "top_category": "tea",
    }
    base.update(columns)
    frame = pd.DataFrame({k: (v if isinstance(v, list) else [v] * n) for k, v in base.items()})
    frame["winback_date"] = pd.to_datetime(frame["winback_date"])
    return frame


def fired(rules: TriggerRules, frame: pd.DataFrame, as_of=AS_OF, past=None) -> list[str]:
    events = evaluate(rules, frame, as_of, past)
    return list(events["customer_id"] + ":" + events["rule"])


def past_events(*rows: tuple[str, str, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "rule", "as_of"]).assign(group="send")


# -- each rule on its boundaries -------------------------------------------------------------------

def test_quiet_customers_fire_nothing_and_the_frame_has_the_event_columns():
    events = evaluate(rules_with(), customers(3), AS_OF, None)
    assert events.empty and tuple(events.columns) == EVENT_COLUMNS


def test_winback_due_fires_on_and_after_the_date_not_before():
    frame = customers(3, winback_date=[DAY - pd.Timedelta(days=3), DAY, DAY + pd.Timedelta(days=1)])
    assert fired(rules_with("winback_due"), frame) == ["c000:winback_due", "c001:winback_due"]


@pytest.mark.parametrize("amount, fires", [(0.0, False), (0.01, True), (3000.0, True), (3000.01, False),
                                           (np.nan, False)])
def test_tier_keep_fires_for_an_amount_in_reach(amount, fires):
    assert fired(rules_with("tier_keep"), customers(amount_to_keep_tier=amount)) == (
        ["c000:tier_keep"] if fires else [])


@pytest.mark.parametrize("within, fires", [(29, False), (30, True), (45, True)])
def test_tier_keep_fires_only_when_the_review_is_near_enough(within, fires):
    rules = rules_with("tier_keep", review_days=30, review_within_days=within)
    events = evaluate(rules, customers(amount_to_keep_tier=500.0), AS_OF, None)
    assert len(events) == int(fires)
    if fires:
        fields = json.loads(events["fields"][0])
        assert fields["review_date"] == "2025-07-30" and fields["amount_to_keep_tier"] == 500.0


@pytest.mark.parametrize("amount, fires", [(0.0, False), (1.0, True), (1000.0, True), (1000.5, False),
                                           (np.nan, False)])
def test_tier_upgrade_fires_for_an_amount_in_reach(amount, fires):
    assert fired(rules_with("tier_upgrade"), customers(amount_to_next_tier=amount)) == (
        ["c000:tier_upgrade"] if fires else [])


@pytest.mark.parametrize("due, fires", [(1.0, False), (0.0, True), (-13.0, True), (-14.0, False),
                                        (np.nan, False)])
def test_replenishment_due_fires_from_the_due_day_until_the_grace_ends(due, fires):
    assert fired(rules_with("replenishment_due"), customers(replenish_due_in_days=due)) == (
        ["c000:replenishment_due"] if fires else [])


def test_replenishment_lead_days_fires_earlier():
    rules = rules_with("replenishment_due", lead_days=3)
    assert fired(rules, customers(2, replenish_due_in_days=[3.0, 4.0])) == ["c000:replenishment_due"]


def test_replenishment_without_the_category_columns_never_fires():
    frame = customers().drop(columns=["replenish_due_in_days", "top_category"])
    assert fired(rules_with("replenishment_due"), frame) == []


@pytest.mark.parametrize("tier, days, fires", [("gold", 30, True), ("gold", 29, False), ("gold", 31, False),
                                               ("silver", 30, False), ("member", 30, False),
                                               ("unknown", 30, False)])
def test_vip_silent_fires_for_a_vip_exactly_on_the_day(tier, days, fires):
    frame = customers(tier=tier, days_since_last_purchase=float(days))
    assert fired(rules_with("vip_silent"), frame) == (["c000:vip_silent"] if fires else [])


def test_vip_silent_min_tier_counts_higher_tiers():
    frame = customers(3, tier=["member", "silver", "gold"], days_since_last_purchase=30.0)
    assert fired(rules_with("vip_silent", min_tier="silver"), frame) == ["c001:vip_silent", "c002:vip_silent"]


def test_post_purchase_fires_on_the_listed_days_only():
    days = [6.0, 7.0, 8.0, 24.0, 25.0, 30.0, 31.0]
    frame = customers(len(days), days_since_last_purchase=days)
    events = evaluate(rules_with("post_purchase"), frame, AS_OF, None)
    assert list(events["customer_id"]) == ["c001", "c004", "c005"]
    assert [json.loads(f)["days_since_last_purchase"] for f in events["fields"]] == [7.0, 25.0, 30.0]


def test_disabled_rule_does_not_fire():
    rules = rules_with("tier_upgrade", enabled=False)
    assert fired(rules, customers(amount_to_next_tier=10.0)) == []


# -- filters ---------------------------------------------------------------------------------------

def test_segment_tier_and_value_filters():
    frame = customers(4, amount_to_next_tier=10.0, segment=["loyal", "at_risk", "loyal", "loyal"],
                      tier=["silver", "silver", "member", "silver"], value_at_risk=[500.0, 500.0, 500.0, 499.0])
    rules = rules_with("tier_upgrade", segments=["loyal"], tiers=["silver"], min_value_at_risk=500.0)
    assert fired(rules, frame) == ["c000:tier_upgrade"]
    assert len(fired(rules_with("tier_upgrade"), frame)) == 4          # empty lists = everyone


def test_fields_carry_what_made_it_fire_and_the_reasons():
    frame = customers(winback_date=DAY, churn_probability=0.8, value_at_risk=1234.5,
                      last_purchase_date=DAY - pd.Timedelta(days=90))
    frame["reasons"] = [["silent 90 days"]]
    frame["reasons_zh_tw"] = [["90 天未購買"]]
    fields = json.loads(evaluate(rules_with("winback_due"), frame, AS_OF, None)["fields"][0])
    assert fields["winback_date"] == AS_OF and fields["last_purchase_date"] == "2025-04-01"
    assert fields["churn_probability"] == 0.8 and fields["value_at_risk"] == 1234.5
    assert fields["reasons"] == ["silent 90 days"] and fields["reasons_zh_tw"] == ["90 天未購買"]


# -- cooldown, once per silence, weekly cap --------------------------------------------------------

def test_cooldown_across_days():
    rules = rules_with("tier_upgrade", cap=2, cooldown_days=30)         # the cap is not what blocks
    frame = customers(amount_to_next_tier=10.0)
    past = past_events(("c000", "tier_upgrade", "2025-06-01"))
    assert fired(rules, frame, "2025-06-30", past) == []                 # 29 days later
    assert fired(rules, frame, "2025-07-01", past) == ["c000:tier_upgrade"]   # 30 days later
    other_rule = past_events(("c000", "tier_keep", "2025-06-29"))
    assert fired(rules, frame, "2025-06-30", other_rule) == ["c000:tier_upgrade"]


def test_winback_due_fires_once_for_a_date_that_passed_and_not_again():
    rules = rules_with("winback_due", cap=10, cooldown_days=0)     # neither cap nor cooldown holds it
    last = DAY - pd.Timedelta(days=200)
    past = None
    fired_on = []
    for offset in range(5):            # the policy keeps an overdue customer's date at the as-of day
        day = DAY + pd.Timedelta(days=offset)
        frame = customers(winback_date=day, last_purchase_date=last)
        events = evaluate(rules, frame, day, past)
        fired_on += [day] * len(events)
        past = pd.concat([past, events[["customer_id", "rule", "as_of", "group"]]], ignore_index=True)
    assert fired_on == [DAY]
    # a purchase after that event opens a new silence: due again
    later = DAY + pd.Timedelta(days=60)
    frame = customers(winback_date=later, last_purchase_date=DAY + pd.Timedelta(days=10))
    assert fired(rules, frame, later, past) == ["c000:winback_due"]
    # an event on the day of the last purchase was made knowing that purchase: it counts
    frame = customers(winback_date=later, last_purchase_date=DAY)
    assert fired(rules, frame, later, past) == []


def test_weekly_cap_keeps_the_highest_priority_rule():
    frame = customers(winback_date=DAY, amount_to_next_tier=10.0, days_since_last_purchase=30.0, tier="gold")
    events = evaluate(rules_with(cap=1), frame, AS_OF, None)
    assert list(events["rule"]) == ["winback_due"]                       # priority 10 beats 15, 40, 50
    events = evaluate(rules_with(cap=2), frame, AS_OF, None)
    assert list(events["rule"]) == ["winback_due", "vip_silent"]


def test_weekly_cap_counts_past_events_of_the_last_six_days():
    rules = rules_with("tier_upgrade", cap=1, cooldown_days=0)
    frame = customers(amount_to_next_tier=10.0)
    assert fired(rules, frame, AS_OF, past_events(("c000", "post_purchase", "2025-06-24"))) == []
    assert fired(rules, frame, AS_OF, past_events(("c000", "post_purchase", "2025-06-23"))) == [
        "c000:tier_upgrade"]


def test_priority_ties_break_by_rule_name():
    data = rules_with(cap=1).to_dict()
    data["tier_upgrade"]["priority"] = data["post_purchase"]["priority"] = 5
    frame = customers(amount_to_next_tier=10.0, days_since_last_purchase=7.0)
    assert list(evaluate(TriggerRules.from_dict(data), frame, AS_OF, None)["rule"]) == ["post_purchase"]


def test_rerunning_a_day_gives_the_same_events():
    frame = customers(5, winback_date=DAY, amount_to_next_tier=10.0)
    first = evaluate(rules_with(cap=2), frame, AS_OF, None)
    again = evaluate(rules_with(cap=2), frame, AS_OF, first[["customer_id", "rule", "as_of", "group"]])
    pd.testing.assert_frame_equal(first, again)


def test_row_order_is_customer_then_priority():
    frame = customers(3, winback_date=DAY, amount_to_next_tier=10.0).iloc[::-1]
    events = evaluate(rules_with(cap=3), frame, AS_OF, None)
    assert list(zip(events["customer_id"], events["priority"])) == [
        (c, p) for c in ("c000", "c001", "c002") for p in (10, 50)]


# -- holdout and keys ------------------------------------------------------------------------------

def test_holdout_share_is_close_to_the_setting_stable_and_per_rule():
    ids = pd.Series([f"m{i}" for i in range(20_000)])
    group = holdout_group(ids, "winback_due", 0.1, "salt")
    assert set(group) == {"send", "holdout"}
    assert abs((group == "holdout").mean() - 0.1) < 0.015
    assert (holdout_group(ids, "winback_due", 0.1, "salt") == group).all()
    other = holdout_group(ids, "tier_keep", 0.1, "salt")
    assert abs((other == "holdout").mean() - 0.1) < 0.015
    assert (other != group).mean() > 0.1                                 # independent draws, ~18 % differ
    assert (holdout_group(ids, "winback_due", 0.0, "salt") == "send").all()


def test_holdout_groups_in_events_are_stable_across_days():
    data = rules_with("tier_upgrade", cooldown_days=0).to_dict()
    data["tier_upgrade"]["holdout_share"] = 0.3
    rules = TriggerRules.from_dict(data)
    frame = customers(2000, amount_to_next_tier=10.0)
    one = evaluate(rules, frame, "2025-06-01", None)
    two = evaluate(rules, frame, "2025-07-15", None)
    assert (one["group"].to_numpy() == two["group"].to_numpy()).all()
    assert abs((one["group"] == "holdout").mean() - 0.3) < 0.04
    assert (one["idempotency_key"] != two["idempotency_key"]).all()


def test_idempotency_keys_are_stable_and_distinct():
    key = idempotency_key("c1", "winback_due", "2025-06-30")
    assert re.fullmatch(r"[0-9a-f]{32}", key)
    assert key == idempotency_key("c1", "winback_due", pd.Timestamp("2025-06-30"))
    others = {idempotency_key("c2", "winback_due", "2025-06-30"), idempotency_key("c1", "tier_keep", "2025-06-30"),
              idempotency_key("c1", "winback_due", "2025-07-01")}
    assert key not in others and len(others) == 3


# -- the rules file --------------------------------------------------------------------------------

def test_default_rules_load_with_every_rule():
    rules = TriggerRules.from_toml()
    assert [r.name for r in rules.rules] == list(RULE_KEYS)
    assert rules.max_per_customer_per_week == 2 and rules["post_purchase"].param("days") == (7, 25, 30)
    assert rules["vip_silent"].param("min_tier") == "gold" and rules["replenishment_due"].param("lead_days") == 0
    assert TriggerRules.from_dict(rules.to_dict()) == rules


def test_every_key_in_the_default_file_has_a_comment_above_it():
    lines = DEFAULT_RULES_PATH.read_text(encoding="utf-8").splitlines()
    keys = 0
    for i, line in enumerate(lines):
        if re.match(r"^[a-z_]+\s*=", line):
            keys += 1
            assert i > 0 and lines[i - 1].startswith("#"), f"line {i + 1} ({line!r}) has no comment above"
    parsed = tomllib.loads("\n".join(lines))
    assert keys == sum(len(table) for table in parsed.values())


@pytest.mark.parametrize("table, key, value, message", [
    ("tier_keep", "max_amout", 10.0, r"\[tier_keep\] unknown key.*max_amout"),
    ("tier_keep", "max_amount", "500", r"\[tier_keep\] max_amount: expected float"),
    ("winback_due", "enabled", 1, r"\[winback_due\] enabled: expected bool"),
    ("post_purchase", "days", [7, "25"], r"\[post_purchase\] days: expected list\[int\]"),
    ("vip_silent", "segments", "loyal", r"\[vip_silent\] segments: expected list\[str\]"),
    ("vip_silent", "min_tier", "platinum", r"\[vip_silent\] min_tier"),
    ("tier_upgrade", "holdout_share", 1.0, r"\[tier_upgrade\] holdout_share"),
    ("global", "max_per_customer_per_week", 1.5, r"\[global\] max_per_customer_per_week"),
])
def test_bad_rules_name_the_table_and_key(tmp_path, table, key, value, message):
    path = tmp_path / "rules.toml"
    text = DEFAULT_RULES_PATH.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    data[table][key] = value
    path.write_text(_toml(data), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        TriggerRules.from_toml(path)


def test_unknown_rule_table_is_named(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text('[birthday]\nenabled = true\n', encoding="utf-8")
    with pytest.raises(ValueError, match="birthday"):
        TriggerRules.from_toml(path)


def _toml(data: dict) -> str:
    """Just enough TOML writing for the tests (tables of scalars and flat lists)."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)
    return "\n".join(f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in table.items())
                     for name, table in data.items())


# -- budget, stop rule, expected net value (issue #21) ---------------------------------------------

def with_budget(rules: TriggerRules, **budget) -> TriggerRules:
    data = rules.to_dict()
    data["budget"].update(budget)
    return TriggerRules.from_dict(data)


def test_default_budget_and_uplift_settings():
    rules = TriggerRules.from_toml()
    assert rules.budget.max_sends_per_day == 1000 and rules.budget.cost_per_send == 0.0
    assert rules.budget.winback_stop_after_unanswered == 3 and rules.budget.winback_stop_below_p_alive == 0.1
    assert rules.uplift.prior_uplift == 0.0
    assert (rules.uplift.min_treated, rules.uplift.min_holdout) == (500, 100)
    assert all(r.window_days == 30 for r in rules.rules)


def test_budget_keeps_the_highest_value_at_risk_and_records_the_rest_as_skipped():
    data = rules_with("winback_due").to_dict()
    data["winback_due"]["holdout_share"] = 0.2
    rules = with_budget(TriggerRules.from_dict(data), max_sends_per_day=50)
    n = 400
    frame = customers(n, winback_date=DAY, value_at_risk=list(np.arange(n, dtype=float)))
    events = evaluate(rules, frame, AS_OF, None)
    assert len(events) == n and (events["group"] == "send").sum() == 50
    risk = frame.set_index("customer_id")["value_at_risk"]
    chosen = events[events["group"] != "skipped_budget"]
    skipped = events[events["group"] == "skipped_budget"]
    assert risk[chosen["customer_id"]].min() > risk[skipped["customer_id"]].max()
    # the holdout is the hash's share of those selected, not of the whole ranking
    hashed = holdout_group(chosen["customer_id"], "winback_due", 0.2, rules.salt)
    assert (hashed == chosen["group"].to_numpy()).all()
    fields = [json.loads(f) for f in events["fields"]]
    assert {f["ranking"] for f in fields} == {"value_at_risk"}
    assert all(f["expected_uplift"] == 0.0 and f["net_value"] == 0.0 and f["value_basis"] == "clv_12m"
               for f in fields)
    assert sorted(f["budget_rank"] for f in fields) == list(range(1, n + 1))


def test_budget_of_zero_sends_nothing_and_skipped_events_do_not_cool_down():
    rules = with_budget(rules_with("tier_upgrade", cooldown_days=30), max_sends_per_day=0)
    frame = customers(3, amount_to_next_tier=10.0)
    events = evaluate(rules, frame, AS_OF, None)
    assert set(events["group"]) == {"skipped_budget"}
    later = evaluate(rules_with("tier_upgrade", cooldown_days=30), frame, "2025-07-01",
                     events[["customer_id", "rule", "as_of", "group"]])
    assert set(later["group"]) == {"send"}                 # a skipped event is no message


def test_budget_never_exceeded_across_rules_and_ranked_by_net_value():
    rules = with_budget(rules_with(cap=3), max_sends_per_day=7, cost_per_send=1.0)
    frame = customers(20, winback_date=DAY, amount_to_next_tier=10.0,
                      expected_order_value=list(np.linspace(10, 200, 20)), clv_12m=100.0)
    model = UpliftRanking(predict=lambda rows: np.full(len(rows), 0.1), model="winback-uplift/1",
                          note="test model")
    events = evaluate(rules, frame, AS_OF, None, uplift={"tier_upgrade": model})
    assert (events["group"] == "send").sum() == 7
    fields = pd.DataFrame([json.loads(f) for f in events["fields"]]).assign(
        rule=events["rule"].to_numpy(), group=events["group"].to_numpy())
    upgrade = fields[fields["rule"] == "tier_upgrade"]
    assert (upgrade["ranking"] == "uplift_model").all() and (upgrade["uplift_model"] == "winback-uplift/1").all()
    assert np.allclose(upgrade["net_value"], 0.1 * upgrade["expected_order_value"] - 1.0, atol=1e-6)
    winback = fields[fields["rule"] == "winback_due"]
    assert (winback["net_value"] == -1.0).all() and (winback["ranking"] == "value_at_risk").all()
    sent = fields[fields["group"] == "send"]
    assert sent["net_value"].min() >= fields[fields["group"] == "skipped_budget"]["net_value"].max()


def test_winback_stops_below_the_p_alive_threshold():
    rules = rules_with("winback_due")
    frame = customers(3, winback_date=DAY, p_alive=[0.05, 0.1, 0.3])
    assert fired(rules, frame) == ["c001:winback_due", "c002:winback_due"]
    assert len(fired(with_budget(rules, winback_stop_below_p_alive=0.0), frame)) == 3


def test_winback_stops_after_three_unanswered_messages():
    rules = rules_with("winback_due", cooldown_days=0)
    frame = customers(2, winback_date=DAY, last_purchase_date=DAY - pd.Timedelta(days=10))
    # three earlier win-backs each: c000 answered none, c001 answered one (an `answered` column)
    past = past_events(*[(c, "winback_due", d) for c in ("c000", "c001")
                         for d in ("2024-06-01", "2024-10-01", "2025-02-01")])
    past["answered"] = [False, False, False, False, True, False]
    assert fired(rules, frame, AS_OF, past) == ["c001:winback_due"]
    assert fired(with_budget(rules, winback_stop_after_unanswered=0), frame, AS_OF, past) == [
        "c000:winback_due", "c001:winback_due"]
    # held-out events count as messages; skipped ones never reached anybody
    assert fired(rules, frame, AS_OF, past.assign(group="holdout")) == ["c001:winback_due"]
    assert len(fired(rules, frame, AS_OF, past.assign(group="skipped_budget"))) == 2
    # without `answered`, a purchase after an event answers it: c000 bought after all three
    bought = past.drop(columns="answered")
    frame = customers(2, winback_date=DAY, last_purchase_date=[DAY - pd.Timedelta(days=10), pd.Timestamp("2024-05-01")])
    assert fired(rules, frame, AS_OF, bought) == ["c000:winback_due"]
    stopped = with_budget(rules, winback_stop_after_unanswered=1)
    assert fired(stopped, frame, AS_OF, bought) == ["c000:winback_due"]


@pytest.mark.parametrize("table, key, value, message", [
    ("budget", "max_sends_per_day", -1, r"\[budget\] max_sends_per_day"),
    ("budget", "cost_per_send", "1", r"\[budget\] cost_per_send: expected float"),
    ("budget", "winback_stop_below_p_alive", 1.0, r"\[budget\] winback_stop_below_p_alive"),
    ("uplift", "min_treated", 0, r"\[uplift\] min_treated"),
    ("uplift", "prior_uplift", 2.0, r"\[uplift\] prior_uplift"),
    ("winback_due", "window_days", 0, r"\[winback_due\] window_days"),
])
def test_bad_budget_and_uplift_settings_are_named(tmp_path, table, key, value, message):
    path = tmp_path / "rules.toml"
    data = tomllib.loads(DEFAULT_RULES_PATH.read_text(encoding="utf-8"))
    data[table][key] = value
    path.write_text(_toml(data), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        TriggerRules.from_toml(path)
