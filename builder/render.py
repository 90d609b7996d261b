"""Render a deployment's build context: byte-for-byte deterministic, hashed into the image tag.

The context holds the Dockerfile (from `templates/`), a manifest (base image id, lock digest,
environment image), the runtime, the model under its registered name and the scoring code: the
Dockerfile starts FROM the environment's own image (`env_images`, with its own small context), so
no wheel and no lock are here. Files get fixed modes and mtimes and are listed in sorted order, so
the same inputs give the same bytes and the same hash on any machine.

Whose a context folder is, and how files are placed in it without writing through links (model
files are hard links to the registry's read-only copies): `context_dir`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

import bepbuild_runtime
from bepbuild_runtime import layout

from . import __version__, config, context_dir, locking
from .environments import BaseInfo, EnvPlan
from .errors import UserError
from .hashing import file_sha256, is_executable, read_only_mode, walk_files
from .mlflow_models import MLFLOW_DRIVER, driver_path


def templates_dir() -> Path:
    """Our templates folder (package data `bepbuild.templates`)."""
    import importlib.resources

    return Path(str(importlib.resources.files("bepbuild.templates")))



@dataclass
class RenderInput:
    endpoint: str
    deployment: str
    code_dir: Path | None  # None: the generated MLflow driver is the whole code folder
    scoring_script: str  # relative to code_dir
    model_path: Path  # the registered copy: a folder or a file
    plan: EnvPlan
    base: BaseInfo
    base_image: str  # what FROM names: the environment image, or the base (or built) image used as is
    lock: locking.Lock | None = None
    conda: str | None = None  # the conda executable in the base image
    template_dir: Path | None = None  # user templates that extend/override ours
    extra_labels: dict[str, str] = field(default_factory=dict)
    env_image: str | None = None  # the environment image base_image names (pip and conda strategies)


@dataclass
class Rendered:
    context: Path
    content_hash: str
    files: list[str]
    stamps: dict[str, context_dir.Stamp] = field(default_factory=dict)  # what the render left (context_dir.unchanged)

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
    return _jinja(template_dir, config.home())


@functools.lru_cache(maxsize=8)
def _jinja(template_dir: Path | None, home: Path) -> jinja2.Environment:
    # One per template folder, with the compiled templates kept in BEPBUILD_HOME/cache: compiling one
    # takes tens of milliseconds, and every deploy renders four Dockerfiles. A template whose file
    # changed is compiled again (jinja checks the file and keys its cache by the source).
    cache = home / "cache" / "templates"
    cache.mkdir(parents=True, exist_ok=True)
    loaders: list[jinja2.BaseLoader] = []
    if template_dir is not None:
        loaders.append(jinja2.FileSystemLoader(str(template_dir)))
    loaders.append(jinja2.FileSystemLoader(str(templates_dir())))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        bytecode_cache=jinja2.FileSystemBytecodeCache(str(cache)),
    )
    # User strings reach the Dockerfile only through these filters (no Dockerfile injection).
    env.filters["docker_quote"] = docker_quote
    env.filters["image_ref"] = _checked(_IMAGE_REF, "image reference")
    env.filters["exe_path"] = _checked(_EXE_PATH, "executable path")
    return env


def template_text(name: str, template_dir: Path | None = None, **values: object) -> str:
    """Template `name` of ours (or the user's template of that name) rendered with `values`, through the
    same filters as the deployment's Dockerfile."""
    return _environment(template_dir).get_template(name).render(layout=layout, **values)


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
        env_image=inp.env_image,
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
        "environment_image": inp.env_image,
    }
    if inp.code_dir is None:
        manifest["generated_driver"] = True
    files["bepbuild.lock.json"] = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    runtime_dir = Path(bepbuild_runtime.__file__).resolve().parent
    for p in sorted(runtime_dir.glob("*.py")):
        files[f"runtime/bepbuild_runtime/{p.name}"] = p
    try:
        for p in walk_files(inp.model_path):
            inner = "" if p == inp.model_path else "/" + p.relative_to(inp.model_path).as_posix()
            rel = inp.model_path.name + inner
            files[f"model/{rel}"] = p
        if inp.code_dir is None:
            files[f"code/{MLFLOW_DRIVER}"] = driver_path()
        else:
            for p in walk_files(inp.code_dir):
                files[f"code/{p.relative_to(inp.code_dir).as_posix()}"] = p
    except ValueError as e:
        raise UserError(f"cannot build deployment {inp.deployment}: {e}") from e
    return files


def render(inp: RenderInput, dest: Path, *, held: bool = False) -> Rendered:
    """Write the build context into `dest` (only what changed) and return its content hash.

    Under the folder's lock (`context_dir.locked`; `held`: the caller holds it already).
    """
    if not held:
        with context_dir.locked(dest):
            return render(inp, dest, held=True)
    files = _files(inp)
    context_dir.check_destination(dest, inp.endpoint, inp.deployment)
    dest.mkdir(parents=True, exist_ok=True)
    context_dir.mark(dest, inp.endpoint, inp.deployment)
    # Contexts of earlier versions held the wheels (links into the wheelhouse): removed, never followed.
    if (dest / "wheels").exists() or (dest / "wheels").is_symlink():
        config.remove_owned(dest / "wheels", dest)
    context_dir.sweep(dest, set(files))
    link = context_dir.may_link(dest)
    h = hashlib.sha256()
    for rel in sorted(files):
        src = files[rel]
        target = dest / rel
        if isinstance(src, bytes):
            data_hash = hashlib.sha256(src).hexdigest()
            executable = False
            mode = _mode(rel, executable)
            if not (target.is_file() and target.stat().st_size == len(src) and target.read_bytes() == src):
                context_dir.write(target, src, mode)
        else:
            data_hash = file_sha256(src)
            executable = is_executable(src)
            mode = _mode(rel, executable)
            if not context_dir.holds(target, src, data_hash, link=link):
                context_dir.place(src, target, mode, link=link)
        context_dir.settle(target, mode)
        h.update(f"{rel}\0{'x' if executable else '-'}\0{data_hash}\n".encode())
    context_dir.settle_folders(dest)
    return Rendered(dest, h.hexdigest(), sorted(files), context_dir.stamps(dest, sorted(files)))


def content_hash(files: dict[str, bytes]) -> str:
    """The hash of a context held in memory: each file's path and sha256, in sorted order (as `render`)."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(f"{rel}\0-\0{hashlib.sha256(files[rel]).hexdigest()}\n".encode())
    return h.hexdigest()


def _mode(rel: str, executable: bool) -> int:
    """A context file's mode: model files keep the registry's read-only modes (they are its files)."""
    if rel.startswith("model/"):
        return read_only_mode(executable)
    return 0o755 if executable else 0o644
