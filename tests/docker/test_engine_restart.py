"""The Docker engine restarted in the middle of a job, then `job resume`: Completed, every row once.

This stops every container on the machine (dockerd stops them on its way down), so it is marked
`engine_restart` and kept out of `make test`: `make test-faults` (and CI) run it. Before it touches
the engine it waits until no container at all has run for BEPBUILD_ENGINE_QUIET_SECONDS (default
60 s, 5 s under CI=true), and whatever happens it runs scripts/engine.sh again at the end, which
starts the engine exactly as `make engine` does.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobkit import (
    BEPBUILD,
    DOCKER,
    REPO,
    assert_exactly_once,
    bep_json,
    done_ids,
    frame_script,
    job_containers,
    make_inputs,
    numbered,
    processed,
    read_job_file,
    read_predictions,
    wait_for,
)

from bepbuild import config
from bepbuild_runtime import layout

pytestmark = [pytest.mark.docker, pytest.mark.engine_restart]

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
QUIET_SECONDS = float(os.environ.get("BEPBUILD_ENGINE_QUIET_SECONDS") or (5 if CI else 60))
MAX_WAIT_SECONDS = float(os.environ.get("BEPBUILD_ENGINE_QUIET_MAX_WAIT") or 1800)


def running_containers() -> list[str]:
    res = subprocess.run([DOCKER, "ps", "-q"], capture_output=True, text=True, timeout=60)
    return res.stdout.split() if res.returncode == 0 else ["(engine not answering)"]


def wait_until_quiet() -> None:
    """No container on the engine for QUIET_SECONDS in a row (other people's tests included)."""
    start = time.monotonic()
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < QUIET_SECONDS:
        if running_containers():
            quiet_since = time.monotonic()
        if time.monotonic() - start > MAX_WAIT_SECONDS:
            message = f"the engine was never quiet for {QUIET_SECONDS:g} s in {MAX_WAIT_SECONDS:g} s: not restarting it"
            if CI:
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
        time.sleep(1)


def dockerd_pids() -> list[int]:
    """Pids of processes whose command is exactly `dockerd` (the engine, not anything that mentions it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "dockerd":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def start_engine() -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(REPO / "scripts" / "engine.sh")], capture_output=True, text=True, timeout=600)


@pytest.fixture
def engine_restart() -> Iterator[None]:
    if os.geteuid() != 0 or not dockerd_pids():
        pytest.skip("restarting the engine needs root and a dockerd started by scripts/engine.sh")
    try:
        yield
    finally:
        res = start_engine()  # even when the test failed half-way: leave a running engine behind
        assert res.returncode == 0, res.stdout + res.stderr


def restart_engine() -> None:
    pids = dockerd_pids()
    assert len(pids) == 1, pids
    os.kill(pids[0], 15)  # `kill`: dockerd stops its containers and exits
    wait_for(lambda: not Path(f"/proc/{pids[0]}").exists() or
             Path(f"/proc/{pids[0]}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
             "dockerd to exit", timeout=120, interval=0.2)
    res = start_engine()
    assert res.returncode == 0, res.stdout + res.stderr


def test_engine_restarted_mid_job_then_resume(deploy, jobs: list[str], tmp_path: Path, engine_restart: None) -> None:
    dep = deploy(frame_script(delay=0.3), mini_batch_size=1, instance_count=2)
    names = numbered(60)
    inputs = make_inputs(tmp_path / "in", names)
    wait_until_quiet()
    name = f"job-{uuid.uuid4().hex[:12]}"
    jobs.append(name)
    job_dir = config.jobs_dir() / name
    host = subprocess.Popen([str(BEPBUILD), "batch-endpoint", "invoke", "--name", dep.endpoint, "--input",
                             str(inputs), "--job-name", name, "-q", "-o", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        wait_for(lambda: job_dir.is_dir() and len(done_ids(job_dir)) >= 8, "8 finished mini-batches",
                 timeout=120, interval=0.05)
        restart_engine()
        _, err = host.communicate(timeout=180)
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
    assert host.returncode == 1, (host.returncode, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert f"bepbuild job resume --name {name}" in lines[0], err
    before = done_ids(job_dir)
    assert 8 <= len(before) < 60, len(before)
    assert read_job_file(job_dir)["status"] not in ("Completed", "Canceled")

    job = bep_json("job", "resume", "--name", name, "-q", timeout=300)
    assert job["status"] == "Completed", job
    assert job["counts"] == {"mini_batches": 60, "done": 60, "failed": 0, "items_succeeded": 60, "items_failed": 0}
    assert_exactly_once(read_predictions(job["output_file"], ["file", "size", "ratio"]), names)
    done_rows = Counter(r["Mini-batch Id"] for r in processed(job) if r["Status"] == layout.STATUS_DONE)
    assert len(done_rows) == 60 and max(done_rows.values()) == 1
    assert not job_containers(name, all_=True)


@pytest.mark.swarm
def test_engine_restarted_mid_job_on_the_swarm_then_resume(swarm: None, deploy, jobs: list[str], tmp_path: Path,
                                                          engine_restart: None) -> None:
    """The same on a swarm compute: the job ends Failed and resumable (never stuck Running); the resume
    removes what is left of its services and completes it, every row once."""
    from swarmkit import job_services, make_compute

    make_compute("restarted", tmp_path / "shared", "--max-instances", "2")
    dep = deploy(frame_script(delay=0.3), mini_batch_size=1, instance_count=2, compute="azureml:restarted")
    names = numbered(60)
    inputs = make_inputs(tmp_path / "shared" / "in", names)
    wait_until_quiet()
    name = f"job-{uuid.uuid4().hex[:12]}"
    jobs.append(name)
    job_dir = tmp_path / "shared" / "bepbuild-jobs" / name
    host = subprocess.Popen([str(BEPBUILD), "batch-endpoint", "invoke", "--name", dep.endpoint, "--input",
                             str(inputs), "--job-name", name, "-q", "-o", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        wait_for(lambda: job_dir.is_dir() and len(done_ids(job_dir)) >= 8, "8 finished mini-batches",
                 timeout=120, interval=0.05)
        restart_engine()
        _, err = host.communicate(timeout=300)
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
    assert host.returncode == 1, (host.returncode, err)
    assert f"bepbuild job resume --name {name}" in err, err
    shown = bep_json("job", "show", "--name", name)
    assert shown["status"] == "Failed", shown  # not Running: nothing runs it any more

    job = bep_json("job", "resume", "--name", name, "-q", timeout=300)
    assert job["status"] == "Completed", job
    assert_exactly_once(read_predictions(job["output_file"], ["file", "size", "ratio"]), names)
    done_rows = Counter(r["Mini-batch Id"] for r in processed(job) if r["Status"] == layout.STATUS_DONE)
    assert len(done_rows) == 60 and max(done_rows.values()) == 1
    assert not job_services(name) and not job_containers(name, all_=True)
