"""Which process made a leftover: folders and containers a killed command cannot clean up carry their
maker (`owner()`: host, boot, pid and start time), and the next command removes those whose maker is
gone (`owner_gone`). Used by `bepbuild test`'s scratch folders and containers and by the registry's
staging folders."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def owner(pid: int | None = None) -> str:
    """`<host>:<boot id>:<pid>:<start time>` of a process: names it for as long as it lives, never a later one."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{_boot_id()}:{pid}:{_start_time(pid)}"


def owner_gone(who: str) -> bool:
    """Whether the process `who` (an `owner()`) has ended; False when this machine cannot tell (another host's)."""
    try:
        host, boot, pid, start = who.rsplit(":", 3)
        number = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname() or "unknown" in (boot, _boot_id()) or start == "None":
        return False
    if boot != _boot_id():
        return True  # made before this machine last started
    return _start_time(number) != start
