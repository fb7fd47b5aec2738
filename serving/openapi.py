"""Complete the OpenAPI document BentoML serves at ``/docs.json``.

BentoML 1.4 builds the document from the service (``Service.openapi_spec``), but its model of
the document has no ``security`` field, lists only 400/404/500 answers and gives the version of
a bento (``"None"`` when served from source). :class:`OpenAPIDocument` rewrites the JSON on the
way out: the package version, a bearer scheme required by every endpoint but the open ones, and
the 400/401/413/415 answers the service gives.
"""

from __future__ import annotations

import json

from serving.security import OPEN_PATHS

ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "string", "description": "What is wrong, and with which field."},
                   "field": {"type": "string", "description": "The request field (or header) at fault."}},
    "required": ["error"],
}

ANSWERS = {
    "400": "Invalid request: the message names the field (a pydantic `detail` list, or `field`).",
    "401": "Missing or invalid API key: send `Authorization: Bearer <key>`.",
    "413": "Over a limit (body size, ids, customers, transactions): the message says the limit.",
    "415": "The body is not `application/json`.",
}


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("winback")
    except PackageNotFoundError:
        return "0+unknown"


def complete(document: dict) -> dict:
    """``document`` with the version, the bearer scheme and the error answers (changed in place)."""
    document.setdefault("info", {})["version"] = package_version()
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer",
        "description": "One of the keys in WINBACK_API_KEYS / WINBACK_API_KEYS_FILE."}
    components.setdefault("schemas", {})["WinbackError"] = ERROR_SCHEMA
    reference = {"application/json": {"schema": {"$ref": "#/components/schemas/WinbackError"}}}
    for path, item in document.get("paths", {}).items():
        if path in OPEN_PATHS:
            continue
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete") or not isinstance(operation, dict):
                continue
            operation["security"] = [{"bearer": []}]
            responses = operation.setdefault("responses", {})
            wanted = ("400", "401", "413", "415") if method == "post" else ("401",)
            for status in wanted:
                responses[status] = {"description": ANSWERS[status], "content": reference}
    return document


class OpenAPIDocument:
    """ASGI middleware: pass ``GET /docs.json`` through :func:`complete`."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/docs.json":
            return await self.app(scope, receive, send)
        start, chunks = {}, []

        async def collect(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, collect)
        body = b"".join(chunks)
        if start.get("status") == 200:
            body = json.dumps(complete(json.loads(body))).encode()
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
