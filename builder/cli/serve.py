"""`bepbuild serve` (alias `dashboard`): the local dashboard and Azure's REST invoke of endpoints."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from ..errors import UserError
from ._common import OutputOpt, QueryOpt, emit, guarded, note

EXTRA_HINT = "the dashboard needs its extra: pip install 'bepbuild[dashboard]'"


def _server_module():  # noqa: ANN202 - the module, imported only when serving
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise UserError(f"{EXTRA_HINT} ({e.name} is missing)") from None
    from ..web import server

    return server


@guarded
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on; 0.0.0.0 for every interface.")]
    = "127.0.0.1",
    port: Annotated[int | None, typer.Option("--port", "-p", help="Port (default 8765 or the next free one; 0: any).")]
    = None,
    token: Annotated[str | None, typer.Option("--token", envvar="BEPBUILD_SERVE_TOKEN",
                                              help="Token to require (default: a new random one).")] = None,
    backend: Annotated[str, typer.Option("--backend", help="Backend of jobs started by REST: docker or process.")]
    = "docker",
    idle_timeout: Annotated[float | None, typer.Option("--idle-timeout", help="Stop after this many seconds "
                                                       "without a request.")] = None,
    list_: Annotated[bool, typer.Option("--list", help="Show the running server (URL with token) and exit.")]
    = False,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the running server and exit.")] = False,
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """Serve the dashboard (endpoints, jobs, live job pages, outputs) and the endpoints' REST scoring URIs."""
    from ..web import state

    if list_:
        info = state.read()
        emit([_describe(info)] if info else [], output, query)
        return
    if stop:
        info = state.stop()
        note(f"stopped the server at {info.base_url} (pid {info.pid})" if info else "no server runs")
        return
    server = _server_module()
    if host in server.ALL_INTERFACES:
        note(f"listening on every interface ({host or '0.0.0.0'}): every request still needs the token, which "
             "is the only protection (plain HTTP, no TLS): share it only on networks you trust")

    def announce(info: state.ServerInfo) -> None:
        note(f"bepbuild dashboard: {info.page('/endpoints')}")
        note(f"REST: POST {info.base_url}/endpoints/<endpoint>/jobs with the header "
             f"'Authorization: Bearer {info.token}'")
        note("every request needs the token; Ctrl+C stops the server")

    server.serve(host, server.DEFAULT_PORT if port is None else port, token=token, backend=backend,
                 exact_port=port is not None, idle_timeout=idle_timeout, announce=announce)


def _describe(info: object) -> dict[str, object]:
    from ..web.state import ServerInfo

    assert isinstance(info, ServerInfo)
    return {"url": info.page("/endpoints"), "base_url": info.base_url, "host": info.host, "port": info.port,
            "pid": info.pid, "token": info.token, "backend": info.backend}


def job_page(name: str) -> str:
    """The URL of job `name`'s page, starting a server in the background when none runs."""
    import urllib.parse

    server = _server_module()
    info = server.start_background()
    return info.page(f"/jobs/{urllib.parse.quote(name, safe='')}")


def show_job_page(job: dict[str, object]) -> None:
    """`job show --web`: open (or print, without a display) the job's page, starting a server in the
    background when none runs; the job folder is printed too. A dashboard that cannot start is a
    warning: the job is still shown."""
    from ..errors import BepbuildError
    from ._common import warn

    try:
        url = job_page(str(job["name"]))
    except BepbuildError as e:
        warn(f"no job page: {e.line()}")
    else:
        opened = open_in_browser(url)
        note(f"job page{' (opened in the browser)' if opened else ''}: {url}")
    note(f"job folder: {job.get('job_dir', '')}")


def open_in_browser(url: str) -> bool:
    """Open `url` where there is a display; never a text browser in this terminal."""
    if sys.platform not in ("darwin", "win32") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    import webbrowser

    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False
