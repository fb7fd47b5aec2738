"""Why a customer is at risk, in words a marketer reads: English and Traditional Chinese.

Each reason comes from one of the churn model's largest positive feature contributions
(TreeSHAP), phrased with the customer's own numbers, e.g. "no order for 94 days, 2.3× their
usual gap" / "已 94 天未下單，是平常間隔的 2.3 倍".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

LANGUAGES = ("en", "zh-TW")

Template = Callable[[Mapping[str, float]], tuple[str, str]]


def _n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}" if value == value else "?"


def _overdue(r: Mapping[str, float]) -> tuple[str, str]:
    days, ratio = r["days_since_last_purchase"], r.get("overdue_ratio", math.nan)
    if ratio == ratio:
        return (f"no order for {_n(days)} days, {_n(ratio, 1)}× their usual gap",
                f"已 {_n(days)} 天未下單，是平常間隔的 {_n(ratio, 1)} 倍")
    return (f"no order for {_n(days)} days", f"已 {_n(days)} 天未下單")


def _window(n: int) -> Template:
    def phrase(r: Mapping[str, float]) -> tuple[str, str]:
        orders, spend = r.get(f"orders_{n}d", math.nan), r.get(f"spend_{n}d", math.nan)
        if orders == 0:
            return f"no order in the last {n} days", f"近 {n} 天沒有訂單"
        return (f"only {_n(orders)} order(s), {_n(spend, 2)} spent in the last {n} days",
                f"近 {n} 天僅 {_n(orders)} 筆訂單、消費 {_n(spend, 2)}")
    return phrase


def _rhythm(r: Mapping[str, float]) -> tuple[str, str]:
    """A regular buyer's rhythm against the silence (the MBG/CNBD-k outputs' reason)."""
    gap = r.get("mean_gap_days", math.nan)
    if gap != gap:
        return _overdue(r)
    days = r["days_since_last_purchase"]
    return (f"buys about every {_n(gap)} days; {_n(days)} days since the last order",
            f"平均每 {_n(gap)} 天購買一次；已 {_n(days)} 天未下單")


TEMPLATES: dict[str, Template] = {
    "days_since_last_purchase": _overdue,
    "overdue_ratio": _overdue,
    "r_score": _overdue,
    "recency": _overdue,
    "frequency": lambda r: (f"only {_n(r['frequency'] + 1)} purchase day(s) so far",
                            f"至今僅 {_n(r['frequency'] + 1)} 天有購買"),
    "purchase_days": lambda r: (f"only {_n(r['purchase_days'])} purchase day(s) so far",
                                f"至今僅 {_n(r['purchase_days'])} 天有購買"),
    "orders": lambda r: (f"only {_n(r['orders'])} order(s) so far", f"至今僅 {_n(r['orders'])} 筆訂單"),
    "f_score": lambda r: (f"buys less often than most customers (F score {_n(r['f_score'])})",
                          f"購買頻率低於多數顧客（F 分數 {_n(r['f_score'])}）"),
    "p_alive": lambda r: (f"only {_n(100 * r['p_alive'])} % likely to still be active",
                          f"仍活躍的機率僅 {_n(100 * r['p_alive'])}%"),
    "expected_purchases_horizon": lambda r: (
        f"expected to buy only {_n(r['expected_purchases_horizon'], 1)} time(s) in the horizon",
        f"預期期間內僅購買 {_n(r['expected_purchases_horizon'], 1)} 次"),
    "prob_purchase_horizon": lambda r: (
        f"only {_n(100 * r['prob_purchase_horizon'])} % likely to buy in the horizon",
        f"期間內購買機率僅 {_n(100 * r['prob_purchase_horizon'])}%"),
    **{f"mbgcnbd_{output}": _rhythm for output in ("p_alive", "expected_purchases_horizon", "prob_purchase_horizon")},
    "spend_trend": lambda r: ("spending is falling compared with the 90 days before",
                              "近 90 天消費較前 90 天下降"),
    **{f"{kind}_{n}d": _window(n) for kind in ("orders", "spend") for n in (30, 90, 180, 365)},
    "mean_gap_days": lambda r: (f"usually {_n(r['mean_gap_days'])} days between orders",
                                f"平均每 {_n(r['mean_gap_days'])} 天購買一次"),
    "median_gap_days": lambda r: (f"usually {_n(r['median_gap_days'])} days between orders",
                                  f"通常每 {_n(r['median_gap_days'])} 天購買一次"),
    "std_gap_days": lambda r: ("irregular time between orders", "購買間隔不規律"),
    "last_gap_days": lambda r: (f"waited {_n(r['last_gap_days'])} days before the last order",
                                f"上一次購買前間隔了 {_n(r['last_gap_days'])} 天"),
    "monetary_value": lambda r: (f"spends {_n(r['monetary_value'], 2)} per repeat purchase",
                                 f"每次回購平均消費 {_n(r['monetary_value'], 2)}"),
    "total_spend": lambda r: (f"has spent {_n(r['total_spend'], 2)} in total",
                              f"累計消費 {_n(r['total_spend'], 2)}"),
    "m_score": lambda r: (f"spends less than most customers (M score {_n(r['m_score'])})",
                          f"消費金額低於多數顧客（M 分數 {_n(r['m_score'])}）"),
    "clv_12m": lambda r: (f"expected to spend only {_n(r['clv_12m'], 2)} in the next 12 months",
                          f"預期未來 12 個月僅消費 {_n(r['clv_12m'], 2)}"),
    "tenure_days": lambda r: (f"a customer for {_n(r['tenure_days'])} days",
                              f"成為顧客已 {_n(r['tenure_days'])} 天"),
    "replenish_due_in_days": lambda r: (
        f"their usual refill is {_n(-r['replenish_due_in_days'])} days overdue",
        f"常購品項已逾期 {_n(-r['replenish_due_in_days'])} 天未回購"),
}


def top_reasons(contributions: pd.DataFrame, values: pd.DataFrame, k: int = 3) -> pd.DataFrame:
    """The ``k`` strongest reasons per customer in both languages.

    Only features pushing churn risk up and phrased in :data:`TEMPLATES` count, and features
    phrased alike (e.g. days since the last purchase and the overdue ratio) give one reason.
    Returns columns ``reasons`` and ``reasons_zh_tw``, each a list of strings.
    """
    names = np.asarray(contributions.columns)
    order = np.argsort(-contributions.to_numpy(), axis=1, kind="stable")
    positive = np.take_along_axis(contributions.to_numpy(), order, axis=1) > 0
    english, chinese = [], []
    records = values.to_dict("records")
    for i, record in enumerate(records):
        seen: set[str] = set()
        en_list: list[str] = []
        zh_list: list[str] = []
        for j in range(order.shape[1]):
            if len(en_list) == k or not positive[i, j]:
                break
            feature = names[order[i, j]]
            if feature not in TEMPLATES:
                continue
            en, zh = TEMPLATES[feature](record)
            if en not in seen:
                seen.add(en)
                en_list.append(en)
                zh_list.append(zh)
        english.append(en_list)
        chinese.append(zh_list)
    return pd.DataFrame({"reasons": english, "reasons_zh_tw": chinese}, index=contributions.index)
