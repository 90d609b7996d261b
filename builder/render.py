"""Render a deployment's build context: byte-for-byte deterministic, hashed into the image tag.

The context holds the Dockerfile (from `templates/`), the environment lock, the runtime, the model
under its registered name and the scoring code. Files get fixed modes and mtimes and are listed in
sorted order, so the same inputs give the same bytes and the same hash on any machine. `wheels/`
(hard links into the shared wheelhouse) is left out of the hash: the lock pins every wheel's
sha256 already.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

import bepbuild_runtime
from bepbuild_runtime import layout, mlflow_driver

from . import __version__, config, locking
from .environments import BaseInfo, EnvPlan
from .errors import UserError
from .hashing import file_sha256, walk_files

FIXED_MTIME = 946684800  # 2000-01-01: stable, and later than zip's 1980 floor


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


def render(inp: RenderInput, dest: Path) -> Rendered:
    """Write the build context into `dest` (only what changed) and return its content hash."""
    files = _files(inp)
    dest.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    for rel in sorted(files):
        src = files[rel]
        target = dest / rel
        if isinstance(src, bytes):
            data_hash = hashlib.sha256(src).hexdigest()
            executable = False
            if not (target.is_file() and target.stat().st_size == len(src) and target.read_bytes() == src):
                _write(target, src)
        else:
            data_hash = file_sha256(src)
            executable = os.access(src, os.X_OK)
            if not _holds(target, src, data_hash):
                _place(src, target)
        _normalize(target, executable)
        h.update(f"{rel}\0{'x' if executable else '-'}\0{data_hash}\n".encode())
    _prune(dest, set(files))
    if inp.plan.strategy == "pip" and inp.lock is not None:
        locking.materialize(inp.lock, dest / "wheels")
    elif (dest / "wheels").exists():
        for p in (dest / "wheels").iterdir():
            p.unlink()
    # Filling wheels/ touched it and `dest` after _prune fixed them (the wheel files themselves are
    # links into the wheelhouse: their metadata is the wheelhouse's, not ours to change).
    for d in (dest / "wheels", dest):
        if d.is_dir():
            os.chmod(d, 0o755)
            os.utime(d, (FIXED_MTIME, FIXED_MTIME))
    return Rendered(dest, h.hexdigest(), sorted(files))


def _holds(target: Path, src: Path, data_hash: str) -> bool:
    """Whether `target` already has `src`'s content (a hard link to it needs no reading)."""
    try:
        t, s = target.stat(), src.stat()
    except FileNotFoundError:
        return False
    if (t.st_dev, t.st_ino) == (s.st_dev, s.st_ino):
        return True
    return t.st_size == s.st_size and file_sha256(target) == data_hash


def _place(src: Path, target: Path) -> None:
    """Put `src` at `target`, streamed (models can be larger than memory).

    Registered assets under BEPBUILD_HOME never change once registered, so they are hard-linked:
    no copy, and the next render sees the same inode and reads nothing.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    assets = config.assets_dir().resolve()
    try:
        if assets not in src.resolve().parents:
            raise OSError("not a registered asset")
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, target)


def _write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def _normalize(target: Path, executable: bool) -> None:
    os.chmod(target, 0o755 if executable else 0o644)
    os.utime(target, (FIXED_MTIME, FIXED_MTIME))


def _prune(dest: Path, keep: set[str]) -> None:
    """Remove files a previous render left that are not part of this one; fix folder modes."""
    for dirpath, _dirnames, filenames in os.walk(dest, topdown=False):
        d = Path(dirpath)
        rel_dir = d.relative_to(dest).as_posix()
        if rel_dir == "wheels" or rel_dir.startswith("wheels/"):
            continue
        for n in filenames:
            rel = f"{rel_dir}/{n}" if rel_dir != "." else n
            if rel not in keep:
                (d / n).unlink()
        if d != dest and not any(d.iterdir()):
            d.rmdir()
            continue
        os.chmod(d, 0o755)
        os.utime(d, (FIXED_MTIME, FIXED_MTIME))
