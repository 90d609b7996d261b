"""Azure-like system logs of a worker: one node-log line and one job-report CSV row per attempt.

A worker's files are written by one process at a time: the worker while it lives, then whoever
requeues its claims (its supervisor, or the host for a dead instance). Each line is one `write(2)`
on an O_APPEND descriptor, so a killed worker never leaves half a buffered line behind, and the
hot path pays no flush or fsync.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

from . import layout
from ._fs import open_beneath, open_nofollow, write_all

USER_ERROR = "UserError"  # run()/init() raised or ran too long
SYSTEM_ERROR = "SystemError"  # the worker process was lost


_second: tuple[int, str] = (-1, "")  # the last second formatted (each worker logs many lines a second)


def now_iso(t: float | None = None) -> str:
    """A UTC timestamp with milliseconds, as used in every log line."""
    global _second
    t = time.time() if t is None else t
    whole = math.floor(t)
    micro = round((t - whole) * 1e6)  # as datetime rounds it
    if micro >= 1000000:
        whole, micro = whole + 1, 0
    sec, prefix = _second
    if whole != sec:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(whole))
        _second = (whole, prefix)
    return f"{prefix}{micro // 1000:03d}Z"


def open_append(path: str) -> int:
    """An O_APPEND descriptor on `path`, creating its folder (never through a link at `path`)."""
    try:
        return open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)


def append_text(path: str, text: str) -> None:
    """Append `text` to `path` in one write (for the rare lines outside the hot path)."""
    fd = open_append(path)
    try:
        write_all(fd, text.encode("utf-8", "backslashreplace"))
    finally:
        os.close(fd)


def user_error_path(job_dir: str, worker: str) -> str:
    """`logs/user/error/<instance>/<worker>.txt`: full tracebacks of one worker."""
    return layout.path(job_dir, layout.LOG_USER_ERROR, layout.instance_of(worker), worker + ".txt")


def main_log_path(job_dir: str, instance: str) -> str:
    """`logs/sys/node/<instance>/_main.txt`: the supervisor's lines."""
    return layout.path(job_dir, layout.LOG_SYS_NODE, instance, layout.LOG_SYS_NODE_MAIN)


class WorkerLogs:
    """The node log and the attempts CSV of one worker, kept open for the worker's life."""

    def __init__(self, job_dir: str, worker: str) -> None:
        self.worker = worker
        instance = layout.instance_of(worker)
        # The host opens these too (the lost tries of a dead instance), in folders that the instance
        # could write: no link below the job folder is followed.
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        self._node = open_beneath(os.fspath(job_dir), f"{layout.LOG_SYS_NODE}/{instance}/{worker}.txt", flags)
        self._csv = open_beneath(os.fspath(job_dir), f"{layout.LOG_ATTEMPTS_DIR}/{worker}.csv", flags)
        if os.fstat(self._csv).st_size == 0:
            write_all(self._csv, _csv_line(layout.PROCESSED_COLUMNS))

    def note(self, message: str) -> None:
        """A free-form line in the node log (warnings, worker start and stop)."""
        write_all(self._node, f"{now_iso()} {self.worker} {message}\n".encode("utf-8", "backslashreplace"))

    def attempt(
        self,
        batch: dict[str, Any],
        status: str,
        *,
        start: float,
        elapsed: float,
        process_seconds: float = 0.0,
        run_seconds: float = 0.0,
        succeeded: int = 0,
        error_category: str = "",
        error_message: str = "",
    ) -> None:
        """Record one attempt of `batch` (start is a time.time() stamp) in both files."""
        items = batch.get("items", ())
        total = len(items)
        failed = total - succeeded
        picked = int(batch.get("attempt", 0)) + 1
        started = now_iso(start)
        line = (
            f"{started} {self.worker} pid={os.getpid()} mini-batch {batch.get('id')} try {picked}: {status}"
            f" total={total} succeeded={succeeded} failed={failed} elapsed={elapsed:.4f}s"
            f" process={process_seconds:.4f}s run={run_seconds:.4f}s"
        )
        if error_message:
            line += " error=" + error_message.replace("\n", " ")[:300]
        write_all(self._node, (line + "\n").encode("utf-8", "backslashreplace"))
        row = (
            batch.get("id"), picked, self.worker, started, total, succeeded, failed,
            f"{elapsed:.4f}", f"{process_seconds:.4f}", f"{run_seconds:.4f}", status, error_category,
            error_message[:1000], json.dumps({"items": items}),
        )
        write_all(self._csv, _csv_line(row))

    def close(self) -> None:
        """Close both descriptors."""
        for fd in (self._node, self._csv):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> WorkerLogs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _csv_line(row: Sequence[Any]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(row)
    return buf.getvalue().encode("utf-8", "backslashreplace")
