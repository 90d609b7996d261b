"""Hermetic pip environments: resolve on the host, cache wheels, write a lock.

Resolution uses the host's own pip (`pip install --dry-run --report`), so the host's index,
extra indexes, find-links, CA bundle, proxy and credentials apply exactly as they do for the user.
Every resolved distribution is fetched once into a shared wheelhouse under BEPBUILD_HOME; the lock
names each one with its sha256. A build then installs with `--no-index --require-hashes` from the
wheelhouse mounted into the build, so it needs no network and no credential ever reaches a layer.
Locks are cached by their inputs: a no-op deploy resolves nothing; `--relock` resolves again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from . import config
from .errors import BuildError
from .hashing import file_sha256
from .host_python import interpreter
from .host_python import this_minor as host_minor

LOCK_FORMAT = 1


@dataclass(frozen=True)
class Locked:
    name: str
    version: str
    filename: str
    sha256: str


@dataclass
class Lock:
    key: str
    python: str
    requirements: list[str]
    packages: list[Locked]

    def text(self) -> str:
        """The pip requirements file installed in the build (hash-checked)."""
        lines = [f"# bepbuild lock for Python {self.python}; do not edit"]
        lines += [f"{p.name}=={p.version} --hash=sha256:{p.sha256}" for p in self.packages]
        return "\n".join(lines) + "\n"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text().encode()).hexdigest()


def wheelhouse() -> Path:
    return config.home() / "wheelhouse"


def _key(requirements: list[str], options: list[str], python: str, cross: bool) -> str:
    doc = {"format": LOCK_FORMAT, "requirements": requirements, "options": options, "python": python,
           "platform": sys.platform}
    if cross:  # resolved by another Python than the target's (its markers): not the same lock
        doc["cross"] = True
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


_CREDENTIALS = re.compile(r"://[^/\s@]+@")


def redact(text: str) -> str:
    """`text` with the credentials of every URL in it replaced (pip echoes some arguments raw)."""
    return _CREDENTIALS.sub("://****@", text)


def _pip(args: list[str], log: Callable[[str], None] | None, exe: str | None = None) -> None:
    cmd = [exe or sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    proc.stdout, proc.stderr = redact(proc.stdout), redact(proc.stderr)
    if log:
        for line in (proc.stdout + proc.stderr).splitlines():
            if line.strip() and "is ignored: it is neither a file nor a directory" not in line:
                log(line)
    if proc.returncode != 0:
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")]
        # "No matching distribution found for X" says it in one line; the "Could not find a version"
        # line before it lists every version there is.
        errors = [ln for ln in errors if "No matching distribution found" in ln] or errors
        raise BuildError(f"pip {args[0]} failed: {errors[0] if errors else proc.stderr.strip()[-300:]}")


def resolve(
    requirements: list[str],
    *,
    python: str,
    options: list[str] | None = None,
    host_python: str | None = None,
    refresh: bool = False,
    log: Callable[[str], None] | None = None,
) -> Lock:
    """Resolve requirements for `python` (X.Y[.Z]) into a lock, fetching wheels as needed.

    Another Python than the host's is resolved by an interpreter of that version when the host has
    one (`host_python.interpreter`): pip then reads markers (`python_version < "3.9"`) and wheel
    tags as the image's Python will. Without one, pip is told the target version (`--python-version`,
    wheels only), but reads markers as the host's Python does: the caller says so (`cross_resolved`).
    `options` are pip option lines as a conda file's pip section holds them (`--extra-index-url URL`
    is one line there and two arguments for pip).
    """
    options = [arg for line in options or [] for arg in shlex.split(line)]
    target = ".".join(python.split(".")[:2])
    exe = _resolver(target, host_python)
    key = _key(requirements, options, target, exe is None)
    cached = config.home() / "locks" / f"{key}.json"
    if cached.exists() and not refresh:
        lock = _load(cached)
        if all((wheelhouse() / p.filename).exists() for p in lock.packages):
            return lock
    lock = _resolve(requirements, options, python, key, exe, log)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(lock), indent=1))
    os.replace(tmp, cached)
    return lock


def _resolver(target: str, host_python: str | None = None) -> str | None:
    """The interpreter that resolves for Python `target` (X.Y): this one for its own version, else one of
    that version on the host; None when there is none (cross resolution)."""
    host = ".".join((host_python or host_minor()).split(".")[:2])
    if target == host:
        return sys.executable
    found = interpreter(target)
    return str(found) if found is not None else None


def cross_resolved(python: str) -> bool:
    """Whether a lock for `python` is resolved without an interpreter of that version (see `resolve`)."""
    return _resolver(".".join(python.split(".")[:2])) is None


def _load(path: Path) -> Lock:
    doc = json.loads(path.read_text())
    return Lock(doc["key"], doc["python"], doc["requirements"], [Locked(**p) for p in doc["packages"]])


def _resolve(
    requirements: list[str], options: list[str], python: str, key: str, exe: str | None,
    log: Callable[[str], None] | None,
) -> Lock:
    if not requirements:
        return Lock(key, python, [], [])
    target = ".".join(python.split(".")[:2])
    with tempfile.TemporaryDirectory() as tmp:
        cross: list[str] = []
        if exe is None:
            # No interpreter of the image's Python here: only wheels can be chosen for it, and pip
            # wants a --target then (a dry run writes nothing there; it goes with the report).
            cross = ["--python-version", target, "--only-binary=:all:", "--target", str(Path(tmp) / "target")]
        report = Path(tmp) / "report.json"
        _pip(["install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report), *cross, *options,
              *requirements], log, exe)
        items = json.loads(report.read_text())["install"]
    house = wheelhouse()
    house.mkdir(parents=True, exist_ok=True)
    packages = [_fetch(item, house, options, log, exe) for item in items]
    packages.sort(key=lambda p: p.name.lower())
    return Lock(key, python, requirements, packages)


def _fetch(item: dict, house: Path, options: list[str], log: Callable[[str], None] | None,
           exe: str | None) -> Locked:
    meta = item["metadata"]
    info = item["download_info"]
    url = info["url"]
    want = (info.get("archive_info") or {}).get("hash", "")
    want = want.split("=", 1)[1] if want.startswith("sha256=") else ""
    filename = urllib.parse.unquote(url.rsplit("/", 1)[-1].split("#")[0])
    name, version = meta["name"], meta["version"]
    if filename.endswith(".whl"):
        dest = house / filename
        if not (dest.exists() and (not want or file_sha256(dest) == want)):
            if url.startswith("file://"):
                _link_or_copy(Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)), dest)
            else:
                _pip(["download", "--no-deps", "--quiet", "-d", str(house), *options, f"{name} @ {url}"], log, exe)
        digest = file_sha256(dest)
        if want and digest != want:
            raise BuildError(f"{filename}: sha256 {digest} does not match the index's {want}")
        return Locked(name, version, filename, digest)
    # An sdist (only when resolved by the image's own Python): build its wheel once on the host, by that
    # Python, and lock the wheel.
    with tempfile.TemporaryDirectory() as out:
        _pip(["wheel", "--no-deps", "--quiet", "-w", out, *options, f"{name} @ {url}"], log, exe)
        built = next(Path(out).glob("*.whl"))
        dest = house / built.name
        shutil.move(str(built), dest)
    return Locked(name, version, dest.name, file_sha256(dest))


def _link_or_copy(src: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".part")
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def materialize(lock: Lock, dest: Path) -> None:
    """Put exactly the locked wheels into `dest` (hard links into the wheelhouse when possible)."""
    dest.mkdir(parents=True, exist_ok=True)
    wanted = {p.filename for p in lock.packages}
    for existing in dest.iterdir():
        if existing.name not in wanted:
            existing.unlink()
    for p in lock.packages:
        target = dest / p.filename
        src = wheelhouse() / p.filename
        if target.exists() and target.stat().st_ino == src.stat().st_ino:
            continue
        if target.exists():
            target.unlink()
        _link_or_copy(src, target)
