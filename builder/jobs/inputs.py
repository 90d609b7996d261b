"""Resolve an invoke's --input into a local root folder and the items (relative paths) under it.

Azure batch endpoints accept `uri_folder` and `uri_file` inputs only. A folder is listed without
recursion (nested folders are not explored, as in Azure); a file is one one-item mini-batch.
Symbolic links that lead outside the input folder are skipped (a scoring container could not read
them anyway, and following them would expose files the user did not hand in).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..store import Store

DEFAULT_MAX_DOWNLOAD_BYTES = 10 * 1024**3


def _env_number(name: str, default: float) -> float:
    """A positive number from the environment (read at each use, so tests and callers may set it)."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"{name}={raw!r}: not a number") from None
    if value <= 0:
        raise UserError(f"{name}={raw!r}: must be positive")
    return value


def max_download_bytes() -> int:
    """`BEPBUILD_MAX_DOWNLOAD_BYTES`: the most an http(s) input may download, and unpack to."""
    return int(_env_number("BEPBUILD_MAX_DOWNLOAD_BYTES", DEFAULT_MAX_DOWNLOAD_BYTES))


def download_timeout() -> float:
    """`BEPBUILD_DOWNLOAD_TIMEOUT`: seconds an http(s) input may stay silent."""
    return _env_number("BEPBUILD_DOWNLOAD_TIMEOUT", 60.0)


@dataclass
class InputSpec:
    """A resolved input: what the user gave, and where it is on this machine."""

    given: str
    type: str  # uri_folder | uri_file
    root: Path  # folder the items are relative to (mounted read-only into instances)
    single: str | None = None  # uri_file: the one item
    url: str | None = None  # http(s) inputs: downloaded into the job folder first
    skipped: list[str] = field(default_factory=list)  # links leading out of the folder
    special: list[str] = field(default_factory=list)  # named pipes, sockets, devices in the folder

    def to_json(self) -> dict[str, object]:
        return {"path": self.given, "type": self.type, "root": str(self.root), "url": self.url}


def resolve(store: Store, given: str, input_type: str | None) -> InputSpec:
    """Turn --input (local path, http(s) URL, or azureml:data reference) into an InputSpec."""
    if input_type not in (None, "uri_folder", "uri_file"):
        raise UserError(f"--input-type must be uri_folder or uri_file, got {input_type!r}")
    if given.startswith("azureml:"):
        from ..registry import resolve as resolve_asset

        data = resolve_asset(store, "data", given)
        return resolve(store, data["path"], input_type or data["type"])
    if given.startswith(("http://", "https://")):
        kind = input_type or ("uri_file" if _looks_like_file(given) else "uri_folder")
        return InputSpec(given, kind, Path(), url=given)
    if "://" in given:
        raise UserError(f"--input {given}: only local paths, http(s) URLs and azureml:<data> references work here")
    p = Path(given).expanduser()
    if not p.exists():
        raise UserError(f"There is no folder on target path: {given}")
    p = p.resolve()
    what = special_kind(p)
    if what:  # reading a pipe or a device could block or never end; neither is a file nor a folder
        raise UserError(f"--input {given} is {what}, not a file or folder")
    kind = input_type or ("uri_file" if p.is_file() else "uri_folder")
    if kind == "uri_folder" and not p.is_dir():
        raise UserError(f"--input {given} is a file; use --input-type uri_file")
    if kind == "uri_file":
        if not p.is_file():
            raise UserError(f"--input {given} is a folder; use --input-type uri_folder")
        return InputSpec(given, kind, p.parent, single=p.name)
    return InputSpec(given, kind, p)


def special_kind(path: Path) -> str | None:
    """What `path` is when it is neither a regular file nor a folder ("a named pipe", ...), else None."""
    mode = path.stat().st_mode
    for test, what in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return None if stat.S_ISREG(mode) or stat.S_ISDIR(mode) else "a special file"


def _looks_like_file(url: str) -> bool:
    name = urllib.parse.urlparse(url).path.rsplit("/", 1)[-1]
    return "." in name and not url.endswith("/")


def items(spec: InputSpec) -> Iterator[str]:
    """The item paths, relative to spec.root, in name order."""
    if spec.single is not None:
        yield spec.single
        return
    root = spec.root
    # One pass, no stat per file (scandir's d_type answers both questions); links are rare and
    # checked apart. Sorted in memory: at 1M names that is ~0.3 s and ~70 MB (bench/scale.py),
    # and it keeps the queue (and so the output) in name order.
    links: list[os.DirEntry[str]] = []
    names = []
    with os.scandir(root) as it:
        for e in it:
            if e.is_file(follow_symlinks=False):
                names.append(e.name)
            elif e.is_symlink():
                links.append(e)
            elif not e.is_dir(follow_symlinks=False):
                spec.special.append(e.name)  # a pipe, socket or device: never opened
    for entry in links:
        target = Path(os.path.realpath(entry.path))
        if root not in target.parents or not target.is_file():
            spec.skipped.append(entry.name)
        else:
            names.append(entry.name)
    names.sort()
    yield from names


def download(spec: InputSpec, dest: Path) -> None:
    """Fetch an http(s) input into `dest` (bounded in size and time); archives are unpacked."""
    assert spec.url
    dest.mkdir(parents=True, exist_ok=True)
    name = urllib.parse.unquote(urllib.parse.urlparse(spec.url).path.rsplit("/", 1)[-1])
    name = name.replace("/", "_").replace("\0", "_")  # %2F..%2F must not climb out of `dest`
    if name in ("", ".", ".."):
        name = "input"
    # A folder input is unpacked (or moved) into dest/data: its download must have another name.
    target = dest / (name if spec.type == "uri_file" else f".download-{os.getpid()}")
    limit = max_download_bytes()
    try:
        with urllib.request.urlopen(spec.url, timeout=download_timeout()) as resp, open(target, "wb") as out:
            size = int(resp.headers.get("Content-Length") or 0)
            if size > limit:
                raise UserError(f"--input {spec.url}: {size} bytes is more than the limit of {limit} bytes "
                                "(BEPBUILD_MAX_DOWNLOAD_BYTES)")
            copied = 0
            while chunk := resp.read(1 << 20):
                copied += len(chunk)
                if copied > limit:
                    raise UserError(f"--input {spec.url}: larger than the limit of {limit} bytes "
                                    "(BEPBUILD_MAX_DOWNLOAD_BYTES)")
                out.write(chunk)
    except UserError:
        target.unlink(missing_ok=True)
        raise
    except (OSError, ValueError) as e:
        target.unlink(missing_ok=True)
        raise UserError(f"--input {spec.url}: download failed: {e}") from e
    if spec.type == "uri_file":
        spec.root, spec.single = dest, name
        return
    folder = dest / "data"
    folder.mkdir(exist_ok=True)
    try:
        if zipfile.is_zipfile(target):
            with zipfile.ZipFile(target) as z:
                _check_unpacked_size(spec.url, sum(m.file_size for m in z.infolist()), limit)
                _safe_extract_zip(z, folder)
        elif tarfile.is_tarfile(target):
            with tarfile.open(target) as t:
                _check_unpacked_size(spec.url, sum(m.size for m in t.getmembers()), limit)
                _safe_extract_tar(t, folder)
        else:
            shutil.move(str(target), folder / name)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        raise UserError(f"--input {spec.url}: cannot unpack the archive: {e}") from e
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):  # the job folder is full: not the archive's fault
            raise
        # Members that do not fit a filesystem: a file where another member needs a folder, or the
        # reverse, or a name too long. The archive's fault, said in its own terms.
        member = os.path.relpath(e.filename, folder) if isinstance(e.filename, str) else "?"
        raise UserError(f"--input {spec.url}: cannot unpack the archive: member {member!r}: {e.strerror}") from None
    target.unlink(missing_ok=True)
    # An archive holding one folder: score the files inside it.
    entries = list(folder.iterdir())
    spec.root = entries[0] if len(entries) == 1 and entries[0].is_dir() else folder


def _check_unpacked_size(url: str, size: int, limit: int) -> None:
    # A small archive may unpack to far more than it weighs (a "zip bomb"): the limit holds for both.
    if size > limit:
        raise UserError(f"--input {url}: the archive unpacks to {size} bytes, more than the limit of {limit} bytes "
                        "(BEPBUILD_MAX_DOWNLOAD_BYTES)")


def _safe_extract_tar(t: tarfile.TarFile, dest: Path) -> None:
    """Unpack regular files and folders that stay inside `dest`; any other member is refused.

    Checked here whatever the Python: a link (even one that stays inside) could be followed by a
    later member or by the scoring code, and tarfile's own filters exist only on newer builds
    (3.12, and backports from 3.8.17/3.11.4; Debian's 3.11.2 has none and refuses `filter=`).
    """
    base = dest.resolve()
    members = t.getmembers()
    for m in members:
        name = m.name
        target = (base / name).resolve()
        if name.startswith(("/", "\\")) or ".." in Path(name).parts or (target != base and base not in target.parents):
            raise tarfile.TarError(f"member {name!r} would land outside the input folder")
        if not (m.isfile() or m.isdir()):
            raise tarfile.TarError(f"member {name!r} is not a regular file or folder")
    if hasattr(tarfile, "data_filter"):
        t.extractall(dest, members=members, filter="data")
        return
    # No filters in this tarfile: write the members ourselves (no owner, mode bits or times taken
    # from the archive, and nothing but files and folders).
    for m in members:
        target = base / m.name
        if m.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        source = t.extractfile(m)
        assert source is not None
        with source, open(target, "wb") as out:
            shutil.copyfileobj(source, out)
        if m.mode & 0o100:
            os.chmod(target, 0o755)


def _safe_extract_zip(z: zipfile.ZipFile, dest: Path) -> None:
    for member in z.infolist():
        target = (dest / member.filename).resolve()
        if dest.resolve() not in target.parents and target != dest.resolve():
            raise UserError(f"archive member {member.filename!r} would land outside the input folder")
    z.extractall(dest)
