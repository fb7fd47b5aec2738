"""`GET /triggers?date=`: the day's events for CRM systems that pull, send group only."""

from __future__ import annotations


def test_the_days_send_events_and_never_the_holdout(http):
    answer = http.get("/triggers", params={"date": "1997-09-30"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [e["customer_id"] for e in body["events"]] == ["00001"]        # 00002 is held out
    event = body["events"][0]
    assert event["rule"] == "winback_due" and event["fields"] == {"churn_probability": 0.9}
    assert len(event["idempotency_key"]) >= 16 and body["model_version"]
    assert http.get("/triggers", params={"date": "1997-10-01"}).json()["events"] == []


def test_a_bad_date_is_a_400_and_a_key_is_needed(http, server):
    import httpx

    assert http.get("/triggers", params={"date": "30/09/1997"}).status_code == 400
    assert httpx.get(f"{server}/triggers", params={"date": "1997-09-30"}).status_code == 401
