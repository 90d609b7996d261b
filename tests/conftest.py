"""Shared fixtures: an isolated BEPBUILD_HOME per test, and the Docker engine for `docker` tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SEED_FILES = REPO / "tests" / "data" / "seed"


@pytest.fixture(autouse=True)
def bepbuild_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own registry and jobs folder."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("BEPBUILD_HOME", str(home))
    monkeypatch.delenv("BEPBUILD_JOBS_DIR", raising=False)
    return home


def _engine_error() -> str | None:
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        client.close()
    except Exception as e:  # any failure to reach the engine
        return f"{type(e).__name__}: {e}"
    return None


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Require a Docker engine: fail under CI=true, skip loudly elsewhere."""
    err = _engine_error()
    if err is None:
        return
    message = f"no Docker engine answers ({err}); run `make engine`"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Every test marked `docker` depends on the engine fixture, so none can pass without one.
    for item in items:
        if item.get_closest_marker("docker") is not None:
            item.fixturenames.insert(0, "docker_engine")  # type: ignore[attr-defined]
