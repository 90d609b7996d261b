"""A build context folder on disk: whose it is, and files placed in it without writing through links.

A context folder carries a marker file naming its deployment (CONTEXT_MARKER): files are only ever
pruned in a folder so marked, and a folder holding anything else is refused. Model files are hard
links to the registry's read-only copies, whose mode and time the registry already fixed: a file
with other links is never chmod'ed or written, a settled copy replaces it. Every file is filled
under a new name and renamed over its target, so nothing is written through a link.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from . import config
from .errors import UserError
from .hashing import FIXED_MTIME, file_sha256, is_stamped, stamp

CONTEXT_MARKER = ".bepbuild-context"

Stamp = tuple[int, int, int]  # a context file's (inode, size, mtime in ns): a render replaces what it changes


@contextmanager
def locked(dest: Path) -> Iterator[None]:
    """Hold the lock of context folder `dest`: one render, or one build sending it, at a time.

    Two deploys of one deployment render into the same folder; a build must send what its tag's
    content hash names. The lock file lives in BEPBUILD_HOME (never beside a folder of the user's,
    as `render --output-dir` may name), named by the folder's resolved path.
    """
    key = hashlib.sha256(str(dest.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    folder = config.home() / "locks" / "contexts"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{key}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def stamps(dest: Path, files: list[str]) -> dict[str, Stamp]:
    """The stamp of each rendered file of `dest`."""
    out: dict[str, Stamp] = {}
    for rel in files:
        st = (dest / rel).lstat()
        out[rel] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def unchanged(dest: Path, rendered: dict[str, Stamp]) -> bool:
    """Whether `dest` still holds exactly the files a render left (`rendered`: their stamps), none
    replaced, none added: no other render went over it since."""
    seen = 0
    for dirpath, _dirnames, filenames in os.walk(dest):
        d = Path(dirpath)
        for n in filenames:
            rel = (d / n).relative_to(dest).as_posix()
            if rel == CONTEXT_MARKER:
                continue
            try:
                st = (d / n).lstat()
            except FileNotFoundError:
                return False
            if rendered.get(rel) != (st.st_ino, st.st_size, st.st_mtime_ns):
                return False
            seen += 1
    return seen == len(rendered)


def check_destination(dest: Path, endpoint: str, deployment: str, what: str | None = None) -> None:
    """Refuse to render into `dest` unless it is new, empty, or an earlier context of this deployment.

    `what` names the flag that gave `dest`, for the error line.
    """
    if dest.is_symlink():
        raise UserError(f"{dest} is a symbolic link; give the folder itself", field=what)
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{dest} is not a folder", field=what)
    if not dest.exists() or not any(dest.iterdir()):
        return
    owner = _marker_owner(dest)
    if owner is None:
        if _legacy_context(dest, endpoint, deployment):
            return
        raise UserError(
            f"{dest} is not empty and not a build context of bepbuild (no {CONTEXT_MARKER} file): its files would "
            "be replaced; give a new or empty folder", field=what)
    if owner != (endpoint.lower(), deployment.lower()):
        raise UserError(f"{dest} is the build context of {owner[0]}/{owner[1]}, not of {endpoint}/{deployment}; "
                        "give another folder", field=what)


def _marker_owner(dest: Path) -> tuple[str, str] | None:
    """(endpoint, deployment) from the marker, or None when there is none (a link does not count)."""
    marker = dest / CONTEXT_MARKER
    if marker.is_symlink() or not marker.is_file():
        return None
    try:
        doc = json.loads(marker.read_text())
        return str(doc["endpoint"]).lower(), str(doc["deployment"]).lower()
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _legacy_context(dest: Path, endpoint: str, deployment: str) -> bool:
    """This deployment's context written before contexts were marked: `BEPBUILD_HOME/contexts/<endpoint>-<deployment>`,
    bepbuild's own folder (contexts named since then carry the marker from their first render).

    Only that name: any other unmarked folder there (`contexts/endpoints`, which holds every
    deployment's context, or another deployment's old context) is not this deployment's to prune.
    """
    real = dest.resolve()
    return (real.parent == (config.home() / "contexts").resolve()
            and real.name.lower() == f"{endpoint}-{deployment}".lower())


def mark(dest: Path, endpoint: str, deployment: str) -> None:
    data = (json.dumps({"endpoint": endpoint, "deployment": deployment}, sort_keys=True) + "\n").encode()
    marker = dest / CONTEXT_MARKER
    if not (marker.is_file() and not marker.is_symlink() and marker.read_bytes() == data):
        write(marker, data, 0o644)
    settle(marker, 0o644)


def may_link(dest: Path) -> bool:
    """Whether a context in `dest` may hard-link the registry's files: only in bepbuild's own folders
    (BEPBUILD_HOME's contexts and scratch). A folder of the user's (`render --output-dir`) gets
    copies: a user there may edit them (root writes a read-only file), and an edit through a link
    would change a registered model."""
    return any(config.is_inside(dest, own) for own in (config.home() / "contexts", config.scratch_dir()))


def holds(target: Path, src: Path, data_hash: str, *, link: bool = True) -> bool:
    """Whether `target` already has `src`'s content (a hard link to it needs no reading; without
    `link`, a hard link to it does not count: it is replaced by a copy)."""
    try:
        t, s = target.lstat(), src.stat()
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(t.st_mode):
        return False
    if (t.st_dev, t.st_ino) == (s.st_dev, s.st_ino):
        return link
    return t.st_size == s.st_size and file_sha256(target) == data_hash


def _is_settled(st: os.stat_result, mode: int) -> bool:
    return stat.S_IMODE(st.st_mode) == mode and is_stamped(st)


def place(src: Path, target: Path, mode: int, *, link: bool = True) -> None:
    """Put `src` at `target`, streamed (models can be larger than memory).

    Registered assets never change once registered, and the registry fixed their modes and times:
    with `link` (`may_link`) they are hard-linked (no copy, and the next render sees the same inode
    and reads nothing). Anything else, or a registered file whose metadata is not what the context
    needs (registered by an earlier bepbuild), is copied, so that settling the copy never touches
    the source.
    """
    target.parent.mkdir(parents=True, exist_ok=True)

    def fill(tmp: Path) -> None:
        if link and _registered(src) and _is_settled(src.stat(), mode):
            try:
                os.link(src, tmp)
                return
            except OSError:  # another filesystem
                pass
        shutil.copyfile(src, tmp)
        _fix(tmp, mode)

    _replace(target, fill)


def _replace(target: Path, fill: Callable[[Path], None]) -> None:
    """Fill a new file beside `target`, then rename it over `target` (never written through).

    The new name is one no file of a context has; a failure removes it (a kill leaves it to the
    next render's sweep).
    """
    tmp = target.parent / f".bepbuild-tmp-{uuid.uuid4().hex}"
    try:
        fill(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fix(path: Path, mode: int) -> None:
    os.chmod(path, mode)
    stamp(path)  # a time of its own per content: BuildKit re-sends a file only when size or time changed


def _registered(src: Path) -> bool:
    assets = config.assets_dir().resolve()
    return assets in src.resolve().parents


def write(target: Path, data: bytes, mode: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)

    def fill(tmp: Path) -> None:
        tmp.write_bytes(data)
        _fix(tmp, mode)

    _replace(target, fill)


def settle(target: Path, mode: int) -> None:
    """Give `target` its fixed mode and time, never through a link to another file (a registered one).

    A file with other hard links is replaced by a settled copy instead of being changed.
    """
    st = target.lstat()
    if _is_settled(st, mode):
        return
    if st.st_nlink == 1:
        _fix(target, mode)
        return

    def fill(tmp: Path) -> None:
        shutil.copyfile(target, tmp)
        _fix(tmp, mode)

    _replace(target, fill)


def sweep(dest: Path, keep: set[str]) -> None:
    """Remove what an earlier render left that this one does not write, in a marked context only.

    Links are removed themselves wherever they are (never followed): nothing is written or removed
    through them. A folder where a file now goes is removed. `wheels/` is left to `materialize`.
    """
    for dirpath, dirnames, filenames in os.walk(dest):
        d = Path(dirpath)
        rel_dir = d.relative_to(dest).as_posix()
        in_wheels = rel_dir == "wheels" or rel_dir.startswith("wheels/")
        for n in list(dirnames):
            rel = n if rel_dir == "." else f"{rel_dir}/{n}"
            if (d / n).is_symlink() or rel in keep or rel == CONTEXT_MARKER:
                config.remove_owned(d / n, dest)
                dirnames.remove(n)
        for n in filenames:
            rel = n if rel_dir == "." else f"{rel_dir}/{n}"
            p = d / n
            if rel == CONTEXT_MARKER:
                continue
            if p.is_symlink() or not p.is_file() or (rel not in keep and not in_wheels):
                p.unlink()


def settle_folders(dest: Path) -> None:
    """Remove folders the sweep emptied and fix the modes and times of the others (wheels/ apart)."""
    for dirpath, _dirnames, _filenames in os.walk(dest, topdown=False):
        d = Path(dirpath)
        rel_dir = d.relative_to(dest).as_posix()
        if rel_dir == "wheels" or rel_dir.startswith("wheels/"):
            continue
        if d != dest and not any(d.iterdir()):
            d.rmdir()
            continue
        os.chmod(d, 0o755)
        os.utime(d, (FIXED_MTIME, FIXED_MTIME))
