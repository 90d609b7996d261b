"""The job's coordinator: one instance at a time watches the whole job, from inside it.

Every instance's supervisor runs a `Coordinator`; the one holding the lease does the job-wide work
that needs no engine, so that a job never depends on the process (or machine) that submitted it:

- gives back the claims of workers whose heartbeat stopped changing (a dead instance on any node);
- stops the job when more items failed than `error_threshold` allows;
- when every mini-batch is done or failed, merges the results into the output file (exactly once,
  published with link(2)) and writes the outcome, `state/outcome.json`; every instance stops once
  an outcome is there.

The lease is a file per term, `state/lease.<term>`, created exclusively (O_EXCL: one winner, also
over NFS), whose holder renews it by touching it. Another instance takes the next term over when
the lease has not changed for LEASE_SECONDS of its own running time (a paused observer does not
count the pause; clocks of different nodes are never compared), at once when the lease belongs to
an earlier run of the job (`job.json`'s `run`, raised by every resume) or to an earlier life of
its own instance. A holder checks that no later term exists right before each thing it does; a
holder presumed dead that acts anyway is harmless: claims are taken by rename (queue.take_worker),
and the merge never overwrites an output, and recognises one it published itself.

Host-side, `bepbuild` records the outcome (job.json, registry, reports) when it sees it; the host
that launched the instances may finalize a drained job itself (`finalize`) when every instance is
gone before one did.
"""

from __future__ import annotations

import errno
import filecmp
import json
import os
import time
import uuid
from typing import Any, Dict

from . import layout, queue
from ._fs import dumps, listdir, unlink_quiet, write_all
from .progress import ProgressReader, merge_results, merge_tmp
from .settings import APPEND_ROW, Settings

COMPLETED, FAILED = "Completed", "Failed"
NO_RESULT = (
    "No succeeded mini batch item returned from run(). Please check 'response: run()' in "
    "https://aka.ms/batch-inference-documentation"
)
STEP_SECONDS = 0.5  # how often the holder looks at the job: counts, heartbeats, the threshold
GAP_SECONDS = 2.0  # a look this late means we were not running (paused, asleep): that time is not counted

Outcome = Dict[str, Any]  # typing's: a builtin subscripted at run time needs 3.9


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _read_json(path: str) -> Any:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            return json.loads(f.read() or b"null")
    except ValueError:
        return None


def read_outcome(job_dir: str | os.PathLike[str]) -> Outcome | None:
    """The outcome a coordinator wrote (`status` Completed or Failed, `error`), or None.

    Scoring code runs as the runtime user and could write this file: callers take only its status
    and error from it, never a path or a setting.
    """
    doc = _read_json(layout.path(job_dir, layout.OUTCOME_FILE))
    if not isinstance(doc, dict) or doc.get("status") not in (COMPLETED, FAILED):
        return None
    return doc


def _write_json(job_dir: str, name: str, doc: dict[str, Any]) -> None:
    """Replace `state/<name>` whole (a temp file in state/, then a rename)."""
    state = layout.path(job_dir, layout.STATE_DIR)
    os.makedirs(state, exist_ok=True)
    queue.write_atomic(layout.path(job_dir, name), dumps(doc).encode("ascii"), state)


class Lease:
    """The coordinator lease of a job, as seen by one candidate (`holder`: its instance name)."""

    def __init__(self, job_dir: str, holder: str, run: int = 0) -> None:
        self.job = job_dir
        self.holder = holder
        self.run = run
        self.token = uuid.uuid4().hex[:layout.LEASE_TOKEN_CHARS]
        self.term: int | None = None  # the term we hold
        self._seen: tuple[int, int] | None = None  # (term, mtime) of the lease we watch
        self._quiet = 0.0  # seconds of our running time that lease has not changed
        self._last: float | None = None  # monotonic time of our last look
        self._renewed = 0.0

    def latest(self) -> int | None:
        """The highest term there is (None: no lease was ever taken)."""
        prefix = os.path.basename(layout.LEASE_PREFIX)
        terms = [int(n[len(prefix):]) for n in listdir(layout.path(self.job, layout.STATE_DIR))
                 if n.startswith(prefix) and n[len(prefix):].isdigit()]
        return max(terms) if terms else None

    def held(self) -> bool:
        """Whether we hold the lease right now (no later term was taken meanwhile)."""
        return self.term is not None and self.latest() == self.term

    def tick(self, now: float, force: bool = False) -> bool:
        """Look at the lease once (`now`: time.monotonic()); renew it when ours, take it over when it is
        free, stale or void (`force`: at once, whoever holds it); whether we hold it now."""
        elapsed = 0.0 if self._last is None else now - self._last
        self._last = now
        if elapsed > GAP_SECONDS:
            elapsed = 0.0  # we were not running: nobody could be seen meanwhile
        term = self.latest()
        if term is None:
            return self._take(1, now)
        path = layout.path(self.job, layout.lease_file(term))
        if term == self.term:
            if now - self._renewed >= layout.HEARTBEAT_SECONDS:
                try:
                    os.utime(path)
                except FileNotFoundError:
                    pass  # a newer term's holder cleaned it up: held() says so next time
                self._renewed = now
            return True
        self.term = None
        try:
            mtime = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            return False  # replaced just now: look again next time
        doc = _read_json(path)
        void = isinstance(doc, dict) and (int(doc.get("run") or 0) < self.run or doc.get("holder") == self.holder)
        if force or void:
            return self._take(term + 1, now)
        if self._seen != (term, mtime):
            self._seen, self._quiet = (term, mtime), 0.0
            return False
        self._quiet += elapsed
        if self._quiet >= layout.LEASE_SECONDS:
            return self._take(term + 1, now)
        return False

    def _take(self, term: int, now: float) -> bool:
        path = layout.path(self.job, layout.lease_file(term))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            return False  # another candidate took this term first
        try:
            doc = {"holder": self.holder, "token": self.token, "run": self.run, "term": term, "since": _now_iso()}
            write_all(fd, dumps(doc).encode("ascii"))
        finally:
            os.close(fd)
        self.term, self._renewed, self._seen, self._quiet = term, now, None, 0.0
        for older in range(term - 1, 0, -1):  # the leases we replaced (usually just one)
            name = layout.path(self.job, layout.lease_file(older))
            if not os.path.lexists(name):
                break
            unlink_quiet(name)
        return True


class Coordinator:
    """The job-wide duties of one candidate; call `step` often, `finalize` once the queue is drained."""

    def __init__(self, job_dir: str, instance: str, settings: Settings, output_dir: str, run: int = 0) -> None:
        self.job = os.path.abspath(job_dir)
        self.instance = instance
        self.settings = settings
        self.output_dir = output_dir
        self.lease = Lease(self.job, instance, run)
        self.reader = ProgressReader(self.job)
        self._beats: dict[str, tuple[float, float]] = {}  # folder -> (heartbeat mtime, seconds unchanged)
        self._last: float | None = None
        self._next = 0.0

    @property
    def output_file(self) -> str:
        return os.path.join(self.output_dir, self.settings.output_file_name)

    def outcome(self) -> Outcome | None:
        """The job's outcome, once some coordinator wrote it."""
        return read_outcome(self.job)

    def step(self, now: float, own: set[str] | frozenset[str] = frozenset()) -> None:
        """A turn of the coordinator (at most every STEP_SECONDS): the lease, dead workers, the
        threshold. `own`: worker names this process keeps alive itself (never given back here)."""
        if now < self._next:
            return
        self._next = now + STEP_SECONDS
        elapsed = 0.0 if self._last is None else now - self._last
        self._last = now
        if elapsed > GAP_SECONDS:
            elapsed = 0.0
        if not self.lease.tick(now):
            self._beats.clear()  # a holder starts its watch afresh
            return
        self._requeue_silent(elapsed, own)
        if self.settings.error_threshold >= 0 and self.outcome() is None:
            self._check_threshold(self.reader.read())

    def _check_threshold(self, counts: queue.QueueCounts) -> Outcome | None:
        """Fail the job once more items failed than error_threshold allows (-1: any number may)."""
        threshold = self.settings.error_threshold
        if threshold >= 0 and counts.items_failed > threshold:
            return self.decide(FAILED, f"Exceeded error threshold: {counts.items_failed} failed items > {threshold}.")
        return None

    def _requeue_silent(self, elapsed: float, own: set[str] | frozenset[str]) -> None:
        beats = queue.heartbeats(self.job)
        for name in list(self._beats):
            if name not in beats:
                del self._beats[name]
        for name, mtime in beats.items():
            if name in own:
                continue
            seen = self._beats.get(name)
            quiet = seen[1] + elapsed if seen is not None and seen[0] == mtime else 0.0
            self._beats[name] = (mtime, quiet)
            if quiet >= layout.HEARTBEAT_EXPIRY_SECONDS and self.lease.held():
                queue.requeue_worker(self.job, name, f"heartbeat of {layout.worker_of_folder(name)} expired "
                                                     f"(no sign of life for {quiet:.0f} seconds)",
                                     self.settings.max_retries)
                self._beats.pop(name, None)

    def decide(self, status: str, error: str | None) -> Outcome | None:
        """Write the job's outcome, unless another coordinator wrote one first or took the lease."""
        if not self.lease.held():
            return None
        found = self.outcome()
        if found is not None:
            return found
        doc = {"status": status, "error": error, "ended_at": _now_iso(), "holder": self.instance,
               "run": self.lease.run}
        _write_json(self.job, layout.OUTCOME_FILE, doc)
        return doc

    def finalize(self, now: float, force: bool = False) -> Outcome | None:
        """The queue is drained: merge the output (append_row) and write the outcome, if we hold the
        lease (`force`: take it now, whoever holds it: the caller knows every other candidate is gone).
        Returns the outcome once there is one."""
        found = self.outcome()
        if found is not None or not self.lease.tick(now, force=force):
            return found
        counts = self.reader.read()
        failed = self._check_threshold(counts)
        if failed is not None:
            return failed
        if self.settings.output_action != APPEND_ROW:
            return self.decide(COMPLETED, None)
        if counts.items_succeeded == 0:
            return self.decide(FAILED, NO_RESULT)
        try:
            error = self._merge()
        except OSError as e:
            if queue.is_no_space(e):
                raise
            error = f"could not write the output file {self.output_file}: {e.strerror or e}"
        return self.decide(COMPLETED if error is None else FAILED, error)

    def _merge(self) -> str | None:
        """Merge once; None when the output is there, the error otherwise. A merge that an earlier
        holder left (it died) is cleaned up first, and an output it published is kept when it is
        byte for byte what this merge writes (anything else is another writer's file)."""
        out = self.output_file
        earlier = _read_json(layout.path(self.job, layout.MERGING_FILE))
        if isinstance(earlier, dict) and isinstance(earlier.get("token"), str):
            token = os.path.basename(earlier["token"])  # a name part only: the file lies next to the output
            unlink_quiet(merge_tmp(out, token))
            if os.path.lexists(out):
                return None if self._same_as_merge(out) else f"output file exists, refusing to overwrite: {out}"
        if not self.lease.held():
            return None
        _write_json(self.job, layout.MERGING_FILE, {"token": self.lease.token, "holder": self.instance})
        try:
            merge_results(self.job, out, self.lease.token)
        except FileExistsError as e:
            return str(e)
        except OSError as e:
            if e.errno != errno.ELOOP:  # a result replaced by a link (progress.merge_results)
                raise
            return f"{e.strerror}: {e.filename}"
        return None

    def _same_as_merge(self, out: str) -> bool:
        check = layout.path(self.job, layout.STATE_DIR, f".merge-check-{self.lease.token}")
        unlink_quiet(check)
        try:
            merge_results(self.job, check, self.lease.token)
            return filecmp.cmp(check, out, shallow=False)
        except OSError:
            return False
        finally:
            unlink_quiet(check)


def run_number(job: dict[str, Any]) -> int:
    """The job's run (1 at invoke, one more per resume), as job.json records it."""
    try:
        return int(job.get("run") or 0)
    except (TypeError, ValueError):
        return 0


def finalize_drained(job_dir: str, settings: Settings, output_dir: str, run: int, holder: str,
                     timeout: float = 60.0) -> Outcome | None:
    """Finalize a drained job when no instance is left to do it (the host that launched them): takes the
    lease at once and merges; returns the outcome (None if the queue is not drained)."""
    if not queue.is_drained(job_dir):
        return read_outcome(job_dir)
    coord = Coordinator(job_dir, holder, settings, output_dir, run)
    deadline = time.monotonic() + timeout
    outcome = coord.finalize(time.monotonic(), force=True)
    while outcome is None and time.monotonic() < deadline:
        time.sleep(0.1)
        outcome = coord.finalize(time.monotonic())
    return outcome
