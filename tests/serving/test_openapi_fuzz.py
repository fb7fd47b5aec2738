"""Schemathesis against the service's own OpenAPI document: whatever it sends, no 5xx.

(Operations are looked up by hand: schemathesis' ``from_fixture`` does not run on pytest 9.)
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from serving_support import KEYS

OPERATIONS = [("POST", "/score"), ("POST", "/score_history"), ("POST", "/winback"), ("GET", "/info"),
              ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")]


@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_dict(httpx.get(server + "/docs.json").json())


def test_the_document_lists_every_endpoint(api_schema):
    listed = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert set(OPERATIONS) <= listed


@pytest.mark.parametrize("method,path", OPERATIONS)
def test_no_server_errors(api_schema, server, method, path):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        response = case.call(base_url=server, headers={"Authorization": f"Bearer {KEYS[0]}"}, timeout=60)
        assert response.status_code < 500, (case.body, response.text[:300])

    check()
