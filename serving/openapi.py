"""The OpenAPI document served at ``/docs.json``: OpenAPI 3.1, written here from the models the
service validates with, so it says exactly what the service accepts and answers.

BentoML 1.4 writes a document too (``Service.openapi_spec``), but it declares OpenAPI 3.0.2 while
holding pydantic v2's JSON Schema 2020-12 (``{"type": "null"}``, a 3.1 construct), names its
components after internal classes (``ScoreResponseIODescriptor``), lists only 400/404/500 and
has no security. :func:`build_document` writes a 3.1 document instead:

* the request bodies are the endpoints' own strict input models (:mod:`serving.service`), named
  ``ScoreRequest``, ``ScoreHistoryRequest`` and ``WinbackRequest``, marked required;
* closed sets are enums: segments (English and Traditional Chinese), the served model's tiers
  (both languages), ``lang``, ``status``; the operator's limits are ``maxItems``/``maximum``;
  a model without customer attributes or engagement events admits none;
* every status the service gives is listed on each operation with :class:`ErrorResponse`, and
  every operation takes ``X-Request-ID``;
* ``info.version`` is the package version; the bearer scheme is required but on the open paths.

The document depends on the served model (its tiers, attributes, event types) and the limits,
so it is written per model version and cached. :data:`ROUTES` lists each documented path's
methods: any other method on those paths is answered 405 with ``Allow`` (:mod:`serving.lookups`).
"""

from __future__ import annotations

import json
from typing import Any

from serving.schemas import DAY_PATTERN

#: Every documented path and its methods (the 405 answers come from here too).
ROUTES: dict[str, tuple[str, ...]] = {
    "/score": ("POST",), "/score_history": ("POST",), "/winback": ("POST",), "/scores": ("GET",),
    "/triggers": ("GET",), "/info": ("GET",), "/healthz": ("GET",), "/livez": ("GET",), "/readyz": ("GET",),
    "/metrics": ("GET",),
}
#: Paths open without a key (BentoML's probes and metrics).
OPEN_OPERATIONS = ("/healthz", "/livez", "/readyz", "/metrics")

NDJSON = "application/x-ndjson"
PARQUET = "application/vnd.apache.parquet"
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
#: What ``since`` and ``If-None-Match`` hold: an ETag of ``GET /scores``, quoted or not.
ETAG_PATTERN = r'^(W/)?"?[0-9A-Za-z._-]{1,128}"?$'

ANSWERS = {
    "400": "Invalid request: `field` (or `detail`, for a body that fails its schema) says where.",
    "401": "Missing or invalid API key: send `Authorization: Bearer <key>`.",
    "403": "The key may not call the scoring API (a `viewer` key: the dashboard only).",
    "404": "Not configured on this service (the message says which setting).",
    "406": "None of the media types in `Accept` can be sent.",
    "409": "The `cursor` does not belong to the list served now (another model version or snapshot, other "
           "filters): start again from the first page.",
    "413": "The body is larger than WINBACK_MAX_BODY_BYTES, or the posted histories hold more transactions "
           "than WINBACK_MAX_TRANSACTIONS.",
    "415": "The body is not `application/json`.",
    "429": "Too many requests for this key (WINBACK_RATE_LIMIT): wait `Retry-After` seconds.",
    "500": "A bug: the server log says where (never the request).",
    "503": "The service is starting: retry shortly.",
}


def package_version() -> str:
    """The installed winback package's version (the document's ``info.version``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("winback")
    except PackageNotFoundError:
        return "0+unknown"


def _header(description: str, schema: dict | None = None, required: bool = False) -> dict:
    return {"description": description, "required": required, "schema": schema or {"type": "string"}}


def _error(status: str, extra_headers: dict | None = None) -> dict:
    return {"description": ANSWERS[status], "headers": {**_COMMON_HEADERS, **(extra_headers or {})},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}


_COMMON_HEADERS = {
    "X-Request-ID": _header("The request's `X-Request-ID`, or one made for it; in the access log too.",
                            required=True),
    "X-Model-Version": _header("The model version that answered (absent while the service starts)."),
}
_REQUEST_ID = {"name": "X-Request-ID", "in": "header", "required": False,
               "description": "An id for this request, echoed in the answer and the access log (one is made "
                              "when absent).", "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN}}


def _limits_text(limits: Any) -> str:
    return (f"at most {limits.max_ids:,} ids per `/score`, {limits.max_customers:,} customers and "
            f"{limits.max_transactions:,} transactions per `/score_history`, a `limit` of {limits.max_limit:,}, "
            f"{limits.max_body_bytes:,} bytes per body")


def build_document(service_apis: dict[str, Any], tiers: dict[str, str], limits: Any, reference: Any = None,
                   rate_limit: str | None = None) -> dict:
    """The OpenAPI 3.1 document of the service.

    ``service_apis``: the endpoints' input models by name (``score``, ``score_history``,
    ``winback``); ``tiers``: the served model's tier names (English → Traditional Chinese);
    ``limits``: :class:`serving.config.Limits`; ``reference``: the model's
    :class:`features.reference.FeatureReference` (its attributes and event types), or None."""
    from pydantic import BaseModel
    from pydantic.json_schema import JsonSchemaMode, models_json_schema

    from features.rfm import SEGMENT_ZH_TW
    from serving.schemas import ErrorResponse, InfoResponse, ScoreLine, ScoreResponse, TriggersResponse, WinbackResponse

    requests = [("ScoreRequest", service_apis["score"]), ("ScoreHistoryRequest", service_apis["score_history"]),
                ("WinbackRequest", service_apis["winback"])]
    named = {name: type(name, (model,), {"__module__": model.__module__}) for name, model in requests}
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = (
        [(m, "validation") for m in named.values()]
        + [(m, "serialization") for m in (ScoreResponse, WinbackResponse, TriggersResponse, InfoResponse,
                                          ScoreLine, ErrorResponse)])
    _, defs = models_json_schema(models, ref_template="#/components/schemas/{model}")
    schemas = defs["$defs"]
    # closed sets (named, so a generated client has a Segment, a Tier, ...) and the operator's limits
    schemas["Segment"] = {"type": "string", "enum": list(SEGMENT_ZH_TW), "description": "An RFM segment."}
    schemas["SegmentZhTw"] = {"type": "string", "enum": list(SEGMENT_ZH_TW.values()),
                              "description": "An RFM segment, in Traditional Chinese."}
    schemas["Tier"] = {"type": "string", "enum": list(tiers), "description": "A membership tier of the served model."}
    schemas["TierZhTw"] = {"type": "string", "enum": list(dict.fromkeys(tiers.values())),
                           "description": "A membership tier of the served model, in Traditional Chinese."}
    winback = schemas["WinbackRequest"]["properties"]
    _use(winback["segments"]["items"], "Segment", "SegmentZhTw")
    _use(winback["tiers"]["items"], "Tier", "TierZhTw")
    winback["limit"]["maximum"] = limits.max_limit
    schemas["ScoreRequest"]["properties"]["customer_ids"]["maxItems"] = limits.max_ids
    schemas["ScoreHistoryRequest"]["properties"]["customers"]["maxItems"] = limits.max_customers
    history = schemas["CustomerHistory"]["properties"]
    history["transactions"]["maxItems"] = limits.max_transactions
    history["transactions"]["description"] = (f"At most {limits.max_transactions:,} in all the customers "
                                              "of a request (WINBACK_MAX_TRANSACTIONS; over it: 413).")
    _side_data(history, reference)
    for name in ("CustomerScore", "ScoreLine"):
        properties = schemas[name]["properties"]
        for field, kind in (("segment", "Segment"), ("segment_zh_tw", "SegmentZhTw"), ("tier", "Tier"),
                            ("tier_zh_tw", "TierZhTw")):
            _use(properties[field], kind)
    entry = schemas["WinbackEntry"]["properties"]
    _use(entry["segment"], "Segment", "SegmentZhTw")
    _use(entry["tier"], "Tier", "TierZhTw")

    document = {
        "openapi": "3.1.0",
        "info": {"title": "Winback scoring service", "version": package_version(),
                 "description": ("Churn, next-purchase and win-back scores for CRM systems. Every call but the "
                                 "health probes needs `Authorization: Bearer <key>` with a scorer or admin key; "
                                 "every answer carries `X-Model-Version` and `X-Request-ID`. Limits: "
                                 + _limits_text(limits)
                                 + (f"; each key may make {rate_limit} requests (429 beyond)."
                                    if rate_limit else "; no rate limit."))},
        "paths": _paths(limits),
        "components": {"schemas": dict(sorted(schemas.items())), "securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "One of the keys in WINBACK_API_KEYS / WINBACK_API_KEYS_FILE (scorer or admin)."}}},
    }
    return _markdown(document)


def _markdown(node: Any) -> Any:
    """Descriptions from the models' docstrings, with reStructuredText's double backticks as
    Markdown's single ones (OpenAPI descriptions are CommonMark)."""
    if isinstance(node, dict):
        return {k: v.replace("``", "`") if k == "description" and isinstance(v, str) else _markdown(v)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_markdown(v) for v in node]
    return node


def _use(schema: dict, *names: str) -> None:
    """Make a string schema (or the string branch of an optional one) one of the named enums."""
    refs = [{"$ref": f"#/components/schemas/{name}"} for name in names]
    target = refs[0] if len(refs) == 1 else {"anyOf": refs}
    if "anyOf" in schema:
        schema["anyOf"] = [target if branch.get("type") == "string" else branch for branch in schema["anyOf"]]
        return
    kept = {k: schema[k] for k in ("description", "title") if k in schema}
    schema.clear()
    schema.update(kept, **target)


def _side_data(history: dict, reference: Any) -> None:
    """A customer's ``attributes`` and ``events`` as the served model reads them: none for a
    model trained without them (posting some is a 400), else its attributes by kind."""
    attributes = list(getattr(reference, "attributes", None) or ())
    event_types = list(getattr(reference, "event_types", None) or ())
    if not attributes:
        history["attributes"] = {"anyOf": [{"type": "object", "maxProperties": 0}, {"type": "null"}],
                                 "default": None, "description": "This model reads no customer attributes."}
    else:
        properties = {}
        for spec in attributes:
            kind = ({"type": "number"} if spec.kind == "numeric"
                    else {"type": "string", "maxLength": 256, "pattern": r"^[^\x00]*$"})
            properties[spec.name] = {"anyOf": [kind, {"type": "null"}],
                                     "description": f"{spec.kind} attribute; null or absent: missing."}
        history["attributes"] = {"anyOf": [{"type": "object", "properties": properties,
                                            "additionalProperties": False}, {"type": "null"}],
                                 "default": None, "description": "The customer's attributes, as the model reads them."}
    if not event_types:
        history["events"] = {**history["events"], "maxItems": 0,
                             "description": "This model reads no engagement events."}


def _paths(limits: Any) -> dict:
    refs = {name: {"$ref": f"#/components/schemas/{name}"} for name in (
        "ScoreRequest", "ScoreHistoryRequest", "WinbackRequest", "ScoreResponse", "WinbackResponse",
        "TriggersResponse", "InfoResponse", "ScoreLine")}
    secured: dict[str, Any] = {"security": [{"bearer": []}]}
    retry = {"Retry-After": _header("Whole seconds to wait.", {"type": "integer"}, required=True)}

    def ok(schema: dict, description: str = "OK") -> dict:
        return {"description": description, "headers": _COMMON_HEADERS,
                "content": {"application/json": {"schema": schema}}}

    def errors(*statuses: str) -> dict:
        return {s: _error(s, retry if s == "429" else None) for s in statuses}

    def post(summary: str, body: str, answer: str, *statuses: str) -> dict:
        return {"post": {**secured, "summary": summary, "operationId": body.removesuffix("Request")[0].lower()
                         + body.removesuffix("Request")[1:],
                         "parameters": [_REQUEST_ID],
                         "requestBody": {"required": True, "content": {"application/json": {"schema": refs[body]}}},
                         "responses": {"200": ok(refs[answer]),
                                       **errors("400", "401", "403", *statuses, "415", "429", "500", "503")}}}

    def probe(summary: str, *statuses: str) -> dict:
        plain = {"text/plain": {"schema": {"type": "string"}}}
        return {"get": {"summary": summary, "operationId": summary.split()[0].lower(), "parameters": [_REQUEST_ID],
                        "responses": {"200": {"description": "OK", "headers": _COMMON_HEADERS, "content": plain},
                                      **{s: {"description": ANSWERS[s], "headers": _COMMON_HEADERS, "content": plain}
                                         for s in statuses},
                                      **errors("400")}}}

    cursor = {"name": "cursor", "in": "query", "required": False, "schema": {
        "type": "string", "pattern": r"^[A-Za-z0-9_-]{1,512}$"},
        "description": "The `next_cursor` of the previous page (with the same `date`)."}
    return {
        "/score": post("Scores of snapshot customers by id, in the order asked", "ScoreRequest", "ScoreResponse",
                       "413"),
        "/score_history": post("Scores computed from posted purchase histories", "ScoreHistoryRequest",
                               "ScoreResponse", "409", "413"),
        "/winback": post("The win-back list, ranked by value at risk, a page at a time", "WinbackRequest",
                         "WinbackResponse", "409", "413"),
        "/scores": {"get": {
            **secured, "summary": "Every customer's scores for the served snapshot (a full-base sync)",
            "operationId": "syncScores",
            "description": ("NDJSON (one `ScoreLine` per customer, snapshot order) or, with `Accept: "
                            f"{PARQUET}`, one Parquet file. The `ETag` names the model version and the "
                            "snapshot; `If-None-Match` with it answers 304. `since=<ETag>` sends only the "
                            "customers whose scores changed since then (and `status: removed` lines for those "
                            "who left); a `since` this service no longer knows gets the full base and "
                            "`X-Sync: full-since-unknown`."),
            "parameters": [_REQUEST_ID,
                           {"name": "since", "in": "query", "required": False,
                            "schema": {"type": "string", "pattern": ETAG_PATTERN},
                            "description": "An `ETag` of an earlier answer: send only what changed since."},
                           {"name": "If-None-Match", "in": "header", "required": False,
                            "schema": {"type": "string", "maxLength": 1024},
                            "description": "The `ETag` the client holds: 304 when it is the current one."}],
            "responses": {
                "200": {"description": "The scores, streamed.", "headers": {
                    **_COMMON_HEADERS,
                    "ETag": _header("The model version and the snapshot id, quoted.", required=True),
                    "X-Sync": _header("`full`, `delta` (with `since`), or `full-since-unknown`.",
                                      {"type": "string", "enum": ["full", "delta", "full-since-unknown"]},
                                      required=True),
                    "X-Customers": _header("Lines (customers) in this answer.", {"type": "integer"}, required=True)},
                    "content": {NDJSON: {"schema": refs["ScoreLine"]},
                                PARQUET: {"schema": {"type": "string", "contentMediaType": PARQUET}}}},
                "304": {"description": "Not modified: `If-None-Match` names the current snapshot.",
                        "headers": {**_COMMON_HEADERS, "ETag": _header("The current ETag.", required=True)}},
                **errors("400", "401", "403", "406", "429", "500", "503")}}},
        "/triggers": {"get": {
            **secured, "summary": "The day's trigger events (send group), a page at a time", "operationId": "triggers",
            "parameters": [_REQUEST_ID,
                           {"name": "date", "in": "query", "required": True,
                            "schema": {"type": "string", "pattern": DAY_PATTERN},
                            "description": "The day, YYYY-MM-DD."},
                           cursor,
                           {"name": "limit", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": limits.max_limit,
                                       "default": min(1000, limits.max_limit)},
                            "description": "Events per page (at most WINBACK_MAX_LIMIT)."}],
            "responses": {"200": ok(refs["TriggersResponse"]),
                          **errors("400", "401", "403", "404", "409", "429", "500", "503")}}},
        "/info": {"get": {**secured, "summary": "The model and snapshot answering, limits, health",
                          "operationId": "info", "parameters": [_REQUEST_ID],
                          "responses": {"200": ok(refs["InfoResponse"]),
                                        **errors("400", "401", "403", "429", "500", "503")}}},
        "/healthz": probe("Healthz: the process is up (BentoML)."),
        "/livez": probe("Livez: the process is up (BentoML)."),
        "/readyz": probe("Readyz: ready to answer (BentoML).", "503"),
        "/metrics": probe("Metrics: Prometheus text (BentoML's request series)."),
    }


_CACHE: dict[str, bytes] = {}


def tier_labels(scorer: Any) -> dict[str, str]:
    """The served model's tiers: English name → Traditional Chinese label (the name when it has none)."""
    tiers = scorer.feature_settings.tiers
    zh = dict(tiers.labels_zh_tw)
    return {name: zh.get(name, name) for name, _ in tiers.thresholds}


def served_document(service_def: Any, running: Any) -> bytes:
    """The document of the running service (its model version's tiers and side data, its
    limits), as JSON bytes, written once per model version and settings."""
    state = running.champion.current
    settings = running.settings
    key = json.dumps([state.model.version, state.model.feature_reference, vars(settings.limits),
                      str(settings.rate_limit)], sort_keys=True, default=str)
    found = _CACHE.get(key)
    if found is None:
        apis = {name: service_def.apis[name].input_spec for name in ("score", "score_history", "winback")}
        rate = str(settings.rate_limit) if settings.rate_limit else None
        document = build_document(apis, tier_labels(state.scorer), settings.limits, state.scorer.reference_, rate)
        found = json.dumps(document, ensure_ascii=False).encode()
        if len(_CACHE) >= 8:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = found
    return found


class OpenAPIDocument:
    """ASGI middleware: answer ``GET /docs.json`` with :func:`served_document` (503 while starting)."""

    def __init__(self, app, service) -> None:
        self.app = app
        self.service = service                  # the service class the document describes

    async def __call__(self, scope, receive, send):
        """Answer ``GET /docs.json``; pass everything else on."""
        if scope["type"] != "http" or scope["path"] != "/docs.json":
            return await self.app(scope, receive, send)
        from serving.state import running_service

        running = running_service()
        if running is None:
            status, body = 503, json.dumps({"error": "the service is starting; retry shortly"}).encode()
        else:
            status, body = 200, served_document(self.service, running)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
