"""API keys, body size and the model-version header, as one ASGI middleware; and a log filter.

Every path except the health and documentation ones needs ``Authorization: Bearer KEY`` with a
configured key, compared in constant time. A POST must be ``application/json`` (415 otherwise:
BentoML would parse any other type as JSON, or as a form). Bodies larger than the limit are
refused with 413 before the service parses them. Every answer, errors included, carries ``X-Model-Version``.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Callable, Iterable

#: Paths open without a key: BentoML's probes and metrics, and the API's own description.
OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics", "/docs.json", "/", "/docs"})
OPEN_PREFIXES = ("/static_content/",)

MODEL_VERSION_HEADER = "X-Model-Version"


class KeyRing:
    """The accepted keys. :meth:`accepts` compares with every key, in constant time each."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = [k.encode() for k in keys]

    def __bool__(self) -> bool:
        return bool(self._keys)

    def accepts(self, authorization: bytes | None) -> bool:
        if not authorization or not authorization[:7].lower() == b"bearer ":
            return False
        offered = authorization[7:].strip()
        ok = False
        for key in self._keys:                                 # no early exit: time does not tell which
            ok |= hmac.compare_digest(offered, key)
        return ok


class Guard:
    """ASGI middleware. ``context`` is called per request and returns (keys, max body bytes,
    model version); BentoML builds the middleware before the service, so it asks late."""

    def __init__(self, app, context: Callable[[], tuple[KeyRing, int, str] | None]) -> None:
        self.app = app
        self.context = context

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        ctx = self.context()
        path = scope["path"]
        if ctx is None:                                         # the service is still starting
            if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
                return await self.app(scope, receive, send)
            return await _reply(send, 503, {"error": "the service is starting; retry shortly"})
        keys, max_body, version = ctx
        extra = [(MODEL_VERSION_HEADER.lower().encode(), version.encode())]

        async def send_with_version(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []), *extra])
            await send(message)

        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return await self.app(scope, receive, send_with_version)
        headers = dict(scope["headers"])
        if not keys.accepts(headers.get(b"authorization")):
            return await _reply(send_with_version, 401, {
                "error": "missing or invalid API key: send the header 'Authorization: Bearer <key>'",
                "field": "Authorization"}, [(b"www-authenticate", b'Bearer realm="winback"')])
        if scope["method"] in ("POST", "PUT", "PATCH") and not _is_json(headers.get(b"content-type")):
            return await _reply(send_with_version, 415, {
                "error": "send the request as JSON: 'Content-Type: application/json'",
                "field": "Content-Type"})
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            return await _reply(send_with_version, 413, _too_large(max_body))
        body, more, chunks = 0, True, []
        while more and scope["method"] in ("POST", "PUT", "PATCH"):
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            body += len(chunk)
            if body > max_body:
                return await _reply(send_with_version, 413, _too_large(max_body))
            chunks.append(chunk)
            more = message.get("more_body", False)
        if chunks:
            buffered = b"".join(chunks)
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": buffered, "more_body": False}
                return await receive()

            return await self.app(scope, replay, send_with_version)
        return await self.app(scope, receive, send_with_version)


def _is_json(content_type: bytes | None) -> bool:
    return content_type is not None and content_type.split(b";")[0].strip().lower() == b"application/json"


def _too_large(limit: int) -> dict:
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
