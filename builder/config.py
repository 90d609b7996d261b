"""Where bepbuild keeps its state, and settings read from the environment."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import yaml

DEFAULT_BASE_IMAGE = "local/debian-py:bookworm"


def home() -> Path:
    """`BEPBUILD_HOME`, default `~/.bepbuild`: the registry database, asset copies, jobs."""
    return Path(os.environ.get("BEPBUILD_HOME") or Path.home() / ".bepbuild").expanduser()


def db_path() -> Path:
    return home() / "registry.db"


def assets_dir() -> Path:
    return home() / "assets"


def scratch_dir() -> Path:
    """Working folders of one command that go when it ends (`bepbuild test`): never the registry, never a job."""
    return home() / "scratch"


HOME_ID_FILE = "home-id"


def home_id() -> str:
    """This BEPBUILD_HOME's id, 8 hex digits made once: part of the tag of every deployment image it
    builds, so that homes sharing a Docker engine never move or remove each other's tags."""
    import re
    import secrets

    from .errors import UserError

    path = home() / HOME_ID_FILE
    for _ in range(2):
        try:
            text = path.read_text(encoding="ascii", errors="replace").strip()
        except FileNotFoundError:
            home().mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{HOME_ID_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
            tmp.write_text(secrets.token_hex(4) + "\n")
            try:
                os.link(tmp, path)  # never over an id another process made meanwhile
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
            continue
        if re.fullmatch(r"[0-9a-f]{8}", text):
            return text
        break
    raise UserError(f"{path} does not hold this home's id (8 hex digits): remove it, and a new one is made")


def jobs_dir() -> Path:
    """Where job folders are created (`BEPBUILD_JOBS_DIR` overrides)."""
    return Path(os.environ.get("BEPBUILD_JOBS_DIR") or home() / "jobs").expanduser()


def owned_path(root: Path, *parts: str) -> Path:
    """`root/part/...`, proven to lie strictly inside `root`, a folder bepbuild owns (links on the way resolved).

    Every path built from names or versions goes through here before anything is created, replaced
    or removed there: a part that is empty, `.`, `..`, absolute or holds a separator, or a link on
    the way that leads out of `root`, is refused.
    """
    from .errors import UserError

    base = root.resolve()
    if not parts:
        raise UserError(f"no path under {base} was given")
    for part in parts:
        if part in ("", ".", "..") or any(c in part for c in "/\\\0"):
            raise UserError(f"{part!r} cannot be part of a path under {base}")
    # The last part stays unresolved: a link there is replaced or removed itself, never followed.
    parent = base.joinpath(*parts[:-1]).resolve()
    if parent != base and base not in parent.parents:
        raise UserError(f"{base.joinpath(*parts)} lies outside {base}")
    return parent / parts[-1]


def is_inside(path: Path, root: Path) -> bool:
    """Whether `path` (resolved) is `root` or lies under it."""
    p, r = path.resolve(), root.resolve()
    return p == r or r in p.parents


def refuse_own_folder(path: Path, flag: str) -> None:
    """A one-line UserError when `path` is BEPBUILD_HOME or the jobs folder, or lies inside one: what
    bepbuild keeps there it also moves and removes (a registration, a job delete), so a user's copy
    there would not stay theirs."""
    from .errors import UserError

    for root, what in ((home(), "BEPBUILD_HOME"), (jobs_dir(), "the jobs folder")):
        if is_inside(path, root):
            raise UserError(f"{flag} {path} is inside {what} ({root.resolve()}), bepbuild's own files: give a "
                            "folder outside it")


def remove_owned(path: Path, root: Path) -> None:
    """Remove a file or folder tree that must lie strictly inside `root`; links are removed, never followed."""
    from .errors import UserError

    parent = path.parent.resolve()
    if not (parent == root.resolve() or root.resolve() in parent.parents) or path.name in ("", ".", ".."):
        raise UserError(f"refusing to remove {path}: it lies outside {root}")
    target = parent / path.name
    if target.is_symlink() or not target.is_dir():
        target.unlink(missing_ok=True)
    else:
        shutil.rmtree(target)


def settings() -> dict[str, Any]:
    """`BEPBUILD_HOME/config.yaml`: optional `base_image`, `base_image_family` and `image_map` (Azure image ->
    local image)."""
    path = home() / "config.yaml"
    if not path.is_file():
        return {}
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        from .errors import SpecError

        raise SpecError(f"invalid YAML: {e}", source=str(path)) from e
    return doc if isinstance(doc, dict) else {}


def base_image() -> str:
    """The local base image used in place of Azure's base images.

    `BEPBUILD_BASE_IMAGE`, else `base_image` in the config file, else the image `make engine` creates.
    """
    return os.environ.get("BEPBUILD_BASE_IMAGE") or settings().get("base_image") or DEFAULT_BASE_IMAGE


def base_image_family() -> str | None:
    """The registry image family that gives a Python X.Y its base image (`{version}` stands for X.Y).

    `BEPBUILD_BASE_IMAGE_FAMILY`, else `base_image_family` in the config file (for example
    `python:{version}-slim-bookworm`); unset, a local base is built from the host's Python of that
    version (`bepbuild base build`). A family without `{version}` is refused where it is used.
    """
    family = os.environ.get("BEPBUILD_BASE_IMAGE_FAMILY") or settings().get("base_image_family")
    return str(family) if family else None


def image_map() -> dict[str, str]:
    """Explicit mapping of environment images to local ones, from the config file."""
    m = settings().get("image_map") or {}
    return {str(k): str(v) for k, v in m.items()} if isinstance(m, dict) else {}


def ca_bundle() -> Path | None:
    """The CA bundle the host's pip uses, handed to network builds as a secret (never a layer)."""
    for var in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(var) and Path(os.environ[var]).is_file():
            return Path(os.environ[var])
    default = Path("/etc/ssl/certs/ca-certificates.crt")
    return default if default.is_file() else None


def docker_cli() -> str:
    """The docker client used for BuildKit builds (`BEPBUILD_DOCKER`)."""
    return os.environ.get("BEPBUILD_DOCKER") or "/usr/bin/docker"
