"""Fault paths that need no engine: claims given back on a full disk, and a coordinator that died after
publishing its merge (the real-engine faults are in tests/docker/test_faults.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from test_jobs_process import (
    BEPBUILD,
    ENDPOINT,
    Cli,
    kill_instances,
    lines,
    make_inputs,
    processed_rows,
    register,
    wait_final,
)

from bepbuild import config
from bepbuild.errors import UserError
from bepbuild.jobs import runner
from bepbuild.store import Store
from bepbuild_runtime import layout, queue


def test_release_claims_gives_batches_back_untouched(tmp_path: Path) -> None:
    job = tmp_path / "job"
    queue.write_queue(job, [f"f{i}" for i in range(3)], 1)
    claimer = queue.Claimer(job, "i.0")
    first, second = claimer.claim(), claimer.claim()
    assert first and second
    queue.complete(job, "i.0", first, "f0 row\n", 1)
    # a finished batch whose claim is still there (killed between done and unlink), a temp file
    claim_copy = queue.worker_dir(job, "i.0") + f"/{first['id']}.json"
    Path(claim_copy).write_text(json.dumps(first))
    Path(queue.worker_dir(job, "i.0"), layout.TMP_PREFIX + "x.csv").write_text("half")
    released = queue.release_claims(job, "i.0")
    assert released == [second["id"]]
    pending = sorted(p.name for p in (job / layout.PENDING_DIR).iterdir())
    assert pending == [f"{second['id']}.json", "000000002.json"]
    back = json.loads((job / layout.PENDING_DIR / f"{second['id']}.json").read_text())
    assert back == second and back["attempt"] == 0  # the try was not counted
    assert os.listdir(queue.worker_dir(job, "i.0")) == []


def _coordinator_died_after_publishing(job: dict, other_content: bool = False) -> Path:
    """Rewind a Completed job to the moment after its coordinator published the merged output and
    before it wrote the outcome (it died there, and so did every instance and the host): no outcome,
    the dead coordinator's merge record and its temp file still linked to the output."""
    job_dir, out = Path(job["job_dir"]), Path(job["output_file"])
    dead = "0123456789abcdef"
    tmp = out.parent / f".{out.name}{layout.MERGE_TMP_INFIX}{dead}"
    if other_content:
        out.write_text("someone else's file\n")
    os.link(out, tmp)
    (job_dir / layout.OUTCOME_FILE).unlink()
    (job_dir / layout.MERGING_FILE).write_text(json.dumps({"token": dead, "holder": "instance-0"}))
    doc = runner.read_job(job_dir)
    doc.update(status="Running", error=None)
    runner.write_job(job_dir, doc)
    store = Store.open()
    try:
        store.update_job(job["name"], status="Running")
    finally:
        store.close()
    return tmp


def test_resume_after_the_coordinator_died_between_publish_and_outcome(tmp_path: Path) -> None:
    register(mini_batch_size=2)
    names = make_inputs(tmp_path / "in", 7)
    cli = Cli()
    job = cli.invoke("--input", str(tmp_path / "in"), "--job-name", "published")
    before = Path(job["output_file"]).read_bytes()
    tmp = _coordinator_died_after_publishing(job)
    again = cli.json("job", "resume", "--name", "published", "-q")
    assert again["status"] == "Completed", again
    assert Path(job["output_file"]).read_bytes() == before  # kept, not merged twice
    assert sorted(n.split()[0] for n in lines(job["output_file"])) == names
    assert not tmp.exists()


def test_resume_never_adopts_an_output_it_did_not_write(tmp_path: Path) -> None:
    register(mini_batch_size=2)
    make_inputs(tmp_path / "in", 5)
    cli = Cli()
    job = cli.invoke("--input", str(tmp_path / "in"), "--job-name", "clobbered")
    _coordinator_died_after_publishing(job, other_content=True)
    res = cli("job", "resume", "--name", "clobbered", "-q", "-o", "json", code=1)
    failed = json.loads(res.stdout)
    assert failed["status"] == "Failed" and "output file exists" in failed["error"]
    assert Path(job["output_file"]).read_text() == "someone else's file\n"


# -- a machine's death is not the mini-batches' fault -------------------------------------------------

NAPPING = ("import os, time\ndef run(mini_batch):\n    time.sleep(0.2)\n"
           "    return [os.path.basename(p) for p in mini_batch]\n")
# appended to a script that imports os: each worker's init() notes the folder it runs in
WHERE = ("def init():\n    with open(os.path.join(os.environ['AZUREML_BI_OUTPUT_PATH'], 'where.txt'), 'a') as f:\n"
         "        f.write(os.getcwd() + '\\n')\n")


def _kill_host_after(name: str, inputs: Path, done: int, *extra: str, instances: bool = True) -> Path:
    """Invoke in a subprocess and kill -9 it once `done` mini-batches are done, and its instances with it
    (the machine gone; with `instances=False` they live on, and finish the job themselves)."""
    job_dir = config.jobs_dir() / name
    host = subprocess.Popen([str(BEPBUILD), "batch-endpoint", "invoke", "--name", ENDPOINT, "--input", str(inputs),
                             "--backend", "process", "--job-name", name, "-q", "-o", "none", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:
        while not (job_dir.is_dir() and len(list((job_dir / layout.DONE_DIR).glob("*.json"))) >= done):
            assert time.monotonic() < deadline and host.poll() is None, "no mini-batch finished"
            time.sleep(0.02)
    finally:
        host.kill()
        host.wait()
        if instances:
            kill_instances(job_dir)
    return job_dir


def test_resume_after_a_machine_crash_charges_no_try_to_batches_in_flight(tmp_path: Path) -> None:
    """One try each (max_retries 1): a claim the resume finds from the dead machine's instances must go
    back untouched, or it lands in failed/ and its rows are lost although run() never failed."""
    register(NAPPING, mini_batch_size=2, max_concurrency_per_instance=4,
             retry_settings={"max_retries": 1, "timeout": 30})
    names = make_inputs(tmp_path / "in", 200)
    job_dir = _kill_host_after("crashed-host", tmp_path / "in", 8)
    in_flight = [n for w in os.listdir(job_dir / layout.RUNNING_DIR)
                 for n in os.listdir(job_dir / layout.RUNNING_DIR / w) if n.endswith(".json")]
    assert in_flight, "the instance holds claims when the machine dies"
    job = Cli().json("job", "resume", "--name", "crashed-host", "-q")
    assert job["status"] == "Completed", job
    assert job["counts"] == {"mini_batches": 100, "done": 100, "failed": 0, "items_succeeded": 200,
                             "items_failed": 0}
    assert sorted(lines(job["output_file"])) == names
    assert not list((job_dir / layout.FAILED_DIR).iterdir())
    rows = processed_rows(job)
    assert {r["Status"] for r in rows} == {layout.STATUS_DONE}, [r for r in rows if r["Status"] != "RUN_DONE"]
    assert Counter(r["Mini-batch Id"] for r in rows).most_common(1)[0][1] == 1


# -- init() failures, as Azure counts them --------------------------------------------------------------

INIT_FAILS_ONCE = """
import os

def init():  # the first worker to get here fails, once (two workers may get here at the same time)
    marker = os.path.join(os.environ["AZUREML_BI_OUTPUT_PATH"], "init-failed-once")
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return
    raise RuntimeError("model store not mounted yet")

def run(mini_batch):
    return [os.path.basename(p) for p in mini_batch]
"""


def test_a_transient_init_failure_restarts_the_worker_and_the_job_completes(tmp_path: Path) -> None:
    """One init() failure must not end the job: Azure restarts the worker process, and stops
    trying on a node only after 3 x processes-per-node failures (max_retries counts mini-batch tries)."""
    register(INIT_FAILS_ONCE, mini_batch_size=2, max_concurrency_per_instance=2,
             retry_settings={"max_retries": 1, "timeout": 30})
    names = make_inputs(tmp_path / "in", 10)
    job = Cli().invoke("--input", str(tmp_path / "in"))
    assert job["status"] == "Completed", job
    assert sorted(lines(job["output_file"])) == names
    errors = "".join(p.read_text() for p in (Path(job["job_dir"]) / layout.LOG_USER_ERROR).rglob("*.txt"))
    assert errors.count("RuntimeError: model store not mounted yet") == 1


def test_a_permanent_init_failure_fails_the_job_after_3_tries_per_worker(tmp_path: Path) -> None:
    register("def init():\n    raise RuntimeError('no model here')\n\ndef run(mini_batch):\n    return mini_batch\n",
             max_concurrency_per_instance=2, retry_settings={"max_retries": 1, "timeout": 30})
    make_inputs(tmp_path / "in", 4)
    started = time.monotonic()
    job = Cli().invoke("--input", str(tmp_path / "in"), code=1)
    assert time.monotonic() - started < 60
    assert job["status"] == "Failed" and "init() failed" in job["error"], job
    assert job["counts"]["done"] == 0 and job["counts"]["failed"] == 0  # no mini-batch spent a try
    errors = "".join(p.read_text() for p in (Path(job["job_dir"]) / layout.LOG_USER_ERROR).rglob("*.txt"))
    # 3 x 2 workers, then the node gives up; the other worker may be in a 7th init() by then
    assert errors.count("RuntimeError: no model here") in (6, 7)


# -- the progress watchdog -----------------------------------------------------------------------------


def test_progress_timeout_is_azures_default_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    job = {"name": "j", "settings": {"timeout": 30}}
    assert runner.progress_timeout(job) == 3 * (30 + 30)  # 3 x (run timeout + task overhead)
    assert runner.progress_timeout({"name": "j", "settings": {"timeout": 30, "progress_update_timeout": 7}}) == 7
    monkeypatch.setenv(runner.PROGRESS_TIMEOUT_ENV, "2.5")
    assert runner.progress_timeout(job) == 2.5
    monkeypatch.setenv(runner.PROGRESS_TIMEOUT_ENV, "soon")
    with pytest.raises(UserError, match=runner.PROGRESS_TIMEOUT_ENV):
        runner.progress_timeout(job)


def test_a_stopped_supervisor_is_killed_after_the_progress_timeout_and_the_job_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kill -STOP of an instance's supervisor: no heartbeat from it any more. Without a watchdog the
    host waits for it forever (the job stays Running); with one it is killed as a dead instance."""
    monkeypatch.setenv(runner.PROGRESS_TIMEOUT_ENV, "3")
    register(NAPPING + WHERE, mini_batch_size=1, max_concurrency_per_instance=2)
    names = make_inputs(tmp_path / "in", 30)
    job_dir = Path(Cli().invoke("--input", str(tmp_path / "in"), "--no-wait", "--job-name", "frozen")["job_dir"])
    pid_file = job_dir / layout.instance_pid_file("instance-0")
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and list((job_dir / layout.DONE_DIR).glob("*.json"))):
        assert time.monotonic() < deadline, "no mini-batch finished"
        time.sleep(0.02)
    supervisor = int(pid_file.read_text())
    os.kill(supervisor, signal.SIGSTOP)
    try:
        job = wait_final("frozen", timeout=60)
    finally:
        try:
            os.kill(supervisor, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert job["status"] == "Completed", job
    assert sorted(lines(job["output_file"])) == names
    done_rows = Counter(r["Mini-batch Id"] for r in processed_rows(job) if r["Status"] == layout.STATUS_DONE)
    assert len(done_rows) == 30 and max(done_rows.values()) == 1
    assert "No progress update in 3 seconds from instance-0" in (job_dir / layout.LOG_HOST).read_text()
    # The workers ran in temp folders under the job's work/<instance>/, and the killed supervisor's
    # were removed with the rest by the host (the supervisor could not: it was killed -9).
    where = (Path(job["output_dir"]) / "where.txt").read_text().split()
    assert len(where) >= 2  # its two workers (and any started after the kill)
    work = (job_dir / layout.WORK_DIR).resolve()
    assert all(Path(w).parent == work / "instance-0" and Path(w).name.startswith("bepbuild-instance-0.")
               for w in where), where
    assert not work.exists()


def test_a_host_that_was_paused_itself_kills_no_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine slept (host and instances paused alike): on waking no instance has shown life
    for longer than the timeout, but the host could not see anything either; nobody is killed."""
    monkeypatch.setenv(runner.PROGRESS_TIMEOUT_ENV, "3")
    register(NAPPING, mini_batch_size=1)
    names = make_inputs(tmp_path / "in", 30)
    job_dir = Path(Cli().invoke("--input", str(tmp_path / "in"), "--no-wait", "--job-name", "asleep")["job_dir"])
    pid_file = job_dir / layout.instance_pid_file("instance-0")
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and list((job_dir / layout.DONE_DIR).glob("*.json"))):
        assert time.monotonic() < deadline, "no mini-batch finished"
        time.sleep(0.02)
    host = int((job_dir / layout.HOST_LOCK).read_text())
    supervisor = int(pid_file.read_text())
    for pid in (host, supervisor):
        os.kill(pid, signal.SIGSTOP)
    time.sleep(5)
    os.kill(host, signal.SIGCONT)
    time.sleep(0.5)  # the host wakes first and looks
    os.kill(supervisor, signal.SIGCONT)
    job = wait_final("asleep", timeout=60)
    assert job["status"] == "Completed", job
    assert sorted(lines(job["output_file"])) == names
    assert {r["Status"] for r in processed_rows(job)} == {layout.STATUS_DONE}
    assert "No progress update" not in (job_dir / layout.LOG_HOST).read_text()


def test_queue_writes_never_follow_a_link_and_a_linked_result_fails_the_merge(tmp_path: Path) -> None:
    """The host requeues a dead worker's claims through its folder and appends to its logs; a result
    replaced by a link would copy whatever it points to into the output. None of it is followed."""
    job = tmp_path / "job"
    (job / layout.JOB_FILE).parent.mkdir(parents=True)
    (job / layout.JOB_FILE).write_text(json.dumps({"settings": {"max_retries": 3}}))
    queue.write_queue(job, ["a", "b"], 1)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    first = queue.Claimer(job, "dead.0").claim()
    folder = Path(queue.worker_dir(job, "dead.0"))
    (folder / f"{layout.TMP_PREFIX}{first['id']}.json").symlink_to(victim)  # where requeue writes its temp file
    log = job / layout.LOG_ATTEMPTS_DIR / "dead.0.csv"
    log.parent.mkdir(parents=True)
    log.symlink_to(victim)
    assert queue.requeue_worker(job, "dead.0", "instance exited") == {first["id"]: "requeued"}
    assert victim.read_text() == "precious\n"
    assert json.loads((job / layout.PENDING_DIR / f"{first['id']}.json").read_text())["attempt"] == 1
    # a done record replaced by a link is not merged
    secret = tmp_path / "secret.txt"
    secret.write_text("root's secret\n")
    claimer = queue.Claimer(job, "i.0")
    for _ in range(2):
        batch = claimer.claim()
        queue.complete(job, "i.0", batch, f"{batch['items'][0]} row\n", 1)
    result = job / layout.DONE_DIR / f"{first['id']}.json"
    secret.write_bytes(result.read_bytes().replace(b" row", b" secret row"))  # a record, somewhere else
    result.unlink()
    result.symlink_to(secret)
    with pytest.raises(OSError, match="symbolic link"):
        queue.merge_results(job, tmp_path / "out" / "predictions.csv")
    assert not (tmp_path / "out" / "predictions.csv").exists()


# -- a job does not depend on the process that submitted it -------------------------------------------


def _kill_detached_host(job_dir: Path) -> None:
    """kill -9 of the background host of `invoke --no-wait` (its pid is in the host lock)."""
    deadline = time.monotonic() + 30
    while (pid := int((job_dir / layout.HOST_LOCK).read_text() or 0)) in (0, os.getpid()):
        assert time.monotonic() < deadline, "the background host never took the lock"  # invoke ran in-process
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)


def test_a_no_wait_job_completes_and_merges_once_after_its_host_is_killed(tmp_path: Path) -> None:
    """`invoke --no-wait` returns once the instances run; its background host killed right then, the
    instances' coordinator still merges the output once and `job show` records the job Completed."""
    register(NAPPING, mini_batch_size=1, max_concurrency_per_instance=2,
             retry_settings={"max_retries": 1, "timeout": 30})
    names = make_inputs(tmp_path / "in", 40)
    cli = Cli()
    queued = cli.invoke("--input", str(tmp_path / "in"), "--no-wait", "--instance-count", "2",
                        "--job-name", "on-its-own")
    assert queued["status"] == "Running"
    job_dir = Path(queued["job_dir"])
    _kill_detached_host(job_dir)
    job = wait_final("on-its-own", timeout=60)
    assert job["status"] == "Completed", job
    assert sorted(lines(job["output_file"])) == names
    assert job["counts"] == {"mini_batches": 40, "done": 40, "failed": 0, "items_succeeded": 40, "items_failed": 0}
    rows = processed_rows(job)
    assert {r["Status"] for r in rows} == {layout.STATUS_DONE}  # one try each, none charged to the host's death
    assert Counter(r["Mini-batch Id"] for r in rows).most_common(1)[0][1] == 1
    assert {r["Process"].rpartition(".")[0] for r in rows} == {"instance-0", "instance-1"}
    assert len([p for p in (job_dir / layout.STATE_DIR).iterdir() if p.name.startswith("lease.")]) == 1
    assert "completed" in (job_dir / layout.LOG_RESULT).read_text()
    assert not list(Path(job["output_dir"]).glob(f".*{layout.MERGE_TMP_INFIX}*"))


FAIL_SOME = """
import os, time

def run(mini_batch):
    time.sleep(0.1)
    if any("bad" in os.path.basename(p) for p in mini_batch):
        raise ValueError("bad input")
    return [os.path.basename(p) for p in mini_batch]
"""


def test_the_error_threshold_holds_without_a_host(tmp_path: Path) -> None:
    register(FAIL_SOME, mini_batch_size=1, retry_settings={"max_retries": 1, "timeout": 30})
    make_inputs(tmp_path / "in", 30)
    for i in range(3):
        (tmp_path / "in" / f"bad-{i}.txt").write_text("!")
    cli = Cli()
    queued = cli.invoke("--input", str(tmp_path / "in"), "--no-wait", "--error-threshold", "1",
                        "--job-name", "strict-alone")
    _kill_detached_host(Path(queued["job_dir"]))
    job = wait_final("strict-alone", timeout=60)
    assert job["status"] == "Failed" and job["error"].startswith("Exceeded error threshold"), job
    assert not Path(job["output_file"]).exists()
