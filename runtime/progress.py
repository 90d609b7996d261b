"""Reading the queue's state: drain checks, progress counts, and the final merge of results.

The host polls these while instances work; the supervisor uses the drain checks to know when to
stop. All are read-only on the queue except merge_results, which writes only the output file.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from . import layout, record
from ._fs import JSON, READ_PLANTED, is_claim, listdir, open_nofollow, total_count, unlink_quiet


def _any_entry(folder: str, pred: Any = is_claim) -> bool:
    # scandir stops after the first hit: cheap even with 100k pending files.
    try:
        with os.scandir(folder) as it:
            return any(pred(e.name) for e in it)
    except FileNotFoundError:
        return False


def _any_claim(job: str) -> bool:
    running = layout.path(job, layout.RUNNING_DIR)
    try:
        workers = os.listdir(running)
    except FileNotFoundError:
        return False
    return any(_any_entry(os.path.join(running, w)) for w in workers)


def looks_empty(job_dir: str | os.PathLike[str]) -> bool:
    """Nothing pending and nothing claimed (claims checked before and after pending: a batch
    moving running -> pending -> running between two listings would otherwise be missed)."""
    job = os.fspath(job_dir)
    return (not _any_claim(job) and not _any_entry(layout.path(job, layout.PENDING_DIR))
            and not _any_claim(job))


def is_drained(job_dir: str | os.PathLike[str]) -> bool:
    """Every mini-batch is done or failed: looks_empty, and when queue/count is known, the done
    and failed files account for all of them."""
    job = os.fspath(job_dir)
    if not looks_empty(job):
        return False
    total = total_count(job)
    if total is None:
        return True
    finished = {n for n in listdir(layout.path(job, layout.DONE_DIR)) if is_claim(n)}
    finished.update(n for n in listdir(layout.path(job, layout.FAILED_DIR)) if is_claim(n))
    return len(finished) >= total


@dataclass(frozen=True)
class QueueCounts:
    """A snapshot of the queue: mini-batches per state and items over done + failed."""

    total: int | None
    pending: int
    running: int
    done: int
    failed: int
    items_succeeded: int
    items_failed: int

    @property
    def items_processed(self) -> int:
        """Items of finished (done or failed) mini-batches."""
        return self.items_succeeded + self.items_failed


class ProgressReader:
    """Incremental counts for a poller: each done/failed record is read once, then remembered.

    A poll lists done/ and failed/ and reads only the records that appeared since the last one;
    pending is what neither done, failed nor running holds when queue/count is known (no listing
    of pending/), and once every mini-batch is done or failed nothing is listed any more.

    `budget` > 0 is for a poller that only shows the counts: done/ and failed/ are then listed
    only when the last listing's cost is at most that fraction of the time since it (listing 100,000
    names costs 10-50 ms: at DISPLAY_BUDGET, about once a second), the counts of that listing in
    between (the host's own poll, `shared_reader`); with nothing claimed (a drained or stopped queue) it
    lists every time, and an `exact` read always lists.
    The default reads exactly, every time (decisions: threshold, outcome, final counts).
    """

    DISPLAY_BUDGET = 0.02

    def __init__(self, job_dir: str | os.PathLike[str], budget: float = 0.0) -> None:
        self.job_dir = os.fspath(job_dir)
        self.budget = budget
        self._scanned_at, self._scan_cost = float("-inf"), 0.0
        # per folder: names already read, and running sums of their succeeded / failed items
        self._seen: dict[str, set[str]] = {layout.DONE_DIR: set(), layout.FAILED_DIR: set()}
        self._sums: dict[str, list[int]] = {layout.DONE_DIR: [0, 0], layout.FAILED_DIR: [0, 0]}
        self._total: int | None = None
        self._lock = threading.Lock()  # a reader may be shared (shared_reader): one read at a time

    def _scan(self, sub: str) -> tuple[int, int, int]:
        seen, sums = self._seen[sub], self._sums[sub]
        folder = layout.path(self.job_dir, sub)
        new = [n for n in set(listdir(folder)).difference(seen) if is_claim(n)]
        for name in new:
            got = _record_counts(folder + "/" + name)
            if got is None:
                continue  # read it next time
            seen.add(name)
            sums[0] += got[0]
            sums[1] += got[1]
        return len(seen), sums[0], sums[1]

    def read(self, exact: bool = False) -> QueueCounts:
        """The current counts (reads only the records that appeared since the last call); `exact`
        reads whatever the budget says."""
        with self._lock:
            return self._read(exact)

    def _read(self, exact: bool) -> QueueCounts:
        if self._total is None:
            self._total = total_count(self.job_dir)
        total = self._total
        running_dir = layout.path(self.job_dir, layout.RUNNING_DIR)
        running = sum(1 for w in listdir(running_dir)
                      for n in listdir(os.path.join(running_dir, w)) if is_claim(n))
        finished = len(self._seen[layout.DONE_DIR]) + len(self._seen[layout.FAILED_DIR])
        now = time.monotonic()
        # With nothing claimed, the queue may be drained or stopping: a last read is always exact.
        due = exact or self.budget <= 0 or not running or self._scan_cost <= self.budget * (now - self._scanned_at)
        if (total is None or finished < total) and due:  # records are never removed: a drained queue stays so
            self._scan(layout.DONE_DIR)
            self._scan(layout.FAILED_DIR)
            self._scanned_at, self._scan_cost = now, time.monotonic() - now
        done, (ok_done, bad_done) = len(self._seen[layout.DONE_DIR]), self._sums[layout.DONE_DIR]
        failed, bad_failed = len(self._seen[layout.FAILED_DIR]), self._sums[layout.FAILED_DIR][1]
        if total is None:
            pending = sum(1 for n in listdir(layout.path(self.job_dir, layout.PENDING_DIR)) if is_claim(n))
        else:  # every mini-batch is in exactly one place (each move is a rename)
            pending = max(0, total - done - failed - running)
        return QueueCounts(total, pending, running, done, failed, ok_done, bad_done + bad_failed)


def _record_counts(path: str) -> tuple[int, int] | None:
    """(succeeded, failed) of a done or failed record; None when it cannot be read now."""
    try:
        fd = os.open(path, READ_PLANTED)  # os-level: a third of open()'s cost, 100,000 times
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            return 0, 0  # a link planted as a record: never followed (the merge refuses it)
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return 0, 0  # a FIFO or a device planted as a record: never read
        rec = record.read_fd(fd)[0]  # its first two lines: the rows are not read
    except ValueError:
        return None
    finally:
        os.close(fd)
    return int(rec.get("succeeded", 0)), int(rec.get("failed", 0))


_READERS: OrderedDict[tuple[str, int, int], ProgressReader] = OrderedDict()
_READERS_LOCK = threading.Lock()
KEPT_READERS = 16  # job folders whose reader counts() keeps (a reader of 100,000 records holds ~10 MB)


def shared_reader(job_dir: str | os.PathLike[str], budget: float = 0.0) -> ProgressReader:
    """The reader this process keeps for a job folder (those of the last KEPT_READERS): `job show`/
    `stream` while it runs, the REST and SDK pollers and the host driving the job read each record
    once per process instead of every record on every call. `budget` (the host's display poll, see
    ProgressReader) only applies to reads that are not exact; counts() always reads exactly."""
    job = os.path.abspath(os.fspath(job_dir))
    try:  # written once with the queue: a job folder made again at the same path is another job
        st = os.stat(layout.path(job, layout.QUEUE_COUNT_FILE))
    except FileNotFoundError:
        return ProgressReader(job, budget)
    key = (job, st.st_ino, st.st_mtime_ns)
    with _READERS_LOCK:
        reader = _READERS.pop(key, None) or ProgressReader(job)
        reader.budget = max(reader.budget, budget)
        _READERS[key] = reader
        while len(_READERS) > KEPT_READERS:
            _READERS.popitem(last=False)
    return reader


def counts(job_dir: str | os.PathLike[str]) -> QueueCounts:
    """The current counts of a job, exact; asked again about the same job folder in this process,
    only the records that appeared since are read (shared_reader)."""
    return shared_reader(job_dir).read(exact=True)


def merge_tmp(output_file: str | os.PathLike[str], token: str) -> str:
    """The temp file a merge into `output_file` by `token` writes, next to the output."""
    out = os.path.abspath(os.fspath(output_file))
    return os.path.join(os.path.dirname(out), f".{os.path.basename(out)}{layout.MERGE_TMP_INFIX}{token}")


def merge_results(job_dir: str | os.PathLike[str], output_file: str | os.PathLike[str],
                  token: str | None = None) -> int:
    """Concatenate the rows of the done records in id order into `output_file`; return how many
    records had rows.

    Streams through a temp file next to the output (`merge_tmp`, named by `token`, default this
    process's id) and publishes it without overwriting: FileExistsError if the output exists
    (before or after). Records of an older runtime have their rows in results/<id>.csv.
    """
    job = os.fspath(job_dir)
    out = os.path.abspath(os.fspath(output_file))
    if os.path.lexists(out):
        raise FileExistsError(f"output file exists, refusing to overwrite: {out}")
    done_dir = layout.path(job, layout.DONE_DIR)
    names = sorted(n for n in listdir(done_dir) if is_claim(n))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = merge_tmp(out, token or str(os.getpid()))
    merged = 0
    try:
        with os.fdopen(open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as dst:
            for name in names:
                merged += _copy_rows(job, done_dir + "/" + name, name[: -len(JSON)], dst)
        _publish(tmp, out)
    finally:
        unlink_quiet(tmp)
    return merged


def _open_plain(path: str) -> int | None:
    """A file the runtime wrote, opened for reading (None: missing). A link there was put by
    someone else: ELOOP, never followed."""
    try:
        fd = os.open(path, READ_PLANTED)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "a done record or result file is a symbolic link, not merged", path) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "a done record or result file is not a regular file, not merged", path)
    return fd


def _copy_rows(job: str, path: str, bid: str, dst: Any) -> int:
    """Append the rows of the done record at `path` to `dst`; 1 if it had any, else 0."""
    fd = _open_plain(path)
    if fd is None:
        raise FileNotFoundError(errno.ENOENT, "a done record went away during the merge", path)
    try:
        at = record.rows_offset(fd)
        if at < 0:  # an older runtime's record: its rows, if any, are in results/<id>.csv
            os.close(fd)
            fd = None
            fd = _open_plain(record.legacy_rows(job, bid))
            if fd is None:
                return 0
            at = 0
        os.lseek(fd, at, os.SEEK_SET)
        last, copied = b"\n", False
        while chunk := os.read(fd, 1 << 20):
            dst.write(chunk)
            last, copied = chunk[-1:], True
    finally:
        if fd is not None:
            os.close(fd)
    if last != b"\n":
        dst.write(b"\n")  # rows without a final newline must not glue onto the next ones
    return int(copied)


def _publish(tmp: str, out: str) -> None:
    try:
        os.link(tmp, out)  # atomic and never overwrites
    except FileExistsError:
        raise FileExistsError(f"output file exists, refusing to overwrite: {out}") from None
    except OSError:
        # Filesystems without hard links: check, then rename (a tiny race, documented).
        if os.path.lexists(out):
            raise FileExistsError(f"output file exists, refusing to overwrite: {out}") from None
        os.replace(tmp, out)
