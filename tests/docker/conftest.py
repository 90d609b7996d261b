"""Fixtures for tests against the real engine: a loopback registry, unique repositories, cleanup."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

# The job-test fixtures live in jobkit.py; importing them here gives every module of this folder the
# same session-wide deployment home (one lock, one environment layer per session).
from jobkit import deploy, home, jobs, session_home  # noqa: F401
from registry import LocalRegistry, RegistryUnavailable
from swarmkit import swarm  # noqa: F401


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """A loopback `docker-registry` for the session (installed from Debian when missing)."""
    try:
        reg = LocalRegistry(tmp_path_factory.mktemp("registry")).start()
    except RegistryUnavailable as e:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"no loopback registry: {e}", pytrace=False)
        pytest.skip(f"no loopback registry: {e}")
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def test_repo() -> Iterator[str]:
    """A unique repository name; images built with label `bepbuild.test.repo=<repo>` (and every tag of
    them, pushed copies included) are removed afterwards."""
    import docker

    repo = f"bepbuild-test/{uuid.uuid4().hex[:12]}"
    yield repo
    client = docker.from_env(version="auto")
    try:
        for image in client.images.list(filters={"label": f"bepbuild.test.repo={repo}"}):
            _remove(client, image.id)
    finally:
        client.close()


def _remove(client, ref: str) -> None:  # noqa: ANN001 - docker client
    import docker.errors

    try:
        client.api.remove_image(ref, force=True)
    except docker.errors.APIError:
        pass


