"""Host-side job logs, laid out like Azure ML's: overview, result, error, processed mini-batches."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bepbuild_runtime import layout

from .hostlock import open_nofollow


def write_file(path: Path, text: str) -> None:
    """Replace `path` whole (a temp file, then a rename), never writing through a link."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _read_text(path: Path) -> str:
    """A log a scoring container may have written: read only when it is a regular file, not a link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return ""
    with os.fdopen(fd, encoding="utf-8", errors="replace") as f:
        return f.read()



def note(job_dir: Path, message: str) -> None:
    """A timestamped line in the host's log (`logs/host.txt`): what the host decided, and why."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path = job_dir / layout.LOG_HOST
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, f"{stamp} host {os.getpid()}: {message}\n".encode("utf-8", "backslashreplace"))
    finally:
        os.close(fd)


def overview(job_dir: Path, job: dict[str, Any], counts: Any, instances: list[str]) -> None:
    """`logs/job_progress_overview.<yyyymmddhh>.txt`: what a person checks first."""
    stamp = time.strftime("%Y%m%d%H", time.gmtime())
    total = counts.total if counts.total is not None else job.get("mini_batches")
    lines = [
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC  job {job['name']}  status {job.get('status')}",
        f"Total mini batches: {total}",
        f"Processed mini batches: {counts.done + counts.failed} (done {counts.done}, failed {counts.failed})",
        f"Pending: {counts.pending}  Running: {counts.running}",
        f"Items succeeded: {counts.items_succeeded}  failed: {counts.items_failed}",
        f"Instances running: {', '.join(instances) or 'none'}",
    ]
    if job.get("error"):
        lines.append(f"Error: {job['error']}")
    write_file(job_dir / f"{layout.LOG_PROGRESS_PREFIX}{stamp}.txt", "\n".join(lines) + "\n")


def result(job_dir: Path, job: dict[str, Any]) -> None:
    """`logs/job_result.txt` (and `logs/job_error.txt` when the job failed)."""
    status = job["status"]
    if status == "Completed":
        text = f"Job {job['name']} completed. {job.get('summary', '')}\n"
    else:
        text = (
            f"Job {job['name']} {status.lower()}: {job.get('error') or ''}\n"
            "Check logs/user/error/ for tracebacks of init()/run(), logs/sys/node/ for each mini-batch, "
            "and logs/sys/job_report/processed_mini-batches.csv for every attempt.\n"
        )
    write_file(job_dir / layout.LOG_RESULT, text)
    if status == "Failed":
        write_file(job_dir / layout.LOG_ERROR, f"{job.get('error') or 'failed'}\n" + _first_errors(job_dir))


def _first_errors(job_dir: Path, limit: int = 3) -> str:
    folder = job_dir / layout.LOG_USER_ERROR
    out = []
    for p in sorted(folder.rglob("*.txt")) if folder.exists() else []:
        text = _read_text(p).strip()
        if text:
            out.append(f"--- {p.relative_to(job_dir)} ---\n{text[-2000:]}\n")
        if len(out) >= limit:
            break
    return "".join(out)


def processed_mini_batches(job_dir: Path) -> int:
    """Merge every worker's attempts CSV into `processed_mini-batches.csv`; returns the rows."""
    folder = job_dir / layout.LOG_ATTEMPTS_DIR
    header = ",".join(layout.PROCESSED_COLUMNS) + "\n"
    rows = 0
    target = job_dir / layout.LOG_PROCESSED_MINI_BATCHES
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(".processed.tmp")
    with os.fdopen(open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w", encoding="utf-8") as out:
        out.write(header)
        for p in sorted(folder.glob("*.csv")) if folder.exists() else []:
            try:
                fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:  # a link (or gone): not a log the runtime wrote
                continue
            with os.fdopen(fd, encoding="utf-8", errors="replace") as f:
                first = True
                for line in f:
                    if first:
                        first = False
                        if line.startswith("Mini-batch Id"):
                            continue
                    out.write(line)
                    rows += 1
    os.replace(tmp, target)
    return rows
