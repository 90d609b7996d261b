"""Base images by Python version: an environment gets the Python it asks for.

A conda file (or an MLflow model) that pins ``python=X.Y[.Z]`` gets a base image with Python X.Y when
the default local base has another one:

- with `base_image_family` set (config), the family's image (``python:{version}-slim-bookworm`` ->
  ``python:3.8-slim-bookworm``), pulled from its registry when it is not on the engine;
- otherwise a local base, ``local/debian-py:X.Y`` (`local_name`), made by `build_local` (``bepbuild base
  build --python X.Y``, ``make engine`` for 3.8, or the first deploy that needs it): the default local
  base plus the host's own Python X.Y, an installation of pyenv's (built on this kind of machine, Debian
  bookworm like the base) copied under ``/opt/bepbuild/python/X.Y``, readable by every user.

No pin, a pin of the default base's own Python, a base with conda (conda installs the Python the file
asks for) or a pin older than the runtime's minimum keep the default base. The lock is resolved by an
interpreter of the same version when the host has one (`host_python.interpreter`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bepbuild_runtime.layout import MIN_PYTHON

from . import __version__, config, host_python, images
from .errors import EngineError, UserError

Log = Callable[[str], None]
LOCAL_REPO = "local/debian-py"
IMAGE_PYTHON_ROOT = "/opt/bepbuild/python"
KIND_LABEL = "io.bepbuild.kind"
PYTHON_LABEL = "io.bepbuild.python"
PARENT_ID_LABEL = "io.bepbuild.base-image-id"
_MINOR = re.compile(r"\s*(\d+)\.(\d+)")


@dataclass
class BaseBuild:
    """A local base image: its tag and id, the Python in it, and whether it was built now."""

    image: str
    image_id: str
    python: str
    built: bool
    seconds: float


def minor_of(version: str | None) -> str | None:
    """``3.8.5`` -> ``3.8`` (also ``3.8``, ``3.8.*``); None for no version or a major alone."""
    m = _MINOR.match(version or "")
    return f"{int(m.group(1))}.{int(m.group(2))}" if m else None


def _too_old(minor: str) -> bool:
    return tuple(int(p) for p in minor.split(".")) < MIN_PYTHON


def local_name(minor: str) -> str:
    """The local base image with Python `minor` (X.Y): ``local/debian-py:X.Y``. The only place that names it."""
    return f"{LOCAL_REPO}:{minor}"


def family_image(minor: str) -> str | None:
    """The configured family's image for Python `minor`, or None when no family is configured."""
    family = config.base_image_family()
    if family is None:
        return None
    if "{version}" not in family:
        raise UserError(f"base_image_family {family!r} has no {{version}} to put the Python version in "
                        "(for example python:{version}-slim-bookworm)", source=str(config.home() / "config.yaml"))
    return family.replace("{version}", minor)


def for_python(pin: str | None, default: str, log: Log) -> str:
    """The base image for an environment that pins Python `pin` and would otherwise get `default`.

    Makes sure it is on the engine (pulled from the family's registry, or built locally once).
    """
    from .environments import probe_base

    want = minor_of(pin)
    if want is None or _too_old(want):
        return default  # the plan's checks say what follows (a warning, or the runtime's minimum)
    base = probe_base(default)
    if base.conda or minor_of(base.python) == want:
        return default
    family = family_image(want)
    if family is not None:
        if images.image_id(family) is None:
            log(f"pulling {family}: the base image of Python {want} (base_image_family)")
            images.pull(family)
        return family
    image = local_name(want)
    if images.image_id(image) is None:
        log(f"no base image with Python {want} yet: building {image} from this host's Python {want}")
        build_local(want, log=log)
    return image


def checked_minor(version: str, what: str = "--python") -> str:
    """`version` as X.Y (X.Y.Z is cut to X.Y); one line for anything else, or for a Python the runtime cannot run on."""
    minor = minor_of(version)
    if minor is None or not re.fullmatch(r"\s*\d+\.\d+(\.\d+)?\s*", version):
        raise UserError(f"expected a Python version such as 3.8, got {version!r}", field=what)
    if _too_old(minor):
        need = ".".join(map(str, MIN_PYTHON))
        raise UserError(f"Python {minor}: bepbuild's runtime needs Python {need} or newer", field=what)
    return minor


def _no_python(minor: str) -> UserError:
    have = sorted(host_python.installations(), key=lambda v: tuple(int(p) for p in v.split(".")))
    where = (f"pyenv has {', '.join(have)}" if have else f"no pyenv installation under {host_python.pyenv_root()}")
    return UserError(
        f"no Python {minor} on this host to build {local_name(minor)} from ({where}): install it with "
        f"`pyenv install {minor}`, give an installation folder with `bepbuild base build --python {minor} --from DIR`, "
        "or set base_image_family in config.yaml to take the base images from a registry"
    )


def _version_of(exe: Path) -> str:
    try:
        out = subprocess.run([str(exe), "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise UserError(f"{exe} does not run: {e.strerror or e}", field="--from") from None
    if out.returncode != 0:
        raise UserError(f"{exe} does not run: {(out.stderr.strip().splitlines() or ['?'])[-1]}", field="--from")
    return out.stdout.strip()


def build_local(minor: str, *, source: Path | None = None, force: bool = False, backend: str = "auto",
                log: Log = lambda line: None) -> BaseBuild:
    """Make ``local/debian-py:X.Y``: the default local base plus the host's Python `minor` (idempotent).

    `source` is an installation folder (default: pyenv's newest X.Y). Nothing is done when the image
    exists with this Python over the current default base (unless `force`).
    """
    start = time.monotonic()
    minor = checked_minor(minor)
    prefix = Path(source).expanduser().resolve() if source is not None else host_python.installations().get(minor)
    if prefix is None:
        raise _no_python(minor)
    exe = prefix / "bin" / f"python{minor}"
    if not os.access(exe, os.X_OK):
        raise UserError(f"{prefix} is not a Python {minor} installation (no bin/python{minor})", field="--from")
    version = _version_of(exe)
    if minor_of(version) != minor:
        raise UserError(f"{exe} is Python {version}, not {minor}", field="--from")
    parent = config.base_image()
    parent_id = images.image_id(parent)
    if parent_id is None:
        raise EngineError(f"the default local base image {parent} is missing: run `make engine` to create it")
    tag = local_name(minor)
    if not force:
        found = images.image_id(tag)
        if found is not None:
            have = images.labels(tag)
            if have.get(PARENT_ID_LABEL) == parent_id and have.get(PYTHON_LABEL) == version:
                return BaseBuild(tag, found, version, False, time.monotonic() - start)
    root = config.home() / "contexts" / "base"
    root.mkdir(parents=True, exist_ok=True)
    from .env_images import sweep_stale

    sweep_stale(root)
    ctx = Path(tempfile.mkdtemp(prefix=f"python-{minor}-", dir=root))
    try:
        copy_installation(prefix, ctx / "python", minor)
        from .render import template_text

        (ctx / "Dockerfile").write_text(template_text(
            "Dockerfile.base.j2", parent=parent, version=version, minor=minor, prefix=f"{IMAGE_PYTHON_ROOT}/{minor}"))
        labels = {
            "org.opencontainers.image.vendor": "bepbuild",
            "org.opencontainers.image.title": tag,
            "org.opencontainers.image.description": f"{parent} with Python {version} under {IMAGE_PYTHON_ROOT}/{minor}",
            KIND_LABEL: "base", PYTHON_LABEL: version, "io.bepbuild.base-image": parent, PARENT_ID_LABEL: parent_id,
            "io.bepbuild.version": __version__,
        }
        log(f"building {tag}: {parent} plus Python {version} from {prefix}")
        result = images.build(ctx, tag, labels=labels, network="none", backend=backend, on_line=log, force=True)
    finally:
        config.remove_owned(ctx, root)
    return BaseBuild(tag, result.image_id, version, True, time.monotonic() - start)


def copy_installation(prefix: Path, dest: Path, minor: str) -> None:
    """Copy what a Python installation needs to run into `dest` (copies, never links to the host's files).

    The interpreter (bin/pythonX.Y and its python3/python names), its shared library and standard
    library; not its test suite, bytecode (compiled again in the image), installed packages, headers,
    scripts (their #! lines name the old prefix) or static library. Modes: readable by every user.
    """
    keep_bin = {f"python{minor}", "python3", "python"}
    stdlib = f"lib/python{minor}"
    dest.mkdir(parents=True)
    for dirpath, dirnames, filenames in os.walk(prefix):
        here = Path(dirpath)
        rel = here.relative_to(prefix).as_posix()
        for name in list(dirnames):
            sub = name if rel == "." else f"{rel}/{name}"
            skip = ((rel == "." and name not in ("bin", "lib")) or sub in ("lib/pkgconfig", f"{stdlib}/test")
                    or name == "__pycache__" or sub.startswith(f"{stdlib}/site-packages/"))
            if skip or (here / name).is_symlink():
                dirnames.remove(name)
                if not skip:
                    _link(here / name, dest / sub)
                continue
            (dest / sub).mkdir()
            os.chmod(dest / sub, 0o755)
        for name in filenames:
            sub = name if rel == "." else f"{rel}/{name}"
            if rel == "." or (rel == "bin" and name not in keep_bin):
                continue
            if (rel == f"{stdlib}/site-packages" and name != "README.txt") or (
                    rel.startswith(f"{stdlib}/config-") and name.endswith(".a")):
                continue
            src = here / name
            if src.is_symlink():
                _link(src, dest / sub)
            elif src.is_file():
                shutil.copyfile(src, dest / sub)
                os.chmod(dest / sub, 0o755 if os.stat(src).st_mode & 0o100 else 0o644)
    os.chmod(dest, 0o755)


def _link(src: Path, target: Path) -> None:
    """Recreate a link that stays in its folder (python3 -> python3.8); any other link is left out."""
    to = os.readlink(src)
    if "/" not in to and to not in (".", ".."):
        os.symlink(to, target)
