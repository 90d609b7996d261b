"""Pythons of other versions on this host: pyenv's installations, and interpreters on PATH.

A lock for Python X.Y is resolved by an interpreter X.Y when the host has one (pip then reads
environment markers and wheel tags as that Python does), and a local base image with Python X.Y is
made from such an installation (`base_images.build_local`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

from packaging.version import InvalidVersion, Version

_INSTALLED = re.compile(r"(\d+)\.(\d+)\.(\d+)")
# `pip install --dry-run --report`, which locking reads, came with pip 22.2.
MIN_PIP = Version("22.2")


def this_minor() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def pyenv_root() -> Path:
    return Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv").expanduser()


def installations() -> dict[str, Path]:
    """Self-contained Python installations on this host by X.Y (the newest patch of each): pyenv's."""
    found: dict[str, tuple[tuple[int, ...], Path]] = {}
    versions = pyenv_root() / "versions"
    if not versions.is_dir():
        return {}
    for d in versions.iterdir():
        m = _INSTALLED.fullmatch(d.name)
        if not m or not d.is_dir():
            continue
        minor = f"{m.group(1)}.{m.group(2)}"
        if not os.access(d / "bin" / f"python{minor}", os.X_OK):
            continue
        key = tuple(int(g) for g in m.groups())
        if minor not in found or key > found[minor][0]:
            found[minor] = (key, d)
    return {minor: path for minor, (_, path) in found.items()}


def interpreter(minor: str) -> Path | None:
    """An interpreter of Python `minor` on this host whose pip can resolve a lock: this one, pyenv's,
    or `pythonX.Y` on PATH; None when there is none."""
    if minor == this_minor():
        return Path(sys.executable)
    candidates = []
    prefix = installations().get(minor)
    if prefix is not None:
        candidates.append(prefix / "bin" / f"python{minor}")
    on_path = shutil.which(f"python{minor}")
    if on_path:
        candidates.append(Path(on_path))
    return next((c for c in candidates if _can_lock(str(c), minor)), None)


@cache
def _can_lock(exe: str, minor: str) -> bool:
    """Whether `exe` is Python `minor` with a pip that writes install reports (a pyenv shim may be another)."""
    probe = ("import sys, importlib.metadata as m; "
             "print('%d.%d' % sys.version_info[:2], m.version('pip'))")
    try:
        out = subprocess.run([exe, "-c", probe], capture_output=True, text=True, timeout=60)
    except OSError:
        return False
    parts = out.stdout.split()
    if out.returncode != 0 or len(parts) != 2 or parts[0] != minor:
        return False
    try:
        return Version(parts[1]) >= MIN_PIP
    except InvalidVersion:
        return False
