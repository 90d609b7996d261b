"""Jobs on a swarm compute (a single-node Docker Swarm on this engine, made by the `swarm` fixture).

The same deployment, unchanged, runs on the swarm when its compute is a swarm compute: a service
per instance, each task isolated as far as Swarm allows, the job coordinated from its folder on the
shared path, so it completes whatever becomes of the process that submitted it. Checked the way
tests/docker/test_faults.py checks the docker backend: every row exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from jobkit import (
    DOCKER,
    REPO,
    assert_exactly_once,
    bep,
    bep_json,
    done_ids,
    frame_script,
    init_calls,
    invoke,
    job_containers,
    make_inputs,
    numbered,
    processed,
    read_predictions,
    wait_final,
    wait_for,
)
from swarmkit import job_networks, job_services, make_compute

from bepbuild_runtime import layout

pytestmark = [pytest.mark.docker, pytest.mark.swarm]

MNIST = REPO / "examples" / "mnist"


def assert_gone(job: dict[str, Any]) -> None:
    """No service, container or network of the job is left on the swarm."""
    assert not job_services(job["name"])
    assert not job_containers(job["name"], all_=True)
    assert not job_networks(Path(job["job_dir"]))


def kill_detached_host(job_dir: Path) -> None:
    os.kill(int((job_dir / layout.HOST_LOCK).read_text()), signal.SIGKILL)


# -- the same deployment on the swarm and on this engine ---------------------------------------------------


def test_mnist_on_three_swarm_instances_matches_the_docker_backend(swarm: None, jobs: list[str],
                                                                   tmp_path: Path) -> None:
    """The MNIST example names `compute: azureml:batch-cluster`: the same deployment runs on the swarm
    when batch-cluster is a swarm compute, and gives the same bytes as on this engine."""
    shared = tmp_path / "shared"
    make_compute("batch-cluster", shared, "--max-instances", "3")
    bep_json("deploy", str(MNIST / "deployment-torch" / "deployment.yml"), "--set-default", "-q", timeout=900)
    jobs.append("mnist-on-swarm")
    job = bep_json("batch-endpoint", "invoke", "--name", "mnist-batch", "--input", str(MNIST / "sample"),
                   "--job-name", "mnist-on-swarm", "--instance-count", "3", "--mini-batch-size", "5", "-q",
                   timeout=600)
    assert job["status"] == "Completed" and job["backend"] == "swarm", job
    assert Path(job["job_dir"]).parent == shared / "bepbuild-jobs"
    assert job["counts"] == {"mini_batches": 20, "done": 20, "failed": 0, "items_succeeded": 100, "items_failed": 0}
    samples = sorted(p.name for p in (MNIST / "sample").glob("*.png"))
    pred = read_predictions(job["output_file"], ["file", "class", "probability"])
    assert_exactly_once(pred, samples)
    assert list(pred["file"]) == samples  # merged in mini-batch order
    # Three instances ran (a service each); which of them scored what depends on how fast each one started.
    node = Path(job["job_dir"]) / layout.LOG_SYS_NODE
    assert sorted(p.name for p in node.iterdir()) == ["instance-0", "instance-1", "instance-2"]
    assert {r["Process"].rpartition(".")[0] for r in processed(job)} <= {"instance-0", "instance-1", "instance-2"}
    assert_gone(job)

    bep("compute", "create", "-n", "batch-cluster", "--max-instances", "3", "-o", "none")  # this engine now
    jobs.append("mnist-on-docker")
    local = bep_json("batch-endpoint", "invoke", "--name", "mnist-batch", "--input", str(MNIST / "sample"),
                     "--job-name", "mnist-on-docker", "--instance-count", "3", "--mini-batch-size", "5", "-q",
                     timeout=600)
    assert local["status"] == "Completed" and local["backend"] == "docker", local
    assert Path(local["output_file"]).read_bytes() == Path(job["output_file"]).read_bytes()


# -- services, names, labels, the network ---------------------------------------------------------------


def test_instances_are_labelled_services_on_an_internal_network(swarm: None, deploy, jobs: list[str],
                                                                 tmp_path: Path) -> None:
    make_compute("cluster", tmp_path / "shared", "--max-instances", "2")
    dep = deploy(frame_script(delay=0.3), mini_batch_size=1, instance_count=2, compute="azureml:cluster")
    names = numbered(20)
    queued = invoke(dep, make_inputs(tmp_path / "shared" / "in", names), "--no-wait", jobs=jobs)
    name, job_dir = queued["name"], Path(queued["job_dir"])
    assert queued["backend"] == "swarm" and queued["input_root"] == str(tmp_path / "shared" / "in")  # in place
    services = wait_for(lambda: len(job_services(name)) == 2 and job_services(name), "2 services", timeout=60)
    for svc in services:
        spec = svc["Spec"]
        labels = spec["Labels"]
        assert labels["io.bepbuild.job"] == name and labels["io.bepbuild.job-dir"] == str(job_dir)
        assert spec["Name"].startswith(f"bepbuild-{name[:20]}-")
        assert spec["Name"].endswith(labels["io.bepbuild.instance"])
        assert len(spec["Name"]) <= 63
        assert spec["Mode"] == {"Replicated": {"Replicas": 1}}
        assert spec["TaskTemplate"]["RestartPolicy"]["Condition"] == "none"
        [net] = spec["TaskTemplate"]["Networks"]
        inspect = json.loads(subprocess.run([DOCKER, "network", "inspect", net["Target"]], capture_output=True,
                                            text=True, check=True).stdout)[0]
        assert inspect["Internal"] is True and inspect["Driver"] == "overlay"
        assert inspect["Labels"]["io.bepbuild.job"] == name
    job = wait_final(job_dir)
    assert job["status"] == "Completed", job
    assert_exactly_once(read_predictions(job["output_file"], ["file", "size", "ratio"]), names)
    assert_gone(job)


# -- isolation from inside a task -------------------------------------------------------------------------

INSPECT = """
import errno, json, os, socket

def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        return "missing: " + errno.errorcode.get(e.errno, str(e.errno))

def _try_write(folder):
    path = os.path.join(folder, ".isolation-probe")
    try:
        with open(path, "w") as f:
            f.write("x")
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    os.unlink(path)
    return "written"

def run(mini_batch):
    status = {}
    for line in _read("/proc/self/status").splitlines():
        key, _, value = line.partition(":")
        if key in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "NoNewPrivs"):
            status[key] = value.strip()
    routes = [line.split() for line in _read("/proc/net/route").splitlines()[1:]]
    facts = {
        "uid": os.getuid(), "gid": os.getgid(), "status": status,
        "routes": [{"iface": r[0], "destination": r[1], "gateway": r[2]} for r in routes],
        "interfaces": sorted(name for _, name in socket.if_nameindex()),
        "writes": {"/": _try_write("/"), "/etc": _try_write("/etc"),
                   "model": _try_write(os.environ["AZUREML_MODEL_DIR"]),
                   "input": _try_write(os.path.dirname(mini_batch[0])), "tmp": _try_write("/tmp"),
                   "output": _try_write(os.environ["AZUREML_BI_OUTPUT_PATH"])},
        "docker_sock": [p for p in ("/var/run/docker.sock", "/run/docker.sock") if os.path.exists(p)],
        "pids_max": _read("/sys/fs/cgroup/pids/pids.max") if os.path.exists("/sys/fs/cgroup/pids")
                    else _read("/sys/fs/cgroup/pids.max"),
        "memory_limit": _read("/sys/fs/cgroup/memory/memory.limit_in_bytes")
                        if os.path.exists("/sys/fs/cgroup/memory") else _read("/sys/fs/cgroup/memory.max"),
        "host_secret": os.environ.get("BEPBUILD_SWARM_HOST_SECRET"),
    }
    return [json.dumps(facts)]
"""


def test_a_task_is_isolated_and_has_no_route_out(swarm: None, deploy, jobs: list[str], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEPBUILD_SWARM_HOST_SECRET", "leaked")
    make_compute("sealed", tmp_path / "shared", "--memory", "512m")
    dep = deploy(INSPECT, mini_batch_size=1, compute="azureml:sealed")
    inputs = make_inputs(tmp_path / "elsewhere", ["probe.txt"])  # not under the shared path: copied there
    job = invoke(dep, inputs, jobs=jobs)
    assert job["status"] == "Completed", job
    assert job["input_root"] == str(Path(job["job_dir"]) / layout.INPUTS_DIR)
    facts = json.loads(Path(job["output_file"]).read_text())
    if os.getuid() == 0:
        assert (facts["uid"], facts["gid"]) == (layout.RUNTIME_UID, layout.RUNTIME_GID)
    assert {k: int(v, 16) for k, v in facts["status"].items() if k != "NoNewPrivs"} == {
        "CapEff": 0, "CapPrm": 0, "CapBnd": 0, "CapAmb": 0}
    assert facts["status"]["NoNewPrivs"] == "1"  # set by the runtime: Swarm services cannot
    assert facts["routes"], facts  # the overlay's own subnet...
    assert all(r["destination"] != "00000000" and r["gateway"] == "00000000" for r in facts["routes"]), facts
    assert facts["interfaces"] == ["eth0", "lo"]  # ...and nothing else: no default route, no gateway
    assert facts["writes"] == {"/": "EROFS", "/etc": "EROFS", "model": "EROFS", "input": "EROFS", "tmp": "written",
                               "output": "written"}
    assert facts["docker_sock"] == [] and facts["host_secret"] is None
    assert facts["pids_max"] == "4096" and facts["memory_limit"] == str(512 << 20)
    assert_gone(job)


# -- images by digest ---------------------------------------------------------------------------------------


def test_images_are_pushed_once_and_run_by_digest(swarm: None, registry, deploy, jobs: list[str],
                                                  tmp_path: Path) -> None:
    repo = f"{registry.address}/bepbuild-swarm-{uuid.uuid4().hex[:8]}"
    make_compute("pushed", tmp_path / "shared", "--registry", repo)
    dep = deploy(frame_script(), mini_batch_size=2, compute="azureml:pushed")
    names = numbered(6)
    inputs = make_inputs(tmp_path / "shared" / "in", names)
    content_tag = dep.image.rsplit(":", 1)[1]
    pushed_tag = f"{repo}:{content_tag}"
    try:
        first = invoke(dep, inputs, jobs=jobs)
        assert first["status"] == "Completed", first
        assert first["image_ref"].startswith(f"{repo}@sha256:"), first["image_ref"]
        assert_exactly_once(read_predictions(first["output_file"], ["file", "size", "ratio"]), names)
        # the content tag is in the registry now: the next job runs the same digest without pushing
        subprocess.run([DOCKER, "rmi", pushed_tag], capture_output=True, check=True)
        queued = invoke(dep, inputs, "--no-wait", jobs=jobs)
        assert queued["image_ref"] == first["image_ref"]
        services = wait_for(lambda: job_services(queued["name"]), "its service", timeout=60)
        assert services[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == first["image_ref"]
        second = wait_final(Path(queued["job_dir"]))
        assert second["status"] == "Completed", second
        assert subprocess.run([DOCKER, "image", "inspect", pushed_tag], capture_output=True).returncode != 0
    finally:
        subprocess.run([DOCKER, "rmi", pushed_tag], capture_output=True)


def test_a_swarm_whose_manager_does_not_answer_is_refused_in_one_line(swarm: None, deploy, jobs: list[str],
                                                                     tmp_path: Path) -> None:
    """Refused before any job exists."""
    make_compute("remote", tmp_path / "shared", "--docker-host", "unix:///nonexistent/docker.sock")
    dep = deploy(frame_script(), mini_batch_size=2, compute="azureml:remote")
    inputs = make_inputs(tmp_path / "in", ["a.txt"])
    res = bep("batch-endpoint", "invoke", "--name", dep.endpoint, "--input", str(inputs), "-q", code=1)
    assert len(res.stderr.splitlines()) == 1 and "swarm manager unix:///nonexistent/docker.sock" in res.stderr
    assert bep_json("job", "list", "--endpoint-name", dep.endpoint) == []


def test_doctor_checks_the_swarm_compute(swarm: None, tmp_path: Path) -> None:
    make_compute("checked", tmp_path / "shared")
    checks = {c["name"]: c for c in bep_json("doctor", "--compute", "checked")}
    assert checks["swarm"]["status"] == "ok" and checks["shared path"]["status"] == "ok", checks
    assert any(name.startswith("node ") and c["status"] == "ok" for name, c in checks.items())
    assert "written by a task on each of 1 node(s)" in checks["shared path"]["detail"]
    assert not list((tmp_path / "shared" / "bepbuild-jobs").iterdir())  # the probe cleaned up after itself
    label = "label=io.bepbuild.doctor"
    for kind in (["service", "ls"], ["ps", "-a"], ["network", "ls"]):  # its task's container gone before its network
        left = subprocess.run([DOCKER, *kind, "-q", "--filter", label], capture_output=True, text=True, check=True)
        assert left.stdout.strip() == "", (kind, left.stdout)


# -- faults on the cluster ---------------------------------------------------------------------------------


def test_a_killed_task_gives_its_claims_back_and_every_row_lands_once(swarm: None, deploy, jobs: list[str],
                                                                      tmp_path: Path) -> None:
    make_compute("faulty", tmp_path / "shared", "--max-instances", "2")
    dep = deploy(frame_script(delay=0.2), mini_batch_size=1, instance_count=2, compute="azureml:faulty")
    names = numbered(40)
    queued = invoke(dep, make_inputs(tmp_path / "shared" / "in", names), "--no-wait", jobs=jobs)
    name, job_dir = queued["name"], Path(queued["job_dir"])
    wait_for(lambda: len(done_ids(job_dir)) >= 5, "5 finished mini-batches", timeout=120, interval=0.05)
    [victim] = job_containers(name, "instance-0")
    subprocess.run([DOCKER, "kill", victim], check=True, capture_output=True)
    assert len(done_ids(job_dir)) < 40, "the job finished before the kill: make run() slower"
    job = wait_final(job_dir)
    assert job["status"] == "Completed", job
    assert job["counts"] == {"mini_batches": 40, "done": 40, "failed": 0, "items_succeeded": 40, "items_failed": 0}
    assert_exactly_once(read_predictions(job["output_file"], ["file", "size", "ratio"]), names)
    done_rows = Counter(r["Mini-batch Id"] for r in processed(job) if r["Status"] == layout.STATUS_DONE)
    assert len(done_rows) == 40 and max(done_rows.values()) == 1
    main_log = (job_dir / layout.LOG_SYS_NODE / "instance-0" / layout.LOG_SYS_NODE_MAIN).read_text()
    assert main_log.count("starting 1 workers") == 2, main_log  # the host started instance-0 again
    assert len(init_calls(job)) == 3
    assert_gone(job)


def test_a_job_completes_and_merges_once_after_its_submitter_is_killed(swarm: None, deploy, jobs: list[str],
                                                                       tmp_path: Path) -> None:
    make_compute("alone", tmp_path / "shared", "--max-instances", "2")
    dep = deploy(frame_script(delay=0.1), mini_batch_size=1, instance_count=2, compute="azureml:alone")
    names = numbered(40)
    queued = invoke(dep, make_inputs(tmp_path / "shared" / "in", names), "--no-wait", jobs=jobs)
    job_dir = Path(queued["job_dir"])
    assert queued["status"] == "Running"  # invoke --no-wait returns once the instances run
    kill_detached_host(job_dir)
    job = wait_final(job_dir)
    assert job["status"] == "Completed", job
    assert_exactly_once(read_predictions(job["output_file"], ["file", "size", "ratio"]), names)
    rows = processed(job)
    assert {r["Status"] for r in rows} == {layout.STATUS_DONE} and len(rows) == 40
    assert not list(Path(job["output_dir"]).glob(f".*{layout.MERGE_TMP_INFIX}*"))
    assert_gone(job)  # removed by whoever recorded the end (job show)


def test_cancel_removes_every_service_and_task(swarm: None, deploy, jobs: list[str], tmp_path: Path) -> None:
    make_compute("stoppable", tmp_path / "shared", "--max-instances", "2")
    dep = deploy(frame_script(delay=0.3), mini_batch_size=1, instance_count=2, compute="azureml:stoppable")
    names = numbered(60)
    queued = invoke(dep, make_inputs(tmp_path / "shared" / "in", names), "--no-wait", jobs=jobs)
    name, job_dir = queued["name"], Path(queued["job_dir"])
    wait_for(lambda: len(done_ids(job_dir)) >= 3, "3 finished mini-batches", timeout=120, interval=0.05)
    bep_json("job", "cancel", "--name", name)
    job = wait_final(job_dir, timeout=120)
    assert job["status"] == "Canceled", job
    assert_gone(job)
    done, pending = done_ids(job_dir), list((job_dir / layout.PENDING_DIR).glob("*.json"))
    assert len(done) + len(pending) == 60  # nothing stranded: stopped in-flight work went back untouched
    assert all(json.loads(p.read_text())["attempt"] == 0 for p in pending)
