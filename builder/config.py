"""Where bepbuild keeps its state, and settings read from the environment."""

from __future__ import annotations

import os
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


def jobs_dir() -> Path:
    """Where job folders are created (`BEPBUILD_JOBS_DIR` overrides)."""
    return Path(os.environ.get("BEPBUILD_JOBS_DIR") or home() / "jobs").expanduser()


def settings() -> dict[str, Any]:
    """`BEPBUILD_HOME/config.yaml`: optional `base_image` and `image_map` (Azure image -> local image)."""
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
