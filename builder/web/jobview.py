"""What a job page shows, read from the job's record and folder: progress with ETA, the failures
with their tracebacks, the mini-batches being worked on right now, and the settings.

A page polls its job every second. Counts come from the runtime's own incremental
`queue.ProgressReader`, kept per job between requests (each done record is read once per server,
not once per poll); a finished job's counts come from its record (written by the host at the end).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bepbuild_runtime import layout, queue

from ..jobs.runner import FINAL
from .attempts import parse_time

RATE_WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class Progress:
    """The progress bar and counters of a job page."""

    status: str
    final: bool
    total: int | None
    done: int
    failed: int
    pending: int
    running: int
    items_succeeded: int | None  # None while a big job's records are read the first time
    items_failed: int | None
    percent: float
    eta_seconds: float | None
    items_per_second: float | None
    elapsed_seconds: float | None

    @property
    def finished(self) -> int:
        return self.done + self.failed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"finished": self.finished}


class _Live:
    """A job's ProgressReader and its recent (time, finished) samples, for the rate and ETA."""

    def __init__(self, job_dir: Path) -> None:
        self.reader = queue.ProgressReader(job_dir)
        self.samples: deque[tuple[float, int]] = deque(maxlen=240)
        self.lock = threading.Lock()
        self.was_final = False
        self.warm = False  # the reader has read every record once: later reads are news only
        self.warming = False
        self.last: tuple[float, tuple[int | None, int, int, int, int, int | None, int | None]] | None = None

    def counts(self, job_dir: Path) -> tuple[int | None, int, int, int, int, int | None, int | None]:
        """(total, pending, running, done, failed, items succeeded, items failed) now.

        A reader that has many records to read for the first time (a server opening a big job
        midway) reads them in a background thread: meanwhile the mini-batch counts come from the
        folder listings and the item counts are None. Counts younger than FRESH_SECONDS are
        answered again (a page and its first live update ask one after the other)."""
        if self.last is not None and time.monotonic() - self.last[0] < FRESH_SECONDS:
            return self.last[1]
        listing = None
        if self.lock.acquire(blocking=False):
            try:
                if not self.warm:
                    listing = _listing_counts(job_dir)
                if self.warm or listing[3] + listing[4] <= SYNC_READ_LIMIT:  # type: ignore[index]
                    c = self.reader.read()
                    self.warm = True
                    now = time.monotonic()
                    self.samples.append((now, c.done + c.failed))
                    counts = (c.total, c.pending, c.running, c.done, c.failed, c.items_succeeded, c.items_failed)
                    self.last = (now, counts)
                    return counts
            finally:
                self.lock.release()
            self._warm_up()
        return (*(listing or _listing_counts(job_dir)), None, None)

    def _warm_up(self) -> None:
        if self.warming:
            return
        self.warming = True

        def read() -> None:
            with self.lock:
                self.reader.read()
                self.warm = True

        threading.Thread(target=read, name="bepbuild-progress-warm-up", daemon=True).start()


SYNC_READ_LIMIT = 5000  # done/failed records a request may read itself the first time
FRESH_SECONDS = 0.5


def _names(folder: Path) -> list[str]:
    try:
        return [n for n in os.listdir(folder) if n.endswith(".json") and not n.startswith(".")]
    except FileNotFoundError:
        return []


def _listing_counts(job_dir: Path) -> tuple[int | None, int, int, int, int]:
    """(total, pending, running, done, failed) from the folder listings alone (no record read)."""
    running = job_dir / layout.RUNNING_DIR
    workers = os.listdir(running) if running.is_dir() else []
    return (queue.total_count(job_dir), len(_names(job_dir / layout.PENDING_DIR)),
            sum(len(_names(running / w)) for w in workers), len(_names(job_dir / layout.DONE_DIR)),
            len(_names(job_dir / layout.FAILED_DIR)))


_LIVE: OrderedDict[Path, _Live] = OrderedDict()
_LIVE_LOCK = threading.Lock()


def _live(job_dir: Path, final: bool) -> _Live:
    with _LIVE_LOCK:
        live = _LIVE.pop(job_dir, None)
        if live is None or (live.was_final and not final):
            live = _Live(job_dir)  # new, or resumed since: records may have moved back to pending
        live.was_final = final
        _LIVE[job_dir] = live
        while len(_LIVE) > 16:
            _LIVE.popitem(last=False)
        return live


def _epoch(stamp: Any) -> float | None:
    if not stamp:
        return None
    try:
        return parse_time(str(stamp))
    except ValueError:
        return None


def progress(job: dict[str, Any]) -> Progress:
    """The job's progress now."""
    status = str(job.get("status") or "")
    final = status in FINAL
    job_dir = Path(job.get("job_dir") or "")
    recorded = job.get("counts") or {}
    started, ended = _epoch(job.get("started_at")), _epoch(job.get("ended_at"))
    now = time.time()
    if final and "done" in recorded:
        total = recorded.get("mini_batches")
        done, failed = int(recorded.get("done", 0)), int(recorded.get("failed", 0))
        ok, bad = int(recorded.get("items_succeeded", 0)), int(recorded.get("items_failed", 0))
        pending = running = 0
        live = None
    elif (job_dir / layout.QUEUE_DIR).is_dir():
        live = _live(job_dir, final)
        total, pending, running, done, failed, ok, bad = live.counts(job_dir)
    else:
        total, done, failed, pending, running, ok, bad, live = job.get("mini_batches"), 0, 0, 0, 0, 0, 0, None
    finished = done + failed
    percent = 100.0 * finished / total if total else (100.0 if final else 0.0)
    span = ((ended or now) - started) if started else None
    items_rate = (ok + bad) / span if span and span > 0 and ok is not None and bad is not None else None
    eta = None
    if not final and total and live is not None:
        eta = _eta(live, finished, total, started, now)
    return Progress(status, final, total, done, failed, pending, running, ok, bad, round(percent, 2),
                    eta, items_rate, span)


def _eta(live: _Live, finished: int, total: int, started: float | None, now: float) -> float | None:
    """Seconds left at the rate of the last minute (or since the start, for a page just opened)."""
    remaining = total - finished
    if remaining <= 0:
        return 0.0
    samples = list(live.samples)  # a deque copies atomically enough for an estimate
    window = [s for s in samples if samples[-1][0] - s[0] <= RATE_WINDOW_SECONDS] if samples else []
    rate = None
    if len(window) >= 2 and window[-1][0] - window[0][0] >= 2.0 and window[-1][1] > window[0][1]:
        rate = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
    elif started and finished and now > started:
        rate = finished / (now - started)
    return remaining / rate if rate else None


# -- failures ---------------------------------------------------------------------------------------

_ENTRY = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) (.*)$", re.M)


@dataclass(frozen=True)
class Failure:
    """One traceback from logs/user/error/<instance>/<worker>.txt."""

    worker: str
    time: str
    header: str
    text: str
    log: str  # the file, relative to the job folder


def failures(job_dir: Path, limit: int = 20, tail_bytes: int = 256 * 1024, max_files: int = 200) -> tuple[
        list[Failure], int]:
    """The newest `limit` tracebacks (read from the end of each error file), and how many files hold some."""
    folder = job_dir / layout.LOG_USER_ERROR
    files: list[tuple[float, Path]] = []
    for root, _dirs, names in os.walk(folder):
        for n in names:
            if n.endswith(".txt"):
                p = Path(root) / n
                try:
                    files.append((p.stat().st_mtime, p))
                except OSError:
                    continue
    files.sort(reverse=True)
    found: list[Failure] = []
    for _mtime, p in files[:max_files]:
        found.extend(_entries(p, job_dir, tail_bytes))
    found.sort(key=lambda f: f.time, reverse=True)
    return found[:limit], len(files)


def _entries(path: Path, job_dir: Path, tail_bytes: int) -> list[Failure]:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - tail_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    rel = path.relative_to(job_dir).as_posix()
    marks = list(_ENTRY.finditer(text))
    out = []
    for i, m in enumerate(marks):
        body_end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        out.append(Failure(path.stem, m.group(1), m.group(2), text[m.end():body_end].strip("\n"), rel))
    if not marks and text.strip():
        out.append(Failure(path.stem, "", "", text.strip()[-4000:], rel))
    return out


# -- right now --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A mini-batch a worker holds now."""

    worker: str
    batch: int
    since: float  # epoch seconds of the claim (the rename sets the file's ctime)


def running_claims(job_dir: Path) -> list[Claim]:
    """What every worker is working on (a few files: one claim per worker at a time)."""
    out = []
    running = job_dir / layout.RUNNING_DIR
    try:
        workers = os.listdir(running)
    except FileNotFoundError:
        return []
    for w in sorted(workers):
        try:
            with os.scandir(running / w) as it:
                for e in it:
                    if e.name.endswith(".json") and not e.name.startswith("."):
                        try:
                            out.append(Claim(w, int(e.name[:-5]), e.stat().st_ctime))
                        except (OSError, ValueError):
                            continue
        except (FileNotFoundError, NotADirectoryError):
            continue
    return out


# -- settings ---------------------------------------------------------------------------------------


def settings_rows(job: dict[str, Any]) -> list[tuple[str, str]]:
    """The settings the job ran with, as (name, value) rows; environment variable values are hidden
    (they may hold credentials)."""
    s = job.get("settings") or {}
    inp = job.get("input") or {}
    rows: list[tuple[str, Any]] = [
        ("endpoint", job.get("endpoint")), ("deployment", job.get("deployment")), ("backend", job.get("backend")),
        ("image", job.get("image")), ("scoring script", job.get("scoring_script")),
        ("input", f"{inp.get('path')} ({inp.get('type')})" if inp else job.get("input_root")),
        ("output folder", job.get("output_dir")), ("output file", job.get("output_file")),
        ("instance_count", s.get("instance_count")),
        ("max_concurrency_per_instance", s.get("max_concurrency_per_instance")),
        ("mini_batch_size", s.get("mini_batch_size")), ("output_action", s.get("output_action")),
        ("max_retries", s.get("max_retries")), ("timeout", s.get("timeout")),
        ("error_threshold", s.get("error_threshold")), ("logging_level", s.get("logging_level")),
        ("environment variables", ", ".join(sorted(s.get("environment_variables") or {})) or None),
        ("created", job.get("created_at")), ("started", job.get("started_at")), ("ended", job.get("ended_at")),
    ]
    return [(k, str(v)) for k, v in rows if v not in (None, "")]
