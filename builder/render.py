"""Render a deployment's build context: byte-for-byte deterministic, hashed into the image tag.

The context holds the Dockerfile (from `templates/`), the environment lock, the runtime, the model
under its registered name and the scoring code. Files get fixed modes and mtimes and are listed in
sorted order, so the same inputs give the same bytes and the same hash on any machine. `wheels/`
(hard links into the shared wheelhouse) is left out of the hash: the lock pins every wheel's
sha256 already.

A context folder is marked with a file of its own (CONTEXT_MARKER, naming the deployment): files are
only ever pruned in a folder so marked, and a folder holding anything else is refused. Model files
are hard links to the registry's read-only copies, whose mode and time the registry already fixed:
a render never changes the metadata of a file with other links, it replaces it with a copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

import bepbuild_runtime
from bepbuild_runtime import layout, mlflow_driver

from . import __version__, config, locking
from .environments import BaseInfo, EnvPlan
from .errors import UserError
from .hashing import FIXED_MTIME, file_sha256, is_executable, read_only_mode, walk_files

CONTEXT_MARKER = ".bepbuild-context"


def templates_dir() -> Path:
    """Our templates folder (package data `bepbuild.templates`)."""
    import importlib.resources

    return Path(str(importlib.resources.files("bepbuild.templates")))

NOT_HASHED = ("wheels/",)
# The scoring script of an MLflow deployment without one: the runtime's generated driver, copied into
# the code folder (so the code layer stays last and both backends find it as they find any script).
MLFLOW_DRIVER = Path(mlflow_driver.__file__).name


@dataclass
class RenderInput:
    endpoint: str
    deployment: str
    code_dir: Path | None  # None: the generated MLflow driver is the whole code folder
    scoring_script: str  # relative to code_dir
    model_path: Path  # the registered copy: a folder or a file
    plan: EnvPlan
    base: BaseInfo
    base_image: str  # what FROM names (the env image for build strategy)
    lock: locking.Lock | None = None
    conda: str | None = None  # the conda executable in the base image
    template_dir: Path | None = None  # user templates that extend/override ours
    extra_labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Rendered:
    context: Path
    content_hash: str
    files: list[str]

    @property
    def short_hash(self) -> str:
        return self.content_hash[:16]


# What a Dockerfile may name as an image (repository[:tag][@digest]) or as the conda executable.
_IMAGE_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,511}")
_EXE_PATH = re.compile(r"[A-Za-z0-9._/+-]{1,512}")


def docker_quote(value: object) -> str:
    """`value` as one double-quoted Dockerfile word (ENV, LABEL): exact after Docker's unquoting.

    Inside double quotes Docker unescapes only backslash, quote and dollar (and expands `$VAR`), so
    those three are escaped. A line break (or any control character) would end the instruction and
    let the rest start a new one: such values are refused.
    """
    text = str(value)
    bad = next((c for c in text if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        raise UserError(f"{text!r} cannot go into a Dockerfile: it contains the control character {bad!r}")
    return '"' + re.sub(r'([\\"$])', r"\\\1", text) + '"'


def _checked(pattern: re.Pattern[str], what: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        text = str(value)
        if not pattern.fullmatch(text):
            raise UserError(f"{text!r} is not a valid {what} for a Dockerfile")
        return text

    return check


def _environment(template_dir: Path | None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if template_dir is not None:
        loaders.append(jinja2.FileSystemLoader(str(template_dir)))
    loaders.append(jinja2.FileSystemLoader(str(templates_dir())))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    # User strings reach the Dockerfile only through these filters (no Dockerfile injection).
    env.filters["docker_quote"] = docker_quote
    env.filters["image_ref"] = _checked(_IMAGE_REF, "image reference")
    env.filters["exe_path"] = _checked(_EXE_PATH, "executable path")
    return env


def dockerfile(inp: RenderInput, *, legacy: bool = False) -> str:
    """The Dockerfile text for one deployment (`legacy` for builders without RUN --mount)."""
    env = _environment(inp.template_dir)
    return env.get_template("Dockerfile.j2").render(
        layout=layout,
        plan=inp.plan,
        base_image=inp.base_image,
        conda=inp.conda or "conda",
        scoring_script=inp.scoring_script,
        endpoint=inp.endpoint,
        deployment=inp.deployment,
        legacy=legacy,
        bepbuild_version=__version__,
    )


def _files(inp: RenderInput) -> dict[str, Path | bytes]:
    files: dict[str, Path | bytes] = {
        "Dockerfile": dockerfile(inp).encode(),
        "Dockerfile.legacy": dockerfile(inp, legacy=True).encode(),
    }
    manifest = {
        "bepbuild_version": __version__,
        "base_image": inp.base.image,
        "base_image_id": inp.base.image_id,
        "base_python": inp.base.python,
        "strategy": inp.plan.strategy,
        "lock_sha256": inp.lock.digest if inp.lock else None,
        "model": inp.model_path.name,
        "scoring_script": inp.scoring_script,
    }
    if inp.code_dir is None:
        manifest["generated_driver"] = True
    files["bepbuild.lock.json"] = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    if inp.plan.strategy == "pip":
        assert inp.lock is not None
        files["env/requirements.lock"] = inp.lock.text().encode()
    elif inp.plan.strategy == "conda":
        import yaml

        files["env/conda.yaml"] = yaml.safe_dump(inp.plan.conda_file, sort_keys=False).encode()
    runtime_dir = Path(bepbuild_runtime.__file__).resolve().parent
    for p in sorted(runtime_dir.glob("*.py")):
        files[f"runtime/bepbuild_runtime/{p.name}"] = p
    try:
        for p in walk_files(inp.model_path):
            inner = "" if p == inp.model_path else "/" + p.relative_to(inp.model_path).as_posix()
            rel = inp.model_path.name + inner
            files[f"model/{rel}"] = p
        if inp.code_dir is None:
            files[f"code/{MLFLOW_DRIVER}"] = Path(mlflow_driver.__file__).resolve()
        else:
            for p in walk_files(inp.code_dir):
                files[f"code/{p.relative_to(inp.code_dir).as_posix()}"] = p
    except ValueError as e:
        raise UserError(f"cannot build deployment {inp.deployment}: {e}") from e
    return files


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
        if _legacy_context(dest):
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


def _legacy_context(dest: Path) -> bool:
    """A context written before contexts were marked: `BEPBUILD_HOME/contexts/<endpoint>-<deployment>`,
    bepbuild's own folder (contexts named since then carry the marker from their first render)."""
    return dest.resolve().parent == (config.home() / "contexts").resolve()


def _mark(dest: Path, endpoint: str, deployment: str) -> None:
    data = (json.dumps({"endpoint": endpoint, "deployment": deployment}, sort_keys=True) + "\n").encode()
    marker = dest / CONTEXT_MARKER
    if not (marker.is_file() and not marker.is_symlink() and marker.read_bytes() == data):
        _write(marker, data, 0o644)
    _settle(marker, 0o644)


def render(inp: RenderInput, dest: Path) -> Rendered:
    """Write the build context into `dest` (only what changed) and return its content hash."""
    files = _files(inp)
    check_destination(dest, inp.endpoint, inp.deployment)
    dest.mkdir(parents=True, exist_ok=True)
    _mark(dest, inp.endpoint, inp.deployment)
    _sweep(dest, set(files))
    h = hashlib.sha256()
    for rel in sorted(files):
        src = files[rel]
        target = dest / rel
        if isinstance(src, bytes):
            data_hash = hashlib.sha256(src).hexdigest()
            executable = False
            mode = _mode(rel, executable)
            if not (target.is_file() and target.stat().st_size == len(src) and target.read_bytes() == src):
                _write(target, src, mode)
        else:
            data_hash = file_sha256(src)
            executable = is_executable(src)
            mode = _mode(rel, executable)
            if not _holds(target, src, data_hash):
                _place(src, target, mode)
        _settle(target, mode)
        h.update(f"{rel}\0{'x' if executable else '-'}\0{data_hash}\n".encode())
    _settle_folders(dest)
    if inp.plan.strategy == "pip" and inp.lock is not None:
        locking.materialize(inp.lock, dest / "wheels")
    elif (dest / "wheels").exists():
        for p in (dest / "wheels").iterdir():
            config.remove_owned(p, dest)
    # Filling wheels/ touched it and `dest` after their modes were fixed (the wheel files themselves are
    # links into the wheelhouse: their metadata is the wheelhouse's, not ours to change).
    for d in (dest / "wheels", dest):
        if d.is_dir():
            os.chmod(d, 0o755)
            os.utime(d, (FIXED_MTIME, FIXED_MTIME))
    return Rendered(dest, h.hexdigest(), sorted(files))


def _mode(rel: str, executable: bool) -> int:
    """A context file's mode: model files keep the registry's read-only modes (they are its files)."""
    if rel.startswith("model/"):
        return read_only_mode(executable)
    return 0o755 if executable else 0o644


def _holds(target: Path, src: Path, data_hash: str) -> bool:
    """Whether `target` already has `src`'s content (a hard link to it needs no reading)."""
    try:
        t, s = target.lstat(), src.stat()
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(t.st_mode):
        return False
    if (t.st_dev, t.st_ino) == (s.st_dev, s.st_ino):
        return True
    return t.st_size == s.st_size and file_sha256(target) == data_hash


def _is_settled(st: os.stat_result, mode: int) -> bool:
    return stat.S_IMODE(st.st_mode) == mode and int(st.st_mtime) == FIXED_MTIME


def _place(src: Path, target: Path, mode: int) -> None:
    """Put `src` at `target`, streamed (models can be larger than memory).

    Registered assets never change once registered, and the registry fixed their modes and times:
    they are hard-linked (no copy, and the next render sees the same inode and reads nothing).
    Anything else, or a registered file whose metadata is not what the context needs (registered by
    an earlier bepbuild), is copied, so that settling the copy never touches the source.
    """
    target.parent.mkdir(parents=True, exist_ok=True)

    def fill(tmp: Path) -> None:
        if _registered(src) and _is_settled(src.stat(), mode):
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
    os.utime(path, (FIXED_MTIME, FIXED_MTIME))


def _registered(src: Path) -> bool:
    assets = config.assets_dir().resolve()
    return assets in src.resolve().parents


def _write(target: Path, data: bytes, mode: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)

    def fill(tmp: Path) -> None:
        tmp.write_bytes(data)
        _fix(tmp, mode)

    _replace(target, fill)


def _settle(target: Path, mode: int) -> None:
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


def _sweep(dest: Path, keep: set[str]) -> None:
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


def _settle_folders(dest: Path) -> None:
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
