"""`job stream`: follow a job as `az ml job stream` does, as lines of text.

First the job's name and where to look at it, then the progress overview lines as the host writes
them (each change once), then an execution summary with the final status and where the outputs are.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bepbuild_runtime import layout

from ..store import Store
from . import service
from .runner import FINAL

POLL_SECONDS = 0.5


def _overview(job_dir: Path) -> list[str]:
    """The lines of the newest progress overview file (none before the host wrote one)."""
    prefix = Path(layout.LOG_PROGRESS_PREFIX)
    files = sorted((job_dir / prefix.parent).glob(prefix.name + "*.txt"))
    if not files:
        return []
    try:
        return files[-1].read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def follow(store: Store, name: str, web_view: str, *, poll: float = POLL_SECONDS,
           sleep: Callable[[float], None] = time.sleep) -> Iterator[str]:
    """Lines describing job `name` until it ends; the final job record is in the last `summary` call."""
    job = service.show(store, name)
    job_dir = Path(job["job_dir"])
    yield f"RunId: {job['name']}"
    yield f"Web View: {web_view}"
    yield ""
    yield f"Streaming {layout.LOG_PROGRESS_PREFIX}<hour>.txt"
    yield "=" * 60
    shown: list[str] = []
    status = None
    while True:
        job = service.show(store, name)
        lines = _overview(job_dir)
        # The first line carries a timestamp: print it with every change of the rest.
        if lines[1:] and lines[1:] != shown[1:]:
            for i, line in enumerate(lines):
                if i == 0 or i >= len(shown) or shown[i] != line:
                    yield line
            shown = lines
        elif job["status"] != status and job["status"] not in FINAL:
            yield f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC  job {name}  status {job['status']}"
        status = job["status"]
        if status in FINAL:
            break
        sleep(poll)
    yield ""
    yield from summary(job, web_view)


def summary(job: dict[str, Any], web_view: str) -> Iterator[str]:
    """The closing block of `job stream`: status, counts, error, outputs."""
    yield "Execution Summary"
    yield "================="
    yield f"RunId: {job['name']}"
    yield f"Status: {job['status']}"
    if job.get("summary"):
        yield f"Summary: {job['summary']}"
    if job.get("error"):
        yield f"Error: {job['error']}"
    if job["status"] == "Completed":
        yield f"Outputs: {job.get('output_file') or job.get('output_dir')}"
    yield f"Logs: {Path(job['job_dir']) / layout.LOGS_DIR}"
    yield f"Web View: {web_view}"
