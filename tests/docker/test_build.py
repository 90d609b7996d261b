"""Deployment images on the real engine: `tests/data/tiny` (six + an Azure-only package to drop) end to
end, and the mnist torch example once.

The tiny deployment is built once per module under its own BEPBUILD_HOME; tests that change it work on
copies and come after the tests that read the module's image (a deploy that builds removes earlier
content tags of the deployment that nothing refers to). Images this module creates are removed at the
end (the torch image is kept: it is large and other tests use it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker.errors
import pytest
from registry import LocalRegistry

from bepbuild import config, images, naming
from bepbuild import deploy as deploying
from bepbuild.store import Store

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "data" / "tiny"
TORCH = REPO / "examples" / "mnist" / "deployment-torch" / "deployment.yml"
TINY_REPO = naming.image_repo("bepbuild-tiny", "tiny-dpl")
BEPBUILD = Path(sys.executable).parent / "bepbuild"  # the console script next to this interpreter
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
DEBIAN_WHEELS = "usr/share/python-wheels/"


@dataclass
class Tiny:
    home: Path
    folder: Path  # a copy of tests/data/tiny
    doc: dict  # what deploy.create returned


def deploy(file: Path, **kwargs: object) -> dict:
    """`deploy.create` as `bepbuild deploy` calls it, in the current BEPBUILD_HOME."""
    store = Store.open()
    try:
        return deploying.create(store, file, create_endpoint=True, **kwargs)  # type: ignore[arg-type]
    finally:
        store.close()


def cli(*args: str, home: Path) -> dict:
    """Run the `bepbuild` CLI in a subprocess; its JSON output."""
    proc = subprocess.run([str(BEPBUILD), *args, "-o", "json"], capture_output=True,
                          text=True, env={**os.environ, "BEPBUILD_HOME": str(home)}, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def tags_of(repo: str) -> set[str]:
    return {t for img in images.engine().images.list(name=repo) for t in img.tags}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tiny]:
    before = tags_of(TINY_REPO)
    home = tmp_path_factory.mktemp("tiny-home")
    folder = tmp_path_factory.mktemp("tiny") / "tiny"
    shutil.copytree(TINY, folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BEPBUILD_HOME", str(home))
        doc = deploy(folder / "deployment.yml", set_default=True)
    yield Tiny(home, folder, doc)
    for tag in tags_of(TINY_REPO) - before:
        images.remove_image(tag)


@pytest.fixture
def tiny_home(tiny: Tiny, monkeypatch: pytest.MonkeyPatch) -> Tiny:
    """Use the module's BEPBUILD_HOME in this test (the registry that knows the tiny deployment)."""
    monkeypatch.setenv("BEPBUILD_HOME", str(tiny.home))
    return tiny


def run_inside(tag: str, code: str) -> str:
    """Run Python `code` in a container of `tag` (entrypoint overridden, no network); its stdout."""
    out = images.engine().containers.run(tag, ["-c", code], entrypoint=["python3"], network_mode="none",
                                         remove=True, stderr=True)
    return out.decode()


PROBE = """
import glob, json, os, sys
import score, six
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(),
    "pythonpath": os.environ.get("PYTHONPATH", ""),
    "model_dir": os.environ["AZUREML_MODEL_DIR"],
    "model_files": sorted(glob.glob(os.environ["AZUREML_MODEL_DIR"] + "/*/*")),
    "weights": open(os.environ["AZUREML_MODEL_DIR"] + "/model/weights.txt").read(),
    "score_file": score.__file__, "six": six.__version__, "six_file": six.__file__,
    "run": score.run(["a.png", "b.png"]),
    "scoring_script": os.environ.get("BEPBUILD_SCORING_SCRIPT"),
    "executable": sys.executable,
}))
"""


@pytest.fixture(scope="module")
def inside(tiny: Tiny) -> dict:
    return json.loads(run_inside(tiny.doc["image"], PROBE).strip().splitlines()[-1])


# --- the built image ----------------------------------------------------------------------------------


def test_deploy_result(tiny: Tiny) -> None:
    doc = tiny.doc
    assert doc["image"].startswith(TINY_REPO + ":")
    assert doc["image_id"] == images.image_id(doc["image"])
    assert doc["strategy"] == "pip"
    assert doc["model_folder"] == "model"
    assert any("azureml-core" in n for n in doc["notices"]), doc["notices"]


def test_labels(tiny: Tiny) -> None:
    labels = images.labels(tiny.doc["image"])
    short = tiny.doc["image"].rsplit(":", 1)[1].split("-")[0]  # <content hash[:16]>-<home id>
    assert labels["io.bepbuild.endpoint"] == "bepbuild-tiny"
    assert labels["io.bepbuild.deployment"] == "tiny-dpl"
    assert labels["io.bepbuild.content-hash"].startswith(short) and len(labels["io.bepbuild.content-hash"]) == 64
    assert labels["io.bepbuild.strategy"] == "pip"
    assert labels["io.bepbuild.lock-sha256"] == tiny.doc["lock_sha256"] and len(tiny.doc["lock_sha256"]) == 64
    assert labels["io.bepbuild.model"] == "tiny-model:1"
    assert labels["io.bepbuild.environment"] == "tiny-env:1"
    assert len(labels["io.bepbuild.model-sha256"]) == 64
    assert labels["io.bepbuild.version"]
    assert labels["io.bepbuild.kind"] == "deployment"
    assert labels["io.bepbuild.environment-image"] == tiny.doc["environment_image"]
    assert labels["io.bepbuild.environment-image-id"] == tiny.doc["environment_image_id"]
    assert labels["org.opencontainers.image.title"] == "bepbuild-tiny/tiny-dpl"
    assert labels["org.opencontainers.image.version"] == short
    assert labels["org.opencontainers.image.vendor"] == "bepbuild"
    assert "hermetic pip" in labels["org.opencontainers.image.description"]


def test_model_folder_is_under_azureml_model_dir(inside: dict) -> None:
    assert inside["model_files"] == [inside["model_dir"] + "/model/weights.txt"]
    assert inside["weights"] == (TINY / "model" / "weights.txt").read_text()


def test_code_is_on_pythonpath_and_the_scoring_script_imports(inside: dict) -> None:
    assert "/opt/bepbuild/code" in inside["pythonpath"].split(":")
    assert inside["score_file"] == "/opt/bepbuild/code/score.py"
    assert inside["scoring_script"] == "score.py"
    assert inside["run"] == ["a.png six-1.16.0", "b.png six-1.16.0"]


def test_locked_package_is_importable_from_the_venv(inside: dict) -> None:
    assert inside["six"] == "1.16.0"
    assert inside["six_file"].startswith("/opt/bepbuild/venv/")
    assert inside["executable"].startswith("/opt/bepbuild/venv/bin/")


def test_runs_as_non_root(tiny: Tiny, inside: dict) -> None:
    assert (inside["uid"], inside["gid"]) == (10001, 10001)
    assert images.engine().api.inspect_image(tiny.doc["image"])["Config"]["User"] == "10001:10001"


# --- nothing of the host in any layer -----------------------------------------------------------------


@dataclass
class Layers:
    names: dict[str, list[str]]  # layer -> member names
    digests: dict[str, list[str]]  # sha256 of a regular file -> "layer!/name" where it occurs


def scan_layers(tag: str, workdir: Path) -> Layers:
    """Every member of every layer tar of `docker save`, and the sha256 of every regular file."""
    archive = workdir / "image.tar"
    with open(archive, "wb") as f:
        for chunk in images.engine().images.get(tag).save(named=False):
            f.write(chunk)
    names: dict[str, list[str]] = {}
    digests: dict[str, list[str]] = {}
    with tarfile.open(archive) as outer:
        for member in outer:
            if not member.name.endswith("layer.tar"):
                continue
            layer = outer.extractfile(member)
            assert layer is not None
            names[member.name] = []
            with tarfile.open(fileobj=layer, mode="r|") as inner:
                for m in inner:
                    names[member.name].append(m.name.removeprefix("./"))
                    if m.isfile():
                        fobj = inner.extractfile(m)
                        assert fobj is not None
                        h = hashlib.sha256()
                        while chunk := fobj.read(1 << 20):
                            h.update(chunk)
                        digests.setdefault(h.hexdigest(), []).append(f"{member.name}!/{m.name}")
    archive.unlink()
    assert len(names) == len(images.engine().api.inspect_image(tag)["RootFS"]["Layers"])
    return Layers(names, digests)


def wheels_in(layers: Layers) -> list[str]:
    return [f"{layer}!/{n}" for layer, members in layers.names.items() for n in members
            if n.endswith(".whl") and not n.startswith(DEBIAN_WHEELS)]


@pytest.fixture(scope="module")
def layers(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory) -> Layers:
    return scan_layers(tiny.doc["image"], tmp_path_factory.mktemp("save"))


def test_no_wheel_in_any_layer(layers: Layers) -> None:
    assert wheels_in(layers) == []
    # the scan does see files: the code layer is there
    assert any(n == "opt/bepbuild/code/score.py" for members in layers.names.values() for n in members)


def test_no_pip_config_in_any_layer(layers: Layers) -> None:
    configs = [f"{layer}!/{n}" for layer, members in layers.names.items() for n in members
               if n.rsplit("/", 1)[-1] in ("pip.conf", "pip.ini")]
    assert configs == []
    for host_file in (Path("/etc/pip.conf"), Path("/etc/xdg/pip/pip.conf"), Path.home() / ".config/pip/pip.conf"):
        if host_file.is_file():
            assert hashlib.sha256(host_file.read_bytes()).hexdigest() not in layers.digests, host_file


def test_no_copy_of_the_host_ca_bundle_in_any_layer(layers: Layers) -> None:
    bundles = {p for p in (HOST_CA, config.ca_bundle()) if p is not None and p.is_file()}
    assert bundles, "no host CA bundle to compare with"
    for bundle in bundles:
        digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
        assert digest not in layers.digests, f"{bundle} is in {layers.digests.get(digest)}"


# --- rebuilds -----------------------------------------------------------------------------------------


def test_second_deploy_is_a_no_op(tiny: Tiny) -> None:
    doc = cli("deploy", str(tiny.folder / "deployment.yml"), "--quiet", home=tiny.home)
    assert doc["built"] is False
    assert doc["image"] == tiny.doc["image"]
    assert doc["image_id"] == tiny.doc["image_id"]


def test_code_only_change_rebuilds_only_the_code_layer(tiny_home: Tiny, tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    shutil.copytree(tiny_home.folder, folder)
    with open(folder / "code" / "score.py", "a") as f:
        f.write(f"# changed {uuid.uuid4().hex}\n")
    api = images.engine().api
    # Read the old image first: a deploy that built removes earlier tags that nothing refers to.
    old = api.inspect_image(tiny_home.doc["image_id"])["RootFS"]["Layers"]
    history_old = [h["Created"] for h in api.history(tiny_home.doc["image_id"]) if h["Size"]]
    doc = deploy(folder / "deployment.yml")
    assert doc["built"] is True
    assert doc["image"] != tiny_home.doc["image"] and doc["image_id"] != tiny_home.doc["image_id"]
    new = api.inspect_image(doc["image_id"])["RootFS"]["Layers"]
    assert len(new) == len(old)
    changed = [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
    # only the code layer (the last COPY; an empty WORKDIR layer may follow it) differs
    assert len(changed) == 1 and changed[0] >= len(old) - 2, changed
    # and the dependency layers were cache hits, not rebuilt identically by chance: same creation times
    history_new = [h["Created"] for h in api.history(doc["image_id"]) if h["Size"]]
    assert history_new[1:] == history_old[1:]
    assert doc["lock_sha256"] == tiny_home.doc["lock_sha256"]


def test_odd_scoring_script_name_reaches_the_image_exactly(tiny_home: Tiny, tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    shutil.copytree(tiny_home.folder, folder)
    name = 'we"ird $HOME \\ it\'s.py'
    shutil.copy(folder / "code" / "score.py", folder / "code" / name)
    spec = (folder / "deployment.yml").read_text().replace("scoring_script: score.py",
                                                           f"scoring_script: {json.dumps(name)}")
    (folder / "deployment.yml").write_text(spec)
    doc = deploy(folder / "deployment.yml")
    env = images.engine().api.inspect_image(doc["image_id"])["Config"]["Env"]
    assert f"BEPBUILD_SCORING_SCRIPT={name}" in env


@pytest.mark.parametrize("backend", ["sdk", "auto"])
def test_legacy_builder_image_works_and_has_no_wheels_either(tiny_home: Tiny, tmp_path: Path, backend: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # `auto` on a docker CLI without BuildKit falls back to the legacy builder, which must then get
    # the legacy Dockerfile (the other one has RUN --mount).
    monkeypatch.setattr(images, "_buildkit_works", lambda cli: False)
    # Another deployment name, so that the module's image (same content tag) is left alone.
    client = images.engine()
    dangling = {i.id for i in client.images.list(filters={"dangling": True})}
    doc = deploy(tiny_home.folder / "deployment.yml", name="tiny-legacy",
                 opts=deploying.DeployOptions(backend=backend, force=True))
    # The legacy builder keeps the environment's install stage as an untagged image (its wheels included):
    # removed after the build.
    stages = [i.id for i in client.images.list(filters={"dangling": True}) if i.id not in dangling
              and any("/opt/bepbuild/venv/bin/pip install" in (h.get("CreatedBy") or "") for h in i.history())]
    try:
        assert stages == []
        assert doc["built"] is True and doc["build_summary"]["environment_built"] is True
        assert json.loads(run_inside(doc["image"], PROBE).strip().splitlines()[-1])["six"] == "1.16.0"
        layers = scan_layers(doc["image"], tmp_path)
        assert wheels_in(layers) == []
        assert any(n.startswith("opt/bepbuild/venv/") for members in layers.names.values() for n in members)
    finally:
        images.remove_image(doc["image"])
        for stage in stages:
            images.remove_image(stage)


def test_push_and_pull_back(tiny_home: Tiny, tmp_path: Path, registry: LocalRegistry) -> None:
    # A throw-away image of the deployment (a code change), pushed through the CLI, then pulled back
    # into an engine that no longer has it.
    folder = tmp_path / "tiny"
    shutil.copytree(tiny_home.folder, folder)
    with open(folder / "code" / "score.py", "a") as f:
        f.write(f"# pushed {uuid.uuid4().hex}\n")
    doc = deploy(folder / "deployment.yml")
    remote = f"{registry.address}/bepbuild-test/tiny-{uuid.uuid4().hex[:8]}"
    pushed = cli("push", "--endpoint-name", "bepbuild-tiny", "--name", "tiny-dpl", "--registry", remote, "--quiet",
                 home=tiny_home.home)
    short = doc["image"].rsplit(":", 1)[1]
    assert pushed["image"] == f"{remote}:{short}"
    assert pushed["digest"].startswith("sha256:")
    client = images.engine()
    client.api.remove_image(pushed["image"])
    client.api.remove_image(doc["image"])
    with pytest.raises(docker.errors.ImageNotFound):
        client.api.inspect_image(doc["image_id"])
    try:
        pulled = client.images.pull(remote, tag=short)
        assert pulled.id == doc["image_id"]
        assert pulled.labels["io.bepbuild.deployment"] == "tiny-dpl"
        assert pulled.attrs["RepoDigests"] == [f"{remote}@{pushed['digest']}"]
    finally:
        images.remove_image(f"{remote}:{short}")


# --- the mnist torch example ------------------------------------------------------------------------------


def test_torch_example_builds(tmp_path: Path) -> None:
    doc = deploy(TORCH, set_default=True)
    assert doc["strategy"] == "pip" and doc["image_id"] == images.image_id(doc["image"])
    out = run_inside(doc["image"], (
        "import glob, os, torch, pandas, PIL\n"
        "print(torch.__version__, len(glob.glob(os.environ['AZUREML_MODEL_DIR'] + '/*/*.pt')))\n"
    ))
    version, models = out.strip().splitlines()[-1].split()
    assert version.startswith("2.13.0") and int(models) == 1
    again = deploy(TORCH)
    assert again["built"] is False and again["image_id"] == doc["image_id"]
