"""Jobs end to end on the real engine: deploy, invoke, and fault injection, checked the way Azure counts.

Each test builds a small purpose-built deployment (its own endpoint, its own scoring script) in a
session-wide BEPBUILD_HOME: every deployment shares one conda file, so the lock and the environment
layer (pandas) are built once per session and each deploy only adds its code layer. The MNIST
examples run in the per-test home of the conftest. Everything goes through the `bepbuild` command
line as a user would run it. Helpers and fixtures: jobkit.py (fixtures made available by conftest.py).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from jobkit import (
    BEPBUILD,
    DOCKER,
    RECORD_INIT,
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

from bepbuild import config
from bepbuild_runtime import layout, queue

pytestmark = pytest.mark.docker

MNIST = REPO / "examples" / "mnist"



def check_mnist(job: dict[str, Any]) -> None:
    assert job["status"] == "Completed", job
    samples = sorted(p.name for p in (MNIST / "sample").glob("*.png"))
    assert len(samples) == 100
    assert job["counts"] == {"mini_batches": 10, "done": 10, "failed": 0, "items_succeeded": 100,
                             "items_failed": 0}
    pred = read_predictions(job["output_file"], ["file", "class", "probability"])
    assert len(pred) == 100
    assert_exactly_once(pred, samples)
    assert pred["probability"].between(0, 1).all()
    labels = pd.read_csv(MNIST / "sample-labels.csv")
    merged = pred.merge(labels, on="file", validate="one_to_one")
    accuracy = (merged["class"] == merged["label"]).mean()
    assert accuracy >= 0.9, f"accuracy {accuracy:.2f}"


def test_mnist_torch_end_to_end(jobs: list[str]) -> None:
    dep = bep_json("deploy", str(MNIST / "deployment-torch" / "deployment.yml"), "--set-default", "-q", timeout=900)
    assert dep["name"] == "mnist-torch-dpl"
    jobs.append("mnist-torch-job")
    job = bep_json("batch-endpoint", "invoke", "--name", "mnist-batch", "--input", str(MNIST / "sample"),
                   "--job-name", "mnist-torch-job", "-q")
    check_mnist(job)
    assert job["deployment"] == "mnist-torch-dpl" and job["backend"] == "docker"
    # Two workers (max_concurrency_per_instance 2), one instance.
    workers = {row["Process"] for row in processed(job)}
    assert workers <= {"instance-0.0", "instance-0.1"}
    assert not job_containers("mnist-torch-job", all_=True)  # the instance is removed when the job ends


def test_mnist_keras_end_to_end(jobs: list[str]) -> None:
    dep = bep_json("deploy", str(MNIST / "deployment-keras" / "deployment.yml"), "-q", timeout=1800)
    assert dep["name"] == "mnist-keras-dpl"
    jobs.append("mnist-keras-job")
    job = bep_json("batch-endpoint", "invoke", "--name", "mnist-batch", "--deployment-name", "mnist-keras-dpl",
                   "--input", str(MNIST / "sample"), "--job-name", "mnist-keras-job", "-q")
    assert job["deployment"] == "mnist-keras-dpl"
    check_mnist(job)


# -- 2. per-job overrides ---------------------------------------------------------------------------


def test_mini_batch_size_and_instance_count_overrides(deploy, jobs: list[str], tmp_path: Path) -> None:
    dep = deploy(frame_script(delay=0.3), mini_batch_size=10)
    names = numbered(31)
    inputs = make_inputs(tmp_path / "in", names)
    job = invoke(dep, inputs, "--mini-batch-size", "3", "--instance-count", "2", jobs=jobs)
    assert job["status"] == "Completed", job
    assert job["settings"]["mini_batch_size"] == 3 and job["settings"]["instance_count"] == 2
    assert job["counts"] == {"mini_batches": math.ceil(31 / 3), "done": 11, "failed": 0, "items_succeeded": 31,
                             "items_failed": 0}
    node = Path(job["job_dir"]) / layout.LOG_SYS_NODE
    assert sorted(p.name for p in node.iterdir()) == ["instance-0", "instance-1"]
    # 3.3 s of run() in total and both instances claimed some of it.
    assert {row["Process"] for row in processed(job)} == {"instance-0.0", "instance-1.0"}
    pred = read_predictions(job["output_file"], ["file", "size", "ratio"])
    assert_exactly_once(pred, names)
    assert len(pred) == 31
    sizes = {n: (inputs / n).stat().st_size for n in names}
    assert all(sizes[f] == s for f, s in zip(pred["file"], pred["size"], strict=True))
    assert len(init_calls(job)) == 2  # one worker per instance, nothing failed


# -- 3. a failing run() -----------------------------------------------------------------------------

FAILING = RECORD_INIT + """
def init():
    _record_init()

def run(mini_batch):
    for path in mini_batch:
        if "bad" in os.path.basename(path):
            raise ValueError(f"cannot score {os.path.basename(path)}")
    return [os.path.basename(p) for p in mini_batch]
"""


def test_failing_files_retried_then_counted_and_error_threshold(deploy, jobs: list[str], tmp_path: Path) -> None:
    dep = deploy(FAILING, mini_batch_size=1, max_retries=3)
    good, bad = numbered(17), [f"bad-{i}.txt" for i in range(3)]
    inputs = make_inputs(tmp_path / "in", good + bad)

    job = invoke(dep, inputs, jobs=jobs)
    assert job["status"] == "Completed", job
    assert job["counts"] == {"mini_batches": 20, "done": 17, "failed": 3, "items_succeeded": 17,
                             "items_failed": 3}
    assert sorted(read_predictions(job["output_file"], ["file"])["file"]) == sorted(good)
    rows = processed(job)
    by_id: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_id.setdefault(row["Mini-batch Id"], []).append(row)
    assert len(by_id) == 20
    bad_ids = {i for i, rs in by_id.items() if any("bad-" in r["Mini-batch Detail"] for r in rs)}
    assert len(bad_ids) == 3
    for bid, rs in by_id.items():
        if bid in bad_ids:
            # One row per attempt, max_retries attempts, every one an exception.
            assert [r["Status"] for r in rs] == [layout.STATUS_EXCEPTION] * 3, rs
            assert sorted(int(r["Picked Count"]) for r in rs) == [1, 2, 3]
            assert all("ValueError: cannot score bad-" in r["Error Message"] for r in rs)
        else:
            assert [r["Status"] for r in rs] == [layout.STATUS_DONE], rs
    failed = [json.loads(p.read_text()) for p in (Path(job["job_dir"]) / layout.FAILED_DIR).glob("*.json")]
    assert sorted(f["items"][0] for f in failed) == bad
    tracebacks = "".join(p.read_text() for p in (Path(job["job_dir"]) / layout.LOG_USER_ERROR).rglob("*.txt"))
    assert tracebacks.count("ValueError: cannot score bad-") == 9

    strict = invoke(dep, inputs, "--error-threshold", "0", code=1, jobs=jobs)
    assert strict["status"] == "Failed"
    assert "threshold" in strict["error"].lower()
    assert strict["counts"]["items_failed"] >= 1
    assert not Path(strict["output_file"]).exists()
    assert "threshold" in (Path(strict["job_dir"]) / layout.LOG_RESULT).read_text().lower()


# -- 4. run() timeout -------------------------------------------------------------------------------

SLOW_ONE = RECORD_INIT + """
import time

def init():
    _record_init()

def run(mini_batch):
    if any("slow" in os.path.basename(p) for p in mini_batch):
        time.sleep(60)
    return [os.path.basename(p) for p in mini_batch]
"""


def test_timeout_kills_the_worker_and_retries(deploy, jobs: list[str], tmp_path: Path) -> None:
    dep = deploy(SLOW_ONE, mini_batch_size=1)
    names = numbered(5) + ["slow-0.txt"]
    inputs = make_inputs(tmp_path / "in", names)
    t0 = time.monotonic()
    job = invoke(dep, inputs, "--timeout", "2", "--max-retries", "2", jobs=jobs)
    elapsed = time.monotonic() - t0
    assert job["status"] == "Completed", job
    assert job["counts"] == {"mini_batches": 6, "done": 5, "failed": 1, "items_succeeded": 5, "items_failed": 1}
    assert elapsed < 40, elapsed  # two 2-second tries, not the 60-second sleep
    rows = processed(job)
    timeouts = [r for r in rows if r["Status"] == layout.STATUS_TIMEOUT]
    assert len(timeouts) == 2 and all("slow-0.txt" in r["Mini-batch Detail"] for r in timeouts)
    assert sorted(int(r["Picked Count"]) for r in timeouts) == [1, 2]
    assert all("did not finish in 2 seconds" in r["Error Message"] for r in timeouts)
    assert sorted(r["Status"] for r in rows if "slow" not in r["Mini-batch Detail"]) == [layout.STATUS_DONE] * 5
    # One worker; each timeout killed it and a fresh one called init() again.
    calls = init_calls(job)
    assert len(calls) == 1 + 2, calls
    assert len({c.split()[1] for c in calls}) == 3  # three distinct processes
    main_log = (Path(job["job_dir"]) / layout.LOG_SYS_NODE / "instance-0" / layout.LOG_SYS_NODE_MAIN).read_text()
    assert main_log.count("did not finish in 2 seconds. Stopping this process.") == 2
    assert sorted(read_predictions(job["output_file"], ["file"])["file"]) == numbered(5)


# -- 5. an instance killed mid-job ------------------------------------------------------------------


def test_killed_instance_container_work_is_redone_exactly_once(deploy, jobs: list[str], tmp_path: Path) -> None:
    dep = deploy(frame_script(delay=0.2), mini_batch_size=1, instance_count=2)
    names = numbered(40)
    inputs = make_inputs(tmp_path / "in", names)
    queued = invoke(dep, inputs, "--no-wait", jobs=jobs)
    name, job_dir = queued["name"], Path(queued["job_dir"])
    wait_for(lambda: len(done_ids(job_dir)) >= 5, "5 finished mini-batches", timeout=120, interval=0.05)
    victim = job_containers(name, "instance-0")
    assert len(victim) == 1, victim
    subprocess.run([DOCKER, "kill", victim[0]], check=True, capture_output=True)
    done_at_kill = len(done_ids(job_dir))
    assert done_at_kill < 40, "the job finished before the kill: make run() slower"
    job = wait_final(job_dir)
    assert job["status"] == "Completed", job
    assert job["counts"] == {"mini_batches": 40, "done": 40, "failed": 0, "items_succeeded": 40, "items_failed": 0}
    assert_exactly_once(read_predictions(job["output_file"], ["file", "size", "ratio"]), names)
    # The host saw the container die (exit 137) and started instance-0 again.
    main_log = (job_dir / layout.LOG_SYS_NODE / "instance-0" / layout.LOG_SYS_NODE_MAIN).read_text()
    assert main_log.count("starting 1 workers") == 2, main_log
    assert len(init_calls(job)) == 3
    shown = bep_json("job", "show", "--name", name)
    assert shown["status"] == "Completed"
    assert not job_containers(name, all_=True)


# -- 6. the host process killed: the job goes on; the machine gone: resume -------------------------


def _invoke_and_kill_host(dep: Any, inputs: Path, name: str, done: int) -> Path:
    """Invoke (attached: this process is the job's host) and kill -9 it once `done` mini-batches are done."""
    job_dir = config.jobs_dir() / name
    host = subprocess.Popen([str(BEPBUILD), "batch-endpoint", "invoke", "--name", dep.endpoint, "--input",
                             str(inputs), "--job-name", name, "-q", "-o", "json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        wait_for(lambda: job_dir.is_dir() and len(done_ids(job_dir)) >= done, f"{done} finished mini-batches",
                 timeout=120, interval=0.05)
    finally:
        host.send_signal(signal.SIGKILL)
        host.wait()
    return job_dir


def test_a_job_whose_host_is_killed_completes_on_its_own(deploy, jobs: list[str], tmp_path: Path) -> None:
    dep = deploy(frame_script(delay=0.25), mini_batch_size=1, max_concurrency_per_instance=2, instance_count=2)
    names = numbered(48)
    inputs = make_inputs(tmp_path / "in", names)
    name = f"job-{uuid.uuid4().hex[:12]}"
    jobs.append(name)
    job_dir = _invoke_and_kill_host(dep, inputs, name, 5)
    assert len(done_ids(job_dir)) < 48
    assert len(job_containers(name)) == 2  # the instances go on without their host
    job = wait_final(job_dir)
    assert job["status"] == "Completed", job
    assert job["counts"] == {"mini_batches": 48, "done": 48, "failed": 0, "items_succeeded": 48, "items_failed": 0}
    assert_exactly_once(read_predictions(job["output_file"], ["file", "size", "ratio"]), names)
    rows = processed(job)
    assert {r["Status"] for r in rows} == {layout.STATUS_DONE}
    assert max(Counter(r["Mini-batch Id"] for r in rows).values()) == 1
    assert not job_containers(name, all_=True)  # removed by whoever recorded the end (job show)


def test_resume_after_the_machine_died_finishes_without_redoing(deploy, jobs: list[str], tmp_path: Path) -> None:
    """The host and its containers killed (the machine gone): `job show` records the job Failed, as
    nothing runs it any more; `job resume` finishes it, and what was done before is not tried again."""
    dep = deploy(frame_script(delay=0.25), mini_batch_size=1, max_concurrency_per_instance=2)
    names = numbered(48)
    inputs = make_inputs(tmp_path / "in", names)
    name = f"job-{uuid.uuid4().hex[:12]}"
    jobs.append(name)
    job_dir = _invoke_and_kill_host(dep, inputs, name, 5)
    subprocess.run([DOCKER, "kill", *job_containers(name)], check=True, capture_output=True)
    killed_at = time.time()
    before = done_ids(job_dir)
    assert 5 <= len(before) < 48
    shown = bep_json("job", "show", "--name", name)
    assert shown["status"] == "Failed" and f"bepbuild job resume --name {name}" in shown["error"], shown

    job = bep_json("job", "resume", "--name", name, "-q", timeout=300)
    assert job["status"] == "Completed", job
    assert job["counts"] == {"mini_batches": 48, "done": 48, "failed": 0, "items_succeeded": 48, "items_failed": 0}
    assert_exactly_once(read_predictions(job["output_file"], ["file", "size", "ratio"]), names)
    rows = processed(job)
    done_rows = Counter(r["Mini-batch Id"] for r in rows if r["Status"] == layout.STATUS_DONE)
    assert set(done_rows) == {layout.mini_batch_id(i) for i in range(48)}
    assert max(done_rows.values()) == 1, {k: v for k, v in done_rows.items() if v > 1}
    for row in rows:
        if row["Mini-batch Id"] in before:  # finished before the kill: no try of it after that
            assert pd.Timestamp(row["Start Time"]).timestamp() < killed_at, row
    assert not job_containers(name, all_=True)


# -- 7. summary_only --------------------------------------------------------------------------------

SUMMARY_ONLY = """
import os

def run(mini_batch):
    out = os.environ["AZUREML_BI_OUTPUT_PATH"]
    for path in mini_batch:
        name = os.path.basename(path)
        with open(os.path.join(out, name + ".out"), "w") as f:
            f.write(open(path).read().upper())
    return mini_batch
"""


def test_summary_only_writes_own_files_and_no_predictions(deploy, jobs: list[str], tmp_path: Path) -> None:
    dep = deploy(SUMMARY_ONLY, output_action="summary_only", mini_batch_size=4)
    names = numbered(10)
    inputs = make_inputs(tmp_path / "in", names)
    job = invoke(dep, inputs, jobs=jobs)
    assert job["status"] == "Completed", job
    assert job["output_file"] is None
    assert job["counts"] == {"mini_batches": 3, "done": 3, "failed": 0, "items_succeeded": 10, "items_failed": 0}
    out = Path(job["output_dir"])
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.out" for n in names)
    for n in names:
        assert (out / f"{n}.out").read_text() == (inputs / n).read_text().upper()
    assert queue.merge_results(Path(job["job_dir"]), tmp_path / "merged.csv") == 0  # no record has rows


# -- 8. an existing output file ---------------------------------------------------------------------


def test_existing_output_file_is_refused(deploy, jobs: list[str], tmp_path: Path) -> None:
    dep = deploy(frame_script(), mini_batch_size=5)
    names = numbered(8)
    inputs = make_inputs(tmp_path / "in", names)
    out_dir = tmp_path / "scores"
    out_dir.mkdir()
    first = invoke(dep, inputs, "--output-path", str(out_dir), "--set", "output_file_name=scored.csv", jobs=jobs)
    assert first["status"] == "Completed"
    target = out_dir / "scored.csv"
    assert Path(first["output_file"]) == target
    content, stat = target.read_bytes(), target.stat()
    assert_exactly_once(read_predictions(target, ["file", "size", "ratio"]), names)

    res = bep("batch-endpoint", "invoke", "--name", dep.endpoint, "--input", str(inputs), "--output-path",
              str(out_dir), "--set", "output_file_name=scored.csv", "-q", "-o", "json", code=2)
    err = res.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(target) in err[0], res.stderr
    assert res.stdout == ""
    assert target.read_bytes() == content and target.stat().st_mtime_ns == stat.st_mtime_ns
    assert len(bep_json("job", "list", "--endpoint-name", dep.endpoint)) == 1  # no job was created


# -- 9. process and docker backends agree -----------------------------------------------------------


def test_process_backend_matches_docker_backend(deploy, jobs: list[str], tmp_path: Path) -> None:
    dep = deploy(frame_script(), mini_batch_size=3, max_concurrency_per_instance=2)
    names = numbered(20) + ["with space.txt"]
    inputs = make_inputs(tmp_path / "in", names)
    in_docker = invoke(dep, inputs, "--backend", "docker", jobs=jobs)
    in_process = invoke(dep, inputs, "--backend", "process", jobs=jobs)
    assert in_docker["status"] == in_process["status"] == "Completed"
    assert in_docker["counts"] == in_process["counts"]
    docker_lines = Path(in_docker["output_file"]).read_text().splitlines()
    process_lines = Path(in_process["output_file"]).read_text().splitlines()
    assert len(docker_lines) == len(process_lines) == 21
    assert set(docker_lines) == set(process_lines)
    assert '"with space.txt"' in Path(in_docker["output_file"]).read_text()  # pandas quoting
    assert_exactly_once(read_predictions(in_docker["output_file"], ["file", "size", "ratio"]), names)
