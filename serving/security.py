"""API keys with roles, dashboard sessions, body size and the model-version header; a log filter.

Every API path except the health and documentation ones needs ``Authorization: Bearer KEY``
with a configured key of the ``scorer`` or ``admin`` role, compared in constant time. The
dashboard (``/ui``) takes no bearer key: it signs people in with a ``viewer`` or ``admin`` key
through a form and then reads a signed session cookie (:class:`Sessions`); the dashboard app
(:class:`serving.dashboard.app.Gate`) checks the session, the Guard only limits the body. An API
POST must be ``application/json`` (415 otherwise: BentoML would parse any other type as JSON,
or as a form). Bodies larger than the limit are
refused with 413 before the service parses them. Every answer, errors included, carries ``X-Model-Version``.
A key without the API's role (a ``viewer`` key) is refused with 403; a key over its rate limit
(:mod:`serving.ratelimit`) with 429 and ``Retry-After``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from serving.config import API_ROLES, ApiKey

if TYPE_CHECKING:
    from serving.ratelimit import RateLimiter

#: Paths open without a key: BentoML's probes and metrics, and the API's own description.
OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics", "/docs.json", "/", "/docs"})
OPEN_PREFIXES = ("/static_content/",)
#: The dashboard's mount: its own sign-in and sessions, no bearer key.
DASHBOARD_PREFIX = "/ui"

MODEL_VERSION_HEADER = "X-Model-Version"
REQUEST_ID_HEADER = "X-Request-ID"
#: What a client's ``X-Request-ID`` may hold (so it can go into a log line as it is).
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
#: The request id of the request being answered (for BentoML's access-log lines).
CURRENT_REQUEST_ID: ContextVar[str] = ContextVar("winback_request_id", default="-")


class RequestIds:
    """Request ids: the client's ``X-Request-ID`` when it is one (letters, digits, ``._:-``, up
    to 128), else a new one, this process's random prefix and a counter (cheap and unique)."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(4)
        self._count = itertools.count(1)

    def of(self, offered: bytes | None) -> tuple[str, bool]:
        """(the request's id, whether the offered one was usable or absent)."""
        if offered is None:
            return f"{self._prefix}-{next(self._count):x}", True
        if _REQUEST_ID.fullmatch(offered):
            return offered.decode(), True
        return f"{self._prefix}-{next(self._count):x}", False


class KeyRing:
    """The accepted keys and their roles. Lookups compare with every key, in constant time each,
    so the time taken does not tell which key (or role) matched."""

    def __init__(self, keys: Iterable[ApiKey | str]) -> None:
        parsed = [k if isinstance(k, ApiKey) else ApiKey.parse(k) for k in keys]
        self._keys = [(k.key.encode(), k.role) for k in parsed]

    def __bool__(self) -> bool:
        return bool(self._keys)

    def roles_of(self, offered: bytes | str) -> frozenset[str]:
        """Every role the offered key has (empty if it is not a configured key)."""
        if isinstance(offered, str):
            offered = offered.encode()
        roles = set()
        for key, role in self._keys:                           # no early exit: time does not tell which
            if hmac.compare_digest(offered, key):
                roles.add(role)
        return frozenset(roles)

    def accepts(self, authorization: bytes | None, roles: frozenset[str] = API_ROLES) -> bool:
        """Whether an ``Authorization: Bearer KEY`` header carries a key of one of ``roles``."""
        return bool(self.identify(authorization)[1] & roles)

    def identify(self, authorization: bytes | None) -> tuple[int, frozenset[str]]:
        """(which configured key, its roles) for an ``Authorization: Bearer KEY`` header; (-1, no
        roles) when it carries none. Every key is compared, in constant time each."""
        if not authorization or not authorization[:7].lower() == b"bearer ":
            return -1, frozenset()
        offered = authorization[7:].strip()
        slot, roles = -1, set()
        for i, (key, role) in enumerate(self._keys):
            if hmac.compare_digest(offered, key):
                roles.add(role)
                slot = i if slot < 0 else slot
        return slot, frozenset(roles)

    def __len__(self) -> int:
        return len(self._keys)


@dataclass(frozen=True)
class Session:
    """A signed-in dashboard session: the role, its id, when it ends (epoch seconds)."""

    role: str
    sid: str
    expires: int


class Sessions:
    """Signed, expiring dashboard sessions and the CSRF tokens bound to them.

    A session cookie is ``base64(json{role, sid, exp}).HMAC-SHA256`` under a server secret: it
    names the role, never the key, and cannot be altered or extended without the secret. A CSRF
    token is the HMAC of what it is bound to (the session id, or before sign-in a random
    pre-session cookie), so a form posted from another site cannot carry a valid one.
    """

    def __init__(self, secret: bytes, lifetime_seconds: float = 8 * 3600,
                 clock: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.lifetime_seconds = lifetime_seconds
        self.clock = clock

    def _sign(self, text: bytes, purpose: bytes) -> str:
        digest = hmac.new(self.secret, purpose + b"\0" + text, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self, role: str) -> str:
        """A new session cookie value for ``role``."""
        body = json.dumps({"role": role, "sid": secrets.token_urlsafe(16),
                           "exp": int(self.clock() + self.lifetime_seconds)}, separators=(",", ":"))
        payload = base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")
        return f"{payload}.{self._sign(payload.encode(), b'session')}"

    def read(self, cookie: str | None) -> Session | None:
        """The session a cookie carries, or None if it is missing, forged or expired."""
        if not cookie or cookie.count(".") != 1:
            return None
        payload, signature = cookie.split(".")
        if not hmac.compare_digest(signature.encode(), self._sign(payload.encode(), b"session").encode()):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            session = Session(str(data["role"]), str(data["sid"]), int(data["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > self.clock() else None

    def csrf_token(self, binding: str) -> str:
        """The CSRF token bound to ``binding`` (a session id or a pre-session cookie)."""
        return self._sign(binding.encode(), b"csrf")

    def check_csrf(self, binding: str | None, token: str | None) -> bool:
        """Whether ``token`` is the CSRF token of ``binding``."""
        if not binding or not token:
            return False
        return hmac.compare_digest(token.encode(), self.csrf_token(binding).encode())


class SignInThrottle:
    """Failed dashboard sign-ins per client address: after ``limit`` failures within
    ``window_seconds``, that address waits until its oldest failure leaves the window.

    Keys are long random strings, so guessing one is hopeless anyway; the throttle keeps a
    script from trying millions of them and from flooding the log. It is kept in memory by
    each worker process; at most ``max_addresses`` are tracked (the stalest are forgotten).
    """

    def __init__(self, limit: int = 10, window_seconds: float = 300.0, max_addresses: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self.max_addresses = max_addresses
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, address: str) -> int:
        """Whole seconds ``address`` must wait before trying again; 0 when it may try now."""
        failures = self._recent(address)
        if len(failures) < self.limit:
            return 0
        return max(1, int(failures[0] + self.window_seconds - self.clock() + 0.999))

    def failed(self, address: str) -> None:
        """Count a failed sign-in from ``address``."""
        self._failures.setdefault(address, deque()).append(self.clock())
        if len(self._failures) > self.max_addresses:
            stalest = min(self._failures, key=lambda a: self._failures[a][-1] if self._failures[a] else 0.0)
            del self._failures[stalest]

    def succeeded(self, address: str) -> None:
        """Forget ``address``'s failures after a good sign-in."""
        self._failures.pop(address, None)

    def _recent(self, address: str) -> deque[float]:
        failures = self._failures.get(address, deque())
        while failures and failures[0] <= self.clock() - self.window_seconds:
            failures.popleft()
        return failures


class Guard:
    """ASGI middleware. ``context`` is called per request and returns (keys, max body bytes,
    model version[, rate limiter]); BentoML builds the middleware before the service, so it asks late."""

    def __init__(self, app, context: Callable[[], tuple | None]) -> None:
        self.app = app
        self.context = context

    async def __call__(self, scope, receive, send):
        """Refuse or pass on one request (see the class)."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        ctx = self.context()
        path = scope["path"]
        if ctx is None:                                         # the service is still starting
            if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
                return await self.app(scope, receive, send)
            return await _reply(send, 503, {"error": "the service is starting; retry shortly"})
        keys, max_body, version, *more = ctx
        limiter = more[0] if more else None
        name = MODEL_VERSION_HEADER.lower().encode()

        async def send_with_version(message):
            # an answer that names its model version already carries the header (set from the
            # state it was computed with); every other answer gets the one read here
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                if not any(key.lower() == name for key, _ in headers):
                    message = dict(message, headers=[*headers, (name, version.encode())])
            await send(message)

        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return await self.app(scope, receive, send_with_version)
        headers = dict(scope["headers"])
        if path == DASHBOARD_PREFIX or path.startswith(DASHBOARD_PREFIX + "/"):
            return await self._limited(scope, receive, send_with_version, max_body, headers)
        refused = api_refusal(keys, headers, scope["method"], limiter)
        if refused is not None:
            return await _reply(send_with_version, *refused)
        return await self._limited(scope, receive, send_with_version, max_body, headers)

    async def _limited(self, scope, receive, send_with_version, max_body: int, headers: dict):
        """Pass the request on with its body read up to ``max_body`` bytes (413 beyond)."""
        declared = headers.get(b"content-length")
        if scope["method"] not in ("POST", "PUT", "PATCH") and not _over(declared, max_body):
            return await self.app(scope, receive, send_with_version)
        try:
            buffered = await read_body(receive, max_body, declared)
        except BodyTooLarge:
            return await _reply(send_with_version, 413, too_large(max_body))
        if buffered is None:                                    # the client went away
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": buffered, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send_with_version)


def api_refusal(keys: KeyRing, headers: dict[bytes, bytes], method: str,
                limiter: RateLimiter | None = None) -> tuple[int, dict, list] | None:
    """Why an API request is refused before its body is read, as (status, payload, extra
    headers): 401 without a valid key, 403 for a key without the API's role (a viewer key), 429
    for a key over its rate limit, 415 for a body that is not JSON; None if it may go on."""
    slot, roles = keys.identify(headers.get(b"authorization"))
    if not roles:
        return (401, {"error": "missing or invalid API key: send the header 'Authorization: Bearer <key>'",
                      "field": "Authorization"}, [(b"www-authenticate", b'Bearer realm="winback"')])
    if not roles & API_ROLES:
        return 403, {"error": f"this key may not call the scoring API (role {', '.join(sorted(roles))}; "
                              "it needs scorer or admin)", "field": "Authorization"}, []
    if limiter is not None:
        wait = limiter.take(slot)
        if wait:
            return 429, {"error": f"too many requests for this key: at most {limiter.limit} "
                                  f"(WINBACK_RATE_LIMIT); retry after {wait} s", "field": "Authorization"}, \
                [(b"retry-after", str(wait).encode())]
    if method in ("POST", "PUT", "PATCH") and not _is_json(headers.get(b"content-type")):
        return 415, {"error": "send the request as JSON: 'Content-Type: application/json'",
                     "field": "Content-Type"}, []
    return None


class BodyTooLarge(Exception):
    """A request body over the limit (declared or counted as read)."""


async def read_body(receive, max_body: int, declared: bytes | None = None) -> bytes | None:
    """The whole request body, or None if the client went away first. Raises
    :class:`BodyTooLarge` when ``Content-Length`` (``declared``) or the bytes read pass ``max_body``."""
    if _over(declared, max_body):
        raise BodyTooLarge
    size, more, chunks = 0, True, []
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body:
            raise BodyTooLarge
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _over(declared: bytes | None, max_body: int) -> bool:
    return declared is not None and declared.isdigit() and int(declared) > max_body


def _is_json(content_type: bytes | None) -> bool:
    return content_type is not None and content_type.split(b";")[0].strip().lower() == b"application/json"


def too_large(limit: int) -> dict:
    """The 413 answer's body for a body over ``limit`` bytes."""
    return {"error": f"request body too large: at most {limit:,} bytes (WINBACK_MAX_BODY_BYTES)",
            "field": "body"}


async def _reply(send, status: int, payload: dict, headers: list | None = None) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class NoRequestData(logging.Filter):
    """Drop the traceback of request validation errors from BentoML's log.

    BentoML logs a request that fails validation with its pydantic error, whose text quotes the
    offending input (customer ids, amounts). The client gets the full message; the log keeps
    only the path and the error count.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Strip the input from a request validation error's record; keep the record."""
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            if type(exc).__name__ == "ValidationError" or _is_client_error(exc):
                count = exc.error_count() if hasattr(exc, "error_count") else 1
                record.msg = f"{record.getMessage()}: {type(exc).__name__} ({count} error(s))"
                record.args = ()
                record.exc_info = None
                record.exc_text = None
                record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _is_client_error(exc: BaseException) -> bool:
    code = getattr(getattr(exc, "error_code", None), "value", 500)
    return isinstance(code, int) and 400 <= code < 500


def install_log_filter() -> None:
    """Attach :class:`NoRequestData` to the loggers BentoML reports request errors on (once)."""
    for name in ("bentoml._internal.server.http_app", "_bentoml_impl.server.app", "bentoml.serve"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, NoRequestData) for f in logger.filters):
            logger.addFilter(NoRequestData())
