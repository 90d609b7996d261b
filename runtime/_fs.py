"""Small file helpers shared by the queue and progress modules (stdlib only)."""

from __future__ import annotations

import errno
import json
import os
import stat

from . import layout

JSON = ".json"
dumps = json.JSONEncoder(separators=(",", ":")).encode  # ASCII-escaped: odd file names survive


NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)

# Claims and records are written by instances and read by workers and the host (perhaps root): a link
# planted in their place is never followed (ELOOP), a FIFO never waited on.
READ_PLANTED = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def is_no_space(exc: BaseException) -> bool:
    """An OSError saying the filesystem (of the job folder) is full."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


def is_claim(name: str) -> bool:
    """A mini-batch file name (not a temp file, heartbeat or staging folder)."""
    return name.endswith(JSON) and not name.startswith(".")


def worker_dir(job_dir: str | os.PathLike[str], worker: str) -> str:
    """`queue/running/<worker>`: the worker's claims, heartbeat and temp files."""
    return layout.path(job_dir, layout.RUNNING_DIR, worker)


def write_all(fd: int, data: bytes) -> None:
    """os.write until all of `data` is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_atomic(path: str, data: bytes, tmp_dir: str) -> None:
    """Write `path` so readers see the old file or the whole new one (tmp in `tmp_dir`, rename)."""
    tmp = os.path.join(tmp_dir, layout.TMP_PREFIX + os.path.basename(path))
    fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def open_nofollow(path: str, flags: int, mode: int = 0o666) -> int:
    """os.open that never follows a symbolic link at `path`, replacing one by a new file.

    Scoring code writes in the job folder; the host (perhaps root) writes there too, and a link left
    where it writes must not send its bytes elsewhere.
    """
    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
    os.unlink(path)
    return os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_dir_beneath(root: str, rel: str = "") -> int:
    """A descriptor of the folder `root/rel`, reaching it through no symbolic link below `root`.

    The host, perhaps root, works in folders that scoring code can write (the queue, the logs): a
    folder there replaced by a link would send the host's renames, removals and bytes into any
    folder the link names. Each folder on the way is opened without following a link; a missing
    one is made, and a link found in a folder's place is removed and a folder made there. A file in
    a folder's place is not ours to remove: NotADirectoryError.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in _plain_parts(rel):
            sub = subdir_at(fd, part)
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    return fd


def _plain_parts(rel: str) -> list[str]:
    if not rel:
        return []
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not a plain relative path: {rel!r}")
    return parts


def subdir_at(dir_fd: int, name: str) -> int:
    """A descriptor of folder `name` in `dir_fd`, made when missing; a link there is replaced by a folder."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            raise
        if e.errno != errno.ENOENT:
            if not _is_link_at(dir_fd, name):
                raise  # a file where a folder goes: not ours to remove
            os.unlink(name, dir_fd=dir_fd)
    try:
        os.mkdir(name, 0o777, dir_fd=dir_fd)
    except FileExistsError:
        pass
    return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def open_at(dir_fd: int, name: str, flags: int, mode: int = 0o666) -> int:
    """os.open of `name` in folder `dir_fd`, never following a link there (a link is replaced by a new file)."""
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
    os.unlink(name, dir_fd=dir_fd)
    return os.open(name, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)


def open_beneath(root: str, rel: str, flags: int, mode: int = 0o666) -> int:
    """os.open of `root/rel` that follows no symbolic link below `root` (folders made when missing).

    open_nofollow guards the last name only; this guards every folder on the way too (open_dir_beneath).
    """
    parts = _plain_parts(rel)
    if not parts:
        raise ValueError(f"not a plain relative path: {rel!r}")
    fd = open_dir_beneath(root, "/".join(parts[:-1]))
    try:
        return open_at(fd, parts[-1], flags, mode)
    finally:
        os.close(fd)


def remove_tree_at(dir_fd: int, name: str, depth: int = 64) -> None:
    """Remove `name` in folder `dir_fd` and all below it, following no link (a link is removed itself).

    Errors are ignored, as shutil.rmtree(ignore_errors=True) does; folders nested deeper than
    `depth` are left.
    """
    try:
        is_dir = stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        if not is_dir:
            os.unlink(name, dir_fd=dir_fd)
            return
        if depth <= 0:
            return
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return
    try:
        for entry in os.listdir(fd):
            remove_tree_at(fd, entry, depth - 1)
    except OSError:
        pass
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except OSError:
        pass


def _is_link_at(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def unlink_quiet(path: str) -> None:
    """Unlink `path`; a missing file is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def listdir(folder: str) -> list[str]:
    """os.listdir, empty for a missing folder."""
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


def total_count(job_dir: str | os.PathLike[str]) -> int | None:
    """The number of mini-batches write_queue wrote, or None when unknown."""
    try:
        with open(layout.path(job_dir, layout.QUEUE_COUNT_FILE), encoding="ascii") as f:
            return int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return None
