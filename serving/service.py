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
import datetime as dt
import gc
import logging
import traceback
from itertools import repeat
from typing import Annotated, Literal

import bentoml
import orjson
from fastapi import FastAPI
from pydantic import Field
from starlette.responses import Response

from serving.dashboard import app as dashboard_app
from serving.schemas import (STRICT, CustomerHistory, CustomerId, InfoResponse, Label, ScoreResponse,
                             WinbackResponse)
from serving.lookups import LookupService
from serving.openapi import OpenAPIDocument
from serving.security import MODEL_VERSION_HEADER, Guard, KeyRing, install_log_filter
from serving.state import running_service

logger = logging.getLogger("winback.serving")

def _guard_context():
    service = running_service()
    if service is None:
        return None
    return service.keys, service.settings.limits.max_body_bytes, service.champion.current.model.version


def _api(route: str):
    """``bentoml.api`` with a strict input model.

    BentoML builds each endpoint's input model from the method's signature
    (``IODescriptor.from_input``) with pydantic's lax defaults: unknown fields ignored, ``"10"``
    taken as 10. The same model, subclassed with :data:`serving.schemas.STRICT`, refuses both
    (a 400 whose ``detail`` names the field and never quotes the input)."""

    def decorate(func):
        spec = bentoml.IODescriptor.from_input(func, skip_self=True)
        strict = type(spec.__name__, (spec,), {"__module__": func.__module__, "model_config": STRICT})
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

        install_log_filter()
        try:
            self.settings = ServiceSettings.from_env()
            self.keys = KeyRing(self.settings.api_keys)
            if not self.keys:
                logger.warning("no API keys configured (WINBACK_API_KEYS, WINBACK_API_KEYS_FILE): "
                               "every scoring call will be refused with 401")
            _quick_failing_http_registry()
            self.champion = Champion(self.settings)
        except ConfigError as exc:
            _stop_the_server(str(exc))
        self.champion.start()
        seconds = freeze_heap()
        logger.info("froze %d long-lived objects out of the garbage collector's passes in %.2f s",
                    gc.get_freeze_count(), seconds)

    @bentoml.on_shutdown
    def _stop_polling(self) -> None:
        self.champion.stop()

    # ------------------------------------------------------------------ endpoints

    @_api(route="/score")
    async def score(
        self,
        customer_ids: Annotated[list[CustomerId], Field(min_length=1, description="Customer ids to look up.")],
        reasons: Annotated[bool, Field(description="Explain each customer (about 1 ms each the first time).")] = True,
    ) -> ScoreResponse:
        """Scores of customers in the current snapshot, in the order asked; an id not in the
        snapshot gets ``status: unknown_customer``."""
        limit = self.settings.limits.max_ids
        if len(customer_ids) > limit:
            return _error(413, "customer_ids", f"at most {limit:,} ids per request "
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

    @_api(route="/score_history")
    async def score_history(
        self,
        as_of: Annotated[dt.date, Field(description="Score as of the end of this day (YYYY-MM-DD); "
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
            return _error(exc.status, exc.field, exc.message)
        except Exception as exc:                                 # a bug: say where, not with what
            logger.error("/score_history failed: %s\n%s", type(exc).__name__,
                         "".join(traceback.format_tb(exc.__traceback__)))
            return _error(500, "customers", "the histories could not be scored; the server log says where")
        return _json({"model_name": state.model.name, "model_version": state.model.version,
                      "as_of": as_of.isoformat(), "customers": scores})

    @_api(route="/winback")
    async def winback(
        self,
        limit: Annotated[int, Field(ge=1, description="Customers to return, best first.")] = 100,
        segments: Annotated[list[Label], Field(description="Keep these RFM segments (English or 中文).")] = [],
        tiers: Annotated[list[Label], Field(description="Keep these membership tiers (English or 中文).")] = [],
        min_value: Annotated[float, Field(ge=0, allow_inf_nan=False,
                                          description="Least value at risk.")] = 0.0,
        lang: Literal["en", "zh-TW"] = "en",
    ) -> WinbackResponse:
        """The win-back list: customers ranked by value at risk (churn probability × 12-month
        value), with win-back date, segment, tier and reasons in the chosen language."""
        from features.rfm import SEGMENT_ZH_TW

        if limit > self.settings.limits.max_limit:
            return _error(400, "limit", f"at most {self.settings.limits.max_limit:,} (WINBACK_MAX_LIMIT), got {limit:,}")
        state = self.champion.current
        tiers_known = _tier_labels(state.scorer)
        for name, asked, allowed in (("segments", segments, {*SEGMENT_ZH_TW, *SEGMENT_ZH_TW.values()}),
                                     ("tiers", tiers, tiers_known)):
            for i, value in enumerate(asked):
                if value not in allowed:
                    return _error(400, f"{name}[{i}]", f"unknown value {value!r}; one of "
                                                       f"{', '.join(sorted(allowed))}")
        total, rows = state.winback(limit, segments, tiers, min_value)
        ids = [state.customer_id(p) for p in rows]
        explained = await self._reasons(state, ids)
        zh = lang == "zh-TW"
        entries = []
        for rank, (cid, record) in enumerate(zip(ids, state.records(rows)), start=1):
            en_reasons, zh_reasons = explained[cid]
            entries.append({
                "rank": rank, "customer_id": cid, "value_at_risk": record["value_at_risk"],
                "churn_probability": record["churn_probability"], "clv_12m": record["clv_12m"],
                "winback_date": record["winback_date"], "winback_now": record["winback_now"],
                "next_purchase_date": record["next_purchase_date"],
                "segment": record["segment_zh_tw" if zh else "segment"],
                "tier": record["tier_zh_tw" if zh else "tier"],
                "reasons": zh_reasons if zh else en_reasons})
        return _json({"model_name": state.model.name, "model_version": state.model.version,
                      "as_of": state.as_of.date().isoformat(), "lang": lang,
                      "total_matching": total, "customers": entries})

    @info_app.get("/triggers")
    def triggers(self, date: str) -> Response:
        """The trigger events of a day for CRM systems that pull instead of receiving webhooks:
        the ``send`` group only (holdout customers get nothing), from ``WINBACK_TRIGGERS_STATE``."""
        import json as _json_module

        from features.build import parse_cutoff
        from crm.outbox import Outbox

        if not self.settings.triggers_state:
            return _error(404, "date", "no trigger state configured (WINBACK_TRIGGERS_STATE)")
        try:
            day = parse_cutoff(date).date().isoformat()
        except ValueError:
            return _error(400, "date", "must be a date like 1998-06-30")
        if getattr(self, "_outbox", None) is None:              # one engine for the worker's lifetime
            self._outbox = Outbox(self.settings.triggers_state)
        events = self._outbox.events(as_of=day)
        events = events[events["group"] == "send"]
        items = [{"idempotency_key": e.idempotency_key, "customer_id": e.customer_id, "rule": e.rule,
                  "as_of": e.as_of, "template": e.template, "priority": int(e.priority),
                  "fields": _json_module.loads(e.fields), "status": e.status}
                 for e in events.itertuples(index=False)]
        state = self.champion.current
        return _json({"model_version": state.model.version, "date": day, "events": items})

    @info_app.get("/info", response_model=InfoResponse)
    def info(self) -> InfoResponse:
        """The model answering (name, version, alias, when registered, metrics), the snapshot
        (date, size) and whether the registry is reachable (``status: degraded`` if not)."""
        from training.monitor import health_info

        state, registry = self.champion.current, self.champion.registry
        return InfoResponse(
            status="degraded" if self.champion.degraded else "ok",
            model_name=state.model.name, model_version=state.model.version,
            model_alias=state.model.alias, model_uri=state.model.uri, run_id=state.model.run_id,
            trained_at=state.model.registered_at, trained_until=state.model.trained_until,
            evaluated_on=state.model.evaluated_on, horizon_days=state.model.horizon_days,
            feature_reference=state.model.feature_reference,
            metrics=state.model.metrics,
            snapshot={"file": state.snapshot.path.name, "as_of": state.as_of.date(),
                      "customers": state.size, "loaded_at": state.snapshot.loaded_at},
            registry={"reachable": registry.reachable, "last_checked": registry.last_checked,
                      "last_error": registry.last_error},
            poll_seconds=self.settings.poll_seconds,
            limits=vars(self.settings.limits),
            health=health_info(self.settings.tracking_uri, state.model.run_id, refresh=not self.champion.degraded),
            selection=getattr(state.scorer, "selection_", None))

    # ------------------------------------------------------------------ helpers

    async def _reasons(self, state, ids: list[str]) -> dict[str, tuple[list[str], list[str]]]:
        cached, missing = state.cached_reasons(ids)
        if missing:
            cached.update(await asyncio.to_thread(state.explain, missing))
        return cached


WinbackService.add_asgi_middleware(Guard, context=_guard_context)
WinbackService.add_asgi_middleware(OpenAPIDocument)


def _json(payload: dict) -> Response:
    """A JSON answer (orjson: UTF-8 as is; a NaN would be a bug upstream, written as null).

    An answer naming its ``model_version`` carries it in ``X-Model-Version`` too, from the same
    state: the Guard's header (read when the request came in) could name the model before a
    swap that happened while this answer was computed."""
    version = payload.get("model_version")
    headers = None if version is None else {MODEL_VERSION_HEADER: str(version)}
    return Response(orjson.dumps(payload), media_type="application/json", headers=headers)


def _error(status: int, field: str, message: str) -> Response:
    body = {"error": f"{field}: {message}", "field": field}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


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
