"""Fixtures and helpers for tests on a Docker Swarm (marker `swarm`): the swarm itself, a swarm compute.

The engine these tests share joins a swarm only for them: `docker swarm init --advertise-addr
127.0.0.1` when it is in none, and at the end `docker swarm leave --force` and the removal of
`docker_gwbridge`, only when this session made the swarm. Under CI=true a swarm that cannot be made
fails the tests instead of skipping them.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobkit import DOCKER, bep

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def swarm_state() -> str:
    res = subprocess.run([DOCKER, "info", "--format", "{{.Swarm.LocalNodeState}}"], capture_output=True, text=True,
                         timeout=60)
    return res.stdout.strip() if res.returncode == 0 else f"unknown ({res.stderr.strip()[-200:]})"


@pytest.fixture(scope="session")
def swarm() -> Iterator[None]:
    """An active single-node swarm on this engine (loopback address only)."""
    made = False
    state = swarm_state()
    if state != "active":
        res = subprocess.run([DOCKER, "swarm", "init", "--advertise-addr", "127.0.0.1"], capture_output=True,
                             text=True, timeout=120)
        if res.returncode != 0:
            message = f"no swarm can be made here (state {state}): {res.stderr.strip()[-300:]}"
            if CI:
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
        made = True
    try:
        yield
    finally:
        if made:
            subprocess.run([DOCKER, "swarm", "leave", "--force"], capture_output=True, timeout=120)
            subprocess.run([DOCKER, "network", "rm", "docker_gwbridge"], capture_output=True, timeout=60)


def make_compute(name: str, shared: Path, *extra: str) -> None:
    """A swarm compute `name` on the shared folder `shared` (made here; a local folder on one node)."""
    shared.mkdir(parents=True, exist_ok=True)
    bep("compute", "create", "-n", name, "--type", "swarm", "--shared-path", str(shared), "-o", "none", *extra)


def job_services(job: str) -> list[dict]:
    """`docker service inspect` of the services labelled with the job."""
    ids = subprocess.run([DOCKER, "service", "ls", "-q", "--filter", f"label=io.bepbuild.job={job}"],
                         capture_output=True, text=True, check=True).stdout.split()
    if not ids:
        return []
    out = subprocess.run([DOCKER, "service", "inspect", *ids], capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else []


def job_networks(job_dir: Path) -> list[str]:
    return subprocess.run([DOCKER, "network", "ls", "-q", "--filter", f"label=io.bepbuild.job-dir={job_dir}"],
                          capture_output=True, text=True, check=True).stdout.split()
