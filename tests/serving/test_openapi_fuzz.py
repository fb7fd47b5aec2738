"""The contract a CRM integrates against: the OpenAPI document at ``/docs.json`` is valid OpenAPI
3.1 (openapi-spec-validator), says what the service does (required bodies, enums, every status
with its error schema, 405 with ``Allow``), matches its snapshot, and Schemathesis, run as an
integrator runs it (its CLI, every check, every phase, a fixed seed), finds nothing with a
scorer key, without a key and with a viewer key.

The snapshot of the document is ``openapi_snapshot.json`` beside this file. A change to the API
fails ``test_the_document_matches_its_snapshot``; when the change is meant, write the new one with
``WINBACK_UPDATE_OPENAPI_SNAPSHOT=1 .venv/bin/python -m pytest tests/serving/test_openapi_fuzz.py
-k snapshot`` and commit it with the change (the diff is the API change a reviewer reads).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from serving_support import KEYS, VIEWER_KEY

SNAPSHOT = Path(__file__).with_name("openapi_snapshot.json")
OPERATIONS = [("POST", "/score"), ("POST", "/score_history"), ("POST", "/winback"), ("GET", "/scores"),
              ("GET", "/triggers"), ("GET", "/info"), ("GET", "/healthz"), ("GET", "/livez"), ("GET", "/readyz"),
              ("GET", "/metrics")]
#: Hypothesis examples per operation and phase: about 800 cases in all with the coverage phase.
MAX_EXAMPLES = 25
SEED = 24


@pytest.fixture(scope="module")
def document(server) -> dict:
    answer = httpx.get(server + "/docs.json")
    assert answer.status_code == 200
    return answer.json()


def test_the_document_is_valid_openapi_of_the_version_it_declares(document):
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

    from serving.openapi import package_version

    assert document["openapi"] == "3.1.0"
    validate(document)                                 # raises when invalid
    assert document["info"]["version"] == package_version() == "0.1.0"
    with pytest.raises(OpenAPIValidationError):        # as BentoML declared it: 3.0.2 cannot say "type": "null"
        validate({**document, "openapi": "3.0.2"})


def test_the_document_matches_its_snapshot(document):
    current = json.dumps(document, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    if os.environ.get("WINBACK_UPDATE_OPENAPI_SNAPSHOT"):
        SNAPSHOT.write_text(current, encoding="utf-8")
    assert SNAPSHOT.is_file(), "no snapshot yet: see this module's docstring"
    assert current == SNAPSHOT.read_text(encoding="utf-8"), (
        "the OpenAPI document changed; if that is meant, update the snapshot (see this module's docstring)")


def test_the_document_says_what_the_service_does(document):
    paths, schemas = document["paths"], document["components"]["schemas"]
    assert {(m, p) for p, item in paths.items() for m in map(str.upper, item)} == set(OPERATIONS)
    assert {"ScoreRequest", "ScoreHistoryRequest", "WinbackRequest", "ScoreResponse", "WinbackResponse",
            "WinbackEntry", "CustomerScore", "ScoreLine", "TriggersResponse", "InfoResponse", "ErrorResponse",
            "Segment", "SegmentZhTw", "Tier", "TierZhTw"} <= set(schemas)
    assert not [name for name in schemas if "IODescriptor" in name or "__" in name]
    for path in ("/score", "/score_history", "/winback"):
        operation = paths[path]["post"]
        assert operation["requestBody"]["required"] is True
        assert operation["security"] == [{"bearer": []}]
        assert {"200", "400", "401", "403", "415", "429", "500", "503"} <= set(operation["responses"]), path
        for status, answer in operation["responses"].items():
            if status != "200":
                assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert schemas["Tier"]["enum"] == ["member", "silver", "gold"]
    assert schemas["TierZhTw"]["enum"] == ["一般會員", "銀卡會員", "金卡會員"]
    assert "Lost" in schemas["Segment"]["enum"] and "已流失" in schemas["SegmentZhTw"]["enum"]
    assert schemas["WinbackRequest"]["properties"]["lang"]["enum"] == ["en", "zh-TW"]
    assert schemas["CustomerScore"]["properties"]["status"]["enum"] == ["ok", "unknown_customer", "no_purchases"]
    assert schemas["ScoreRequest"]["properties"]["customer_ids"]["maxItems"] == 2000     # WINBACK_MAX_IDS
    assert schemas["WinbackRequest"]["properties"]["limit"]["maximum"] == 500            # WINBACK_MAX_LIMIT
    assert schemas["Transaction"]["properties"]["timestamp"]["type"] == "string"
    assert "security" not in paths["/healthz"]["get"]


@pytest.mark.parametrize("method,path", [("PUT", "/info"), ("DELETE", "/score"), ("GET", "/score"),
                                         ("PATCH", "/triggers"), ("POST", "/scores"), ("PUT", "/healthz")])
def test_an_undeclared_method_is_405_with_allow(server, auth, method, path):
    for headers in (auth, {}):                                   # with a key or without: the method is wrong
        answer = httpx.request(method, server + path, headers=headers)
        assert answer.status_code == 405, answer.text
        assert answer.headers["allow"] == ", ".join(m for m, p in OPERATIONS if p == path)
        assert answer.json()["field"] == "method"
    options = httpx.options(server + path)
    assert options.status_code == 204 and options.headers["allow"]


@pytest.mark.parametrize("path,body", [("/score", {"customer_ids": ["00001"]}), ("/winback", {}),
                                       ("/score_history", {"as_of": "1997-09-30", "customers": [
                                           {"customer_id": "a", "transactions": [{"timestamp": "1997-01-01",
                                                                                  "amount": 1}]}]})])
def test_a_viewer_key_is_refused_on_the_api_with_403(server, path, body):
    answer = httpx.post(server + path, json=body, headers={"Authorization": f"Bearer {VIEWER_KEY}"})
    assert answer.status_code == 403, answer.text
    assert "viewer" in answer.json()["error"]
    for other in ("/info", "/scores", "/triggers?date=1997-09-30"):
        assert httpx.get(server + other, headers={"Authorization": f"Bearer {VIEWER_KEY}"}).status_code == 403


# ---------------------------------------------------------------------- Schemathesis, as an integrator runs it


def run_schemathesis(server: str, folder: Path, *headers: str) -> dict:
    """``schemathesis run`` on the served document with every check, the given headers, a fixed
    seed; its JSON report."""
    report = folder / "report"
    command = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{server}/docs.json", "--checks", "all",
               "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--workers", "1", "--no-color",
               "--request-timeout", "60", "--report", "json", "--report-dir", str(report),
               *(part for header in headers for part in ("-H", header))]
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=900)
    reports = sorted(report.glob("*.json"))
    assert reports, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(reports[-1].read_text())
    print(f"schemathesis {' '.join(h.split(':')[0] for h in headers) or 'no key'}: "
          f"{result['test_cases']['generated']} cases, {len(result['failures'])} failures, "
          f"exit {result['exit_code']}, seed {result['seed']}")
    assert result["exit_code"] == 0 and not result["failures"] and not result["errors"], done.stdout[-6000:]
    return result


@pytest.mark.parametrize("who", ["scorer", "none", "viewer"])
def test_schemathesis_finds_nothing(server, tmp_path, who):
    headers = {"scorer": [f"Authorization: Bearer {KEYS[0]}"], "none": [],
               "viewer": [f"Authorization: Bearer {VIEWER_KEY}"]}[who]
    result = run_schemathesis(server, tmp_path, *headers)
    assert result["test_cases"]["generated"] >= 300
    assert result["complete"] and result["operations"]["tested"] == len(OPERATIONS) == result["operations"]["total"]
    phases = {name: phase["status"] for name, phase in result["phases"].items()}
    assert phases["coverage"] == phases["fuzzing"] == "success", phases
