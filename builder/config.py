"""Where bepbuild keeps its state, and settings read from the environment."""

from __future__ import annotations

import os
from pathlib import Path

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


def base_image() -> str:
    """The local base image used in place of Azure's base images (`BEPBUILD_BASE_IMAGE`)."""
    return os.environ.get("BEPBUILD_BASE_IMAGE") or DEFAULT_BASE_IMAGE


def docker_cli() -> str:
    """The docker client used for BuildKit builds (`BEPBUILD_DOCKER`)."""
    return os.environ.get("BEPBUILD_DOCKER") or "/usr/bin/docker"
