"""Webhook delivery: batches signed like Stripe's and GitHub's, and the check a receiver runs.

The header ``Winback-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`` is
computed over the exact bytes sent; :func:`verify_signature` checks it (receivers should also
refuse an old ``t``). The outbox (:class:`crm.outbox.Outbox`) decides what to send and records
the outcome; this module signs, posts and verifies. The model-health webhook of ``winback
monitor`` is signed the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time

import httpx

SIGNATURE_HEADER = "Winback-Signature"
SECRET_VARIABLE = "WINBACK_WEBHOOK_SECRET"
#: Characters of a receiver's answer kept in an event's ``last_error``.
ERROR_CHARS = 200


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Winback-Signature`` header value for ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def verify_signature(secret: str, header: str | None, body: bytes, tolerance_seconds: float = 300,
                     now: float | None = None) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` at a time within ``tolerance_seconds``
    of ``now`` (default: the clock). Any ``v1`` may match (several during a secret rotation);
    digests are compared in constant time. A malformed header is simply not valid."""
    if not header or not secret:
        return False
    timestamp, candidates = None, []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_seconds:
        return False
    expected = _digest(secret, timestamp, body)
    return any(hmac.compare_digest(expected.encode("ascii"), c.encode("utf-8", "replace")) for c in candidates)


def secret_from_env(name: str = SECRET_VARIABLE) -> str:
    """The webhook signing secret from the environment variable ``name``."""
    secret = os.environ.get(name, "")
    if not secret.strip():
        raise ValueError(f"the webhook signing secret is missing: set the environment variable {name}")
    return secret


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()


def post_signed(client: httpx.Client, url: str, secret: str, body: bytes) -> str | None:
    """POST one signed batch (signed afresh, so retries carry a current timestamp); ``None`` on
    2xx, else what went wrong, without the request body."""
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body, int(time.time()))}
    try:
        response = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}"[:ERROR_CHARS * 2]
    if response.is_success:
        return None
    answer = response.text.strip().replace("\n", " ")[:ERROR_CHARS]
    return f"HTTP {response.status_code}" + (f": {answer}" if answer else "")
