"""Environment images on the real engine: one per lock, shared by every deployment of it.

The environment installs a hand-made wheel of 4 MB (random bytes, so that no compression hides it) from
a local folder: the first deployment builds the environment image (its context carries the wheel), a
deployment of the same environment on another endpoint starts FROM the same image (same id) and its
build transfers only its own files; pushing both to the loopback registry uploads the environment's
layers once; `environment list --images` counts both; `environment prune` keeps what is used and
removes it once nothing is; the legacy builder makes the same kind of image without leaving its install
stage behind. Images this module creates are removed at the end.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from registry import LocalRegistry

from bepbuild import images, naming

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "data" / "tiny"
BEPBUILD = Path(sys.executable).parent / "bepbuild"
DOCKER = "/usr/bin/docker"
WHEEL_BYTES = 4_000_000


def make_wheel(folder: Path, name: str, payload: bytes) -> Path:
    """A pure-Python wheel of `name` 1.0 whose module holds `payload` in a data file."""
    module = name.replace("-", "_")
    dist = f"{module}-1.0.dist-info"
    files = {
        f"{module}/__init__.py": b"import os\nSIZE = os.path.getsize(__file__.replace('__init__.py', 'blob.bin'))\n",
        f"{module}/blob.bin": payload,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: bepbuild-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}\n"
        for n, d in files.items()) + f"{dist}/RECORD,,\n"
    files[f"{dist}/RECORD"] = record.encode()
    path = folder / f"{module}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for n, d in files.items():
            z.writestr(n, d)
    return path


@dataclass
class Env:
    home: Path
    work: Path
    package: str
    endpoints: list[str]

    def cli(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(BEPBUILD), *args], capture_output=True, text=True, timeout=900,
                              env={**os.environ, "BEPBUILD_HOME": str(self.home)})
        if ok:
            assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    def deploy(self, endpoint: str, name: str, *extra: str) -> dict:
        folder = self.work / f"{endpoint}.{name}"
        if not folder.exists():
            shutil.copytree(self.work / "tiny", folder)
            with open(folder / "code" / "score.py", "a") as f:
                f.write(f"# {endpoint}/{name}\n")  # each deployment has its own code layer
        proc = self.cli("deploy", str(folder / "deployment.yml"), "--set", f"endpoint_name={endpoint}",
                        "--set", f"name={name}", *extra, "-o", "json")
        doc = json.loads(proc.stdout)
        doc["stderr"] = proc.stderr
        return doc


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("env-images")
    package = f"probe-big-{uuid.uuid4().hex[:8]}"
    links = work / "links"
    links.mkdir()
    make_wheel(links, package, os.urandom(WHEEL_BYTES))
    shutil.copytree(TINY, work / "tiny")
    (work / "tiny" / "environment" / "conda.yaml").write_text(
        "name: big\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n"
        f"    - --no-index\n    - --find-links {links}\n    - {package}==1.0\n")
    module = package.replace("-", "_")
    (work / "tiny" / "code" / "score.py").write_text(
        f"import {module} as big\n\ndef run(mini_batch):\n    return [big.SIZE for _ in mini_batch]\n")
    e = Env(work / "home", work, package, [f"ei-{uuid.uuid4().hex[:8]}", f"ei-{uuid.uuid4().hex[:8]}"])
    yield e
    ids = set()
    for row in images.list_labelled("io.bepbuild.kind=environment"):
        if package in (row.get("Labels") or {}).get("io.bepbuild.packages", ""):
            ids.add(row["Id"])
    refs = subprocess.run([DOCKER, "images", "-q", "--filter", f"reference=bepbuild/{e.endpoints[0]}/*",
                           "--filter", f"reference=bepbuild/{e.endpoints[1]}/*"], capture_output=True, text=True)
    for ref in sorted(ids | set(refs.stdout.split())):
        subprocess.run([DOCKER, "rmi", "-f", ref], capture_output=True)


@pytest.fixture(scope="module")
def two(env: Env) -> tuple[dict, dict]:
    """Two deployments of one environment, on two endpoints."""
    first = env.deploy(env.endpoints[0], "first")
    second = env.deploy(env.endpoints[1], "second")
    return first, second


def transferred(log: str) -> list[int]:
    """The sizes BuildKit reports for the build context it was sent ("transferring context: 4.01MB")."""
    units = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}
    return [int(float(n) * units[u]) for n, u in re.findall(r"transferring context: ([\d.]+)([kKMG]?B)", log)]


def test_two_deployments_of_one_environment_share_its_image(env: Env, two: tuple[dict, dict]) -> None:
    first, second = two
    assert first["environment_image"] == second["environment_image"]
    assert first["environment_image_id"] == second["environment_image_id"]
    assert first["environment_image"].startswith("bepbuild/env:")
    assert first["image_id"] != second["image_id"]
    assert second["build_summary"]["environment_built"] is False
    assert f"environment {second['environment_image']} reused" in second["stderr"].splitlines()[-1]
    # both images are their environment image's layers plus their own
    api = images.engine().api
    env_layers = api.inspect_image(first["environment_image_id"])["RootFS"]["Layers"]
    for doc in two:
        layers = api.inspect_image(doc["image_id"])["RootFS"]["Layers"]
        assert layers[:len(env_layers)] == env_layers and len(layers) > len(env_layers)
        labels = api.inspect_image(doc["image_id"])["Config"]["Labels"]
        assert labels["io.bepbuild.environment-image-id"] == first["environment_image_id"]
    out = subprocess.run([DOCKER, "run", "--rm", "--network", "none", "--entrypoint", "python3", second["image"],
                          "-c", f"import {env.package.replace('-', '_')} as b; print(b.SIZE)"],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == str(WHEEL_BYTES), out.stderr


def test_the_second_build_does_not_transfer_the_wheelhouse(env: Env, two: tuple[dict, dict]) -> None:
    first, second = two
    env_log = env.home / "logs" / "builds" / f"env_{first['environment_image'].split(':')[1]}.log"
    if first["build_summary"]["environment_built"]:  # another session may have built this very environment
        assert max(transferred(env_log.read_text())) >= WHEEL_BYTES
    for doc in two:
        log = (env.home / "logs" / "builds" / f"{doc['image'].replace('/', '_').replace(':', '_')}.log").read_text()
        sizes = transferred(log)
        assert sizes and max(sizes) < 1_000_000, sizes
        assert "wheels" not in log and "requirements.lock" not in log
        context = naming.context_dir(doc["endpoint_name"], doc["name"])
        assert not (context / "wheels").exists() and not (context / "env").exists()
    # nothing of the environment's context is left in the home
    assert list((env.home / "contexts" / "environments").iterdir()) == []


def test_an_unchanged_redeploy_and_a_new_deployment_reuse_everything(env: Env, two: tuple[dict, dict]) -> None:
    again = env.deploy(env.endpoints[0], "first")
    assert again["built"] is False and again["image_id"] == two[0]["image_id"]
    assert "up to date, not rebuilt" in again["stderr"].splitlines()[-1]


def test_push_uploads_the_environment_layers_once(env: Env, two: tuple[dict, dict], registry: LocalRegistry) -> None:
    first, second = two
    remote = f"{registry.address}/bepbuild-test/env-{uuid.uuid4().hex[:8]}"
    pushed = []
    try:
        for doc in two:
            proc = env.cli("push", "--endpoint-name", doc["endpoint_name"], "--name", doc["name"], "--registry",
                           remote, "-o", "json")
            pushed.append(json.loads(proc.stdout) | {"stderr": proc.stderr})
        api = images.engine().api
        a_layers = api.inspect_image(first["image_id"])["RootFS"]["Layers"]
        b_layers = api.inspect_image(second["image_id"])["RootFS"]["Layers"]
        own = [layer for layer in b_layers if layer not in a_layers]
        # The registry is the session's: the base image's layers may be there already (pushed by another
        # test); the environment's layer, with its 4 MB wheel, is this module's own.
        assert pushed[0]["layers_pushed"] + pushed[0]["layers_existing"] == len(set(a_layers))
        assert pushed[0]["bytes_pushed"] >= WHEEL_BYTES
        assert pushed[1]["layers_pushed"] == len(own) >= 1  # its code layer
        assert pushed[1]["layers_existing"] == len(set(b_layers)) - len(own)
        assert 0 < pushed[1]["bytes_pushed"] < 100_000
        assert re.search(rf"{len(own)} layer\(s\) uploaded \([\d.]+ [kM]?B\), \d+ already in the registry",
                         pushed[1]["stderr"])
    finally:
        for p in pushed:
            images.remove_image(p["image"])


def test_list_and_prune(env: Env, two: tuple[dict, dict]) -> None:
    first, second = two
    rows = json.loads(env.cli("environment", "list", "--images", "-o", "json").stdout)
    (row,) = [r for r in rows if r["image"] == first["environment_image"]]
    assert row["deployments"] == 2 and row["images"] >= 2 and row["packages"] == 1
    assert row["environment_size"] >= WHEEL_BYTES and row["python"].startswith("3.11")
    # used: kept, even with no minimum age
    result = json.loads(env.cli("environment", "prune", "--yes", "--min-age", "0", "-o", "json").stdout)
    assert first["environment_image"] not in result["environment_images"]
    assert images.image_id(first["environment_image"]) == first["environment_image_id"]
    assert images.image_id(first["image"]) and images.image_id(second["image"])
    # nothing uses it once its deployments and their images are gone
    for doc in two:
        env.cli("deployment", "delete", "--endpoint-name", doc["endpoint_name"], "--name", doc["name"], "--yes")
        images.remove_image(doc["image"])
    result = json.loads(env.cli("environment", "prune", "--yes", "--min-age", "0", "-o", "json").stdout)
    assert first["environment_image"] in result["environment_images"]
    assert images.image_id(first["environment_image"]) is None


def test_the_legacy_builder_makes_both_images(env: Env, tmp_path: Path) -> None:
    doc = env.deploy(env.endpoints[0], "legacy", "--builder", "sdk", "--force")
    assert doc["build_summary"]["environment_built"] is True
    out = subprocess.run([DOCKER, "run", "--rm", "--network", "none", "--entrypoint", "python3", doc["image"],
                          "-c", f"import {env.package.replace('-', '_')} as b; print(b.SIZE)"],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == str(WHEEL_BYTES), out.stderr
    # no layer of either image holds a wheel, and no install stage (which held them) is left on the engine
    for ref in (doc["image"], doc["environment_image"]):
        assert wheels_in(ref, tmp_path) == [], ref
    stages = images.list_labelled("io.bepbuild.stage=environment-install", dangling=True)
    assert [s["Id"] for s in stages if env.package in json.dumps(images.engine().api.history(s["Id"]))] == []


def wheels_in(ref: str, workdir: Path) -> list[str]:
    archive = workdir / "image.tar"
    with open(archive, "wb") as f:
        for chunk in images.engine().images.get(ref).save(named=False):
            f.write(chunk)
    found = []
    with tarfile.open(archive) as outer:
        for member in outer:
            if member.name.endswith("layer.tar"):
                with tarfile.open(fileobj=outer.extractfile(member), mode="r|") as inner:
                    found += [m.name for m in inner if m.name.endswith(".whl") and "python-wheels" not in m.name]
    archive.unlink()
    return found
