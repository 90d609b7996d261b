"""Base images of another Python on the real engine: the local one made from this host's Python 3.8
(`bepbuild base build`, as `make engine` runs it), and a configured family pulled from a registry (the
loopback registry, serving the local 3.8 base under another name)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from registry import LocalRegistry

from bepbuild import image_push, images

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "data" / "tiny"
BEPBUILD = Path(sys.executable).parent / "bepbuild"
DOCKER = "/usr/bin/docker"
LOCAL_38 = "local/debian-py:3.8"


def cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(BEPBUILD), *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "BEPBUILD_HOME": str(home), **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def run_as_runtime_user(image: str, script: str) -> str:
    proc = subprocess.run([DOCKER, "run", "--rm", "--network", "none", "--user", "10001:10001", "--entrypoint", "sh",
                           image, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def base_38(tmp_path_factory: pytest.TempPathFactory, oldest_python: str) -> str:
    """local/debian-py:3.8, made (or found up to date) as `make engine` does."""
    home = tmp_path_factory.mktemp("base-home")
    doc = json.loads(cli(home, "base", "build", "--python", "3.8", "-q", "-o", "json").stdout)
    assert doc["image"] == LOCAL_38 and doc["python"].startswith("3.8.")
    again = json.loads(cli(home, "base", "build", "--python", "3.8", "-q", "-o", "json").stdout)
    assert again["built"] is False and again["image_id"] == doc["image_id"]  # idempotent
    assert not (home / "contexts" / "base").exists() or not any((home / "contexts" / "base").iterdir())
    return doc["image_id"]


def test_the_relocated_python_runs_for_the_runtime_user(base_38: str) -> None:
    out = run_as_runtime_user(LOCAL_38, (
        "command -v python3; python3 -c 'import sys, ssl, sqlite3, ctypes, lzma, bz2; "
        "print(\"%d.%d\" % sys.version_info[:2], sys.prefix)'; "
        "python3 -m venv /tmp/v && /tmp/v/bin/python -c 'import sys; print(sys.prefix)'; "
        "touch /opt/bepbuild/python/3.8/lib/python3.8/os.py 2>/dev/null && echo writable || echo read-only"))
    assert out.split() == ["/opt/bepbuild/python/3.8/bin/python3", "3.8", "/opt/bepbuild/python/3.8", "/tmp/v",
                           "read-only"]
    labels = images.labels(LOCAL_38)
    assert labels["io.bepbuild.kind"] == "base" and labels["io.bepbuild.python"].startswith("3.8.")


def test_a_configured_family_is_pulled_and_used(base_38: str, registry: LocalRegistry, tmp_path: Path) -> None:
    # The registry serves the 3.8 base as <registry>/bepbuild-test/py-<id>:3.8, and the engine has no copy.
    family_repo = f"{registry.address}/bepbuild-test/py-{uuid.uuid4().hex[:8]}"
    image_push.push(LOCAL_38, family_repo, repo_tag="3.8")
    images.remove_image(f"{family_repo}:3.8")
    assert images.image_id(f"{family_repo}:3.8") is None
    home = tmp_path / "home"
    folder = tmp_path / "tiny"
    shutil.copytree(TINY, folder)
    conda = (folder / "environment" / "conda.yaml").read_text().replace("python=3.11", "python=3.8")
    (folder / "environment" / "conda.yaml").write_text(conda)
    endpoint = f"fam-{uuid.uuid4().hex[:8]}"
    doc = {}
    try:
        proc = cli(home, "deploy", str(folder / "deployment.yml"), "--set", f"endpoint_name={endpoint}", "-o", "json",
                   BEPBUILD_BASE_IMAGE_FAMILY=family_repo + ":{version}")
        doc = json.loads(proc.stdout)
        assert f"pulling {family_repo}:3.8" in proc.stderr
        env_labels = images.labels(doc["environment_image"])
        assert env_labels["io.bepbuild.base-image"] == f"{family_repo}:3.8"
        assert env_labels["io.bepbuild.python"].startswith("3.8.")
        script = "python3 -c 'import sys, six; print(sys.version_info[:2], six.__name__)'"
        out = run_as_runtime_user(doc["image"], script)
        assert out.strip() == "(3, 8) six"
    finally:
        for ref in (doc.get("image"), doc.get("environment_image"), f"{family_repo}:3.8"):
            if ref:
                images.remove_image(ref)
