"""Small file helpers shared by the queue and progress modules (stdlib only)."""

from __future__ import annotations

import errno
import json
import os

from . import layout

JSON = ".json"
dumps = json.JSONEncoder(separators=(",", ":")).encode  # ASCII-escaped: odd file names survive


NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_no_space(exc: BaseException) -> bool:
    """An OSError saying the filesystem (of the job folder) is full."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


def is_claim(name: str) -> bool:
    """A mini-batch file name (not a temp file, heartbeat or staging folder)."""
    return name.endswith(JSON) and not name.startswith(".")


def worker_dir(job_dir: str | os.PathLike[str], worker: str) -> str:
    """`queue/running/<worker>`: the worker's claims, heartbeat and temp files."""
    return layout.path(job_dir, layout.RUNNING_DIR, worker)


def write_all(fd: int, data: bytes) -> None:
    """os.write until all of `data` is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_atomic(path: str, data: bytes, tmp_dir: str) -> None:
    """Write `path` so readers see the old file or the whole new one (tmp in `tmp_dir`, rename)."""
    tmp = os.path.join(tmp_dir, layout.TMP_PREFIX + os.path.basename(path))
    fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def open_nofollow(path: str, flags: int, mode: int = 0o666) -> int:
    """os.open that never follows a symbolic link at `path`, replacing one by a new file.

    Scoring code writes in the job folder; the host (perhaps root) writes there too, and a link left
    where it writes must not send its bytes elsewhere.
    """
    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
    os.unlink(path)
    return os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)


def unlink_quiet(path: str) -> None:
    """Unlink `path`; a missing file is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def listdir(folder: str) -> list[str]:
    """os.listdir, empty for a missing folder."""
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


def total_count(job_dir: str | os.PathLike[str]) -> int | None:
    """The number of mini-batches write_queue wrote, or None when unknown."""
    try:
        with open(layout.path(job_dir, layout.QUEUE_COUNT_FILE), encoding="ascii") as f:
            return int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return None
