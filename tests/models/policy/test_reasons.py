"""Why a customer is at risk: the strongest positive contributions, phrased with the customer's
own numbers, in English and Traditional Chinese."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models.policy.reasons import TEMPLATES, top_reasons

#: One customer's feature values: every field a template reads.
VALUES = {
    "days_since_last_purchase": 94, "overdue_ratio": 2.3, "r_score": 1, "recency": 120, "frequency": 2,
    "purchase_days": 3, "orders": 4, "f_score": 1, "p_alive": 0.123, "expected_purchases_horizon": 0.44,
    "prob_purchase_horizon": 0.2, "spend_trend": -0.5, "mean_gap_days": 41, "median_gap_days": 40,
    "std_gap_days": 12, "last_gap_days": 50, "monetary_value": 12.345, "total_spend": 1234.5, "m_score": 2,
    "clv_12m": 10.5, "tenure_days": 300, "replenish_due_in_days": -12,
    **{f"orders_{n}d": 0 if n < 90 else 1 for n in (30, 90, 180, 365)},
    **{f"spend_{n}d": 0.0 if n < 90 else 19.99 for n in (30, 90, 180, 365)},
}
OVERDUE = ("no order for 94 days, 2.3× their usual gap", "已 94 天未下單，是平常間隔的 2.3 倍")
P_ALIVE = ("only 12 % likely to still be active", "仍活躍的機率僅 12%")
CLV = ("expected to spend only 10.50 in the next 12 months", "預期未來 12 個月僅消費 10.50")
TENURE = ("a customer for 300 days", "成為顧客已 300 天")


def reasons(contributions: dict, values: dict = VALUES, k: int = 3) -> tuple[list[str], list[str]]:
    """One customer's reasons, English and Chinese."""
    out = top_reasons(pd.DataFrame([contributions]), pd.DataFrame([values]), k=k).iloc[0]
    return out["reasons"], out["reasons_zh_tw"]


def has_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def test_the_modules_example_with_the_customers_numbers():
    en, zh = reasons({"days_since_last_purchase": 0.9, "p_alive": 0.3})
    assert (en, zh) == ([OVERDUE[0], P_ALIVE[0]], [OVERDUE[1], P_ALIVE[1]])


def test_largest_positive_contributions_first():
    contributions = {"tenure_days": 0.1, "p_alive": 0.4, "clv_12m": 0.7, "days_since_last_purchase": 0.2}
    assert reasons(contributions)[0] == [CLV[0], P_ALIVE[0], OVERDUE[0]]
    assert reasons(contributions, k=1)[0] == [CLV[0]]
    assert reasons(contributions, k=10)[0] == [CLV[0], P_ALIVE[0], OVERDUE[0], TENURE[0]]


def test_features_lowering_the_risk_are_no_reason_however_large():
    en, _ = reasons({"clv_12m": -5.0, "p_alive": 0.01, "tenure_days": 0.0, "frequency": -0.2})
    assert en == [P_ALIVE[0]]
    assert reasons({"clv_12m": -5.0, "tenure_days": 0.0})[0] == []


def test_unphrased_features_and_duplicate_phrases_take_no_place():
    """A feature without a template is skipped, and the overdue ratio, recency and R score say
    what days since the last purchase says: one reason, and the next feature still gets in."""
    contributions = {"tier_code": 9.0, "days_since_last_purchase": 0.9, "overdue_ratio": 0.8,
                     "recency": 0.75, "r_score": 0.7, "p_alive": 0.6, "clv_12m": 0.5, "tenure_days": 0.4}
    en, zh = reasons(contributions)
    assert en == [OVERDUE[0], P_ALIVE[0], CLV[0]] and zh == [OVERDUE[1], P_ALIVE[1], CLV[1]]


def test_overdue_without_a_usual_gap():
    en, zh = reasons({"days_since_last_purchase": 1.0}, {**VALUES, "overdue_ratio": math.nan})
    assert (en, zh) == (["no order for 94 days"], ["已 94 天未下單"])


def test_each_customer_gets_their_own_reasons_and_index():
    contributions = pd.DataFrame({"p_alive": [0.5, 0.1, -1.0], "clv_12m": [0.2, 0.3, -1.0]},
                                 index=pd.Index(["ann", "bob", "cid"], name="customer_id"))
    values = pd.DataFrame([VALUES, {**VALUES, "p_alive": 0.456}, VALUES])
    got = top_reasons(contributions, values)
    assert list(got.columns) == ["reasons", "reasons_zh_tw"] and got.index.equals(contributions.index)
    assert got.loc["ann", "reasons"] == [P_ALIVE[0], CLV[0]]
    assert got.loc["bob", "reasons"] == [CLV[0], "only 46 % likely to still be active"]
    assert got.loc["bob", "reasons_zh_tw"] == [CLV[1], "仍活躍的機率僅 46%"]
    assert got.loc["cid", "reasons"] == [] and got.loc["cid", "reasons_zh_tw"] == []


@pytest.mark.parametrize("feature", sorted(TEMPLATES))
def test_every_template_speaks_both_languages(feature):
    en, zh = reasons({feature: 1.0})
    assert len(en) == len(zh) == 1
    assert en[0] and not has_chinese(en[0]) and has_chinese(zh[0])
    assert "?" not in en[0] + zh[0]                     # every number it needs is in the values


def test_same_input_same_reasons():
    rng = np.random.default_rng(0)
    features = sorted(TEMPLATES)
    contributions = pd.DataFrame(rng.choice([0.3, 0.2, 0.1, 0.0, -0.1], size=(50, len(features))),
                                 columns=features)
    values = pd.DataFrame([VALUES] * 50)
    first = top_reasons(contributions, values, k=5)
    pd.testing.assert_frame_equal(top_reasons(contributions, values, k=5), first)
    # a customer's reasons do not depend on who else is scored with them
    pd.testing.assert_frame_equal(top_reasons(contributions.iloc[7:8], values.iloc[7:8], k=5), first.iloc[7:8])


def test_ties_go_to_the_earlier_column():
    """Equal contributions are broken the same way whatever the other features hold: the
    feature whose column comes first wins."""
    features = ["p_alive", "clv_12m", "tenure_days", "total_spend", "monetary_value", "m_score",
                "f_score", "frequency", "orders", "mean_gap_days", "median_gap_days", "std_gap_days",
                "last_gap_days", "spend_trend", "expected_purchases_horizon", "prob_purchase_horizon",
                "replenish_due_in_days", "orders_90d", "orders_180d", "orders_365d", "days_since_last_purchase"]
    en = {f: TEMPLATES[f](VALUES)[0] for f in features}
    assert len(set(en.values())) == len(features)       # every feature phrased differently
    rng = np.random.default_rng(1)
    for _ in range(20):
        row = dict(zip(features, rng.choice([0.3, 0.2, 0.1, 0.0, -0.1], size=len(features))))
        got = reasons(row, k=len(features))[0]
        expected = [en[f] for f in sorted((f for f in features if row[f] > 0), key=lambda f: -row[f])]
        assert got == expected, row
