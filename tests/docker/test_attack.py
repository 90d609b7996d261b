"""Attacks that need the engine: a scoring container making the host act outside the job folder, and
two deploys of one deployment at once giving one code the other's image tag.

The host's requeue of a dead instance's claims follows no link and builds no path from a claim
(runtime/reclaim.py); a build sends what its tag names (deploy.build_image, under the context's
lock); every home tags the images it builds with its own id (naming.image_tag), so a redeploy in one
never removes what another runs.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from jobkit import DOCKER, bep_json, make_inputs, numbered, write_deployment

from bepbuild import deploy, env_images
from bepbuild.specs import load_deployment
from bepbuild.store import Store

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

# init() plants, in the part of the job folder a container may write, what the host reads when it
# gives back the claims of an instance that died: a worker folder that is a link to a folder of the
# host, and a claim whose id climbs out of the job folder; then it fails, so the instance exits 72.
PLANTER = """
import json, os

VICTIM = @VICTIM@
LINKED = @LINKED@

def init():
    running = os.path.join(os.environ["BEPBUILD_JOB_DIR"], "queue", "running")
    inst = os.environ.get("BEPBUILD_INSTANCE", "instance-0")
    forged = os.path.join(running, inst + ".99")
    os.makedirs(forged, exist_ok=True)
    for i, name in enumerate(("v", "w")):
        claim = {"id": "../" * 40 + VICTIM.lstrip("/") + "/" + name, "items": ["x"], "attempt": 9}
        with open(os.path.join(forged, "00000077%d.json" % i), "w") as f:
            json.dump(claim, f)
    try:
        os.symlink(LINKED, os.path.join(running, inst + ".98"))
    except FileExistsError:
        pass
    raise RuntimeError("planted")

def run(mini_batch):
    return []
"""


def test_a_dead_instance_cannot_make_the_host_touch_files_outside_the_job(deploy, jobs, tmp_path: Path) -> None:
    victim, linked = tmp_path / "host-only", tmp_path / "host-only-2"
    for folder in (victim, linked):
        folder.mkdir()
    (victim / "v.json").write_text("keep")
    (victim / "w.csv").write_text("keep")
    (linked / "000000001.json").write_text(json.dumps({"id": "000000001", "items": ["secret"], "attempt": 0}))
    (linked / "notes.txt").write_text("keep")
    before = {p: p.read_bytes() for p in (*victim.iterdir(), *linked.iterdir())}
    script = PLANTER.replace("@VICTIM@", repr(str(victim))).replace("@LINKED@", repr(str(linked)))
    dep = deploy(script)
    name = f"job-{uuid.uuid4().hex[:12]}"
    jobs.append(name)
    job = bep_json("batch-endpoint", "invoke", "--name", dep.endpoint, "--input",
                   str(make_inputs(tmp_path / "in", numbered(2))), "--job-name", name, "-q", code=None, timeout=300)
    assert job["status"] == "Failed", job
    after = {p: p.read_bytes() for p in (*victim.iterdir(), *linked.iterdir())}
    assert after == before


def _code(tag: str) -> str:
    return subprocess.run([DOCKER, "run", "--rm", "--pull", "never", "--network", "none", "--entrypoint", "cat", tag,
                           "/opt/bepbuild/code/score.py"], capture_output=True, text=True, check=True).stdout


def test_two_deploys_of_one_deployment_at_once_never_mix_their_code(home: Path, tmp_path: Path) -> None:
    endpoint = f"bt-{uuid.uuid4().hex[:10]}"
    loaded = {}
    for version in ("A", "B"):
        script = f"def init():\n    pass\n\ndef run(b):\n    return ['{version}']\n"
        folder = write_deployment(tmp_path / version, script, endpoint=endpoint)
        loaded[version] = load_deployment(folder / "deployment.yml")
    store, opts, built = Store.open(), deploy.DeployOptions(), []
    try:
        # The interleaving two `bepbuild deploy` processes of this deployment can have: A rendered,
        # then B rendered (into the same folder), then A built.
        first = deploy.prepare(store, loaded["A"], opts, lambda line: None)
        second = deploy.prepare(store, loaded["B"], opts, lambda line: None)
        env = env_images.ensure(first.env, backend=opts.backend, force=False, log=lambda line: None) if first.env \
            else None
        result = deploy.build_image(first, opts, lambda line: None, env)
        built.append(result.tag)
        assert first.tag != second.tag
        assert "['A']" in _code(result.tag), f"{result.tag} (A's content hash) holds: {_code(result.tag)!r}"
    finally:
        store.close()
        with open(home / ".built-images", "a") as f:
            f.write("".join(t + "\n" for t in built))


def test_a_redeploy_in_one_home_keeps_the_image_another_home_runs(tmp_path: Path) -> None:
    import os

    from jobkit import BEPBUILD

    folder = write_deployment(tmp_path / "dep", "def init():\n    pass\n\ndef run(b):\n    return ['v1']\n",
                              endpoint=f"bt-{uuid.uuid4().hex[:10]}")
    make_inputs(tmp_path / "in", numbered(1))
    homes = [tmp_path / "home-a", tmp_path / "home-b"]
    built: list[str] = []

    def bep(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BEPBUILD), *args], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "BEPBUILD_HOME": str(home)})

    try:
        for home in homes:  # the same deployment, the same content: one content hash, a tag per home
            res = bep(home, "deploy", str(folder / "deployment.yml"), "-q", "-o", "json")
            assert res.returncode == 0, res.stderr
            built.append(json.loads(res.stdout)["image"])
        assert built[0] != built[1] and built[0].rsplit("-", 1)[0] == built[1].rsplit("-", 1)[0], built
        (folder / "code" / "score.py").write_text("def init():\n    pass\n\ndef run(b):\n    return ['v2']\n")
        res = bep(homes[0], "deploy", str(folder / "deployment.yml"), "-q", "-o", "json")  # home A moves on
        assert res.returncode == 0, res.stderr
        built.append(json.loads(res.stdout)["image"])
        endpoint = json.loads(res.stdout)["endpoint_name"]
        res = bep(homes[1], "batch-endpoint", "invoke", "--name", endpoint, "--input", str(tmp_path / "in"), "-q",
                  "-o", "json")
        assert res.returncode == 0, res.stderr  # home B still runs what it deployed
    finally:
        subprocess.run([DOCKER, "rmi", *set(built)], capture_output=True)
