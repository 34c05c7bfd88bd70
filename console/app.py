"""The console's web application (Starlette, Jinja2 templates).

Every page needs a session (sign-in form) or ``Authorization: Bearer``;
every state change of a session needs its CSRF token; every response
carries a strict Content-Security-Policy (scripts and styles from this
server only, nothing from elsewhere). Pages read through ``console/data.py``
(read-only, bound parameters); triage changes go through
``correlator.store.triage`` (the correlator's writer when it runs).
"""

from __future__ import annotations

import contextlib
import functools
import re
import secrets
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from console import charts, views
from console import queries as q
from console.auth import Authenticator, Session, csrf_ok, same_secret
from console.data import StoreAccess
from console.i18n import LOCALES, translator
from console.queries import AlertFilter, time_range
from correlator.store.schema import TRIAGE_STATUSES
from zonewatch.errors import StoreError, TriageError
from zonewatch.logs import get_logger
from zonewatch.zones import ZonePolicy

log = get_logger(__name__)

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "zw_session"
PRE_COOKIE = "zw_pre"  # CSRF of the sign-in form itself
LANG_COOKIE = "zw_lang"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def plotly_js_path() -> Path:
    import plotly

    return Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"


def plotly_css(js: str) -> str:
    """The stylesheet plotly.js would insert at run time (its ``plotcss``
    rules, read from the bundle installed): the CSP forbids inserted styles,
    so the console serves them as a file instead."""
    start = js.find('{"X,X div"')
    end = js.find("};", start)
    if start < 0 or end < 0:
        return ""
    pairs = re.findall(r'"([^"]+)":(?:\'([^\']*)\'|"([^"]*)")', js[start:end])
    rules = []
    for selector, single, double in pairs:
        full = selector.replace("X", ".js-plotly-plot .plotly").replace("Y", ".plotly-notifier")
        rules.append(f"{full} {{{single or double}}}")
    return "\n".join(rules) + "\n"


STATIC = {
    "console.css": (HERE / "static" / "console.css", "text/css"),
    "console.js": (HERE / "static" / "console.js", "text/javascript"),
    "plotly.min.js": (plotly_js_path(), "text/javascript"),
}


@dataclass
class ConsoleConfig:
    db_path: Path
    policy: ZonePolicy
    auth: Authenticator
    locale: str = "ja"
    timezone: str = "Asia/Tokyo"
    secure_cookies: bool = False
    rule_errors: Callable[[], list[str] | None] | None = None
    health_extra: Callable[[], dict[str, Any]] | None = None


class _Headers(BaseHTTPMiddleware):
    def __init__(self, app: Any, secure: bool) -> None:
        super().__init__(app)
        self.secure = secure

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if self.secure:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


@dataclass(frozen=True)
class Who:
    user: str
    session: Session | None  # None: a Bearer request
    sid: str | None


def create_app(config: ConsoleConfig) -> Starlette:
    tz = ZoneInfo(config.timezone)
    access = StoreAccess(config.db_path)
    # With no correlator, this process opens the file itself; DuckDB refuses
    # a second open of one file in one process with other settings, so
    # pages and changes take turns.
    file_lock = threading.Lock()
    cache = views.AlertsCache()
    env = views.templates(tz)
    env.filters["qs"] = lambda d: urlencode(d)
    env.filters["figjson"] = lambda fig: Markup(charts.to_json(fig))
    env.globals["dict"] = dict
    env.globals["statuses"] = TRIAGE_STATUSES
    env.globals["levels"] = q.LEVELS

    def locale_of(request: Request) -> str:
        wanted = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE)
        return wanted if wanted in LOCALES else config.locale

    def who(request: Request) -> Who | None:
        if config.auth.bearer_ok(request.headers.get("authorization")):
            user = request.headers.get("x-zonewatch-user", "api")[:100] or "api"
            return Who(user, None, None)
        sid = request.cookies.get(SESSION_COOKIE)
        session = config.auth.session(sid)
        return Who(session.user, session, sid) if session else None

    def require(request: Request) -> Who:
        found = who(request)
        if found is not None:
            return found
        if "text/html" in request.headers.get("accept", ""):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            expired = "&expired=1" if request.cookies.get(SESSION_COOKIE) else ""
            raise _Refused(RedirectResponse(f"/login?{urlencode({'next': target})}{expired}", 303))
        raise _Refused(JSONResponse({"error": "sign in or send a Bearer token"}, 401))

    def render(
        request: Request, name: str, context: dict[str, Any], status: int = 200, **extra: Any
    ) -> HTMLResponse:
        locale = locale_of(request)
        t = translator(locale)
        found = who(request)
        base = {
            "t": t,
            "locale": locale,
            "request": request,
            "who": found,
            "csrf": found.session.csrf if found and found.session else "",
            "tz": config.timezone,
            "db": str(config.db_path),
            **context,
            **extra,
        }
        response = HTMLResponse(env.get_template(name).render(base), status)
        if request.query_params.get("lang") in LOCALES:
            response.set_cookie(
                LANG_COOKIE, locale, httponly=True, samesite="strict", secure=config.secure_cookies
            )
        return response

    def page(
        handler: Callable[[Request, Who, Any], Response],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                user = require(request)
            except _Refused as refused:
                return refused.response

            def work() -> Response:
                with (
                    file_lock if not access.served() else contextlib.nullcontext(),
                    access.reader() as reader,
                ):
                    return handler(request, user, reader)

            try:
                return await run_in_threadpool(work)
            except StoreError as exc:
                return PlainTextResponse(f"alert store unavailable: {exc}", 503)

        return endpoint

    # -- pages -------------------------------------------------------------

    def matrix_page(request: Request, user: Who, reader: Any) -> Response:
        window = time_range(request.query_params, tz)
        data = views.matrix(reader, config.policy, window, cache)
        return render(request, "matrix.html", {"window": window, **data})

    def alerts_page(request: Request, user: Who, reader: Any) -> Response:
        window = time_range(request.query_params, tz)
        flt = AlertFilter.from_args(request.query_params)
        data = views.alert_list(reader, flt, window, cache)
        return render(request, "alerts.html", {"window": window, "f": flt, **data})

    def alert_page(request: Request, user: Who, reader: Any) -> Response:
        data = views.alert_detail(reader, request.path_params["alert_id"])
        if data is None:
            return render(request, "missing.html", {}, 404)
        return render(request, "alert.html", data, saved=request.query_params.get("saved"))

    def rule_page(request: Request, user: Who, reader: Any) -> Response:
        versions = reader.rows(q.RULE_TEXT, {"rule": request.path_params["rule_id"]})
        if not versions:
            return render(request, "missing.html", {}, 404)
        return render(request, "rule.html", {"versions": versions})

    def timeline_page(request: Request, user: Who, reader: Any) -> Response:
        window = time_range(request.query_params, tz)
        kind = request.query_params.get("kind", "user")
        kind = kind if kind in q.TIMELINE_WHO else "user"
        name = (request.query_params.get("name") or "").strip()[:200]
        data: dict[str, Any] = {"events": [], "alerts": [], "figure": None}
        if name:
            data = views.timeline(reader, kind, name, window)
            data["figure"] = charts.timeline_figure(data["events"], data["alerts"], tz)
        return render(
            request, "timeline.html", {"window": window, "kind": kind, "name": name, **data}
        )

    def health_page(request: Request, user: Who, reader: Any) -> Response:
        window = time_range(request.query_params, tz)
        data = views.health(reader, window, tz)
        data["figure"] = charts.hits_figure(data["hits"])
        data["rule_errors"] = config.rule_errors() if config.rule_errors else None
        data["extra"] = config.health_extra() if config.health_extra else {}
        return render(request, "health.html", {"window": window, **data})

    # -- triage --------------------------------------------------------------

    async def triage(request: Request) -> Response:
        try:
            user = require(request)
        except _Refused as refused:
            return refused.response
        form = await request.form()
        if user.session is not None:
            given = request.headers.get("x-csrf-token") or str(form.get("csrf", ""))
            if not csrf_ok(user.session, given):
                log.warning("console_csrf_refused", path=request.url.path)
                return render(request, "refused.html", {}, 403)
        alert_id = request.path_params["alert_id"]
        status = str(form.get("status", ""))
        if status not in TRIAGE_STATUSES:
            return PlainTextResponse(f"unknown status {status!r}", 400)
        assignee = form.get("assignee")

        def change() -> dict[str, Any]:
            from correlator.store.triage import apply_triage

            with file_lock if not access.served() else contextlib.nullcontext():
                return apply_triage(
                    config.db_path,
                    alert_id,
                    status,
                    actor=user.user,
                    via="console",
                    note=str(form.get("note", "")) or None,
                    assignee=None if assignee is None else str(assignee),
                )

        try:
            result = await run_in_threadpool(change)
        except TriageError as exc:
            return PlainTextResponse(str(exc), 404)
        except StoreError as exc:
            return PlainTextResponse(f"alert store unavailable: {exc}", 503)
        if user.session is None:
            return JSONResponse(result)
        return RedirectResponse(f"/alerts/{alert_id}?saved=1", 303)

    # -- sign-in -------------------------------------------------------------

    async def login(request: Request) -> Response:
        pre = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)
        error = "expired" if request.query_params.get("expired") else None
        next_url = _safe_next(request.query_params.get("next"))
        if request.method == "POST":
            form = await request.form()
            next_url = _safe_next(str(form.get("next", "")))
            client = request.client.host if request.client else "?"
            if not same_secret(str(form.get("csrf", "")), pre):
                return render(request, "refused.html", {}, 403)
            if config.auth.throttled(client):
                error = "throttled"
            elif config.auth.token_ok(str(form.get("token", ""))):
                name = str(form.get("user", "")).strip()[:100] or "analyst"
                sid, _ = config.auth.open_session(name)
                log.info("console_signed_in", user=name)
                signed_in = RedirectResponse(next_url, 303)
                signed_in.set_cookie(
                    SESSION_COOKIE,
                    sid,
                    httponly=True,
                    samesite="strict",
                    secure=config.secure_cookies,
                    max_age=int(config.auth.ttl_s),
                )
                signed_in.delete_cookie(PRE_COOKIE)
                return signed_in
            else:
                config.auth.failed(client)
                log.warning("console_sign_in_failed", client=client)
                error = "bad_token"
        response = render(
            request, "login.html", {"pre": pre, "error": error, "next": next_url}, 200
        )
        response.set_cookie(
            PRE_COOKIE, pre, httponly=True, samesite="strict", secure=config.secure_cookies
        )
        return response

    async def logout(request: Request) -> Response:
        found = who(request)
        form = await request.form()
        if found is None or found.session is None:
            return RedirectResponse("/login", 303)
        if not csrf_ok(found.session, str(form.get("csrf", ""))):
            return render(request, "refused.html", {}, 403)
        config.auth.close_session(found.sid)
        response = RedirectResponse("/login", 303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    async def static(request: Request) -> Response:
        if request.path_params["name"] == "plotly.css":
            return Response(
                _plotly_css(), media_type="text/css", headers={"Cache-Control": "max-age=3600"}
            )
        found = STATIC.get(request.path_params["name"])
        if found is None:
            return PlainTextResponse("not found", 404)
        path, media = found
        return FileResponse(path, media_type=media, headers={"Cache-Control": "max-age=3600"})

    async def home(request: Request) -> Response:
        return RedirectResponse("/matrix", 303)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def no_icon(request: Request) -> Response:
        return Response(status_code=204)

    routes = [
        Route("/", home),
        Route("/healthz", healthz),
        Route("/favicon.ico", no_icon),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/static/{name}", static),
        Route("/matrix", page(matrix_page)),
        Route("/alerts", page(alerts_page)),
        Route("/alerts/{alert_id}", page(alert_page)),
        Route("/alerts/{alert_id}/triage", triage, methods=["POST"]),
        Route("/rules/{rule_id}", page(rule_page)),
        Route("/timeline", page(timeline_page)),
        Route("/health", page(health_page)),
    ]
    return Starlette(routes=routes, middleware=[Middleware(_Headers, secure=config.secure_cookies)])


@functools.cache
def _plotly_css() -> str:
    return plotly_css(plotly_js_path().read_text(encoding="utf-8"))


def _safe_next(value: str | None) -> str:
    """Only a path on this console (no //host, no scheme): no open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/matrix"
    return value
