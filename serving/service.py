"""The scoring service: per-customer scores, scores for posted histories, win-back lists.

Start it with ``winback serve`` or ``bentoml serve serving.service:WinbackService``; it is
configured by environment variables (see :mod:`serving.config`). At start it loads the model the
registry alias points at, reads the feature snapshot and scores it once, so ``/score`` answers
from memory. A background thread follows the alias and swaps in a new champion with its rescored
snapshot (:mod:`serving.champion`).

The handlers only validate, call the scorer or the scored snapshot, and shape the answer.
The hot lookups (``/score``, ``/winback``) are answered ahead of BentoML's middleware and
per-endpoint wrapper (:mod:`serving.lookups`, with the same checks, access log and metrics);
answers are written with orjson. ``benchmarks/bench_service.py`` and
``benchmarks/bench_service_wrk.py`` measure what that buys.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import traceback
from itertools import repeat
from typing import Annotated, Any, Literal

import bentoml
import orjson
from fastapi import FastAPI
from pydantic import BeforeValidator, Field
from starlette.requests import Request
from starlette.responses import Response

from serving.dashboard import app as dashboard_app
from serving.lookups import LookupService
from serving.openapi import OpenAPIDocument
from serving.paging import CURSOR_PATTERN
from serving.schemas import (
    STRICT,
    CustomerHistory,
    CustomerId,
    Day,
    InfoResponse,
    Label,
    ScoreResponse,
    WinbackResponse,
    error_answer,
    integral,
    query_params,
)
from serving.security import MODEL_VERSION_HEADER, Guard, KeyRing, install_log_filter
from serving.state import running_service

logger = logging.getLogger("winback.serving")
NOT_A_CURSOR = "not a cursor of this list: send the next_cursor of the previous page"

def _guard_context():
    service = running_service()
    if service is None:
        return None
    return (service.keys, service.settings.limits.max_body_bytes, service.champion.current.model.version,
            service.limiter)


def _api(route: str, name: str):
    """``bentoml.api`` with a strict input model named ``name`` (the OpenAPI document's name).

    BentoML builds each endpoint's input model from the method's signature
    (``IODescriptor.from_input``) with pydantic's lax defaults: unknown fields ignored, ``"10"``
    taken as 10. The same model, subclassed with :data:`serving.schemas.STRICT`, refuses both
    (a 400 whose ``detail`` names the field and never quotes the input)."""

    def decorate(func):
        spec = bentoml.IODescriptor.from_input(func, skip_self=True)
        strict = type(name, (spec,), {"__module__": func.__module__, "model_config": STRICT})
        return bentoml.api(route=route, input_spec=strict)(func)

    return decorate


info_app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


#: BentoML records a span for every request even when it exports none (``sample_rate`` 0 by
#: default): profiled at 32 clients, a third of the worker's busy time on ``/score``. The hot
#: lookups are answered ahead of tracing (:mod:`serving.lookups`), and what reaches BentoML on
#: their paths (a GET, a request while starting) is left out of it too (their access-log lines
#: carry no trace id); ``/score_history`` and the rest keep it. An operator who exports traces
#: can set ``services.winback.tracing.excluded_urls`` in the BentoML configuration.
UNTRACED = ["/score$", "/winback$"]


@bentoml.service(name="winback", workers=1, traffic={"timeout": 120}, tracing={"excluded_urls": UNTRACED},
                 service_class=LookupService)
@bentoml.asgi_app(dashboard_app, path="/ui")
@bentoml.asgi_app(info_app, path="/")
class WinbackService:
    """Churn, next-purchase and win-back scores for CRM systems. Every call but the health
    probes needs ``Authorization: Bearer <key>``; every answer carries the model version."""

    def __init__(self) -> None:
        from serving.champion import Champion, freeze_heap
        from serving.config import ConfigError, ServiceSettings
        from serving.ratelimit import RateLimiter
        from serving.sync import SyncFiles

        install_log_filter()
        try:
            self.settings = ServiceSettings.from_env()
            self.keys = KeyRing(self.settings.api_keys)
            if not self.keys:
                logger.warning("no API keys configured (WINBACK_API_KEYS, WINBACK_API_KEYS_FILE): "
                               "every scoring call will be refused with 401")
            _quick_failing_http_registry()
            self.limiter = (RateLimiter(self.settings.rate_limit, len(self.keys))
                            if self.settings.rate_limit is not None else None)
            self.champion = Champion(self.settings)
            self.sync = SyncFiles(self.settings.sync_folder)
        except ConfigError as exc:
            _stop_the_server(str(exc))
        self.champion.on_swap = self.sync.prepare
        self.sync.prepare(self.champion.current)
        self.champion.start()
        seconds = freeze_heap()
        logger.info("froze %d long-lived objects out of the garbage collector's passes in %.2f s",
                    gc.get_freeze_count(), seconds)

    @bentoml.on_shutdown
    def _stop_polling(self) -> None:
        self.champion.stop()
        if self.limiter is not None:                    # the buckets end with the server
            self.limiter.close()
            self.limiter.path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ endpoints

    @_api(route="/score", name="ScoreRequest")
    async def score(
        self,
        customer_ids: Annotated[list[CustomerId], Field(min_length=1, description="Customer ids to look up.")],
        reasons: Annotated[bool, Field(description="Explain each customer (about 1 ms each the first time).")] = True,
    ) -> ScoreResponse:
        """Scores of customers in the current snapshot, in the order asked; an id not in the
        snapshot gets ``status: unknown_customer``."""
        limit = self.settings.limits.max_ids
        if len(customer_ids) > limit:                   # the document's maxItems: a 400 like any schema error
            return error_answer(400, "customer_ids", f"at most {limit:,} ids per request "
                                               f"(WINBACK_MAX_IDS), got {len(customer_ids):,}")
        state = self.champion.current                                   # one model for the whole answer
        positions = state.positions(customer_ids)
        known = [p for p in positions if p is not None]
        known_ids = [cid for cid, p in zip(customer_ids, positions) if p is not None]
        explained = await self._reasons(state, known_ids) if reasons else {}
        as_of = state.as_of.date().isoformat()
        records = iter(state.records(known, {"customer_id": known_ids, "status": repeat("ok"),
                                             "as_of": repeat(as_of)}))
        customers = []
        for cid, pos in zip(customer_ids, positions):
            if pos is None:
                customers.append({"customer_id": cid, "status": "unknown_customer"})
                continue
            item = next(records)
            if reasons:
                item["reasons"], item["reasons_zh_tw"] = explained[cid]
            customers.append(item)
        return _json({"model_name": state.model.name, "model_version": state.model.version,
                      "as_of": as_of, "customers": customers})

    @_api(route="/score_history", name="ScoreHistoryRequest")
    async def score_history(
        self,
        as_of: Annotated[Day, Field(description="Score as of the end of this day (YYYY-MM-DD); "
                                                "later transactions are ignored.")],
        customers: Annotated[list[CustomerHistory], Field(min_length=1)],
        reasons: bool = True,
    ) -> ScoreResponse:
        """Scores computed from posted purchase histories, with the feature code and the scorer
        the snapshot was scored with. ``priority`` ranks among the posted customers."""
        from serving.history import HistoryError, score_history

        state = self.champion.current
        try:
            scores = await asyncio.to_thread(score_history, state.scorer, as_of, customers,
                                             self.settings.limits, reasons)
        except HistoryError as exc:
            return error_answer(exc.status, exc.field, exc.message)
        except Exception as exc:                                 # a bug: say where, not with what
            logger.error("/score_history failed: %s\n%s", type(exc).__name__,
                         "".join(traceback.format_tb(exc.__traceback__)))
            return error_answer(500, "customers", "the histories could not be scored; the server log says where")
        return _json({"model_name": state.model.name, "model_version": state.model.version,
                      "as_of": as_of.isoformat(), "customers": scores})

    @_api(route="/winback", name="WinbackRequest")
    async def winback(
        self,
        limit: Annotated[int, Field(ge=1), BeforeValidator(integral),
                         Field(description="Customers to return, best first (a page).")] = 100,
        segments: Annotated[list[Label], Field(description="Keep these RFM segments (English or 中文).")] = [],  # noqa: B006
        tiers: Annotated[list[Label], Field(description="Keep these membership tiers (English or 中文).")] = [],  # noqa: B006
        min_value: Annotated[float, Field(ge=0, allow_inf_nan=False,
                                          description="Least value at risk.")] = 0.0,
        lang: Literal["en", "zh-TW"] = "en",
        reasons: Annotated[bool, Field(description="Explain each customer (about 1 ms each the first "
                                                   "time); false for a bulk export.")] = True,
        cursor: Annotated[str | None, Field(pattern=CURSOR_PATTERN, description=(
            "The previous page's `next_cursor`, with the same filters; absent for the first page."))] = None,
    ) -> WinbackResponse:
        """The win-back list: customers ranked by value at risk (churn probability × 12-month
        value), with win-back date, segment, tier and reasons in the chosen language, a page
        at a time: ``next_cursor`` continues it (the same ranking, or a 409 after a swap)."""
        from features.rfm import SEGMENT_ZH_TW
        from serving.paging import StaleCursor, make_cursor, read_cursor, scope_of

        if limit > self.settings.limits.max_limit:
            most = self.settings.limits.max_limit
            return error_answer(400, "limit", f"at most {most:,} (WINBACK_MAX_LIMIT), got {limit:,}")
        state = self.champion.current
        tiers_known = _tier_labels(state.scorer)
        for name, asked, allowed in (("segments", segments, {*SEGMENT_ZH_TW, *SEGMENT_ZH_TW.values()}),
                                     ("tiers", tiers, tiers_known)):
            for i, value in enumerate(asked):
                if value not in allowed:
                    return error_answer(400, f"{name}[{i}]", f"unknown value {value!r}; one of "
                                                       f"{', '.join(sorted(allowed))}")
        scope = scope_of(sorted(set(segments)), sorted(set(tiers)), min_value)
        offset = 0
        if cursor is not None:
            try:
                position = read_cursor(cursor, "winback", state.tag, scope)
            except StaleCursor as exc:
                return error_answer(409, "cursor", str(exc))
            if not isinstance(position, int) or position < 0:
                return error_answer(409, "cursor", NOT_A_CURSOR)
            offset = position
        total, rows = state.winback_page(offset, limit, segments, tiers, min_value)
        ids = [state.customer_id(p) for p in rows]
        explained = await self._reasons(state, ids) if reasons else {}
        zh = lang == "zh-TW"
        entries = []
        for rank, (cid, record) in enumerate(zip(ids, state.records(rows)), start=offset + 1):
            entries.append({
                "rank": rank, "customer_id": cid, "value_at_risk": record["value_at_risk"],
                "churn_probability": record["churn_probability"], "clv_12m": record["clv_12m"],
                "winback_date": record["winback_date"], "winback_now": record["winback_now"],
                "next_purchase_date": record["next_purchase_date"],
                "segment": record["segment_zh_tw" if zh else "segment"],
                "tier": record["tier_zh_tw" if zh else "tier"],
                "reasons": explained[cid][1 if zh else 0] if reasons else []})
        end = offset + len(rows)
        return _json({"model_name": state.model.name, "model_version": state.model.version,
                      "as_of": state.as_of.date().isoformat(), "lang": lang,
                      "total_matching": total, "customers": entries,
                      "next_cursor": make_cursor("winback", state.tag, scope, end) if end < total else None})

    @info_app.get("/triggers")
    def triggers(self, request: Request) -> Response:
        """The trigger events of a day for CRM systems that pull instead of receiving webhooks:
        the ``send`` group only (holdout customers get nothing), from ``WINBACK_TRIGGERS_STATE``,
        ordered by rule, priority and idempotency key, ``limit`` a page (``next_cursor`` goes on)."""
        import json as _json_module

        from crm.outbox import Outbox
        from serving.paging import CURSOR_PATTERN, StaleCursor, make_cursor, read_cursor, scope_of
        from serving.schemas import DAY_PATTERN

        query = query_params(request, ("date", "cursor", "limit"))
        if isinstance(query, Response):
            return query
        date, cursor, limit_text = query.get("date"), query.get("cursor"), query.get("limit")
        if date is None:
            return error_answer(400, "date", "required: the day, like 1998-06-30")
        if not re.fullmatch(DAY_PATTERN, date):
            return error_answer(400, "date", "must be a day written YYYY-MM-DD, from 1970-01-01 to 2099-12-31")
        if cursor is not None and not re.fullmatch(CURSOR_PATTERN, cursor):
            return error_answer(400, "cursor", "not a cursor: send the next_cursor of the previous page as it was")
        most = self.settings.limits.max_limit
        limit = min(1000, most)
        if limit_text is not None:
            if not re.fullmatch(r"[0-9]{1,9}(?:\.0*)?", limit_text) or not 1 <= int(float(limit_text)) <= most:
                return error_answer(400, "limit", f"must be a whole number from 1 to {most:,} (WINBACK_MAX_LIMIT)")
            limit = int(float(limit_text))
        if not self.settings.triggers_state:
            return error_answer(404, "date", "no trigger state configured (WINBACK_TRIGGERS_STATE)")
        state = self.champion.current
        scope = scope_of(date)
        last: tuple[str, int, str] | None = None
        if cursor is not None:
            try:
                after = read_cursor(cursor, "triggers", state.tag, scope)
            except StaleCursor as exc:
                return error_answer(409, "cursor", str(exc))
            if not isinstance(after, list) or len(after) != 3 or not isinstance(after[1], int):
                return error_answer(409, "cursor", NOT_A_CURSOR)
            last = (str(after[0]), after[1], str(after[2]))
        if getattr(self, "_outbox", None) is None:              # one engine for the worker's lifetime
            self._outbox = Outbox(self.settings.triggers_state)
        events = self._outbox.events(as_of=date)
        events = events[events["group"] == "send"]
        order = sorted(((e.rule, int(e.priority), e.idempotency_key), e) for e in events.itertuples(index=False))
        if last is not None:
            order = [item for item in order if item[0] > last]
        page = order[:limit]
        items = [{"idempotency_key": e.idempotency_key, "customer_id": e.customer_id, "rule": e.rule,
                  "as_of": e.as_of, "template": e.template, "priority": int(e.priority),
                  "fields": _json_module.loads(e.fields), "status": e.status} for _, e in page]
        next_cursor = make_cursor("triggers", state.tag, scope, list(page[-1][0])) if len(order) > limit else None
        return _json({"model_version": state.model.version, "date": date, "events": items,
                      "next_cursor": next_cursor})

    @info_app.get("/scores")
    async def scores(self, request: Request) -> Response:
        """Every customer's scores for the served snapshot, streamed (see :mod:`serving.sync`)."""
        from serving.sync import sync_answer

        return await sync_answer(self.sync, self.champion.current, request)

    @info_app.get("/info", response_model=InfoResponse)
    def info(self) -> InfoResponse:
        """The model answering (name, version, alias, when registered, metrics), the snapshot
        (date, size) and whether the registry is reachable (``status: degraded`` if not)."""
        from serving.schemas import HealthInfo, RegistryStatus, SnapshotInfo
        from training.monitor import health_info

        state, registry = self.champion.current, self.champion.registry
        health = health_info(self.settings.tracking_uri, state.model.run_id, refresh=not self.champion.degraded)
        return InfoResponse(
            status="degraded" if self.champion.degraded else "ok",
            model_name=state.model.name, model_version=state.model.version,
            model_alias=state.model.alias, model_uri=state.model.uri, run_id=state.model.run_id,
            trained_at=state.model.registered_at, trained_until=state.model.trained_until,
            evaluated_on=state.model.evaluated_on, horizon_days=state.model.horizon_days,
            feature_reference=state.model.feature_reference,
            metrics=state.model.metrics,
            snapshot=SnapshotInfo(file=state.snapshot.path.name, as_of=state.as_of.date(), customers=state.size,
                                  loaded_at=state.snapshot.loaded_at),
            registry=RegistryStatus(reachable=registry.reachable, last_checked=registry.last_checked,
                                    last_error=registry.last_error),
            poll_seconds=self.settings.poll_seconds,
            limits=vars(self.settings.limits),
            rate_limit=str(self.settings.rate_limit) if self.settings.rate_limit else None,
            etag=f'"{state.tag}"',
            health=HealthInfo.model_validate(health) if health is not None else None,
            selection=getattr(state.scorer, "selection_", None))

    # ------------------------------------------------------------------ helpers

    async def _reasons(self, state, ids: list[str]) -> dict[str, tuple[list[str], list[str]]]:
        cached, missing = state.cached_reasons(ids)
        if missing:
            cached.update(await asyncio.to_thread(state.explain, missing))
        return cached


WinbackService.add_asgi_middleware(Guard, context=_guard_context)  # type: ignore[attr-defined]
WinbackService.add_asgi_middleware(OpenAPIDocument, service=WinbackService)  # type: ignore[attr-defined]


def _json(payload: dict) -> Any:
    """A JSON answer (orjson: UTF-8 as is; a NaN would be a bug upstream, written as null).

    An answer naming its ``model_version`` carries it in ``X-Model-Version`` too, from the same
    state: the Guard's header (read when the request came in) could name the model before a
    swap that happened while this answer was computed."""
    version = payload.get("model_version")
    headers = None if version is None else {MODEL_VERSION_HEADER: str(version)}
    return Response(orjson.dumps(payload), media_type="application/json", headers=headers)


def _tier_labels(scorer) -> set[str]:
    tiers = scorer.feature_settings.tiers
    return {*(name for name, _ in tiers.thresholds), *(zh for _, zh in tiers.labels_zh_tw)}


def _stop_the_server(message: str) -> None:
    """End the whole server, not just this worker, with ``message`` in the log.

    BentoML (circus) restarts a worker whose ``__init__`` raises, again and again: a wrong
    registry path or a missing snapshot would loop forever behind a port that never gets ready.
    A configuration error cannot heal by retrying, so the worker asks its parent, the
    ``bentoml serve`` arbiter, to stop (SIGTERM: it stops every worker and exits) and leaves at
    once. ``winback serve`` checks the same things before it starts the server
    (:func:`serving.champion.check_startup`) and exits with status 2 and the message."""
    import os
    import signal

    logger.critical("the scoring service cannot start, stopping the server: %s", message)
    for handler in [*logging.getLogger().handlers, *logger.handlers]:
        handler.flush()
    os.kill(os.getppid(), signal.SIGTERM)
    os._exit(3)


def _quick_failing_http_registry() -> None:
    """A remote registry that is down should cost a poll seconds, not minutes of retries."""
    import os

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
