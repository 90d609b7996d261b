"""Giving claims back: a failed try, a dead worker's folder, an instance stopped (stdlib only).

Part of the queue protocol (queue.py re-exports every name here). These run in the worker, its
supervisor, the coordinator, and in the host, which may be root, on folders that scoring code can
write. So nothing here follows a link below the job folder, and no path is built from what a file
says:

- every folder is opened without following a link (`_fs.open_dir_beneath`), and every rename,
  removal and write is relative to such a descriptor; a worker folder that is a link (or a file)
  is removed, never followed;
- a claim is a regular file whose name is `<id>.json` with `id` a mini-batch id and the same id
  inside, `items` a list of names and `attempt` a count; anything else is ignored (left where it is,
  or removed with its folder) and noted in the worker's node log. The id used for every name is the
  file's own, checked.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import threading
import time
import uuid
from typing import Any, Dict

from . import layout, record
from ._fs import JSON, READ_PLANTED, dumps, is_claim, is_no_space, open_at, open_dir_beneath, remove_tree_at, write_all
from .reports import SYSTEM_ERROR, WorkerLogs

MiniBatch = Dict[str, Any]  # typing's: a builtin subscripted at run time needs 3.9

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Folders:
    """Descriptors of a job's queue folders and results/, each reached through no link (opened once)."""

    def __init__(self, job_dir: str | os.PathLike[str]) -> None:
        self.job = os.fspath(job_dir)
        self._fds: dict[str, int] = {}

    def fd(self, rel: str) -> int:
        fd = self._fds.get(rel)
        if fd is None:
            fd = self._fds[rel] = open_dir_beneath(self.job, rel)
        return fd

    def worker(self, name: str) -> int | None:
        """A descriptor of running/<name>; None when it is missing, or not a plain folder (then removed)."""
        if not _is_folder_name(name):
            return None
        running = self.fd(layout.RUNNING_DIR)
        try:
            return os.open(name, _DIR, dir_fd=running)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
        _unlink_at(running, name)  # a link or a file where a worker's folder goes: nobody's claims
        return None

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> _Folders:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# A worker's folder is flocked by whoever changes its claims: the worker (or its supervisor) failing a try or
# giving claims back through its own folder, and whoever took the folder from it. A worker given up for dead
# while alive opened its folder before the take: without the lock both could give the same claim back
# (two live copies in pending/, a mini-batch done and failed). The lock dies with its holder.
OWNER_WAIT_SECONDS = 5.0  # how long a worker waits for the lock of its own folder (then it acts unlocked)
TAKER_WAIT_SECONDS = 2.0  # how long a taker waits for a worker in the middle of a change (then it tries later)

# A flock belongs to the open file, and a child forked meanwhile (scoring code forking while the writer
# thread records: multiprocessing, a data loader) would hold it on with its copy of the descriptor for
# as long as it lives. The descriptors locked right now are closed in such a child; taking a lock and
# closing one happen under _HELD_LOCK, which a fork waits for.
_HELD: set = set()
_HELD_LOCK = threading.Lock()


def _close_held_in_child() -> None:
    for fd in _HELD:
        try:
            os.close(fd)  # the child's copy only: the parent's lock stays with the parent
        except OSError:
            pass
    _HELD.clear()
    _HELD_LOCK.release()


os.register_at_fork(before=_HELD_LOCK.acquire, after_in_parent=_HELD_LOCK.release,
                    after_in_child=_close_held_in_child)


def _close(folder: int) -> None:
    """Close a folder's descriptor, and with it its lock when it held one."""
    with _HELD_LOCK:
        _HELD.discard(folder)
        os.close(folder)


def _lock(folder: int, wait: float) -> bool:
    """flock `folder` for ourselves within `wait` seconds: False when it stayed held. A file system
    without locks (some network ones) gives True: the claims are changed unlocked, as before."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with _HELD_LOCK:
                fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
                _HELD.add(folder)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        except OSError:
            return True


def _own(dirs: _Folders, worker: str) -> int | None:
    """A locked descriptor of running/<worker> while it is still the worker's own folder (not taken
    from it meanwhile); None when it is missing or taken."""
    folder = dirs.worker(worker)
    if folder is None:
        return None
    try:
        _lock(folder, OWNER_WAIT_SECONDS)  # held for longer only by something stuck: we act all the same
        if _is_at(dirs, folder, worker):
            return folder
    except BaseException:
        _close(folder)
        raise
    _close(folder)
    return None


def _is_at(dirs: _Folders, folder: int, name: str) -> bool:
    """Whether running/<name> is the folder open as `folder`."""
    try:
        there = os.stat(name, dir_fd=dirs.fd(layout.RUNNING_DIR), follow_symlinks=False)
    except FileNotFoundError:
        return False
    here = os.fstat(folder)
    return (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino)


def _is_folder_name(name: str) -> bool:
    """A worker's folder (`<instance>.<n>`) or one taken from it; never a path."""
    worker = layout.worker_of_folder(name)
    instance, dot, number = worker.rpartition(".")
    return (bool(dot) and "/" not in name and "\0" not in name and number.isascii() and number.isdigit()
            and bool(instance) and not instance.startswith("."))


def _unlink_at(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def _is_done(dirs: _Folders, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dirs.fd(layout.DONE_DIR), follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _holds(folder: int, name: str) -> bool:
    """Whether `folder` still holds the claim file `name` (not given back meanwhile)."""
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _write_at(tmp_fd: int, dst_fd: int, name: str, data: bytes) -> None:
    """Write `name` in folder `dst_fd` atomically: a temp file of our own in `tmp_fd`, then a rename.
    The temp file is removed when the write fails (a full disk)."""
    tmp = f"{layout.TMP_PREFIX}{uuid.uuid4().hex[:12]}.{name}"
    fd = open_at(tmp_fd, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=tmp_fd, dst_dir_fd=dst_fd)
    except BaseException:
        _unlink_at(tmp_fd, tmp)
        raise


def _claim_of(name: str, raw: bytes) -> MiniBatch | None:
    """The claim in file `name`, or None when it is not one of this job's (see the module's docstring)."""
    try:
        batch = json.loads(record.head(raw))  # line 1: a worker killed while growing it may have added more
    except ValueError:
        return None
    if not isinstance(batch, dict) or batch.get("id") != name[: -len(JSON)] or not layout.is_mini_batch_id(batch["id"]):
        return None
    items, attempt = batch.get("items"), batch.get("attempt", 0)
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        return None
    if type(attempt) is not int or attempt < 0:
        return None
    return batch


def _read_claims(folder: int) -> tuple[list[MiniBatch], list[str]]:
    """(the claims in `folder` in id order, names of claim files that are not claims of this job)."""
    found: list[MiniBatch] = []
    ignored: list[str] = []
    for name in sorted(n for n in os.listdir(folder) if is_claim(n)):
        try:
            fd = os.open(name, READ_PLANTED, dir_fd=folder)
        except FileNotFoundError:
            continue  # finished or requeued while we looked
        except OSError:
            ignored.append(name)  # a link
            continue
        with os.fdopen(fd, "rb") as f:
            batch = _claim_of(name, f.read()) if stat.S_ISREG(os.fstat(fd).st_mode) else None
        if batch is None:
            ignored.append(name)
        else:
            found.append(batch)
    return found, ignored


def _note_ignored(job: str, worker: str, ignored: list[str], logs: WorkerLogs | None = None) -> None:
    if not ignored:
        return
    shown = ", ".join(repr(n) for n in ignored[:5]) + (", ..." if len(ignored) > 5 else "")
    line = (f"ignored {len(ignored)} file(s) in the folder of {worker} that are not claims of this job "
            f"(a link, or an id that is not the file's name): {shown}")
    try:
        if logs is not None:
            logs.note(line)
            return
        with WorkerLogs(job, worker) as own:
            own.note(line)
    except OSError:
        pass  # a full disk: the note is what is lost, never a claim


def _fail_at(dirs: _Folders, folder: int, worker: str, batch: MiniBatch, error: str, max_retries: int,
             status: str) -> bool | None:
    """Count a failed try of `batch`, held in `folder` (locked by the caller): True when it went back
    to pending/, False when it failed for good, None when it was not ours to count (nothing written)."""
    bid = batch["id"]
    if not layout.is_mini_batch_id(bid):
        raise ValueError(f"not a mini-batch id: {bid!r}")
    name = bid + JSON
    if not _holds(folder, name):
        return None  # given back meanwhile: its next holder decides, not us
    if _is_done(dirs, name):
        _unlink_at(folder, name)  # finished elsewhere already: this try does not count
        return None
    tries = int(batch.get("attempt", 0)) + 1
    if tries < max(1, max_retries):
        again = {"id": bid, "items": batch["items"], "attempt": tries,
                 "last_status": status, "last_error": error[:500]}
        _write_at(folder, dirs.fd(layout.PENDING_DIR), name, dumps(again).encode("ascii"))
        _unlink_at(folder, name)
        return True
    _unlink_at(dirs.fd(layout.RESULTS_DIR), bid + layout.RESULT_SUFFIX)
    total = len(batch["items"])
    record = {"id": bid, "items": batch["items"], "attempt": tries, "status": status, "worker": worker,
              "error": error, "total": total, "succeeded": 0, "failed": total}
    _write_at(folder, dirs.fd(layout.FAILED_DIR), name, dumps(record).encode("ascii"))
    _unlink_at(folder, name)
    return False


def fail_attempt(
    job_dir: str | os.PathLike[str],
    worker: str,
    batch: MiniBatch,
    error: str,
    max_retries: int,
    status: str = layout.STATUS_EXCEPTION,
) -> bool | None:
    """Count a failed try of a batch `worker` claimed; True if it went back to pending.

    A batch is tried at most `max_retries` times (at least once); after the last try it goes to
    failed/<id>.json with the error, and all its items count as failed (False). None, and nothing
    written, when the claim is not the worker's to count any more: its folder is gone or was taken
    (the worker was given up for dead; the taker gives the claim back), or holds it no more.
    """
    with _Folders(job_dir) as dirs:
        folder = _own(dirs, worker)
        if folder is None:
            return None
        try:
            return _fail_at(dirs, folder, worker, batch, error, max_retries, status)
        finally:
            _close(folder)


def record_held(job_dir: str | os.PathLike[str], worker: str, bid: str, data: bytes) -> bool:
    """Write done/<bid>.json whole with `data` and drop the worker's claim of it, while the worker
    still holds that claim in its own folder (for a claim it cannot grow in place); False, and
    nothing written, when it holds it no more."""
    if not layout.is_mini_batch_id(bid):
        raise ValueError(f"not a mini-batch id: {bid!r}")
    name = bid + JSON
    with _Folders(job_dir) as dirs:
        folder = _own(dirs, worker)
        if folder is None:
            return False
        try:
            if not _holds(folder, name):
                return False
            _write_at(folder, dirs.fd(layout.DONE_DIR), name, data)
            _unlink_at(folder, name)
            return True
        finally:
            _close(folder)


def claims(job_dir: str | os.PathLike[str], worker: str) -> list[MiniBatch]:
    """The mini-batches currently claimed by `worker`, in id order."""
    with _Folders(job_dir) as dirs:
        folder = dirs.worker(worker)
        if folder is None:
            return []
        try:
            return _read_claims(folder)[0]
        finally:
            _close(folder)


def _take(dirs: _Folders, name: str) -> tuple[str, int] | None:
    if not _is_folder_name(name):
        return None
    running = dirs.fd(layout.RUNNING_DIR)
    taken = layout.taken_dir(layout.worker_of_folder(name), uuid.uuid4().hex[:16])
    try:
        os.rename(name, taken, src_dir_fd=running, dst_dir_fd=running)
    except FileNotFoundError:
        return None
    folder = dirs.worker(taken)
    if folder is None:
        return None
    if not _lock(folder, TAKER_WAIT_SECONDS):
        _close(folder)  # a worker stopped in the middle of a change: the folder stays taken, taken again later
        return None
    return taken, folder


def take_worker(job_dir: str | os.PathLike[str], folder_name: str) -> str | None:
    """Take the folder of a worker known to be gone (running/<name>) for oneself; its new path, or None.

    A rename to a name of our own: of everyone who finds the same dead worker (its instance's new
    life, the host that saw it exit, the coordinator that saw its heartbeat expire), exactly one
    gives its claims back; the others find nothing. A taken folder whose taker died is taken again.
    A link in a folder's place is removed (None).
    """
    with _Folders(job_dir) as dirs:
        took = _take(dirs, folder_name)
        if took is None:
            return None
        _close(took[1])
        return layout.path(job_dir, layout.RUNNING_DIR, took[0])


def _requeue(dirs: _Folders, name: str, reason: str, max_retries: int | None, status: str) -> dict[str, str]:
    took = _take(dirs, name)
    if took is None:
        return {}  # someone else is giving them back, or it was not a worker's folder
    taken, folder = took
    worker = layout.worker_of_folder(name)
    outcomes: dict[str, str] = {}
    try:
        if max_retries is None:
            from .settings import load  # only here: the hot path never reads job.json

            max_retries = load(dirs.job).max_retries
        batches, ignored = _read_claims(folder)
        if batches or ignored:
            with WorkerLogs(dirs.job, worker) as logs:
                _note_ignored(dirs.job, worker, ignored, logs)
                for batch in batches:
                    bid = batch["id"]
                    if _is_done(dirs, bid + JSON):
                        _unlink_at(folder, bid + JSON)
                        outcomes[bid] = "done"
                        continue
                    requeued = _fail_at(dirs, folder, worker, batch, reason, max_retries, status)
                    if requeued is None:
                        continue  # gone meanwhile
                    outcomes[bid] = "requeued" if requeued else "failed"
                    logs.attempt(batch, status, start=time.time(), elapsed=0.0,
                                 error_category=SYSTEM_ERROR, error_message=reason)
    finally:
        _close(folder)
    remove_tree_at(dirs.fd(layout.RUNNING_DIR), taken)
    return outcomes


def requeue_worker(
    job_dir: str | os.PathLike[str],
    worker_folder: str,
    reason: str,
    max_retries: int | None = None,
    status: str = layout.STATUS_LOST,
) -> dict[str, str]:
    """Give back every claim of a dead worker and remove its folder; return {id: outcome}.

    `worker_folder` is the name of its folder under running/ (the worker's name, or a folder taken
    from it), or that folder's path. Each claim goes back to pending with attempt+1 ("requeued"),
    or to failed/ when out of tries ("failed"), unless done/<id>.json exists ("done": the claim is
    just dropped). Each lost try is recorded in the worker's node log and attempts CSV.
    `max_retries` defaults to the job's setting.
    """
    with _Folders(job_dir) as dirs:
        return _requeue(dirs, os.path.basename(os.path.normpath(worker_folder)), reason, max_retries, status)


def _folders_of(dirs: _Folders, instance: str | None) -> list[str]:
    """Worker folders under running/ of `instance` (None: every folder, taken ones included)."""
    names = sorted(os.listdir(dirs.fd(layout.RUNNING_DIR)))
    if instance is None:
        return names
    # A folder someone took is theirs to finish (or, when they died, the coordinator's).
    return [n for n in names if not n.startswith(layout.TAKEN_PREFIX) and layout.instance_of(n) == instance]


def requeue_instance(
    job_dir: str | os.PathLike[str],
    instance: str,
    reason: str,
    max_retries: int | None = None,
) -> dict[str, str]:
    """requeue_worker for every worker folder of a dead instance; return {id: outcome}."""
    outcomes: dict[str, str] = {}
    with _Folders(job_dir) as dirs:
        for name in _folders_of(dirs, instance):
            outcomes.update(_requeue(dirs, name, reason, max_retries, layout.STATUS_LOST))
    return outcomes


def _release_at(dirs: _Folders, folder: int, keep: str | None = None,
                sweep: bool = True) -> tuple[list[str], list[str]]:
    """Give back the claims in `folder` as they were claimed but `keep`'s; (ids given back, names ignored)."""
    released: list[str] = []
    if sweep:
        for name in os.listdir(folder):
            if name.startswith(layout.TMP_PREFIX):
                _unlink_at(folder, name)
    batches, ignored = _read_claims(folder)
    for batch in batches:
        name = batch["id"] + JSON
        if batch["id"] == keep:
            continue
        if _is_done(dirs, name):
            _unlink_at(folder, name)
            continue
        if not _give_back(dirs, folder, name, batch):
            continue
        released.append(batch["id"])
    return released, ignored


def _give_back(dirs: _Folders, folder: int, name: str, batch: MiniBatch) -> bool:
    """Put a claim back in pending/ as it was claimed (its line 1); False when it is gone already.

    A fresh file, then the claim removed: a worker given up for dead but still writing its claim
    (complete() grows it into its record) writes to a file nobody will read, never into the next
    claimer's. On a full disk the claim file itself goes back (a rename needs no space; the next
    claimer replaces it by a fresh copy when it was grown)."""
    try:
        _write_at(folder, dirs.fd(layout.PENDING_DIR), name, dumps(batch).encode("ascii"))
    except OSError as e:
        if not is_no_space(e):
            raise
        try:
            os.rename(name, name, src_dir_fd=folder, dst_dir_fd=dirs.fd(layout.PENDING_DIR))
        except FileNotFoundError:
            return False
        return True
    _unlink_at(folder, name)
    return True


def release_claims(job_dir: str | os.PathLike[str], worker: str) -> list[str]:
    """Give back every claim of `worker` untouched (as claimed, the try not counted; `_give_back`);
    return their ids.

    For what is not the mini-batch's fault: the job folder is full, the host died (its resume
    stops the instances it left), the host or the supervisor stopped the worker. On a full disk the
    claim files themselves are renamed back (a rename needs no space); the worker's temp files are
    removed (that frees some).
    A claim whose done record exists is just dropped. Only for a worker known to be gone, or by the
    worker itself.
    """
    with _Folders(job_dir) as dirs:
        folder = _own(dirs, worker)
        if folder is None:
            return []
        try:
            released, ignored = _release_at(dirs, folder)
        finally:
            _close(folder)
    _note_ignored(os.fspath(job_dir), worker, ignored)
    return released


def release_unstarted(job_dir: str | os.PathLike[str], worker: str, in_run: str | None) -> list[str]:
    """Give back untouched every claim of a dead `worker` except `in_run`, the mini-batch whose run()
    it was in; return their ids. The others were claimed ahead of run(), or had finished it with
    their results still on the way to disk (worker.py): their try is not spent. A claim whose done
    record exists is just dropped. Only for a worker known to be gone.
    """
    with _Folders(job_dir) as dirs:
        folder = _own(dirs, worker)
        if folder is None:
            return []
        try:
            return _release_at(dirs, folder, keep=in_run, sweep=False)[0]
        finally:
            _close(folder)


def _release(dirs: _Folders, name: str) -> list[str]:
    took = _take(dirs, name)
    if took is None:
        return []
    taken, folder = took
    try:
        released, ignored = _release_at(dirs, folder)
    finally:
        _close(folder)
    _note_ignored(dirs.job, layout.worker_of_folder(name), ignored)
    remove_tree_at(dirs.fd(layout.RUNNING_DIR), taken)
    return released


def release_worker(job_dir: str | os.PathLike[str], worker_folder: str) -> list[str]:
    """release_claims for a worker that is gone (its folder taken first, see take_worker), then
    remove its folder; return the ids given back."""
    with _Folders(job_dir) as dirs:
        return _release(dirs, os.path.basename(os.path.normpath(worker_folder)))


def release_instance(job_dir: str | os.PathLike[str], instance: str | None = None) -> list[str]:
    """release_worker for every worker of a stopped `instance` (None: of every instance)."""
    released: list[str] = []
    with _Folders(job_dir) as dirs:
        for name in _folders_of(dirs, instance):
            released += _release(dirs, name)
    return released
