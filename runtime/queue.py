"""The mini-batch queue over the job folder: one protocol for the host and the instances.

A mini-batch is a small JSON file, `{"id", "items", "attempt"}`; `attempt` counts its failed
tries so far. It lives in exactly one place, and every move is one rename on one filesystem::

    pending/<id>.json --claim--> running/<worker>/<id>.json --complete--> done/<id>.json
                                   |--fail_attempt, tries left----> pending/<id>.json (attempt+1)
                                   '--fail_attempt, out of tries--> failed/<id>.json

Crash safety, step by step (no fsync: rename gives atomic visibility, which is what readers need):
- complete(): the claim file grows into the done record (record.py: the claim as line 1, counts
  and timings as line 2, then the rows) and is renamed to done/<id>.json. No file is created per
  mini-batch: creating one is the dearest step. A crash before that rename leaves a claim whose
  line 1 is whole, so the batch is retried and only the retry's record (rows included) reaches
  done/; a claim the worker cannot write (not its owner) takes the old path: the record written
  anew (tmp + rename), then the claim dropped, which requeue also drops because done/<id>.json
  exists. Rows are never lost nor duplicated: they are published by the rename that publishes
  their record, one record per id, and the merge reads rows from records only.
- fail_attempt(): the new pending file is written before the claim is unlinked, so a crash in
  between can only run the batch once more, never lose it.
- Temp files are written in the writer's own running/<worker>/ folder (names start with "."),
  so pending/ and done/ only ever hold complete files, and requeue_worker's removal
  of the folder sweeps the leftovers of a dead worker.
- Giving claims back (fail_attempt, requeue_*, release_*) lives in reclaim.py: the host may run it
  as root in folders scoring code writes, so it follows no link and takes no path from a claim.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import stat
import time
from collections.abc import Iterable
from typing import Any, Dict

from . import layout, record
from ._fs import (
    JSON,
    READ_PLANTED,
    dumps,
    is_claim,
    is_no_space,
    listdir,
    total_count,
    unlink_quiet,
    worker_dir,
    write_all,
    write_atomic,
)
from .progress import ProgressReader, QueueCounts, counts, is_drained, looks_empty, merge_results, shared_reader
from .reclaim import (
    claims,
    fail_attempt,
    record_held,
    release_claims,
    release_instance,
    release_unstarted,
    release_worker,
    requeue_instance,
    requeue_worker,
    take_worker,
)

# The host imports the whole protocol from this module; the read side lives in progress.py.
__all__ = [
    "Claimer", "MiniBatch", "ProgressReader", "QueueCounts", "claims", "complete", "counts",
    "ensure_dirs", "fail_attempt", "heartbeats", "is_drained", "is_no_space", "looks_empty", "merge_results",
    "release_claims", "release_instance", "release_worker", "requeue_instance", "requeue_worker", "stale_workers",
    "take_worker", "total_count", "touch_heartbeat", "worker_dir", "write_atomic", "write_queue",
    "encode_result", "release_unstarted", "shared_reader",
]

MiniBatch = Dict[str, Any]  # typing's: a builtin subscripted at run time needs 3.9


def ensure_dirs(job_dir: str | os.PathLike[str]) -> None:
    """Create the queue, results, control and log folders of a job (idempotent)."""
    for name in (layout.PENDING_DIR, layout.RUNNING_DIR, layout.DONE_DIR, layout.FAILED_DIR,
                 layout.RESULTS_DIR, layout.CONTROL_DIR, layout.LOGS_DIR):
        os.makedirs(layout.path(job_dir, name), exist_ok=True)


def write_queue(job_dir: str | os.PathLike[str], items: Iterable[str], mini_batch_size: int) -> int:
    """Cut `items` (paths relative to the input dir) into mini-batches; return how many.

    Streams: only one mini-batch is in memory. The files are written into a staging folder which
    is then renamed over the empty pending/ folder, so instances see the whole queue or none of
    it, and each file costs one plain write (no per-file rename). Raises FileExistsError when
    pending/ already holds mini-batches. `queue/count` records the number for drain checks.
    """
    if mini_batch_size < 1:
        raise ValueError("mini_batch_size must be at least 1")
    ensure_dirs(job_dir)
    pending = layout.path(job_dir, layout.PENDING_DIR)
    if os.listdir(pending):
        raise FileExistsError(f"the queue of {os.fspath(job_dir)} is already written")
    staging = layout.path(job_dir, layout.QUEUE_STAGING_DIR)
    shutil.rmtree(staging, ignore_errors=True)  # a crashed earlier attempt
    os.mkdir(staging)
    count = 0
    batch: list[str] = []

    prefix = staging + "/"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL

    def flush() -> None:
        nonlocal count, batch
        bid = layout.mini_batch_id(count)
        # The bytes of dumps({"id", "items", "attempt"}); os-level I/O: 100k files at 1M items.
        fd = os.open(prefix + bid + JSON, flags, 0o666)
        try:
            write_all(fd, b'{"id":"%s","items":%s,"attempt":0}' % (bid.encode(), dumps(batch).encode("ascii")))
        finally:
            os.close(fd)
        count += 1
        batch = []

    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"queue items must be str paths, not {type(item).__name__}")
        batch.append(item)
        if len(batch) == mini_batch_size:
            flush()
    if batch:
        flush()
    queue_dir = layout.path(job_dir, layout.QUEUE_DIR)
    write_atomic(layout.path(job_dir, layout.QUEUE_COUNT_FILE), f"{count}\n".encode(), queue_dir)
    os.rename(staging, pending)  # rename(2) replaces an empty directory atomically
    return count


MAX_MISSES = 4  # renames lost in a row before the cached listing is read again (it is stale by then)


class Claimer:
    """Claims mini-batches for one worker: worker `index` of the job's `count` workers.

    The pending listing is cached and walked; it is re-read only when every name in it was tried,
    or after MAX_MISSES lost races in a row (the cache is then mostly stale, and pending/ small), so
    a claim is one rename plus one small read. Each worker starts its walk at its own share of the
    listing (`index`/`count` of the way in) instead of all of them racing for the same first names;
    a lost race (FileNotFoundError on rename: another worker won that name) makes it jump to a
    random untried name, taking work from another share. One worker alone claims in id order.
    Batches requeued meanwhile are found at the next re-listing.
    """

    def __init__(self, job_dir: str | os.PathLike[str], worker: str, index: int = 0, count: int = 1) -> None:
        self.job_dir = os.fspath(job_dir)
        self.worker = worker
        self.folder = worker_dir(job_dir, worker)
        self._pending = layout.path(job_dir, layout.PENDING_DIR)
        self._done = layout.path(job_dir, layout.DONE_DIR)
        os.makedirs(self.folder, exist_ok=True)
        self._share = (index % max(1, count), max(1, count))
        self._names: list[str] = []
        self._tried = bytearray()  # 1 for each name of the listing already tried
        self._left = 0  # names not tried yet
        self._pos = 0
        self._misses = 0
        self._rng = random.Random(worker)
        self._won = True  # did any rename succeed since the last listing?
        self.lost_races = 0
        self.listings = 0

    def _relist(self) -> None:
        if not self._won and self._names:
            # Every rename failed: maybe our folder was swept by a requeue. Recreate it.
            os.makedirs(self.folder, exist_ok=True)
        self._names = sorted(n for n in listdir(self._pending) if is_claim(n))
        self.listings += 1
        n = len(self._names)
        self._tried, self._left, self._misses, self._won = bytearray(n), n, 0, False
        self._pos = n * self._share[0] // self._share[1]

    def _untried(self) -> int:
        """The first untried position at or after the cursor, going round; -1 when none is left."""
        if not self._left:
            return -1
        i = self._tried.find(0, self._pos)
        return i if i >= 0 else self._tried.find(0)

    def claim(self) -> MiniBatch | None:
        """Claim a pending mini-batch, or None when pending/ is empty right now."""
        relisted = False
        while True:
            i = self._untried()
            if i < 0 or (self._misses >= MAX_MISSES and not relisted):
                if i < 0 and relisted:
                    return None
                self._relist()
                relisted = True
                continue
            name = self._names[i]
            self._tried[i] = 1
            self._left -= 1
            self._pos = i + 1
            dst = self.folder + "/" + name
            try:
                os.rename(self._pending + "/" + name, dst)
            except FileNotFoundError:
                self.lost_races += 1
                self._misses += 1
                self._pos = self._rng.randrange(len(self._names))  # someone works here: go elsewhere
                continue
            self._won, self._misses = True, 0
            line = _claim_line(dst, self.folder)
            if line is None:
                continue  # not a file: something planted in pending/, not a mini-batch
            batch: MiniBatch = json.loads(line)
            # A retried batch may have been finished by a worker wrongly presumed dead: never
            # run it again. First tries skip this stat (the hot path).
            if batch.get("attempt") and os.path.exists(self._done + "/" + name):
                unlink_quiet(dst)
                continue
            return batch


def _claim_line(path: str, folder: str) -> bytes | None:
    """Line 1 of the claim just renamed to `path` (None, and removed, when it is no regular file; None
    when it is gone already).

    A claim that holds more than its line was grown by a worker that died, or was given up for dead,
    before its rename: it is replaced by a fresh file of its line (tmp + rename), so whatever that
    worker still writes goes to a file nobody reads."""
    try:
        fd = os.open(path, READ_PLANTED)  # os-level: a third of open()'s cost
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None  # given back already: our folder was taken right after the rename (given up for dead)
        if e.errno != errno.ELOOP:
            raise
        unlink_quiet(path)
        return None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            try:
                os.rmdir(path) if stat.S_ISDIR(mode) else os.unlink(path)
            except OSError:
                pass
            return None
        line, grown = record.read_head(fd)
    finally:
        os.close(fd)
    if grown:
        write_atomic(path, line, folder)
    return line


def encode_result(text: str) -> bytes:
    """The bytes of a result file: UTF-8, with undecodable file names given their original bytes back."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # other lone surrogates: keep the row, escaped
        return text.encode("utf-8", "backslashreplace")


def complete(
    job_dir: str | os.PathLike[str],
    worker: str,
    batch: MiniBatch,
    result_text: str | bytes | None,
    succeeded: int,
    timings: dict[str, Any] | None = None,
    _again: bool = True,
) -> bool:
    """Record a finished mini-batch: its claim file grows into its done record (record.py), rows
    included, and is renamed to done/<id>.json. False when it was not ours to record any more (we
    were given up for dead: another worker records it, or it failed).

    `result_text` is the rows as text, or already encoded by `encode_result`; `succeeded` is the
    number of successful items (failed = len(items) - succeeded); `timings` is merged into the
    done record (e.g. start, elapsed, run_seconds).
    """
    job = os.fspath(job_dir)
    folder = worker_dir(job, worker)
    bid = batch["id"]
    rows = None
    if result_text:
        rows = encode_result(result_text) if isinstance(result_text, str) else result_text
    total = len(batch["items"])
    stats: dict[str, Any] = {"status": layout.STATUS_DONE, "worker": worker,
                             "total": total, "succeeded": succeeded, "failed": total - succeeded}
    if timings:
        stats.update(timings)
    claim, done = folder + "/" + bid + JSON, layout.path(job, layout.DONE_DIR, bid + JSON)
    # The claim file grows into the done record: line 2 and the rows are written after the claim,
    # whose bytes stay as they are, then the file is renamed into done/. No file is created (the
    # dearest step of a mini-batch); a process killed half-way leaves a whole claim (line 1, see
    # record.py), requeued like any other, and done/ only ever sees whole records.
    try:
        fd = os.open(claim, os.O_WRONLY)
    except FileNotFoundError:
        # Given back meanwhile: we were given up for dead and our folder taken. The mini-batch is ours
        # again only if we claim it back from pending/ (requeued, and nobody claimed it since). Else
        # whoever holds it now records it, or it failed after its last try: ours is dropped. Only the
        # holder of a mini-batch's one claim file writes its done or failed record, never both.
        return _again and _claim_back(job, folder, bid) and complete(job, worker, batch, rows, succeeded,
                                                                     timings, _again=False)
    except OSError:  # not ours to write (a claim the host gave back as another user): we may hold it still
        claimed = {"id": bid, "items": batch["items"], "attempt": batch.get("attempt", 0)}
        return record_held(job, worker, bid, record.whole(claimed, stats, rows))
    try:
        size = os.fstat(fd).st_size  # the claim: one line (Claimer cut off what a killed writer added)
        try:
            view, at = memoryview(record.tail(stats, rows)), size
            while view:
                n = os.pwrite(fd, view, at)
                view, at = view[n:], at + n
        except OSError:
            os.ftruncate(fd, size)  # the disk is full: leave the claim as it was, requeued untouched
            raise
    finally:
        os.close(fd)
    try:
        os.rename(claim, done)
    except FileNotFoundError:
        return False  # given back while we wrote (we were given up for dead): its next holder records it
    return True


def _claim_back(job: str, folder: str, bid: str) -> bool:
    """Claim mini-batch `bid` from pending/ into `folder` (made when missing); True when we hold it."""
    os.makedirs(folder, exist_ok=True)
    dst = folder + "/" + bid + JSON
    try:
        os.rename(layout.path(job, layout.PENDING_DIR, bid + JSON), dst)
    except FileNotFoundError:
        return False
    return _claim_line(dst, folder) is not None


def touch_heartbeat(job_dir: str | os.PathLike[str], worker: str) -> None:
    """Mark `worker` alive now (creates its folder and heartbeat file when missing)."""
    beat = os.path.join(worker_dir(job_dir, worker), layout.HEARTBEAT_FILE)
    try:
        os.utime(beat)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(beat), exist_ok=True)
        with open(beat, "ab"):
            pass


def heartbeats(job_dir: str | os.PathLike[str]) -> dict[str, float]:
    """{worker: when it last showed life}: the mtime of its heartbeat (or, lacking one, of its folder).

    Times are wall-clock (time.time()), as file mtimes are.
    """
    running = layout.path(job_dir, layout.RUNNING_DIR)
    beats: dict[str, float] = {}
    try:
        names = sorted(os.listdir(running))
    except FileNotFoundError:
        return beats
    for name in names:
        folder = os.path.join(running, name)
        try:
            beats[name] = os.stat(os.path.join(folder, layout.HEARTBEAT_FILE)).st_mtime
        except FileNotFoundError:
            try:
                beats[name] = os.stat(folder).st_mtime
            except FileNotFoundError:
                continue
    return beats


def stale_workers(
    job_dir: str | os.PathLike[str],
    now: float | None = None,
    expiry: float = layout.HEARTBEAT_EXPIRY_SECONDS,
) -> list[str]:
    """Workers under running/ whose heartbeat (or, lacking one, folder) is older than `expiry`.

    `now` is a time.time() stamp (file mtimes are wall-clock).
    """
    now = time.time() if now is None else now
    return [name for name, mtime in heartbeats(job_dir).items() if now - mtime > expiry]
