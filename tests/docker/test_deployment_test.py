"""`bepbuild test`: a deployment tried in its own isolated image, on the real engine.

Small purpose-built deployments share the session home of jobkit (one lock, one environment image);
the MNIST examples are built in the per-test home, as their jobs are in test_jobs.py. Every test
checks that nothing was registered and no job folder was made, and none leaves a test container.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jobkit import BEPBUILD, DOCKER, REPO, bep, make_inputs, numbered, wait_for, write_deployment

from bepbuild import config
from bepbuild.store import Store

pytestmark = pytest.mark.docker

MNIST = REPO / "examples" / "mnist"
TEST_LABEL = "io.bepbuild.test"

ROWS = """
import os

def init():
    print("init of the test deployment")

def run(mini_batch):
    return [f"{os.path.basename(p)} {os.path.getsize(p)}" for p in mini_batch]
"""


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def registry_state() -> tuple[str, list[str], list[str], list[str]]:
    """The registry database's content, the registry's files, the jobs folder and the scratch folder:
    what `bepbuild test` must not change or add to (opening the registry creates an empty one, as
    every command does). Homes are shared by the session's docker tests: others' jobs may be there."""
    s = Store.open()
    dump = "\n".join(s.conn.iterdump())
    s.close()
    assets = config.assets_dir()
    files = sorted(str(p.relative_to(assets)) for p in assets.rglob("*")) if assets.exists() else []
    return (hashlib.sha256(dump.encode()).hexdigest(), files, listing(config.jobs_dir()),
            listing(config.scratch_dir()))


def probe_containers() -> list[str]:
    out = subprocess.run([DOCKER, "ps", "-aq", "--filter", f"label={TEST_LABEL}"], capture_output=True, text=True,
                         check=True).stdout
    return out.split()


def assert_left_nothing(before: tuple[str, list[str], list[str], list[str]]) -> None:
    after = registry_state()
    assert after[:2] == before[:2], "bepbuild test changed the registry"
    assert after[2] == before[2], "bepbuild test made a job folder"
    assert set(after[3]) <= set(before[3]), f"bepbuild test left scratch folders: {after[3]}"


def run_test_json(*args: str, code: int = 0, timeout: float = 1800) -> Any:
    res = bep("test", *args, "-o", "json", "-q", code=code, timeout=timeout)
    return json.loads(res.stdout)


def built(home: Path, report: dict[str, Any]) -> None:
    """Images a file-mode test built in the session home: removed with the session's."""
    with open(home / ".built-images", "a") as f:
        f.write(report["image"] + "\n")


# -- the MNIST examples ---------------------------------------------------------------------------------


@pytest.fixture
def built_images() -> Iterator[list[str]]:
    """Images a test built in its own home (no session list removes them): removed after it."""
    tags: list[str] = []
    yield tags
    if tags:
        subprocess.run([DOCKER, "rmi", *tags], capture_output=True)


def test_mnist_torch_passes_prints_its_rows_and_runs_its_own_tests(tmp_path: Path, built_images: list[str]) -> None:
    before = registry_state()
    junit = tmp_path / "junit.xml"
    res = bep("test", str(MNIST / "deployment-torch" / "deployment.yml"), "--input", str(MNIST / "sample"),
              "--pytest", str(MNIST / "deployment-torch" / "tests"), "--junit-xml", str(junit), "-q", timeout=1800)
    out = res.stdout
    assert out.splitlines()[-1] == "PASS mnist-batch/mnist-torch-dpl: 10/10 items succeeded", out
    rows = [line for line in out.splitlines() if line.endswith(tuple("0123456789")) and ".png " in line]
    assert len(rows) == 10 and all(len(r.split()) == 3 for r in rows), out  # file class probability
    assert "environment: Python 3.11" in out and "matches" in out
    assert "Loaded model from" in out  # init()'s print, from the container
    assert "4 passed" in out
    xml = junit.read_text()
    assert 'tests="4"' in xml and 'failures="0"' in xml and "test_an_unreadable_file_is_left_out" in xml
    assert_left_nothing(before)
    assert not probe_containers()
    # the derived pytest image is gone, the deployment's image has no pytest in it
    assert not subprocess.run([DOCKER, "images", "-q", "bepbuild/test-pytest"], capture_output=True,
                              text=True).stdout.strip()
    image = out.splitlines()[0].split(" image ")[1].split()[0]
    if "(built now)" in out.splitlines()[0]:
        built_images.append(image)
    probe = subprocess.run([DOCKER, "run", "--rm", "--network", "none", "--entrypoint", "python3", image, "-c",
                            "import importlib.util as u; print(u.find_spec('pytest') is None)"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "True", probe


def test_mnist_keras_passes_and_prints_its_rows(built_images: list[str]) -> None:
    before = registry_state()
    report = run_test_json(str(MNIST / "deployment-keras" / "deployment.yml"), "--input", str(MNIST / "sample"),
                           "--limit", "20", "--mini-batch-size", "5")
    if report["built"]:
        built_images.append(report["image"])
    assert report["ok"], report["problems"]
    assert report["scoring"]["items"] == {"given": 20, "succeeded": 20, "failed": 0}
    assert len(report["scoring"]["runs"]) == 4
    rows = report["rows"].splitlines()
    assert len(rows) == 20 and {r.split()[0] for r in rows} == {f"{i}.png" for i in sorted(range(100), key=str)[:20]}
    assert report["environment"]["lock"]["ok"] and report["environment"]["imports"]["ok"]
    assert report["peak_memory_bytes"] and report["peak_memory_bytes"] > 50 * 1024**2
    assert report["scoring"]["import"]["seconds"] > 0 and report["scoring"]["init"]["seconds"] > 0
    assert_left_nothing(before)


# -- failures as Azure counts them ------------------------------------------------------------------------


def test_run_returning_fewer_items_fails_with_azures_count(home: Path, tmp_path: Path) -> None:
    script = "def run(mini_batch):\n    return mini_batch[:-1]\n"
    folder = write_deployment(tmp_path / "short", script, endpoint=f"bt-{uuid.uuid4().hex[:10]}", mini_batch_size=3)
    inputs = make_inputs(tmp_path / "in", numbered(6))
    before = registry_state()
    report = run_test_json(str(folder / "deployment.yml"), "--input", str(inputs), "--limit", "6", code=1)
    built(home, report)
    assert not report["ok"]
    assert report["scoring"]["items"] == {"given": 6, "succeeded": 4, "failed": 2}
    assert [(r["items"], r["succeeded"]) for r in report["scoring"]["runs"]] == [(3, 2), (3, 2)]
    assert "run() returned 2 items for 3 inputs: 1 failed" in report["problems"][0]
    assert report["verdict"].startswith("FAIL ") and "4/6 items succeeded" in report["verdict"]
    assert_left_nothing(before)


def test_a_package_missing_from_the_environment_fails_at_import_with_its_traceback(home: Path, tmp_path: Path
                                                                                  ) -> None:
    script = "import sklearn\n\ndef run(mini_batch):\n    return mini_batch\n"
    folder = write_deployment(tmp_path / "noskl", script, endpoint=f"bt-{uuid.uuid4().hex[:10]}")
    inputs = make_inputs(tmp_path / "in", numbered(2))
    res = bep("test", str(folder / "deployment.yml"), "--input", str(inputs), "-q", code=1, timeout=900)
    out = res.stdout
    assert "-- import failed:\nTraceback (most recent call last):" in out
    assert "ModuleNotFoundError: No module named 'sklearn'" in out
    assert out.splitlines()[-1].startswith("FAIL ") and "importing" in out.splitlines()[-1]
    assert not probe_containers()
    report = run_test_json(str(folder / "deployment.yml"), "--input", str(inputs), code=1)
    built(home, report)
    assert report["scoring"]["init"] is None and report["scoring"]["runs"] == []


def test_installed_packages_that_differ_from_the_lock_are_reported(deploy, home: Path, tmp_path: Path) -> None:
    """The deployment's tag is moved to an image whose venv lost a locked package: the registered
    deployment (checked against its image's lock) and its file (against the lock it resolves to) both fail."""
    dep = deploy(ROWS)
    inputs = make_inputs(tmp_path / "in", numbered(2))
    original = subprocess.run([DOCKER, "image", "inspect", "-f", "{{.Id}}", dep.image], capture_output=True,
                              text=True, check=True).stdout.strip()
    context = tmp_path / "tamper"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {dep.image}\nUSER 0\nRUN python3 -m pip uninstall -y python-dateutil\n"
                                        "USER 10001:10001\n")
    subprocess.run([DOCKER, "build", "--network", "none", "-q", "-t", dep.image, str(context)], check=True,
                   capture_output=True)
    try:
        before = registry_state()
        report = run_test_json("--endpoint-name", dep.endpoint, "--name", dep.deployment, "--input", str(inputs),
                               code=1)
        lock = report["environment"]["lock"]
        assert lock["source"] == "image" and [m.split("==")[0] for m in lock["missing"]] == ["python-dateutil"]
        assert not report["environment"]["pip_check"]["ok"]
        assert "requires python-dateutil" in report["environment"]["pip_check"]["output"]
        assert any(p.startswith("lock: python-dateutil==") for p in report["problems"])
        assert report["scoring"]["items"]["failed"] == 0  # the script itself was fine
        from_file = run_test_json(str(dep.folder / "deployment.yml"), "--input", str(inputs), code=1)
        assert from_file["image"] == dep.image and not from_file["built"]
        assert from_file["environment"]["lock"]["source"] == "deployment"
        assert [m.split("==")[0] for m in from_file["environment"]["lock"]["missing"]] == ["python-dateutil"]
        assert_left_nothing(before)
    finally:
        tampered = subprocess.run([DOCKER, "image", "inspect", "-f", "{{.Id}}", dep.image], capture_output=True,
                                  text=True).stdout.strip()
        subprocess.run([DOCKER, "tag", original, dep.image], check=True)
        if tampered and tampered != original:
            subprocess.run([DOCKER, "rmi", tampered], capture_output=True)


def test_every_deployment_of_an_endpoint_one_after_the_other(deploy, tmp_path: Path) -> None:
    first = deploy(ROWS, deployment="blue")
    deploy("def run(mini_batch):\n    return []\n", deployment="green", endpoint=first.endpoint)
    inputs = make_inputs(tmp_path / "in", numbered(3))
    before = registry_state()
    res = bep("test", "--endpoint-name", first.endpoint, "--all", "--input", str(inputs), "-q", code=1)
    lines = res.stdout.splitlines()
    assert "PASS" in next(line for line in lines if line.startswith(("PASS", "FAIL")) and "/blue:" in line)
    assert "FAIL" in next(line for line in lines if line.startswith(("PASS", "FAIL")) and "/green:" in line)
    header = next(i for i, line in enumerate(lines) if line.startswith("Deployment"))
    assert lines[header].split() == ["Deployment", "Image", "Env", "check", "Init", "s", "Run", "s", "Items", "ok"]
    table = {line.split()[0]: line.split() for line in lines[header + 1:header + 3]}
    assert table["blue"][2] == "ok" and table["blue"][-1] == "1/1"
    assert table["green"][-1] == "0/1"
    reports = run_test_json("--endpoint-name", first.endpoint, "--all", "--input", str(inputs), "--limit", "3", code=1)
    assert [(r["deployment"], r["ok"]) for r in reports] == [("blue", True), ("green", False)]
    assert_left_nothing(before)
    assert not probe_containers()


# -- stopping ---------------------------------------------------------------------------------------------


def owned_by(pid: int) -> list[str]:
    out = subprocess.run([DOCKER, "ps", "-a", "--filter", f"label={TEST_LABEL}", "--format",
                          '{{.ID}} {{.Label "io.bepbuild.test-owner"}}'], capture_output=True, text=True,
                         check=True).stdout
    return [line.split()[0] for line in out.splitlines() if f":{pid}:" in line]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_test_leaves_no_container(home: Path, tmp_path: Path, sig: signal.Signals) -> None:
    script = "import time\n\ndef init():\n    time.sleep(120)\n\ndef run(mini_batch):\n    return mini_batch\n"
    folder = write_deployment(tmp_path / "slow", script, endpoint="bt-slow-init")
    inputs = make_inputs(tmp_path / "in", numbered(1))
    # Started as a shell starts a command in the foreground: SIGINT at its default. A suite run in the
    # background (SIGINT ignored, as `cmd &` leaves it) would pass its ignore on, and Python keeps it.
    proc = subprocess.Popen([str(BEPBUILD), "test", str(folder / "deployment.yml"), "--input", str(inputs), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for(lambda: owned_by(proc.pid), "the test container", timeout=600, interval=0.5)
        time.sleep(1)
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "error: interrupted"
    assert not owned_by(proc.pid)
    assert not any(config.scratch_dir().iterdir())


def test_a_killed_test_is_cleaned_up_by_the_next_one(home: Path, tmp_path: Path) -> None:
    """Also: the test container is isolated as a job's instances are, with the compute's limits."""
    bep("compute", "create", "-n", "test-limits", "--max-instances", "1", "--cpus", "1", "--memory", "512m",
        "-o", "none")
    script = "import time\n\ndef init():\n    time.sleep(120)\n\ndef run(mini_batch):\n    return mini_batch\n"
    folder = write_deployment(tmp_path / "slow", script, endpoint="bt-slow-init", compute="azureml:test-limits")
    inputs = make_inputs(tmp_path / "in", numbered(1))
    proc = subprocess.Popen([str(BEPBUILD), "test", str(folder / "deployment.yml"), "--input", str(inputs), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        cid = wait_for(lambda: owned_by(proc.pid), "the test container", timeout=600, interval=0.5)[0]
        attrs = json.loads(subprocess.run([DOCKER, "inspect", cid], capture_output=True, text=True,
                                          check=True).stdout)[0]
    finally:
        proc.kill()
        proc.wait()
    host = attrs["HostConfig"]
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"] and host["PidsLimit"] == 4096
    assert host["Memory"] == 512 * 1024**2 and host["NanoCpus"] == 10**9
    assert not attrs["Config"]["User"].startswith("0")
    mounts = {m["Destination"]: m["RW"] for m in attrs["Mounts"]}
    assert mounts == {"/mnt/bepbuild/inputs": False, "/mnt/bepbuild/outputs": True,
                      "/mnt/bepbuild/test/request": False, "/mnt/bepbuild/test/result": True}
    assert owned_by(proc.pid) and any(config.scratch_dir().iterdir())  # SIGKILL: nothing could clean up
    bep("test", "--endpoint-name", "no-such-endpoint", "--name", "x", "--input", str(inputs), code=2)
    assert not owned_by(proc.pid)
    assert not any(config.scratch_dir().iterdir())
