"""Shared fixtures: an isolated BEPBUILD_HOME per test, and the Docker engine for `docker` tests."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bepbuild_runtime.layout import MIN_PYTHON

REPO = Path(__file__).resolve().parent.parent
SEED_FILES = REPO / "tests" / "data" / "seed"


@pytest.fixture(autouse=True)
def bepbuild_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own registry and jobs folder; a dashboard server a test started there
    (`job show --web` starts one in the background) is stopped after it."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("BEPBUILD_HOME", str(home))
    monkeypatch.delenv("BEPBUILD_JOBS_DIR", raising=False)
    yield home
    from bepbuild.web import state

    state.stop(home)


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


def _pythons(version: tuple[int, ...]) -> list[str]:
    """Interpreters that may be Python `version`: on PATH, then pyenv's (`pyenv root`, else its default)."""
    name = "python" + ".".join(map(str, version))
    found = [shutil.which(name)]
    pyenv = shutil.which("pyenv")
    root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip() if pyenv else ""
    root = root or os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found += sorted(glob.glob(os.path.join(glob.escape(root), "versions", f"{'.'.join(map(str, version))}.*",
                                           "bin", name)), reverse=True)
    return [p for p in found if p]


@pytest.fixture(scope="session")
def oldest_python() -> str:
    """An interpreter of the runtime's minimum Python (layout.MIN_PYTHON): fail under CI=true, skip loudly elsewhere."""
    want = ".".join(map(str, MIN_PYTHON))
    for candidate in _pythons(MIN_PYTHON):
        # A pyenv shim is on PATH even where that version is not active: ask the interpreter itself.
        probe = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == want:
            return candidate
    message = f"no Python {want} (the runtime's minimum) on PATH or in pyenv; install it (pyenv install {want})"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Every test marked `docker` depends on the engine fixture, so none can pass without one.
    for item in items:
        if item.get_closest_marker("docker") is not None:
            item.fixturenames.insert(0, "docker_engine")  # type: ignore[attr-defined]
