"""The Campaigns page's figures (issue #21): what ``winback triggers report`` prints, from the same
functions, so the page and the CLI cannot disagree.

Per rule: the events sent, held out and skipped by the budget and the sends of every day against
``[budget] max_sends_per_day`` (:func:`crm.lift.budget_report`), which ranking chose the latest
day's events and why (the events' ``ranking`` and ``uplift_note``), treated versus holdout with
intervals (:func:`crm.lift.lift_report`), and the Qini and AUUC of the recorded ranking, churn
risk and value at risk with their Qini curves (:func:`crm.lift.uplift_report`). This module only
gathers them and draws them (:mod:`serving.dashboard.charts`); words come from
:mod:`serving.dashboard.i18n`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from crm.formatting import format_money, format_number, format_percent
from crm.lift import budget_report, lift_report, uplift_report
from crm.rules import TriggerRules
from serving.dashboard import charts

#: The rankings uplift_report judges, in the order the page shows them; the curve column of each.
RANKINGS = {"recorded_uplift": "qini", "churn_risk": "qini_churn_risk", "value_at_risk": "qini_value_at_risk"}


@dataclass(frozen=True)
class CampaignFigures:
    """Everything the page shows, as the report functions return it."""

    budget: pd.DataFrame                        # budget_report: one row per rule
    by_day: pd.DataFrame                        # budget_report(by_day=True): one row per day and rule
    lift: pd.DataFrame                          # lift_report: one row per rule and window
    uplift: pd.DataFrame                        # uplift_report: one row per rule and ranking
    curves: dict[str, pd.DataFrame] = field(default_factory=dict)   # uplift_report: per rule, at each tenth
    max_sends_per_day: int | None = None


class Signed:
    """Differences with their sign, in the reader's locale: ``+1.23%``, ``-NT$4.50``, ``+0.0123``
    (Qini and AUUC as the CLI prints them); "–" when missing."""

    def __init__(self, lang: str, currency: str) -> None:
        self.lang, self.currency = lang, currency

    @staticmethod
    def _sign(x, text: str) -> str:
        return text if text == "–" or text.startswith("-") or not x > 0 else "+" + text

    def pct(self, x, digits: int = 2) -> str:
        """A signed percentage."""
        return self._sign(x, format_percent(x, self.lang, digits))

    def money(self, x, digits: int = 2) -> str:
        """A signed amount with the currency sign."""
        return self._sign(x, format_money(x, self.lang, self.currency, digits))

    def num(self, x, digits: int = 4) -> str:
        """A signed number."""
        return self._sign(x, format_number(x, self.lang, digits))


def campaign_figures(events: pd.DataFrame, log, rules: TriggerRules) -> CampaignFigures:
    """The figures of ``winback triggers report`` (its defaults: 30/60/90-day windows, per rule,
    outcomes seen up to the log's last day) for ``events`` (the outbox's) and ``log``."""
    limit = rules.budget.max_sends_per_day
    uplift, curves = uplift_report(events, log, rules)
    return CampaignFigures(budget=budget_report(events, limit), by_day=budget_report(events, limit, by_day=True),
                           lift=lift_report(events, log), uplift=uplift, curves=curves, max_sends_per_day=limit)


def campaign_plots(figures: CampaignFigures, t, fmt, signed: Signed) -> dict[str, object]:
    """The page's charts: ``budget`` (sends per day by rule against the budget), ``lift`` (the
    purchase-rate difference per rule and window with its interval) and ``qini`` (rule -> the
    Qini curves of the three rankings)."""
    days = sorted(figures.by_day["as_of"].unique())
    sent = figures.by_day.pivot_table(index="as_of", columns="rule", values="sent", aggfunc="sum",
                                      fill_value=0).reindex(days, fill_value=0)
    budget = charts.sends_per_day([fmt.date(d) for d in days], {rule: [int(v) for v in sent[rule]] for rule in sent},
                                  figures.max_sends_per_day, t("sends_per_day"), "budget",
                                  t("max_sends_per_day"), t("date"))
    seen = figures.lift[figures.lift["observed"] & figures.lift["purchase_rate_diff"].notna()]
    lift = None
    if len(seen):
        labels = [f"{r.rule} · {t('days_n', n=r.window_days)}" for r in seen.itertuples()]
        hover = [f"{label}: {signed.pct(r.purchase_rate_diff)} [{signed.pct(r.purchase_rate_diff_low)}, "
                 f"{signed.pct(r.purchase_rate_diff_high)}]" for label, r in zip(labels, seen.itertuples())]
        lift = charts.differences(labels, seen["purchase_rate_diff"].tolist(), seen["purchase_rate_diff_low"].tolist(),
                                  seen["purchase_rate_diff_high"].tolist(), t("lift_chart"), "lift",
                                  t("purchase_rate_diff"), hover)
    qini = {rule: charts.qini_curves(curve["share_targeted"].tolist(),
                                     {t(name): curve[column].tolist() for name, column in RANKINGS.items()},
                                     curve["random"].tolist(), t("qini_curve_of", rule=rule), f"qini-{rule}",
                                     t("share_targeted"), t("incremental_per_event"), t("random_ranking"))
            for rule, curve in figures.curves.items()}
    return {"budget": budget, "lift": lift, "qini": qini}
