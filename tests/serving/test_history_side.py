"""One truth with side data: a customer's scores from posted history, attributes and events
(``/score_history``'s path) equal the scores of the whole log with the customers file and the
events log (the feature job's and the service snapshot's path), for a model trained with both."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from benchmarks.synthetic import synthetic_shop
from features import ColumnMap, TransactionLog
from features.attributes import CustomerAttributes
from features.events import EngagementLog
from features.side import SideData
from serving.config import Limits
from serving.history import HistoryError, score_history
from serving.schemas import CustomerHistory
from training.pipeline import TrainConfig, fit_recipe, plan_origins

AS_OF = "2025-12-31"


@pytest.fixture(scope="module")
def shop():
    transactions, customers, events = synthetic_shop(1500, seed=3)
    log = TransactionLog.from_frame(transactions, ColumnMap())
    side = SideData(CustomerAttributes.from_frame(customers), EngagementLog.from_frame(events))
    config = TrainConfig(cutoff="2025-09-30", horizon_days=60, origins=2, origin_step_days=30)
    origins, calibration = plan_origins(pd.Timestamp(config.cutoff), 60, 2, 30, log.report.first_timestamp.normalize())
    scorer = fit_recipe(log, config, origins, calibration, side=side)
    return scorer, log, side, transactions, customers, events


def _posted(ids, transactions, customers, events) -> list[CustomerHistory]:
    out = []
    attributes = customers.set_index("customer_id")
    for cid in ids:
        lines = transactions[transactions["customer_id"] == cid]
        own = events[events["customer_id"] == cid]
        out.append(CustomerHistory.model_validate({
            "customer_id": cid,
            "transactions": [{"timestamp": t.isoformat(), "amount": float(a)}
                             for t, a in zip(lines["timestamp"], lines["amount"])],
            "attributes": {k: (v.item() if hasattr(v, "item") else v) for k, v in attributes.loc[cid].items()},
            "events": [{"timestamp": t.isoformat(), "event_type": e}
                       for t, e in zip(own["timestamp"], own["event_type"])],
        }, strict=False))
    return out


def test_posted_attributes_and_events_score_as_the_files_do(shop):
    scorer, log, side, transactions, customers, events = shop
    assert scorer.reference_.attributes and scorer.reference_.event_types
    whole = scorer.score(log, AS_OF, reasons=False, side=side).set_index("customer_id")
    ids = list(whole.index[:: len(whole) // 25][:25])
    posted = score_history(scorer, dt.date.fromisoformat(AS_OF), _posted(ids, transactions, customers, events),
                           Limits(), reasons=False)
    for answer in posted:
        row = whole.loc[answer["customer_id"]]
        assert answer["status"] == "ok"
        for field in ("churn_probability", "p_alive", "p_purchase_30d", "clv_12m", "value_at_risk"):
            assert answer[field] == pytest.approx(row[field], rel=1e-9, abs=1e-12), (answer["customer_id"], field)


def test_a_customer_without_events_counts_zero_events_as_in_a_log(shop):
    scorer, log, side, transactions, customers, events = shop
    posted = [h.model_copy(update={"events": []}) for h in _posted(list(customers["customer_id"][:3]), transactions,
                                                                   customers, events)]
    features, _ = scorer.features_for(pd.DataFrame({
        "customer_id": [p.customer_id for p in posted for _ in p.transactions],
        "timestamp": pd.to_datetime([t.timestamp for p in posted for t in p.transactions]),
        "amount": [t.amount for p in posted for t in p.transactions]}), AS_OF,
        SideData(None, EngagementLog.from_frame(pd.DataFrame(
            {"customer_id": pd.Series([], dtype=object), "timestamp": pd.Series([], dtype="datetime64[ns]"),
             "event_type": pd.Series([], dtype=object)}), allow_empty=True)))
    counts = [c for c in scorer.reference_.event_feature_columns if c.startswith("events_")]
    assert (features[counts].to_numpy() == 0).all()
    assert score_history(scorer, dt.date.fromisoformat(AS_OF), posted, Limits(), reasons=False)[0]["status"] == "ok"


def test_an_attribute_the_model_does_not_read_is_a_400_naming_it(shop):
    scorer, log, side, transactions, customers, events = shop
    posted = _posted(list(customers["customer_id"][:1]), transactions, customers, events)
    bad = [posted[0].model_copy(update={"attributes": {**posted[0].attributes, "shoe_size": 42}})]
    with pytest.raises(HistoryError) as error:
        score_history(scorer, dt.date.fromisoformat(AS_OF), bad, Limits(), reasons=False)
    assert error.value.status == 400 and error.value.field == "customers[0].attributes.shoe_size"
    assert np.isfinite(score_history(scorer, dt.date.fromisoformat(AS_OF), posted, Limits(), reasons=False)[0][
        "churn_probability"])


def test_the_customer_page_shows_the_attributes_as_known_on_the_day(shop):
    from serving.dashboard.customer import attribute_values

    scorer, log, side, transactions, customers, events = shop
    features, _ = scorer.features_for(log, AS_OF, side)
    values = scorer.model_input(features).set_index("customer_id", drop=False)
    cid = customers["customer_id"].iloc[0]
    shown = dict(attribute_values(scorer, values.loc[[cid]]))
    want = customers.set_index("customer_id").loc[cid]
    assert shown["channel"] == want["channel"] and shown["age"] == pytest.approx(float(want["age"]))
