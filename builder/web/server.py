"""Running the server: bind, publish the state file, serve until stopped, remove the state file.

One server per BEPBUILD_HOME. It stops on SIGTERM/SIGINT, when its state file is removed or taken
over by another server, and (when started in the background by `job show --web`) after a while
without requests, so a page opened once does not leave a process behind for ever.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import config
from ..errors import ConflictError, UserError
from . import state

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
PORT_TRIES = 20  # the default port taken: the next ones are tried, as Jupyter does
BACKGROUND_IDLE_SECONDS = 3600.0
MIN_TOKEN_CHARS = 16
WATCH_SECONDS = 1.0
ALL_INTERFACES = ("0.0.0.0", "::", "")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def check_token(token: str) -> str:
    if len(token) < MIN_TOKEN_CHARS or not token.isprintable() or " " in token:
        raise UserError(f"--token: at least {MIN_TOKEN_CHARS} printable characters without spaces")
    return token


def bind(host: str, port: int, *, exact: bool) -> socket.socket:
    """A listening socket on host:port (port 0: any free one); when not `exact`, the next ports are
    tried while the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    last: OSError | None = None
    for candidate in [port] if exact or port == 0 else range(port, port + PORT_TRIES):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
            sock.listen(128)
            sock.set_inheritable(False)
            return sock
        except OSError as e:
            sock.close()
            last = e
            if e.errno == 99 or isinstance(e, socket.gaierror):  # EADDRNOTAVAIL: not an address of this machine
                break
    where = f"{host}:{port}" if exact or port == 0 else f"{host}:{port}-{port + PORT_TRIES - 1}"
    raise UserError(f"--host/--port {where}: cannot listen ({last.strerror if last else 'unknown'}); "
                    "pass another --port (0 picks a free one)")


class _Activity:
    """ASGI wrapper remembering when the last request came (for the idle timeout)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last = time.monotonic()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.last = time.monotonic()
        await self.app(scope, receive, send)


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, token: str | None = None, backend: str = "docker",
          exact_port: bool = False, idle_timeout: float | None = None,
          announce: Callable[[state.ServerInfo], None] | None = None) -> None:
    """Serve the dashboard and REST API until stopped (blocks)."""
    import uvicorn

    from .app import create_app

    if backend not in ("docker", "process"):
        raise UserError(f"--backend must be docker or process, got {backend!r}")
    running = state.read()
    if running is not None:
        raise ConflictError(f"a bepbuild server already runs for {config.home()} at {running.base_url} "
                            f"(pid {running.pid}); `bepbuild serve --list` shows its URL, `--stop` stops it")
    token = check_token(token) if token else new_token()
    sock = bind(host, port, exact=exact_port)
    pid = os.getpid()
    info = state.ServerInfo(host=host, port=sock.getsockname()[1], pid=pid, token=token,
                            proc_start=state.process_start(pid), backend=backend)
    app = _Activity(create_app(token, backend=backend, server=info))

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn raises a stop signal again once it has shut down, which kills the process
            # before the state file is removed: the handlers below end serve() normally instead.
            yield

    server = Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                   timeout_graceful_shutdown=3))
    state.write(info)
    home = config.home()
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(WATCH_SECONDS):
            if not state.owned_by(pid, home):
                server.should_exit = True  # removed (serve --stop, a deleted home) or taken over
            elif idle_timeout and time.monotonic() - app.last > idle_timeout:
                server.should_exit = True

    watcher = threading.Thread(target=watch, name="bepbuild-serve-watch", daemon=True)
    watcher.start()
    if announce:
        announce(info)
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.signal(sig, server.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        stop.set()
        state.remove(pid, home)
        sock.close()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def log_path() -> Path:
    return config.home() / "serve.log"


def start_background(backend: str = "docker", timeout: float = 20.0) -> state.ServerInfo:
    """The running server, or a new one started in the background (stops after an idle hour)."""
    info = state.read()
    if info is not None:
        return info
    log = log_path()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bepbuild.web", "--backend", backend,
             "--idle-timeout", str(BACKGROUND_IDLE_SECONDS)],
            stdout=f, stderr=f, stdin=subprocess.DEVNULL, start_new_session=True, env=os.environ.copy())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = state.read()
        if info is not None:
            return info
        if proc.poll() is not None:
            info = state.read()  # another server won the race: use it
            if info is not None:
                return info
            raise UserError(f"the dashboard server did not start (exit code {proc.returncode}): {_tail(log)}")
        time.sleep(0.05)
    raise UserError(f"the dashboard server did not answer within {timeout:.0f} s; see {log}")


def _tail(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return f"see {path}"
    return lines[-1][:300] if lines else f"see {path}"
