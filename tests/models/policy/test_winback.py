"""The win-back policy: dates that respect lapse, a P(alive) that can fall for one-time buyers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.clv.beta_geo import BetaGeoModel
from models.clv.modified_beta_geo import ModifiedBetaGeoModel
from models.clv.pareto_nbd import ParetoNBDModel
from models.policy.winback import WinbackPolicy

AS_OF = pd.Timestamp("1998-06-30")


def _model(cls, **params):
    model = cls(time_unit_days=1.0)
    model.params_ = params
    model.log_likelihood_, model.n_customers_ = 0.0, 1
    return model


#: Daily CDNOW fits as of 1998-06-30 (measured with this code), rounded.
MBG = _model(ModifiedBetaGeoModel, r=0.689, alpha=69.2, a=0.492, b=0.859)
PARETO = _model(ParetoNBDModel, r=0.611, alpha=95.3, s=0.313, beta=43.1)
BG = _model(BetaGeoModel, r=0.267, alpha=41.9, a=0.484, b=2.11)


def _customers(frequency, recency, T) -> pd.DataFrame:
    frame = pd.DataFrame({"frequency": np.asarray(frequency, float), "recency": np.asarray(recency, float),
                          "T": np.asarray(T, float)})
    frame["days_since_last_purchase"] = frame["T"] - frame["recency"]
    return frame


@settings(max_examples=200, deadline=None)
@given(frequency=st.integers(0, 30), T=st.integers(1, 900), data=st.data(),
       model=st.sampled_from([MBG, PARETO, BG]))
def test_the_longer_silent_never_gets_a_later_winback_date(frequency, T, data, model):
    if frequency == 0:
        recency_a = recency_b = 0                      # one-time buyers: silence is their whole age
        T_a, T_b = T, data.draw(st.integers(T, 1200))
        frame = _customers([0, 0], [0, 0], [T_b, T_a])   # same history, the first silent longer
    else:
        recency_b = data.draw(st.integers(0, T))
        recency_a = data.draw(st.integers(0, recency_b))  # a: last purchase earlier, longer silent
        frame = _customers([frequency] * 2, [recency_a, recency_b], [T, T])
    days = WinbackPolicy().winback_days(model, frame)
    longer, shorter = days
    if np.isnan(shorter):
        return                                         # nothing planned for the fresher one
    assert not np.isnan(longer) and longer <= shorter


def test_dates_come_from_the_purchase_models_p_alive_for_one_time_buyers():
    # 545 days silent, one purchase: customer 00001 of CDNOW as of 1998-06-30
    lapsed = _customers([0], [0], [545])
    assert MBG.predict_p_alive(lapsed)[0] < 0.35
    assert PARETO.predict_p_alive(lapsed)[0] < 0.35
    assert BG.predict_p_alive(lapsed)[0] == pytest.approx(1.0)      # BG/NBD's blind spot
    policy = WinbackPolicy()
    assert policy.winback_days(MBG, lapsed)[0] == 0                  # act now, not in centuries
    recent = _customers([0, 0], [0, 0], [10, 400])
    d_recent, d_old = policy.winback_days(MBG, recent)
    assert 0 < d_recent and d_old <= d_recent


def test_overdue_day_is_the_gap_quantile_after_the_last_purchase():
    policy = WinbackPolicy(overdue_quantile=0.8, p_alive_threshold=0.01)   # crossing out of the way
    frame = _customers([5], [300], [320])
    r, alpha = MBG.params_["r"], MBG.params_["alpha"]
    gap = (alpha + 320) * (0.2 ** (-1 / (r + 5)) - 1)
    assert policy.winback_days(MBG, frame)[0] == np.ceil(gap - 20)


def test_decide_ranks_value_at_risk_and_flags_now():
    frame = _customers([0, 3, 3], [0, 100, 290], [545, 300, 300])
    decided = WinbackPolicy().decide(MBG, frame, np.array([0.9, 0.5, 0.2]), np.array([10.0, 100.0, 100.0]), AS_OF)
    assert list(decided["priority"]) == [3, 1, 2]
    np.testing.assert_allclose(decided["value_at_risk"], [9.0, 50.0, 20.0])
    assert decided["winback_now"].iloc[0] and decided["winback_date"].iloc[0] == AS_OF
    assert (decided["winback_date"].dropna() >= AS_OF).all()


def test_nothing_planned_beyond_max_days():
    policy = WinbackPolicy(max_days=5, p_alive_threshold=0.01)
    fresh = _customers([20], [500], [500])               # bought today, buys often: due in weeks
    assert np.isnan(policy.winback_days(MBG, fresh)[0]) or policy.winback_days(MBG, fresh)[0] <= 5


@pytest.mark.parametrize("bad", [dict(overdue_quantile=1.0), dict(p_alive_threshold=0.0), dict(max_days=0)])
def test_settings_are_checked(bad):
    with pytest.raises(ValueError):
        WinbackPolicy(**bad)


def test_the_winback_ranking_puts_value_first_and_breaks_ties_by_id():
    from models.policy.winback import winback_mask, winback_ranking

    order = winback_ranking([5.0, 9.0, 5.0, 1.0], ["b", "z", "a", "c"])
    assert order.tolist() == [1, 2, 0, 3]
    labels = np.array([["Loyal", "忠誠"], ["At risk", "流失風險"], ["Loyal", "忠誠"], ["New", "新客"]], dtype=object)
    keep = winback_mask([5.0, 9.0, 5.0, 1.0], labels, labels, ["忠誠"], (), min_value=2.0)
    assert keep.tolist() == [True, False, True, False]
