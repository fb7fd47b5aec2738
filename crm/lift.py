"""Did the triggers work? Treated versus holdout, once the outcomes are in the log (issue #10).

Every fired event (customer ``c``, rule, day ``d``, group ``send`` or ``holdout``) is followed for
``W`` days: the customer *purchased* when the log has a purchase in ``(d, d + W]`` (after the
end of day ``d``, up to the end of day ``d + W``), and the event's *revenue* is the sum of those
purchases' amounts: the same window as :func:`features.build_labels`. Per rule (and day) and
window the report compares the send group with the holdout:

* ``purchase_rate_diff`` = rate(send) - rate(holdout), with Newcombe's hybrid score interval
  (Newcombe 1998, method 10: Wilson intervals for each rate, combined by square-and-add). It
  keeps its coverage at rates near 0 and with a small holdout, where the Wald interval is too
  narrow.
* ``revenue_per_customer_diff`` = mean revenue(send) - mean revenue(holdout), with Welch's
  interval (t with Welch-Satterthwaite degrees of freedom; unequal group sizes and variances).
* ``messages_sent``: the cost side, every send event of the rule (and day).

Events the day's budget skipped (``skipped_budget``) were never randomised: they are left out
here and counted by :func:`budget_report`.

A window is counted only once it has ended by the log's last day: an event whose window runs
past it is left out of the comparison (an unobserved day is not a day without a purchase), and
the row says ``observed = False``. Each event is a unit; the intervals assume events are
independent, so a customer who fires the same rule on many days makes them somewhat too narrow.

References
----------
Newcombe, R. G. (1998). Interval estimation for the difference between independent
proportions: comparison of eleven methods. *Statistics in Medicine* 17, 873-890.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from crm.rules import SKIPPED
from features.build import parse_cutoff
from features.sql import money_sum
from features.transactions import TransactionLog

GROUPS = ("send", "holdout")
REPORT_COLUMNS = ("customer_id", "rule", "as_of", "group")


def lift_report(events: pd.DataFrame, log: TransactionLog, windows: Sequence[int] = (30, 60, 90),
                confidence: float = 0.95, by_day: bool = False,
                observation_end: dt.date | str | None = None) -> pd.DataFrame:
    """Send versus holdout purchase rate and revenue per rule (and day) and window.

    Parameters
    ----------
    events : DataFrame
        One row per fired event: ``customer_id``, ``rule``, ``as_of`` (``YYYY-MM-DD``) and
        ``group`` (``"send"`` or ``"holdout"``).
    log : TransactionLog
        The outcomes: the transactions after the events.
    windows : sequence of int
        Outcome windows in days after ``as_of``.
    confidence : float
        Level of the intervals of the differences.
    by_day : bool
        One row per rule, ``as_of`` and window instead of per rule and window.
    observation_end : date or str, optional
        The last day the log covers; by default the day of its last transaction.

    Returns
    -------
    DataFrame
        Sorted by rule, (``as_of``,) ``window_days``; columns ``rule``, (``as_of``,)
        ``window_days``, ``observed`` (every event's window ended by ``observation_end``),
        ``n_send``, ``n_holdout`` (events in the comparison: those whose window ended),
        ``messages_sent`` (all send events: equals ``n_send`` when observed),
        ``purchase_rate_send``, ``purchase_rate_holdout``, ``purchase_rate_diff``,
        ``purchase_rate_diff_low``, ``purchase_rate_diff_high``, ``revenue_per_customer_send``,
        ``revenue_per_customer_holdout``, ``revenue_per_customer_diff``,
        ``revenue_per_customer_diff_low``, ``revenue_per_customer_diff_high``. A rate or mean is
        NaN when its group has no observed event, an interval when it cannot be estimated.
    """
    windows = _check_windows(windows)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")
    frame = _check_events(events[events["group"].astype(str) != SKIPPED] if "group" in events else events)
    end = pd.Timestamp(observation_end) if observation_end is not None else log.report.last_timestamp
    if end is None:
        raise ValueError("the log has no transactions: no outcome can be observed")
    end_day = end.normalize().date().isoformat()
    keys = ["rule", "as_of"] if by_day else ["rule"]

    name = f"trigger_events_{uuid.uuid4().hex}"
    log.con.register(name, frame)
    try:
        counts = log.con.execute(_outcome_sql(name, windows, keys, end_day)).df()
    finally:
        log.con.unregister(name)
    return _compare(counts, keys, confidence)


def event_outcomes(events: pd.DataFrame, log: TransactionLog, window_days: int | Sequence[int] | pd.Series,
                   observation_end: dt.date | str | None = None) -> pd.DataFrame:
    """Each event's own outcome: ``purchased`` and ``revenue`` in ``(as_of, as_of + window]``, seen
    only up to the end of ``observation_end`` (default: the log's last day), and ``observed``,
    whether the whole window had ended by then.

    ``events`` needs ``customer_id`` and ``as_of``; ``window_days`` is one window or one per event.
    Purchases after ``observation_end`` are never read, so an outcome computed as of a day uses
    nothing the day could not know. Returns ``events`` with the three columns added, in its order.
    """
    frame = events.reset_index(drop=True)
    windows = (np.full(len(frame), int(window_days)) if isinstance(window_days, (int, np.integer))
               else np.asarray(window_days, dtype="int64"))
    if len(windows) != len(frame) or (windows < 1).any():
        raise ValueError(f"window_days must be at least 1, one per event ({len(frame)}); got {len(windows)}")
    end = pd.Timestamp(observation_end) if observation_end is not None else log.report.last_timestamp
    if end is None:
        raise ValueError("the log has no transactions: no outcome can be observed")
    end_day = end.normalize().date().isoformat()
    base = pd.DataFrame({"event": np.arange(len(frame)), "customer_id": frame["customer_id"].astype(str),
                         "as_of": pd.to_datetime(frame["as_of"]).dt.normalize(), "window_days": windows})
    name = f"trigger_outcomes_{uuid.uuid4().hex}"
    log.con.register(name, base)
    try:
        out = log.con.execute(f"""
            SELECT e.event,
                CAST(e.as_of AS DATE) + CAST(e.window_days AS INTEGER) <= DATE '{end_day}' AS observed,
                count(t.ts) > 0 AS purchased,
                {money_sum('t.amount')} AS revenue
            FROM {name} AS e LEFT JOIN transactions AS t
                ON t.customer_id = e.customer_id
                AND t.ts >= CAST(e.as_of AS DATE) + INTERVAL 1 DAY
                AND t.ts < CAST(e.as_of AS DATE) + to_days(CAST(e.window_days + 1 AS INTEGER))
                AND t.ts < DATE '{end_day}' + INTERVAL 1 DAY
            GROUP BY ALL ORDER BY e.event""").df()
    finally:
        log.con.unregister(name)
    return frame.assign(observed=out["observed"].to_numpy(bool), purchased=out["purchased"].to_numpy(bool),
                        revenue=out["revenue"].to_numpy(float))


def budget_report(events: pd.DataFrame, max_sends_per_day: int | None = None, by_day: bool = False) -> pd.DataFrame:
    """What the day's budget did, per rule: events selected (``sent``, ``held_out``), skipped by the
    budget (``skipped_budget``) and the ``days`` with events; with ``max_sends_per_day``, the
    busiest day's sends (all rules) against it; and how the rule's latest day was ranked:
    ``last_day``, ``ranking`` (``uplift_model`` or ``value_at_risk``, the prior), ``uplift_model``
    (the model's name, empty for the prior) and ``uplift_note`` (why), from that day's events'
    ``fields`` (empty when the events carry none).

    With ``by_day``, one row per day and rule instead: ``as_of``, ``rule``, ``sent``, ``held_out``,
    ``skipped_budget``, ``day_sends`` (that day's sends, all rules) and ``max_sends_per_day``."""
    frame = events.assign(group=events["group"].astype(str), as_of=events["as_of"].astype(str))
    keys = ["as_of", "rule"] if by_day else ["rule"]
    counts = (frame.pivot_table(index=keys, columns="group", values="customer_id", aggfunc="count", fill_value=0)
              .reindex(columns=[*GROUPS, SKIPPED], fill_value=0))
    out = counts.rename(columns={"send": "sent", "holdout": "held_out"}).reset_index()
    out.columns.name = None
    sends = frame[frame["group"] == "send"].groupby("as_of").size()
    if by_day:
        out["day_sends"] = out["as_of"].map(sends).fillna(0).astype("int64")
        out["max_sends_per_day"] = max_sends_per_day
        return out.sort_values(keys, ignore_index=True)
    out["days"] = frame.groupby("rule")["as_of"].nunique().reindex(out["rule"]).to_numpy()
    out["busiest_day_sends"] = int(sends.max()) if len(sends) else 0
    out["max_sends_per_day"] = max_sends_per_day
    latest = frame[frame["as_of"] == frame.groupby("rule")["as_of"].transform("max")].drop_duplicates("rule")
    fields = {rule: (json.loads(f) if isinstance(f, str) and f else {})
              for rule, f in zip(latest["rule"], latest["fields"] if "fields" in latest else [None] * len(latest))}
    out["last_day"] = out["rule"].map(dict(zip(latest["rule"], latest["as_of"])))
    for name in ("ranking", "uplift_model", "uplift_note"):
        out[name] = [fields[rule].get(name) or "" for rule in out["rule"]]
    return out.reset_index(drop=True)


def uplift_report(events: pd.DataFrame, log: TransactionLog, rules, observation_end: dt.date | str | None = None,
                  n_boot: int = 200, seed: int = 0) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Per rule, how well three orders of its matured randomised events found the customers the
    message moved: the uplift each event recorded (``expected_uplift``; a constant prior ranks at
    random), churn risk and value at risk, by the Qini coefficient and AUUC with intervals
    (:func:`crm.uplift_metrics.compare_rankings`, the recorded uplift as reference);
    and per rule the Qini curves at every tenth of the events: ``share_targeted``, ``qini`` (the
    recorded ranking), ``random`` (its chance line), ``uplift_gain``, ``qini_churn_risk`` and
    ``qini_value_at_risk``.

    The outcome is a purchase within the rule's ``window_days``; ``rules`` is a
    :class:`crm.rules.TriggerRules`. A rule without sent and held-out matured events is
    left out."""
    from crm.uplift_metrics import compare_rankings, qini_curve

    end = pd.Timestamp(observation_end) if observation_end is not None else log.report.last_timestamp
    windows = {r.name: r.window_days for r in rules.rules}
    frame = events[events["group"].isin(GROUPS) & events["rule"].isin(list(windows))].reset_index(drop=True)
    if frame.empty or end is None:
        return pd.DataFrame(), {}
    frame = event_outcomes(frame, log, frame["rule"].map(windows).to_numpy(), observation_end=end)
    frame = frame[frame["observed"]]
    fields = pd.DataFrame([json.loads(f) if isinstance(f, str) and f else {} for f in frame["fields"]],
                          index=frame.index)
    tables, curves = [], {}
    for rule, rows in frame.groupby("rule", sort=True):
        t = (rows["group"] == "send").to_numpy()
        if t.all() or not t.any():
            continue
        f = fields.loc[rows.index]
        scores = {name: pd.to_numeric(f.get(column, pd.Series(np.nan, index=f.index)), errors="coerce")
                  .fillna(0.0).to_numpy(float)
                  for name, column in (("recorded_uplift", "expected_uplift"), ("churn_risk", "churn_probability"),
                                       ("value_at_risk", "value_at_risk"))}
        y = rows["purchased"].to_numpy(int)
        table = compare_rankings(scores, t, y, reference="recorded_uplift", n_boot=n_boot, seed=seed,
                                 clusters=rows["customer_id"].to_numpy())
        tables.append(table.assign(rule=rule, window_days=windows[rule], n_send=int(t.sum()),
                                   n_holdout=int((~t).sum()), uplift=y[t].mean() - y[~t].mean()))
        curve = qini_curve(scores["recorded_uplift"], t, y, seed=seed)
        for name in ("churn_risk", "value_at_risk"):
            curve[f"qini_{name}"] = qini_curve(scores[name], t, y, seed=seed)["qini"].to_numpy()
        at = np.searchsorted(curve["share_targeted"].to_numpy(), np.linspace(0, 1, 11) - 1e-12)
        curves[rule] = curve.iloc[np.minimum(at, len(curve) - 1)].reset_index(drop=True)
    if not tables:
        return pd.DataFrame(), {}
    out = pd.concat(tables, ignore_index=True)
    return out[["rule", "window_days", "n_send", "n_holdout", "uplift", *[c for c in out.columns
                if c not in ("rule", "window_days", "n_send", "n_holdout", "uplift")]]], curves


def _outcome_sql(events: str, windows: list[int], keys: list[str], end_day: str) -> str:
    """Per key, window and group: events fired, events observed, purchasers, revenue mean and variance."""
    key_list = ", ".join(f"e.{k}" for k in keys)
    window_list = ", ".join(str(w) for w in windows)
    return f"""
        WITH e AS (
            SELECT row_number() OVER () AS event, customer_id, rule, CAST(as_of AS DATE) AS as_of,
                   "group", w.window_days
            FROM {events} CROSS JOIN (SELECT unnest([{window_list}]) AS window_days) AS w),
        outcome AS (
            SELECT e.event, {key_list}, e.window_days, e."group",
                e.as_of + e.window_days <= DATE '{end_day}' AS observed,
                count(t.ts) > 0 AS purchased,
                {money_sum('t.amount')} AS revenue
            FROM e LEFT JOIN transactions AS t
                ON t.customer_id = e.customer_id
                AND t.ts >= e.as_of + INTERVAL 1 DAY
                AND t.ts < e.as_of + to_days(CAST(e.window_days + 1 AS INTEGER))
            GROUP BY ALL)
        SELECT {", ".join(keys)}, window_days, "group",
            count(*) AS fired,
            count(*) FILTER (WHERE observed) AS n,
            count(*) FILTER (WHERE observed AND purchased) AS purchasers,
            avg(revenue) FILTER (WHERE observed) AS revenue_mean,
            var_samp(revenue) FILTER (WHERE observed) AS revenue_var
        FROM outcome AS e
        GROUP BY ALL"""


def _compare(counts: pd.DataFrame, keys: list[str], confidence: float) -> pd.DataFrame:
    """One row per key and window: the groups side by side and the differences with intervals."""
    index = [*keys, "window_days"]
    wide = counts.pivot_table(index=index, columns="group",
                              values=["fired", "n", "purchasers", "revenue_mean", "revenue_var"],
                              aggfunc="first", dropna=False)
    wide.columns = [f"{value}_{group}" for value, group in wide.columns]
    for column in (f"{v}_{g}" for v in ("fired", "n", "purchasers", "revenue_mean", "revenue_var")
                   for g in GROUPS):
        if column not in wide:
            wide[column] = np.nan
    for column in ("fired_send", "fired_holdout", "n_send", "n_holdout", "purchasers_send",
                   "purchasers_holdout"):
        wide[column] = wide[column].fillna(0).astype("int64")
    wide = wide.reset_index()
    if "as_of" in wide:
        wide["as_of"] = pd.to_datetime(wide["as_of"]).dt.strftime("%Y-%m-%d")

    z = stats.norm.ppf(0.5 + confidence / 2)
    n1, n0 = wide["n_send"].to_numpy(float), wide["n_holdout"].to_numpy(float)
    x1, x0 = wide["purchasers_send"].to_numpy(float), wide["purchasers_holdout"].to_numpy(float)
    rate_diff, rate_low, rate_high = newcombe_interval(x1, n1, x0, n0, z)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate1, rate0 = x1 / n1, x0 / n0
    m1, m0 = wide["revenue_mean_send"].to_numpy(float), wide["revenue_mean_holdout"].to_numpy(float)
    v1, v0 = wide["revenue_var_send"].to_numpy(float), wide["revenue_var_holdout"].to_numpy(float)
    rev_diff, rev_low, rev_high = welch_interval(m1, v1, n1, m0, v0, n0, confidence)

    return pd.DataFrame({
        **{k: wide[k] for k in index},
        "observed": (wide["n_send"] + wide["n_holdout"]) == (wide["fired_send"] + wide["fired_holdout"]),
        "n_send": wide["n_send"], "n_holdout": wide["n_holdout"], "messages_sent": wide["fired_send"],
        "purchase_rate_send": rate1, "purchase_rate_holdout": rate0, "purchase_rate_diff": rate_diff,
        "purchase_rate_diff_low": rate_low, "purchase_rate_diff_high": rate_high,
        "revenue_per_customer_send": m1, "revenue_per_customer_holdout": m0,
        "revenue_per_customer_diff": rev_diff, "revenue_per_customer_diff_low": rev_low,
        "revenue_per_customer_diff_high": rev_high,
    }).sort_values(index, ignore_index=True)


def wilson_interval(x: np.ndarray, n: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    """Wilson's score interval for ``x`` successes in ``n`` trials (NaN where ``n`` is 0)."""
    x, n = np.asarray(x, float), np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = x / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def newcombe_interval(x1: np.ndarray, n1: np.ndarray, x0: np.ndarray, n0: np.ndarray,
                      z: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x1/n1 - x0/n0`` with Newcombe's hybrid score interval (1998, method 10)."""
    x1, n1, x0, n0 = (np.asarray(a, float) for a in (x1, n1, x0, n0))
    l1, u1 = wilson_interval(x1, n1, z)
    l0, u0 = wilson_interval(x0, n0, z)
    with np.errstate(invalid="ignore", divide="ignore"):
        p1, p0 = x1 / n1, x0 / n0
    diff = p1 - p0
    return (diff, diff - np.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2),
            diff + np.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2))


def welch_interval(m1: np.ndarray, v1: np.ndarray, n1: np.ndarray, m0: np.ndarray, v0: np.ndarray,
                   n0: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``m1 - m0`` with Welch's interval from the means, sample variances and sizes.

    NaN where a group has fewer than two events; a point interval where both variances are 0.
    """
    m1, v1, n1, m0, v0, n0 = (np.asarray(a, float) for a in (m1, v1, n1, m0, v0, n0))
    diff = m1 - m0
    with np.errstate(invalid="ignore", divide="ignore"):
        a, b = v1 / n1, v0 / n0
        se = np.sqrt(a + b)
        df = (a + b) ** 2 / (a * a / (n1 - 1) + b * b / (n0 - 1))
        half = np.where(se > 0, stats.t.ppf(0.5 + confidence / 2, df) * se, 0.0)
    half = np.where((n1 >= 2) & (n0 >= 2), half, np.nan)
    return diff, diff - half, diff + half


def _check_windows(windows: Sequence[int]) -> list[int]:
    out = []
    for w in windows:
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1:
            raise ValueError(f"windows must be whole numbers of days, at least 1, got {w!r}")
        out.append(int(w))
    if not out or len(set(out)) != len(out):
        raise ValueError(f"windows must be distinct and at least one, got {list(windows)!r}")
    return out


def _check_events(events: pd.DataFrame) -> pd.DataFrame:
    """The events' four columns, checked: known groups, ISO days, no event twice."""
    missing = [c for c in REPORT_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(f"events lack the column(s) {missing}; expected {list(REPORT_COLUMNS)}")
    frame = events.loc[:, list(REPORT_COLUMNS)].reset_index(drop=True)
    for column in ("customer_id", "rule"):
        empty = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
        if empty.any():
            raise ValueError(f"events row {int(np.flatnonzero(empty)[0])}: empty {column}")
        frame[column] = frame[column].astype(str)
    bad = ~frame["group"].isin(GROUPS)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"events row {row}: group must be one of {GROUPS}, got {frame['group'][row]!r}")
    days = frame["as_of"].astype(str)
    for day in days.unique():
        parse_cutoff(day)                  # ISO YYYY-MM-DD or a ValueError naming it
    frame["as_of"] = days.str.strip()
    twice = frame.duplicated(["customer_id", "rule", "as_of"])
    if twice.any():
        row = int(np.flatnonzero(twice)[0])
        raise ValueError(f"events row {row}: customer {frame['customer_id'][row]!r} fired rule "
                         f"{frame['rule'][row]!r} on {frame['as_of'][row]} twice")
    return frame
