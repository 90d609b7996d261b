"""`bepbuild doctor` against the real engine: every check passes on a machine that `make engine` set up.

(Not test_doctor.py: test modules share one namespace, and tests/unit/test_doctor.py has that name.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import docker
import pytest

pytestmark = pytest.mark.docker

BEPBUILD = Path(sys.executable).parent / "bepbuild"


def test_doctor_on_a_ready_machine(tmp_path: Path) -> None:
    client = docker.from_env(version="auto")
    dangling = {i.id for i in client.images.list(filters={"dangling": True})}
    proc = subprocess.run([str(BEPBUILD), "doctor", "-o", "json"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "BEPBUILD_HOME": str(tmp_path)})
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    assert proc.returncode == 0, checks
    for name in ("docker CLI", "engine", "BuildKit", "base image"):
        assert checks[name]["status"] == "ok", checks[name]
    assert "Python 3" in checks["base image"]["detail"]
    # the BuildKit probe discards its output: it leaves no image behind
    assert {i.id for i in client.images.list(filters={"dangling": True})} <= dangling | _others(client, dangling)
    client.close()


def _others(client: docker.DockerClient, before: set[str]) -> set[str]:
    """Dangling images made meanwhile by someone else's build (not empty FROM-scratch images)."""
    return {i.id for i in client.images.list(filters={"dangling": True})
            if i.id not in before and i.attrs.get("RootFS", {}).get("Layers")}
