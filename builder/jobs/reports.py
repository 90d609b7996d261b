"""Host-side job logs, laid out like Azure ML's: overview, result, error, processed mini-batches."""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from bepbuild_runtime import layout
from bepbuild_runtime._fs import write_all

from .hostlock import open_in_job, open_nofollow


def write_file(path: Path, text: str) -> None:
    """Replace `path` whole (a temp file, then a rename), never writing through a link."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _read_text(name: str, dir_fd: int) -> str:
    """A log a scoring container may have written: read only when it is a regular file, not a link."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return ""
    with os.fdopen(fd, encoding="utf-8", errors="replace") as f:
        return f.read()


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _job_folder(job_dir: Path, rel: str, *, make: bool = False) -> int | None:
    """A descriptor of the folder `job_dir/rel`, reached without following a link, or None.

    Scoring containers write below the job folder (a non-root host's containers anywhere in it), so a
    folder there may have been replaced by a link to a folder of the host: the host (perhaps root)
    must neither read what such a link names into its reports nor write through it. With `make`,
    missing folders are made and a link in a folder's place is replaced by a folder; without, a
    missing folder or a link gives None.
    """
    fd = os.open(job_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in [p for p in rel.split("/") if p]:
            try:
                sub = os.open(part, _DIR, dir_fd=fd)
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                    raise
                if not make:
                    return None
                if e.errno != errno.ENOENT:
                    if not stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                        raise  # a file where a folder goes: not the host's to remove
                    os.unlink(part, dir_fd=fd)
                try:
                    os.mkdir(part, dir_fd=fd)
                except FileExistsError:
                    pass
                sub = os.open(part, _DIR, dir_fd=fd)
            os.close(fd)
            fd = sub
        found, fd = fd, -1
        return found
    finally:
        if fd >= 0:
            os.close(fd)


@contextmanager
def _replacing(job_dir: Path, rel: str) -> Iterator[TextIO]:
    """A text file that replaces `job_dir/rel` whole when the block ends (a temp file, then a rename),
    without following a link on the way."""
    folder, _, name = rel.rpartition("/")
    dir_fd = _job_folder(job_dir, folder, make=True)
    assert dir_fd is not None
    try:
        tmp = f".{name}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o644, dir_fd=dir_fd)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            os.unlink(tmp, dir_fd=dir_fd)
            fd = os.open(tmp, flags | os.O_EXCL, 0o644, dir_fd=dir_fd)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def _write_in_job(job_dir: Path, rel: str, text: str) -> None:
    with _replacing(job_dir, rel) as f:
        f.write(text)


def note(job_dir: Path, message: str) -> None:
    """A timestamped line in the host's log (`logs/host.txt`): what the host decided, and why."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    fd = open_in_job(job_dir, layout.LOG_HOST, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        write_all(fd, f"{stamp} host {os.getpid()}: {message}\n".encode("utf-8", "backslashreplace"))
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
    _write_in_job(job_dir, f"{layout.LOG_PROGRESS_PREFIX}{stamp}.txt", "\n".join(lines) + "\n")


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
    _write_in_job(job_dir, layout.LOG_RESULT, text)
    if status == "Failed":
        _write_in_job(job_dir, layout.LOG_ERROR, f"{job.get('error') or 'failed'}\n" + _first_errors(job_dir))


def _first_errors(job_dir: Path, limit: int = 3) -> str:
    """The first tracebacks under logs/user/error/ (in name order), no link followed."""
    top = _job_folder(job_dir, layout.LOG_USER_ERROR)
    if top is None:
        return ""
    try:  # fwalk never goes into a linked folder
        found = sorted(os.path.normpath(os.path.join(folder, n))
                       for folder, _dirs, files, _fd in os.fwalk(".", dir_fd=top) for n in files if n.endswith(".txt"))
    finally:
        os.close(top)
    out = []
    for rel in found:
        where, _, name = rel.rpartition("/")
        fd = _job_folder(job_dir, f"{layout.LOG_USER_ERROR}/{where}".rstrip("/"))
        if fd is None:
            continue
        try:
            text = _read_text(name, fd).strip()
        finally:
            os.close(fd)
        if text:
            out.append(f"--- {layout.LOG_USER_ERROR}/{rel} ---\n{text[-2000:]}\n")
        if len(out) >= limit:
            break
    return "".join(out)


def processed_mini_batches(job_dir: Path) -> int:
    """Merge every worker's attempts CSV into `processed_mini-batches.csv`; returns the rows."""
    header = ",".join(layout.PROCESSED_COLUMNS) + "\n"
    rows = 0
    folder = _job_folder(job_dir, layout.LOG_ATTEMPTS_DIR)
    try:
        with _replacing(job_dir, layout.LOG_PROCESSED_MINI_BATCHES) as out:
            out.write(header)
            for name in sorted(n for n in os.listdir(folder) if n.endswith(".csv")) if folder is not None else []:
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
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
    finally:
        if folder is not None:
            os.close(folder)
    return rows
