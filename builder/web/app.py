"""The Starlette application: the token check in front of every route, error answers as the CLI
words them, templates, and a registry connection per worker thread.

Every request needs the server's token: `Authorization: Bearer <token>` (REST clients) or
`?token=<token>` (the dashboard's links carry it, like Jupyter's). Nothing is served without it,
static files included.
"""

from __future__ import annotations

import secrets
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__, config
from ..cli._common import one_line
from ..errors import BepbuildError, ConflictError, NotFoundError, UserError
from ..store import Store

HERE = Path(__file__).resolve().parent
TOKEN_PARAM = "token"
SECURITY_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                "script-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    "Cache-Control": "no-store",
}


def http_status(exc: BepbuildError) -> int:
    """The HTTP status of an error: 404 unknown name, 409 conflict, 400 other user errors, 500 else."""
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, UserError):
        return 400
    return 500


def error_json(status: int, code: str, message: str) -> JSONResponse:
    """Azure's error shape, with the CLI's one-line message."""
    return JSONResponse({"error": {"code": code, "message": one_line(message)}}, status_code=status)


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


class TokenGate:
    """ASGI middleware: 401 for any HTTP request without the token; security headers on every answer."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _authorized(self, scope: Scope) -> bool:
        given: list[str] = []
        for k, v in scope.get("headers") or []:
            if k == b"authorization":
                scheme, _, value = v.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    given.append(value.strip())
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given.extend(query.get(TOKEN_PARAM, []))
        return any(secrets.compare_digest(g.encode("utf-8", "replace"), self.token) for g in given)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {k.lower() for k, _ in headers}
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()
                            if k.lower().encode() not in present]
                message = {**message, "headers": headers}
            await send(message)

        if not self._authorized(scope):
            request = Request(scope)
            message = ("this bepbuild server needs its token: open the URL `bepbuild serve` printed, or send "
                       "`Authorization: Bearer <token>` (`bepbuild serve --list` shows it)")
            if wants_html(request):
                response: Response = HTMLResponse(f"<!doctype html><title>401 Unauthorized</title>"
                                                  f"<h1>401 Unauthorized</h1><p>{message}</p>", status_code=401)
            else:
                response = error_json(401, "Unauthorized", message)
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, with_headers)
            return
        await self.app(scope, receive, with_headers)


class Stores(threading.local):
    """One registry connection per worker thread and registry file (sqlite connections stay in their thread)."""

    def get(self) -> Store:
        path = config.db_path()
        cache: dict[Path, Store] = self.__dict__.setdefault("cache", {})
        if path not in cache:
            cache[path] = Store.open(path)
        return cache[path]


STORES = Stores()


def store() -> Store:
    return STORES.get()


def templates(token: str) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=jinja2.select_autoescape(("html", "svg")), trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)

    def url(path: str, **query: Any) -> str:
        """A link inside the dashboard: the token goes along."""
        params = {k: v for k, v in query.items() if v not in (None, "")}
        params[TOKEN_PARAM] = token
        return f"{path}?{urllib.parse.urlencode(params)}"

    env.globals.update(url=url, quote=lambda s: urllib.parse.quote(str(s), safe=""), version=__version__)
    env.filters.update(duration=_duration, number=lambda n: "-" if n is None else f"{n:,}",
                       rate=lambda r: "-" if not r else (f"{r:,.1f}" if r < 100 else f"{r:,.0f}"),
                       size=_size, qpath=lambda s: urllib.parse.quote(str(s), safe="/"))
    return env


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def create_app(token: str, *, backend: str = "docker", server: Any = None) -> Starlette:
    """The dashboard and REST app; `backend` runs the jobs REST clients start, `server` is the
    ServerInfo shown on pages (scoring URIs), None in tests without a real server."""
    from . import routes_api, routes_pages, routes_rest

    env = templates(token)

    async def on_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BepbuildError)
        status = http_status(exc)
        if wants_html(request) and request.method == "GET":
            body = env.get_template("error.html").render(status=status, message=one_line(exc.line()))
            return HTMLResponse(body, status_code=status)
        return error_json(status, type(exc).__name__, exc.line())

    async def on_bug(request: Request, exc: Exception) -> Response:
        # As the CLI words a bug: one line (uvicorn logs the traceback).
        return error_json(500, "InternalError", f"internal error: {type(exc).__name__}: {exc}")

    routes = routes_rest.routes() + routes_api.routes() + routes_pages.routes()
    routes.append(Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"))
    app = Starlette(routes=routes, exception_handlers={BepbuildError: on_error, Exception: on_bug},
                    middleware=[Middleware(TokenGate, token=token)])
    app.state.templates = env
    app.state.token = token
    app.state.backend = backend
    app.state.server = server
    return app


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A template rendered as the page's answer."""
    env: jinja2.Environment = request.app.state.templates
    return HTMLResponse(env.get_template(name).render(request=request, **context), status_code=status)


def fragment(request: Request, name: str, **context: Any) -> str:
    env: jinja2.Environment = request.app.state.templates
    return env.get_template(name).render(request=request, **context)
