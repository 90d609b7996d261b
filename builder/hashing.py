"""Content hashes of files and folder trees (stable across machines: sorted, relative names).

Also what "the same file" means wherever files are copied and compared: the executable bit (read
from the mode, not from `os.access`, which depends on who asks: root may execute any file with an
execute bit), and the fixed mode and time that registered files and build contexts get.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

_CHUNK = 1 << 20

FIXED_MTIME = 946684800  # 2000-01-01: stable, and later than zip's 1980 floor


def content_mtime_ns(sha256_hex: str) -> int:
    """The time a registered or context file gets: FIXED_MTIME, with nanoseconds taken from its hash.

    BuildKit sends a context file again only when its size or time changed: with one fixed time for
    every file, a scoring script edited to the same size kept the old code in the new image. The
    nanoseconds are never 0, which tells a stamped file from one fixed by an earlier bepbuild.
    """
    return FIXED_MTIME * 10**9 + 1 + int(sha256_hex[:15], 16) % (10**9 - 1)


def is_stamped(st: os.stat_result) -> bool:
    """Whether a file's time was set by `content_mtime_ns` (for its content when it was set)."""
    return st.st_mtime_ns // 10**9 == FIXED_MTIME and st.st_mtime_ns % 10**9 != 0


def stamp(path: Path, sha256_hex: str | None = None) -> None:
    """Give `path` its content time (`sha256_hex` saves reading it when the caller has it)."""
    t = content_mtime_ns(sha256_hex or file_sha256(path))
    os.utime(path, ns=(t, t), follow_symlinks=False)


def is_executable(path: Path) -> bool:
    """The owner's execute bit, as git reads it: the same answer for every user."""
    return bool(path.stat().st_mode & stat.S_IXUSR)


def read_only_mode(executable: bool) -> int:
    """The mode of a registered file: nobody writes it, through any link to it."""
    return 0o555 if executable else 0o444


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def walk_files(root: Path) -> list[Path]:
    """Every regular file under `root` (or `root` itself), sorted by relative POSIX name.

    Symlinks and special files are refused: an image must not depend on what a link points to.
    """
    if root.is_symlink():
        raise ValueError(f"{root} is a symbolic link")
    if root.is_file():
        return [root]
    if not root.is_dir():  # a named pipe, socket or device: reading it could block or never end
        raise ValueError(f"{root} is not a regular file or folder")
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = [n for n in dirnames if n != "__pycache__"]
        for n in dirnames:
            if (d / n).is_symlink():
                raise ValueError(f"{d / n} is a symbolic link")
        for n in filenames:
            p = d / n
            if p.is_symlink():
                raise ValueError(f"{p} is a symbolic link")
            if not p.is_file():
                raise ValueError(f"{p} is not a regular file")
            if n.endswith(".pyc"):
                continue
            out.append(p)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def tree_sha256(root: Path) -> str:
    """Hash of names, executable bits and contents of every file under `root`."""
    h = hashlib.sha256()
    for p in walk_files(root):
        rel = p.name if p == root else p.relative_to(root).as_posix()
        mode = "x" if is_executable(p) else "-"
        h.update(f"{rel}\0{mode}\0{file_sha256(p)}\n".encode())
    return h.hexdigest()
