"""The job's host lock: one host process per job, from the check that admits it to the end of its run."""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bepbuild_runtime import layout

from ..errors import ConflictError


class HostLock:
    """The job's host lock (an flock on control/host.lock), held by the one process driving a job.

    Two hosts on one job (e.g. `job resume` of a job whose host is alive) would stop each other's
    instances and race to merge. The lock is taken by the check that refuses a second host and
    held through the run, so nothing happens between the check and the host that runs the job; a
    detached run inherits the locked file (an flock belongs to the open file description). The
    kernel drops the lock when its last holder dies, however it dies, so a killed host never
    blocks a resume.
    """

    def __init__(self, job_dir: Path, fd: int) -> None:
        self.job_dir, self.fd = job_dir, fd

    @classmethod
    def acquire(cls, job_dir: Path) -> HostLock:
        """Take the lock, or raise ConflictError naming the host that holds it."""
        fd = open_in_job(job_dir, layout.HOST_LOCK, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConflictError(f"job {job_dir.name} is still being run by host process {holder}; "
                                "wait for it to end, or cancel it") from None
        except BaseException:
            os.close(fd)
            raise
        lock = cls(job_dir, fd)
        lock.record_pid()
        return lock

    @classmethod
    def adopt(cls, job_dir: Path, fd: int) -> HostLock:
        """The lock a parent process took and handed down as `fd` (a detached run)."""
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(job_dir / layout.HOST_LOCK))
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours already: succeeds at once
        except OSError:
            same = False
        if not same:
            raise ConflictError(f"job {job_dir.name}: file descriptor {fd} is not its host lock")
        os.set_inheritable(fd, False)  # never into the instances: they outlive a killed host
        lock = cls(job_dir, fd)
        lock.record_pid()
        return lock

    def record_pid(self) -> None:
        """Write our pid into the lock file, for the refusal message of another host."""
        try:  # a full disk must not stop the job here
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """os.open that never follows a symbolic link at `path`: scoring containers may write in the job
    folder, and a link they left there must not make a host (maybe root) write elsewhere. A link
    found there is removed and a file made in its place."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
    os.unlink(path)
    return os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def open_in_job(job_dir: Path, rel: str, flags: int, mode: int = 0o644) -> int:
    """os.open of `job_dir/rel` through no link below the job folder (the runtime's `_fs.open_beneath`:
    a link in place of a folder on the way, or of the file, is replaced). A non-root host's containers
    run as the host user and may replace control/ or logs/ whole with a link: protecting the last
    name only would still send the host's lock, flags and log lines into the folder it names."""
    from bepbuild_runtime._fs import open_beneath

    return open_beneath(str(job_dir), rel, flags, mode)


def unlink_in_job(job_dir: Path, rel: str) -> None:
    """Remove `job_dir/rel` (a missing one is fine), reaching its folder through no link."""
    from bepbuild_runtime._fs import open_dir_beneath

    folder, _, name = rel.rpartition("/")
    fd = open_dir_beneath(str(job_dir), folder)
    try:
        os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


# Locks this process holds, by job folder: taken by a check (resume, invoke), used by the run.
_HELD: dict[Path, HostLock] = {}


def _key(job_dir: Path) -> Path:
    return Path(os.path.realpath(job_dir))


def hold(job_dir: Path) -> HostLock:
    """Take the host lock of `job_dir` for this process until `release` (or return it if held)."""
    key = _key(job_dir)
    lock = _HELD.get(key)
    if lock is None:
        lock = _HELD[key] = HostLock.acquire(job_dir)
    return lock


def adopt(job_dir: Path, fd: int) -> HostLock:
    """Hold the lock handed down by a parent process as `fd` (see HostLock.adopt)."""
    lock = _HELD[_key(job_dir)] = HostLock.adopt(job_dir, fd)
    return lock


def held(job_dir: Path) -> HostLock | None:
    """The host lock of `job_dir` if this process holds it."""
    return _HELD.get(_key(job_dir))


def release(job_dir: Path) -> None:
    """Drop this process's host lock of `job_dir` (no-op when it holds none)."""
    lock = _HELD.pop(_key(job_dir), None)
    if lock is not None:
        lock.release()


@contextmanager
def host_lock(job_dir: Path) -> Iterator[None]:
    """Hold the job's host lock for a `with` block (kept if this process already held it)."""
    if held(job_dir) is not None:
        yield
        return
    hold(job_dir)
    try:
        yield
    finally:
        release(job_dir)
