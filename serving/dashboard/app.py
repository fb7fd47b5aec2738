"""The dashboard's ASGI application, mounted by the scoring service at ``/ui``.

Server-rendered pages (Jinja2) over the served champion's scored snapshot, the object
``/score`` answers from (``running_service().champion.current``, the service instance BentoML
started in this worker): Overview,
Win-back list, Customer, Reports, Campaigns and Model, each in English and Traditional Chinese.

Access: every path but ``/signin`` and ``/static/…`` needs a signed session cookie, which the
sign-in form issues for a ``viewer`` or ``admin`` key (:class:`serving.security.Sessions`).
Every form carries a CSRF token bound to the session (or, on the sign-in form, to a random
pre-session cookie). Pages are sent with a Content-Security-Policy that allows no inline or
foreign script: Plotly, the chart loader and the font are served from the installed package.
"""

from __future__ import annotations

import math
import secrets
import tempfile
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qs, urlencode

import jinja2
import numpy as np
import pandas as pd
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from crm.fonts import FONT
from crm.formatting import DEFAULT_CURRENCY, format_date, format_money, format_number, format_percent
from crm.reports import PLOT_SCRIPT, report_sections
from serving.config import DASHBOARD_ROLES, ServiceSettings
from serving.dashboard import charts
from serving.dashboard.customer import customer_events, customer_view
from serving.dashboard.i18n import LANG_COOKIE, pick_language, translator
from serving.dashboard.listing import (
    PER_PAGE,
    SORTABLE,
    FilterError,
    ListIndexes,
    ListQuery,
    export_frame,
    list_rows,
    snapshot_column,
)
from serving.security import KeyRing, Session, Sessions, SignInThrottle
from serving.state import running_service

if TYPE_CHECKING:
    from crm.outbox import Outbox
    from serving.champion import Champion

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "winback_session"
PRESESSION_COOKIE = "winback_presession"
PUBLIC = ("/signin", "/static/")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
AT_RISK = 0.5                                   # churn probability from which a customer counts "at risk"
PLOT_NAMES = {"calibration": "calibration.png", "lift": "gains.png", "feature_importance": "feature_importance.png"}


class Formatter:
    """Number, money, percent and date formatting bound to a language and currency (templates)."""

    def __init__(self, lang: str, currency: str) -> None:
        self.lang, self.currency = lang, currency

    def num(self, x, digits: int = 0) -> str:
        """A number in the reader's locale."""
        return format_number(x, self.lang, digits)

    def money(self, x, digits: int = 2) -> str:
        """An amount with the currency sign."""
        return format_money(x, self.lang, self.currency, digits)

    def pct(self, x, digits: int = 1) -> str:
        """A fraction as a percentage."""
        return format_percent(x, self.lang, digits)

    def date(self, d) -> str:
        """A date in the reader's locale."""
        return format_date(d, self.lang)

    def needed(self, x) -> str:
        """An amount still to spend, rounded up to whole money (spending it is enough)."""
        return format_money(math.ceil(round(x, 4)), self.lang, self.currency, 0)


class LiveService(Protocol):
    """What the pages read of the running scoring service."""

    settings: ServiceSettings
    champion: Champion
    keys: KeyRing


class Dashboard:
    """The pages, reading the live service through ``service()`` (None while it starts)."""

    def __init__(self, service: Callable[[], LiveService | None]) -> None:
        self.service = service
        self.indexes = ListIndexes()
        self.templates = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                                            autoescape=True, undefined=jinja2.StrictUndefined)
        self._sessions: tuple[object, Sessions] | None = None
        self._outbox: Outbox | None = None
        self._campaigns_lock = threading.Lock()
        self._cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # per snapshot
        self._lock = threading.Lock()
        self._plots_tmp: tempfile.TemporaryDirectory | None = None
        self.throttle = SignInThrottle()

    @property
    def plots_dir(self) -> Path:
        """Where the model's fetched plots are kept: made on first use, removed at exit."""
        if self._plots_tmp is None:
            self._plots_tmp = tempfile.TemporaryDirectory(prefix="winback-plots-")
        return Path(self._plots_tmp.name)

    # ------------------------------------------------------------------ plumbing

    def live(self) -> LiveService:
        """The running service (the gate answers 503 before it has started, so pages have one)."""
        service = self.service()
        if service is None:
            raise RuntimeError("the scoring service has not started")
        return service

    def sessions(self) -> Sessions:
        """The session signer for the current dashboard settings (remade when they change)."""
        settings = self.live().settings.dashboard
        if self._sessions is None or self._sessions[0] is not settings:
            self._sessions = (settings, Sessions(settings.session_secret, settings.session_hours * 3600))
        return self._sessions[1]

    def cached(self, state, key, make):
        """``make()`` once per scored snapshot and key (dropped with the snapshot)."""
        with self._lock:
            slot = self._cache.setdefault(state, {})
        if key not in slot:
            slot[key] = make()
        return slot[key]

    def context(self, request: Request, page: str, **extra) -> dict:
        """What every template reads: language, words, formatter, snapshot, session and ``extra``."""
        service = self.live()
        lang = request.state.lang
        currency = service.settings.dashboard.currency or DEFAULT_CURRENCY[lang]
        state = service.champion.current
        session: Session | None = getattr(request.state, "session", None)
        base = request.scope.get("root_path", "")
        return {"lang": lang, "t": translator(lang), "fmt": Formatter(lang, currency), "base": base,
                "page": page, "state": state, "session": session, "currency": currency,
                "csrf": self.sessions().csrf_token(session.sid) if session else "",
                "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
                **extra}

    def render(self, request: Request, template: str, page: str, status: int = 200, **extra) -> HTMLResponse:
        """A page from its template, with the security headers."""
        html = self.templates.get_template(template).render(self.context(request, page, **extra))
        return HTMLResponse(html, status_code=status)

    # ------------------------------------------------------------------ sign-in

    def signin_page(self, request: Request, error: str | None = None, status: int = 200) -> HTMLResponse:
        """The sign-in form with a fresh pre-session CSRF token, and ``error`` when there is one."""
        if request.query_params.get("lang") in DEFAULT_CURRENCY:              # the sign-in page's own switch
            request.state.lang = request.query_params["lang"]
        token = request.cookies.get(PRESESSION_COOKIE) or secrets.token_urlsafe(16)
        response = self.render(request, "signin.html", "signin", status=status, error=error,
                               signin_csrf=self.sessions().csrf_token("pre:" + token))
        _cookie(response, request, PRESESSION_COOKIE, token, max_age=3600)
        return response

    async def signin(self, request: Request) -> Response:
        """Check the form's token and key (throttled per address) and start a session."""
        form = await _form(request)
        if form.get("lang") in DEFAULT_CURRENCY:            # errors in the language the form was shown in
            request.state.lang = form["lang"]
        sessions = self.sessions()
        pre = request.cookies.get(PRESESSION_COOKIE)
        if not sessions.check_csrf(pre and "pre:" + pre, form.get("csrf")):
            return self.signin_page(request, "bad_form", 403)
        address = request.client.host if request.client else ""
        if wait := self.throttle.retry_after(address):
            refused = self.signin_page(request, "too_many", 429)
            refused.headers["Retry-After"] = str(wait)
            return refused
        roles = self.live().keys.roles_of(form.get("key", "").strip())
        if not roles & DASHBOARD_ROLES:
            self.throttle.failed(address)
            return self.signin_page(request, "bad_key", 401)
        self.throttle.succeeded(address)
        role = "admin" if "admin" in roles else "viewer"
        response = RedirectResponse(f"{request.scope.get('root_path', '')}/", status_code=303)
        _cookie(response, request, SESSION_COOKIE, sessions.issue(role), max_age=int(sessions.lifetime_seconds))
        response.delete_cookie(PRESESSION_COOKIE, path=_cookie_path(request))
        if form.get("lang") in DEFAULT_CURRENCY:
            _cookie(response, request, LANG_COOKIE, form["lang"], max_age=365 * 86400)
        return response

    async def signout(self, request: Request) -> Response:
        """End the session and go back to sign-in."""
        form = await _form(request)
        if not self.sessions().check_csrf(request.state.session.sid, form.get("csrf")):
            return PlainTextResponse("invalid form token", status_code=403)
        response = RedirectResponse(f"{request.scope.get('root_path', '')}/signin", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=_cookie_path(request))
        return response

    async def switch_language(self, request: Request) -> Response:
        """Remember the chosen language and go back to the page it was chosen on."""
        form = await _form(request)
        if not self.sessions().check_csrf(request.state.session.sid, form.get("csrf")):
            return PlainTextResponse("invalid form token", status_code=403)
        lang = str(form.get("lang")) if form.get("lang") in DEFAULT_CURRENCY else "en"
        base = request.scope.get("root_path", "")
        back = form.get("next", "")
        if not (back.startswith(base + "/") and not back.startswith("//")):   # only back into the dashboard
            back = base + "/"
        response = RedirectResponse(back, status_code=303)
        _cookie(response, request, LANG_COOKIE, lang, max_age=365 * 86400)
        return response

    # ------------------------------------------------------------------ pages

    def overview(self, request: Request) -> HTMLResponse:
        """The Overview page: the base by segment and tier, churn risk and value at risk."""
        state = self.live().champion.current
        lang = request.state.lang
        t, fmt = translator(lang), self.context(request, "overview")["fmt"]
        stats = self.cached(state, "overview", lambda: _overview_stats(self.indexes.of(state)))
        segment_labels = [lbl if lang == "en" else stats["segment_zh"].get(lbl, lbl) for lbl in stats["segments"]]
        tier_labels = [lbl if lang == "en" else stats["tier_zh"].get(lbl, lbl) for lbl in stats["tiers"]]
        plots = [
            charts.bar(segment_labels, stats["segment_counts"], t("segment_mix"), "segments",
                       [fmt.num(c) for c in stats["segment_counts"]]),
            charts.bar(tier_labels, stats["tier_counts"], t("tier_mix"), "tiers",
                       [fmt.num(c) for c in stats["tier_counts"]]),
            charts.histogram(stats["churn_counts"], stats["churn_edges"], t("churn_distribution"), "churn",
                             t("churn_probability")),
        ]
        return self.render(request, "overview.html", "overview", stats=stats, plots=plots)

    def winback_list(self, request: Request) -> HTMLResponse:
        """The Win-back list page: filtered, sorted and paged on the server."""
        state = self.live().champion.current
        try:
            query = ListQuery.from_params(_multi(request))
        except FilterError as exc:
            return self.render(request, "error.html", "list", status=400, message=str(exc))
        index = self.indexes.of(state)
        total, positions = index.select(query)
        rows = list_rows(state, positions.tolist(), request.state.lang)
        pages = max(1, math.ceil(total / query.per_page))
        names = self.cached(state, "labels", lambda: _label_names(index))
        return self.render(request, "list.html", "list", query=query, total=total, rows=rows, pages=pages,
                           segments=sorted(names["segment"].items()), tiers=sorted(names["tier"].items()),
                           categories=sorted(index.categories.labels), sortable=SORTABLE, per_page=PER_PAGE,
                           link=lambda **changes: "?" + urlencode(query.params(**changes), doseq=True),
                           export=lambda kind: f"list/export.{kind}?" + urlencode(query.params(), doseq=True),
                           export_limit=self.live().settings.limits.max_limit)

    def export(self, request: Request) -> Response:
        """The list as filtered, as CSV or Excel, in the reader's language."""
        from crm.exports import LIST_SHEET, write_table

        kind = request.path_params["kind"]
        service = self.live()
        state = service.champion.current
        lang = request.state.lang
        try:
            query = ListQuery.from_params(_multi(request))
        except FilterError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        _, positions = self.indexes.of(state).select(query, limit=service.settings.limits.max_limit, offset=0)
        frame = export_frame(list_rows(state, positions.tolist(), lang), lang)
        currency = service.settings.dashboard.currency or DEFAULT_CURRENCY[lang]
        with tempfile.TemporaryDirectory() as tmp:
            path = write_table(frame, Path(tmp) / f"winback-list.{kind}", sheet=LIST_SHEET[lang],
                               currency=currency, lang=lang)
            data = path.read_bytes()
        media = ("text/csv; charset=utf-8" if kind == "csv"
                 else "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
        name = f"winback-list-{state.as_of.date().isoformat()}.{kind}"
        return Response(data, media_type=media, headers={"content-disposition": f'attachment; filename="{name}"'})

    def customer(self, request: Request) -> HTMLResponse:
        """The Customer page: the record ``/score`` answers with, curves and trigger events."""
        service = self.live()
        state = service.champion.current
        cid = request.path_params.get("customer_id") or request.query_params.get("id", "").strip()
        if not cid:
            return self.render(request, "customer.html", "customer", view=None, cid="", plots=[], events=None)
        view = customer_view(state, cid)
        if view is None:
            return self.render(request, "customer.html", "customer", status=404, view=None, cid=cid, plots=[],
                               events=None)
        events = None
        if service.settings.triggers_state:
            from crm.outbox import Outbox

            with self._lock:
                if self._outbox is None:
                    self._outbox = Outbox(service.settings.triggers_state)
            events = customer_events(self._outbox, cid)
        return self.render(request, "customer.html", "customer", view=view, cid=cid, events=events,
                           plots=self._customer_plots(request, view))

    def _customer_plots(self, request: Request, view) -> list[str]:
        lang = request.state.lang
        t = translator(lang)
        as_of = self.live().champion.current.as_of.date()
        rec = view.record
        one_day = np.timedelta64(1, "D")
        day = lambda iso: None if iso is None else int((np.datetime64(iso) - np.datetime64(as_of)) // one_day)
        return [
            charts.timeline([(t("first_purchase"), view.history.get("first_purchase_date")),
                             (t("last_purchase"), view.history.get("last_purchase_date")),
                             (t("as_of"), as_of), (t("winback_date"), rec["winback_date"]),
                             (t("next_purchase_date"), rec["next_purchase_date"])], lang, t("timeline"), "timeline"),
            charts.purchase_curve(view.cdf_days, view.cdf, day(rec["next_purchase_low"]),
                                  day(rec["next_purchase_high"]), t("purchase_curve"), "purchase",
                                  t("days_from_as_of"), t("interval_80")),
            charts.line(view.p_alive_days, view.p_alive, t("p_alive_curve"), "p_alive", t("days_from_as_of")),
        ]

    def reports_page(self, request: Request) -> HTMLResponse:
        """The Reports page: the sections ``winback report`` writes, when the service has the log."""
        service = self.live()
        state = service.champion.current
        lang = request.state.lang
        sections, note = None, None
        if service.settings.log_source is None:
            note = "reports_need_log"
        else:
            currency = service.settings.dashboard.currency or DEFAULT_CURRENCY[lang]
            log = self.cached(state, "log", lambda: service.settings.log_source.open(state.scorer.reference_.timezone))
            sections = self.cached(state, ("reports", lang, currency), lambda: report_sections(
                log, state.as_of.date(), lang, currency, state.model_input().reset_index(drop=True),
                tiers=state.scorer.feature_settings.tiers))
        return self.render(request, "reports.html", "reports", sections=sections, note=note)

    def campaigns_page(self, request: Request) -> HTMLResponse:
        """The Campaigns page (issue #21): the figures of ``winback triggers report`` for the
        outbox (``WINBACK_TRIGGERS_STATE``) and the log the service reads, with the rules the
        trigger job used (``WINBACK_TRIGGERS_RULES``, default the shipped file)."""
        from crm.rules import TriggerRules
        from serving.dashboard.campaigns import Signed, campaign_figures, campaign_plots

        service = self.live()
        state = service.champion.current
        lang = request.state.lang
        if not service.settings.triggers_state:
            return self.render(request, "campaigns.html", "campaigns", note="triggers_off")
        if service.settings.log_source is None:
            return self.render(request, "campaigns.html", "campaigns", note="campaigns_need_log")
        events = self.trigger_outbox().events()
        if events.empty:
            return self.render(request, "campaigns.html", "campaigns", note="no_campaign_events")
        log = self.cached(state, "log", lambda: service.settings.log_source.open(state.scorer.reference_.timezone))
        seen = (len(events), int(pd.util.hash_pandas_object(events[["idempotency_key", "group"]], index=False).sum()))
        box = self.cached(state, "campaigns", dict)          # per snapshot: the events seen, their figures
        with self._campaigns_lock:                         # one computation at a time on the log's connection
            if box.get("seen") != seen:
                rules = service.settings.triggers_rules or TriggerRules.from_toml()
                box.update(seen=seen, figures=campaign_figures(events, log, rules))
            figures = box["figures"]
        currency = service.settings.dashboard.currency or DEFAULT_CURRENCY[lang]
        signed = Signed(lang, currency)
        return self.render(request, "campaigns.html", "campaigns", note=None, figures=figures, signed=signed,
                           plots=campaign_plots(figures, translator(lang), Formatter(lang, currency), signed),
                           budget=figures.budget.to_dict("records"), by_day=figures.by_day.to_dict("records"),
                           lift=figures.lift.to_dict("records"), uplift=figures.uplift.to_dict("records"),
                           busiest=int(figures.budget["busiest_day_sends"].max()),
                           observed_to=log.report.last_timestamp.date())

    def trigger_outbox(self):
        """The outbox of ``WINBACK_TRIGGERS_STATE``, opened once."""
        from crm.outbox import Outbox

        with self._lock:
            if self._outbox is None:
                self._outbox = Outbox(self.live().settings.triggers_state)
        return self._outbox

    def model_page(self, request: Request) -> HTMLResponse:
        """The Model page: the served version, its metrics, health and the run's plots."""
        from serving.dashboard.health import health_view, selection_view
        from training.monitor import health_summary

        service = self.live()
        state = service.champion.current
        plots = self._plots(state)
        t = translator(request.state.lang)
        summary = health_summary(service.settings.tracking_uri, state.model.run_id,
                                 refresh=not service.champion.degraded)
        return self.render(request, "model.html", "model", model=state.model, plots=plots,
                           mlflow_url=service.settings.dashboard.mlflow_ui_url, health=health_view(summary, t),
                           selection=selection_view(getattr(state.scorer, "selection_", None), t))

    def _plots(self, state) -> dict[str, str]:
        """The run's logged plots (``plots/*.png``), fetched from the MLflow store once per run."""
        run_id = state.model.run_id
        if not run_id:
            return {}
        target = self.plots_dir / run_id
        if not target.exists():                                  # kept once fetched; a failure is retried
            from mlflow.artifacts import download_artifacts

            try:
                download_artifacts(run_id=run_id, artifact_path="plots", dst_path=str(target),
                                   tracking_uri=self.live().settings.tracking_uri)
            except Exception:                                    # none logged, or the store is down
                return {}
        files = {p.name for p in target.rglob("*.png")}
        return {key: name for key, name in PLOT_NAMES.items() if name in files}

    def plot_file(self, request: Request) -> Response:
        """One of the served run's plots, fetched from MLflow once."""
        state = self.live().champion.current
        name = request.path_params["name"]
        if name not in self._plots(state).values():
            return PlainTextResponse("no such plot", status_code=404)
        path = next((self.plots_dir / str(state.model.run_id)).rglob(name))
        return FileResponse(path, media_type="image/png")


# ---------------------------------------------------------------------- helpers


def _overview_stats(index) -> dict:
    state = index.state
    churn = snapshot_column(state, "churn_probability").astype(float)
    counts, edges = np.histogram(churn, bins=20, range=(0, 1))
    seg = index.segments
    seg_counts = np.bincount(seg.codes[seg.codes >= 0], minlength=len(seg.labels))
    tier = index.tiers
    tier_counts = np.bincount(tier.codes[tier.codes >= 0], minlength=len(tier.labels))
    tier_order = [name for name, _ in state.scorer.feature_settings.tiers.thresholds if name in tier.labels]
    seg_order = np.argsort(-seg_counts, kind="stable")
    at_risk = int((churn >= AT_RISK).sum())
    return {
        "customers": state.size, "at_risk": at_risk, "active": state.size - at_risk,
        "value_at_risk": float(index.value_at_risk.sum()),
        "segments": [seg.labels[i] for i in seg_order], "segment_counts": [int(seg_counts[i]) for i in seg_order],
        "tiers": tier_order, "tier_counts": [int(tier_counts[tier.labels.index(n)]) for n in tier_order],
        **{f"{kind}_zh": names for kind, names in _label_names(index).items()},
        "churn_counts": counts.tolist(), "churn_edges": edges.tolist(),
    }


def _zh(labels, zh_column: np.ndarray) -> dict[str, str]:
    """English label -> its Traditional Chinese label (from the first row that has it)."""
    codes, first = np.unique(labels.codes, return_index=True)
    return {labels.labels[c]: str(zh_column[i]) for c, i in zip(codes, first) if c >= 0}


def _label_names(index) -> dict[str, dict[str, str]]:
    state = index.state
    return {"segment": _zh(index.segments, snapshot_column(state, "segment_zh_tw")),
            "tier": _zh(index.tiers, snapshot_column(state, "tier_zh_tw"))}


def _multi(request: Request) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        params.setdefault(key, []).append(value)
    return params


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form's fields (last value of each); the body is never logged."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _cookie_path(request: Request) -> str:
    return request.scope.get("root_path", "") or "/"


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path=_cookie_path(request), httponly=True,
                        samesite="strict", secure=_is_https(request))


def _is_https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "")
    return request.url.scheme == "https" or forwarded.split(",")[0].strip() == "https"


def _route_path(scope) -> str:
    root, path = scope.get("root_path", ""), scope["path"]
    return path[len(root):] if root and path.startswith(root) else path


class Gate:
    """ASGI wrapper: language for every request; a valid session for all but sign-in and static
    files (a page asks to sign in, anything else gets 401); security headers on every answer."""

    def __init__(self, app, dashboard: Dashboard) -> None:
        self.app = app
        self.dashboard = dashboard

    async def __call__(self, scope, receive, send):
        """Answer 503 while the service starts, ask for a session, then pass to the pages."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.dashboard.service() is None:
            return await PlainTextResponse("the service is starting; retry shortly", status_code=503)(
                scope, receive, send)
        scope = dict(scope, state=dict(scope.get("state") or {}))      # this request's own state
        request = Request(scope)
        scope["state"]["lang"] = pick_language(request.cookies.get(LANG_COOKIE),
                                               request.headers.get("accept-language"))
        path = _route_path(scope)
        if not (path == "/signin" or path.startswith("/static/")):
            session = self.dashboard.sessions().read(request.cookies.get(SESSION_COOKIE))
            if session is None or session.role not in DASHBOARD_ROLES:
                if scope["method"] in ("GET", "HEAD"):
                    target = f"{scope.get('root_path', '')}/signin"
                    response = RedirectResponse(target, status_code=303)
                else:
                    response = PlainTextResponse("sign in first", status_code=401)
                return await response(scope, receive, _with_headers(send, path))
            scope["state"]["session"] = session
        return await self.app(scope, receive, _with_headers(send, path))


def _with_headers(send, path: str):
    extra = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
             (b"referrer-policy", b"same-origin"), (b"x-frame-options", b"DENY")]
    if not path.startswith("/static/"):
        extra.append((b"cache-control", b"no-store"))

    async def wrapped(message):
        if message["type"] == "http.response.start":
            message = dict(message, headers=[*message.get("headers", []), *extra])
        await send(message)

    return wrapped


def create_app(service: Callable[[], LiveService | None] = running_service) -> Gate:
    """The dashboard app reading ``service()``: the running scoring service by default."""
    import plotly

    dashboard = Dashboard(service)
    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"

    routes = [
        Route("/", dashboard.overview),
        Route("/signin", lambda request: dashboard.signin_page(request), methods=["GET"]),
        Route("/signin", dashboard.signin, methods=["POST"]),
        Route("/signout", dashboard.signout, methods=["POST"]),
        Route("/lang", dashboard.switch_language, methods=["POST"]),
        Route("/list", dashboard.winback_list),
        Route("/list/export.{kind:str}", _only(dashboard.export, kind=("csv", "xlsx"))),
        Route("/customer", dashboard.customer),
        Route("/customer/{customer_id:str}", dashboard.customer),
        Route("/reports", dashboard.reports_page),
        Route("/campaigns", dashboard.campaigns_page),
        Route("/model", dashboard.model_page),
        Route("/model/plot/{name:str}", dashboard.plot_file),
        Route("/static/plotly.min.js", lambda request: FileResponse(plotly_js, media_type="text/javascript")),
        Route("/static/plots.js", lambda request: Response(PLOT_SCRIPT, media_type="text/javascript")),
        Route(f"/static/fonts/{FONT.name}", lambda request: FileResponse(FONT, media_type="font/woff2")),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Gate(Starlette(routes=routes), dashboard)


def _only(handler, **allowed):
    def guarded(request: Request):
        for name, values in allowed.items():
            if request.path_params[name] not in values:
                return PlainTextResponse("not found", status_code=404)
        return handler(request)

    return guarded


app = create_app()
