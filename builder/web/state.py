"""The running server's state file: `BEPBUILD_HOME/serve.json` (host, port, pid, token).

The server writes it once its socket is bound and removes it on exit; this module is the only
reader. A file whose process is gone (or whose pid now belongs to another process) is stale and
read as "no server". The file holds the token, so it is created readable by its owner only.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import config

STATE_FILE = "serve.json"


@dataclass(frozen=True)
class ServerInfo:
    """Where a server listens and the token every request needs."""

    host: str
    port: int
    pid: int
    token: str
    proc_start: str | None = None  # /proc/<pid>/stat start time: tells a reused pid apart
    backend: str = "docker"

    @property
    def base_url(self) -> str:
        """The URL a client on this machine uses (a server on all interfaces is reached on loopback)."""
        host = self.host
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def page(self, path: str = "/") -> str:
        """A dashboard URL with the token, as the browser opens it."""
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}{path}{sep}token={urllib.parse.quote(self.token)}"

    def scoring_uri(self, endpoint: str) -> str:
        """Azure's scoring_uri of an endpoint: POST here (with the Bearer token) to start a job."""
        return f"{self.base_url}/endpoints/{urllib.parse.quote(endpoint, safe='')}/jobs"


def path(home: Path | None = None) -> Path:
    return (home or config.home()) / STATE_FILE


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on, None where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
            return f.read().rpartition(")")[2].split()
    except OSError:
        return None


def process_start(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks since boot), None where /proc is missing."""
    fields = _stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat(pid)
    return not (fields and fields[0] in ("Z", "X"))  # a zombie has exited: its parent has not reaped it yet


def write(info: ServerInfo, home: Path | None = None) -> Path:
    """Publish `info` atomically, owner-readable only."""
    target = path(home)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, json.dumps(asdict(info), indent=1).encode())
    finally:
        os.close(fd)
    os.replace(tmp, target)
    return target


def _load(home: Path | None = None) -> ServerInfo | None:
    try:
        doc = json.loads(path(home).read_text())
        return ServerInfo(host=str(doc["host"]), port=int(doc["port"]), pid=int(doc["pid"]),
                          token=str(doc["token"]), proc_start=doc.get("proc_start"),
                          backend=str(doc.get("backend") or "docker"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_live(info: ServerInfo) -> bool:
    """The process that wrote `info` still runs (and is the same process, where /proc tells)."""
    if not _alive(info.pid):
        return False
    if info.proc_start is not None:
        now = process_start(info.pid)
        if now is not None and now != info.proc_start:
            return False
    return True


def read(home: Path | None = None) -> ServerInfo | None:
    """The running server of this BEPBUILD_HOME, or None (no file, unreadable, or stale)."""
    info = _load(home)
    return info if info is not None and is_live(info) else None


def remove(pid: int, home: Path | None = None) -> None:
    """Remove the state file if it is the one process `pid` wrote (a newer server's stays)."""
    info = _load(home)
    if info is not None and info.pid == pid:
        path(home).unlink(missing_ok=True)


def owned_by(pid: int, home: Path | None = None) -> bool:
    """The state file still names process `pid` (a server whose file is gone or replaced stops)."""
    info = _load(home)
    return info is not None and info.pid == pid


def stop(home: Path | None = None, timeout: float = 10.0) -> ServerInfo | None:
    """Stop the running server (SIGTERM, then wait for it to exit); returns what was stopped."""
    info = read(home)
    if info is None:
        path(home).unlink(missing_ok=True)  # stale or absent
        return None
    try:
        os.kill(info.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and is_live(info):
        time.sleep(0.05)
    if is_live(info):
        os.kill(info.pid, signal.SIGKILL)
    remove(info.pid, home)
    return info


def scoring_uri(endpoint: str, home: Path | None = None) -> str | None:
    """The endpoint's scoring_uri while a server runs, else None."""
    info = read(home)
    return info.scoring_uri(endpoint) if info else None
