"""Faults on the real engine: nothing lost, nothing scored twice.

Every test ends with the same check: each input appears in the output exactly once (or exactly
as many times as its run() answered rows), or is reported failed, never both, never twice.

- an instance container killed -9 while init() runs, while run() runs, and while the runtime
  writes a (large) result, three seeds of random kill points on a two-instance job;
- the host process killed -9 mid-run (the job goes on), then the instance merging the output killed -9
  in the act (another instance takes the merge over);
- run() calling os._exit(3), and run() leaking memory past the compute's memory limit: retries,
  init() again, failed after max_retries, error_threshold respected (counted as Azure does);
- the job folder on a full disk (a 2 MB tmpfs): one error line, then resume on a bigger disk;
- two jobs on one endpoint at once; hostile file names through a container.

The engine restart lives in test_engine_restart.py (it disturbs every other user of the engine).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hostile_names import ECHO, make_weird_inputs, read_echo_rows
from jobkit import (
    BEPBUILD,
    DOCKER,
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
    read_job_file,
    read_predictions,
    wait_final,
    wait_for,
)

from bepbuild import config
from bepbuild_runtime import layout

pytestmark = pytest.mark.docker


def failed_items(job: dict[str, Any]) -> list[str]:
    """Base names of the items of every failed mini-batch (from the queue's failed/ records)."""
    out = []
    for p in sorted((Path(job["job_dir"]) / layout.FAILED_DIR).glob("*.json")):
        out += [os.path.basename(i) for i in json.loads(p.read_text())["items"]]
    return out


def assert_accounted(job: dict[str, Any], names: list[str], rows_per_item: dict[str, int] | None = None,
                     columns: tuple[str, ...] = ("file", "size", "ratio")) -> pd.DataFrame:
    """Every input is in the output (as many rows as its run() answered, each once) or failed, not both."""
    failed = Counter(failed_items(job))
    assert max(failed.values(), default=1) == 1, f"reported failed twice: {failed}"
    out = Path(job["output_file"])
    pred = read_predictions(out, list(columns)) if out.exists() else pd.DataFrame(columns=list(columns))
    seen = Counter(pred["file"])
    both = set(seen) & set(failed)
    assert not both, f"in the output and failed: {both}"
    assert set(seen) | set(failed) == set(names), (set(names) - set(seen) - set(failed), set(seen) - set(names))
    for name, n in seen.items():
        want = (rows_per_item or {}).get(name, 1)
        assert n == want, f"{name}: {n} rows, expected {want}"
    if "row" in pred:
        dupes = pred.duplicated(subset=["file", "row"]).sum()
        assert dupes == 0, f"{dupes} rows written twice"
    return pred


def marks(job_dir: Path, output_dir: Path | None = None) -> list[list[str]]:
    path = (output_dir or job_dir / layout.OUTPUTS_DIR) / "marks.txt"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def container_pid(job: str, instance: str) -> int | None:
    """The host pid of a running instance container's first process (its supervisor), if there is one."""
    ids = job_containers(job, instance)
    if len(ids) != 1:
        return None
    res = subprocess.run([DOCKER, "inspect", "-f", "{{.State.Pid}}", ids[0]], capture_output=True, text=True)
    pid = int(res.stdout.strip() or 0) if res.returncode == 0 else 0
    return pid or None


def running_pid(job: str, instance: str) -> int:
    return wait_for(lambda: container_pid(job, instance), f"{instance} running", timeout=60, interval=0.05)


def kill_container(pid: int) -> None:
    """kill -9 of a container's first process: the kernel then kills everything in the container, at
    once (no docker CLI round trip, so a kill aimed at a 20 ms window lands in it)."""
    os.kill(pid, signal.SIGKILL)


# -- 1. an instance killed -9 in init(), in run(), while writing a result ------------------------------

# Leaves marks (phase, worker, process id) in the output folder; big items answer BIG_ROWS rows so that the
# runtime takes a while to format and write their result file.
PHASES = """
import os, time, uuid

OUT = os.environ["AZUREML_BI_OUTPUT_PATH"]
BIG_ROWS = @BIG_ROWS@
PAD = "p" * 40
ME = uuid.uuid4().hex  # pids repeat across containers (each has its own pid namespace)

def _mark(what, detail="-"):
    with open(os.path.join(OUT, "marks.txt"), "a") as f:
        f.write(f"{what} {os.environ.get('BEPBUILD_WORKER')} {ME} {detail}\\n")

def init():
    _mark("init-start")
    time.sleep(@INIT@)
    _mark("init-done")

def run(mini_batch):
    time.sleep(@RUN@)
    rows = []
    for p in mini_batch:
        name = os.path.basename(p)
        n = BIG_ROWS if "big" in name else 1
        rows.extend(f"{name} {i} {PAD}" for i in range(n))
    _mark("run-end", os.path.basename(mini_batch[0]))
    return rows
"""
BIG_ROWS = 400_000
INIT_SECONDS = 2.0
RUN_SECONDS = 0.3


def phases_script(init: float = INIT_SECONDS, run: float = RUN_SECONDS, big_rows: int = BIG_ROWS) -> str:
    return PHASES.replace("@INIT@", repr(init)).replace("@RUN@", repr(run)).replace("@BIG_ROWS@", str(big_rows))


def wait_gone(pid: int, timeout: float = 10) -> None:
    """Until process `pid` has exited (gone, or a zombie)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} did not die")


def claims(job_dir: Path) -> list[tuple[str, str]]:
    """(worker, mini-batch id) of every claim under running/ (held, in run(), or growing into its record)."""
    found = []
    running = job_dir / layout.RUNNING_DIR
    for worker in os.listdir(running) if running.exists() else []:
        try:
            names = os.listdir(running / worker)
        except FileNotFoundError:
            continue
        found += [(worker, n[:-len(".json")]) for n in names if n.endswith(".json") and not n.startswith(".")]
    return found


def process_tree(pid: int) -> list[int]:
    """`pid` and every process below it, parents first (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop(0))
        todo += children.get(tree[-1], [])
    return tree


def proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_instance(container: int, known: list[int]) -> list[int]:
    """SIGSTOP the processes `known` at once, then any other process of the instance (one forked
    meanwhile), until every one is stopped; return them all."""
    tree: list[int] = []
    new = known or process_tree(container)
    while new:
        signal_all(new, signal.SIGSTOP)  # parents first: a stopped supervisor forks no worker
        tree += new
        deadline = time.monotonic() + 10
        while any(proc_state(pid) not in ("T", "t", "Z", "X") for pid in tree):
            assert time.monotonic() < deadline, "an instance's processes did not stop"
            time.sleep(0.0002)
        new = [pid for pid in process_tree(container) if pid not in tree]
    return tree


def stop_in_write(container: int, claim: Path, done: Path) -> bool:
    """Step an instance (SIGSTOP every process in it, look, SIGCONT for 0.2 ms) until its claim `claim`
    has grown into its record and is not yet renamed into `done`: True, with the instance left stopped
    there. False when the claim went away (recorded or requeued) first. Looking only while the
    instance is stopped never races the write; a stop that arrives in the write() (megabytes: longer
    than a step) takes effect when it returns, before the rename."""
    give_up = time.monotonic() + 120
    tree = stop_instance(container, [])
    while True:
        assert time.monotonic() < give_up, "never stopped the instance in a result's write"
        try:
            grown = claim.stat().st_size > 4096  # a claim's line is ~60 bytes here
        except FileNotFoundError:
            grown = None
        if grown and not done.exists():
            return True
        signal_all(tree, signal.SIGCONT)
        if grown is None:
            return False
        time.sleep(0.0002)
        tree = stop_instance(container, tree)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_instance_killed_in_init_run_and_result_write(deploy, jobs: list[str], tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    dep = deploy(phases_script(), mini_batch_size=1, instance_count=2, max_retries=3, timeout=60)
    names = [f"{i:03d}-{'big' if i in (9, 15, 21, 27) else 'doc'}.txt" for i in range(30)]
    inputs = make_inputs(tmp_path / "in", names)
    queued = invoke(dep, inputs, "--no-wait", jobs=jobs)
    name, job_dir = queued["name"], Path(queued["job_dir"])
    kills: dict[str, str] = {}  # phase -> the init() pid or the mini-batch id it hit
    killed = 0

    # (a) in init(): an instance whose worker started init() and has not finished it
    victim = f"instance-{rnd.randrange(2)}"
    start = wait_for(lambda: next((m for m in marks(job_dir)
                                   if m[0] == "init-start" and layout.instance_of(m[1]) == victim), None),
                     f"{victim} in init()", timeout=60, interval=0.02)
    pid = running_pid(name, victim)
    time.sleep(rnd.uniform(0, INIT_SECONDS * 0.5))
    kill_container(pid)
    killed += 1
    kills["init"] = start[2]  # this worker process must never finish its init()

    # (b) in run(): a mini-batch the victim claims from now on, killed at a random moment of its run()
    victim = f"instance-{rnd.randrange(2)}"
    folder = job_dir / layout.RUNNING_DIR / f"{victim}.0"

    def held() -> set[str]:
        try:
            return {n[:-5] for n in os.listdir(folder) if n.endswith(".json") and not n.startswith(".")}
        except FileNotFoundError:
            return set()

    stale = held()  # a claim already half run when we started looking does not count
    bid = wait_for(lambda: next(iter(held() - stale), None), f"{victim} claiming a mini-batch", timeout=60,
                   interval=0.005)
    pid = running_pid(name, victim)
    time.sleep(rnd.uniform(0, RUN_SECONDS * 0.5))
    kill_container(pid)
    killed += 1
    kills["run"] = bid

    # (c) while writing a big result: its claim has grown into its record, not yet renamed into done/.
    # The write lasts milliseconds, so the instance holding a big mini-batch's claim is stepped until
    # it is stopped right there (stop_in_write), then killed.
    big_ids = {layout.mini_batch_id(i) for i, n in enumerate(names) if "big" in n}
    deadline = time.monotonic() + 120
    while "write" not in kills:
        assert time.monotonic() < deadline, f"never caught a result being written (kills so far: {kills})"
        assert read_job_file(job_dir)["status"] == "Running", f"the job ended first (kills so far: {kills})"
        for worker, bid in claims(job_dir):
            pid = container_pid(name, layout.instance_of(worker)) if bid in big_ids else None
            claim = job_dir / layout.RUNNING_DIR / worker / f"{bid}.json"
            if pid and stop_in_write(pid, claim, job_dir / layout.DONE_DIR / f"{bid}.json"):
                kill_container(pid)  # a stopped process dies at once on SIGKILL: the rename never happens
                killed += 1
                wait_gone(pid)
                assert not (job_dir / layout.DONE_DIR / f"{bid}.json").exists()
                kills["write"] = bid
                break
        time.sleep(0.005)

    job = wait_final(job_dir, timeout=240)
    assert job["status"] == "Completed", job
    assert job["counts"] == {"mini_batches": 30, "done": 30, "failed": 0, "items_succeeded": 30, "items_failed": 0}
    big = {n: BIG_ROWS for n in names if "big" in n}
    pred = assert_accounted(job, names, big, columns=("file", "row", "pad"))
    assert len(pred) == 26 + 4 * BIG_ROWS
    # the kills landed where they were meant to
    m = marks(job_dir)
    assert not any(x[0] == "init-done" and x[2] == kills["init"] for x in m), "the init() kill came too late"
    rows = processed(job)
    for phase in ("run", "write"):
        tries = sorted((int(r["Picked Count"]), r["Status"]) for r in rows if r["Mini-batch Id"] == kills[phase])
        assert tries == [(1, layout.STATUS_LOST), (2, layout.STATUS_DONE)], (phase, kills[phase], tries)
    done_rows = Counter(r["Mini-batch Id"] for r in rows if r["Status"] == layout.STATUS_DONE)
    assert len(done_rows) == 30 and max(done_rows.values()) == 1
    # each kill started the instance again, and its worker called init() again
    assert sum(1 for x in m if x[0] == "init-start") == 2 + killed
    assert not job_containers(name, all_=True)


# -- 2. the host killed mid-run, then the coordinator killed during the final merge --------------------


def kill_host_when(host: subprocess.Popen[bytes], ready: Callable[[], Any], what: str) -> Any:
    """SIGKILL the host process as soon as `ready()` is true; return what it returned."""
    try:
        deadline = time.monotonic() + 240
        while not (found := ready()):
            assert host.poll() is None, f"the host ended before {what}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.002)
    finally:
        host.send_signal(signal.SIGKILL)
        host.wait()
    return found


def coordinator_instance(job_dir: Path) -> str:
    """The instance holding the job's coordinator lease (the latest term)."""
    leases = sorted((job_dir / layout.STATE_DIR).glob("lease.*"))
    return json.loads(leases[-1].read_text())["holder"]


def test_host_killed_mid_run_then_the_coordinator_killed_during_the_final_merge(
    deploy, jobs: list[str], tmp_path: Path,
) -> None:
    """No host: the instances finish the job themselves. The one merging the output (the coordinator)
    is killed -9 in the act; the other takes its lease over, removes its temp file and merges once."""
    # 24 results of 120k rows (~7 MB each): the merge takes long enough to be caught in the act.
    dep = deploy(phases_script(init=0.0, run=0.2, big_rows=120_000), mini_batch_size=1, instance_count=2)
    names = [f"{i:03d}-big.txt" for i in range(24)]
    inputs = make_inputs(tmp_path / "in", names)
    name = f"job-{uuid.uuid4().hex[:12]}"
    jobs.append(name)
    job_dir = config.jobs_dir() / name
    out_dir = job_dir / layout.OUTPUTS_DIR
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": os.environ.copy()}

    # 1. the invoking host, killed mid-run: nobody will start an instance again
    host = subprocess.Popen([str(BEPBUILD), "batch-endpoint", "invoke", "--name", dep.endpoint, "--input",
                             str(inputs), "--job-name", name, "-q", "-o", "json"], **quiet)
    kill_host_when(host, lambda: job_dir.is_dir() and len(done_ids(job_dir)) >= 4, "4 finished mini-batches")
    assert len(done_ids(job_dir)) < 24

    # 2. the coordinator, killed while it merges (its temp file next to the output). Both instances'
    # pids are looked up now: asking the engine after the merge has begun took long enough for a fast
    # merge to end and its container to exit first.
    pids = {instance: running_pid(name, instance) for instance in ("instance-0", "instance-1")}

    def merging() -> list[str]:
        try:
            return [n for n in os.listdir(out_dir) if layout.MERGE_TMP_INFIX in n]
        except FileNotFoundError:
            return []

    deadline = time.monotonic() + 240
    while not (temp := merging()):
        assert time.monotonic() < deadline, "never caught the final merge"
        time.sleep(0.002)
    victim = coordinator_instance(job_dir)
    kill_container(pids[victim])
    assert not (out_dir / "predictions.csv").exists(), "the merge finished before the kill: make it bigger"
    assert len(done_ids(job_dir)) == 24

    # 3. the other instance takes the lease over: Completed, nothing scored twice, no temp file left behind
    job = wait_final(job_dir, timeout=120)
    assert job["status"] == "Completed", job
    assert coordinator_instance(job_dir) != victim
    assert not (out_dir / temp[0]).exists()
    assert sorted(os.listdir(out_dir)) == ["marks.txt", "predictions.csv"]
    assert_accounted(job, names, {n: 120_000 for n in names}, columns=("file", "row", "pad"))
    done_rows = Counter(r["Mini-batch Id"] for r in processed(job) if r["Status"] == layout.STATUS_DONE)
    assert len(done_rows) == 24 and max(done_rows.values()) == 1
    assert not job_containers(name, all_=True)


# -- 3. run() exits the process, run() runs out of memory ------------------------------------------------

CRASHING = """
import os

def init():
    with open(os.path.join(os.environ["AZUREML_BI_OUTPUT_PATH"], "init-calls.txt"), "a") as f:
        f.write(f"{os.environ.get('BEPBUILD_WORKER')} {os.getpid()}\\n")

def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    if any(n.startswith("exit") for n in names):
        os._exit(3)
    if any(n.startswith("oom") for n in names):
        hog = []
        while True:  # past the instance's 256 MB: the kernel kills this worker
            hog.append(b"\\x01" * (16 << 20))
    return [f"{n} 0 0" for n in names]
"""


@pytest.fixture
def tiny_compute(home: Path) -> Iterator[str]:
    bep("compute", "create", "-n", "tiny", "--max-instances", "2", "--memory", "256m", "-o", "none")
    yield "azureml:tiny"


def test_exit_and_out_of_memory_are_retried_then_failed_as_azure_counts(
    deploy, jobs: list[str], tmp_path: Path, tiny_compute: str,
) -> None:
    dep = deploy(CRASHING, mini_batch_size=1, instance_count=2, max_retries=2, compute=tiny_compute)
    bad = ["exit-0.txt", "exit-1.txt", "oom-0.txt", "oom-1.txt"]
    names = numbered(10) + bad
    inputs = make_inputs(tmp_path / "in", names)

    # 4 failed items, threshold 4: not above it, the job completes with them reported failed
    job = invoke(dep, inputs, "--error-threshold", "4", jobs=jobs, timeout=400)
    assert job["status"] == "Completed", job
    assert job["counts"] == {"mini_batches": 14, "done": 10, "failed": 4, "items_succeeded": 10, "items_failed": 4}
    assert sorted(failed_items(job)) == sorted(bad)
    assert_accounted(job, names)
    by_id: dict[str, list[dict[str, str]]] = {}
    for row in processed(job):
        by_id.setdefault(row["Mini-batch Id"], []).append(row)
    for rs in by_id.values():
        detail = rs[0]["Mini-batch Detail"]
        if any(b in detail for b in bad):
            # max_retries tries, each one a lost worker: exit code 3, or killed (-9) by the OOM killer
            assert [r["Status"] for r in rs] == [layout.STATUS_LOST] * 2, rs
            assert sorted(int(r["Picked Count"]) for r in rs) == [1, 2]
            code = "returncode 3" if "exit-" in detail else "returncode -9"
            assert all(code in r["Error Message"] for r in rs), rs
        else:
            assert [r["Status"] for r in rs] == [layout.STATUS_DONE], rs
    # every death brought a fresh worker, which called init() again
    assert len(init_calls(job)) == 2 + 4 * 2
    failed_record = json.loads(next((Path(job["job_dir"]) / layout.FAILED_DIR).glob("*.json")).read_text())
    assert failed_record["attempt"] == 2 and failed_record["status"] == layout.STATUS_LOST

    # threshold 1: the second failed item fails the job, and no output is written
    strict = invoke(dep, inputs, "--error-threshold", "1", code=1, jobs=jobs, timeout=400)
    assert strict["status"] == "Failed" and strict["error"].startswith("Exceeded error threshold")
    assert strict["counts"]["items_failed"] >= 2
    assert not Path(strict["output_file"]).exists()


# -- 3b. a supervisor that stops answering (kill -STOP) ---------------------------------------------------


def test_a_stopped_supervisor_in_a_container_is_killed_after_the_progress_timeout(
    deploy, jobs: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No heartbeat from an instance for progress_update_timeout: the host kills its container
    (SIGKILL reaches a stopped process; SIGTERM would wait for a SIGCONT), handles it as a dead
    instance and starts it again; the job completes, every row once."""
    from bepbuild.jobs import runner

    monkeypatch.setenv(runner.PROGRESS_TIMEOUT_ENV, "6")
    dep = deploy(phases_script(init=0.0, run=0.3, big_rows=1), mini_batch_size=1, instance_count=2)
    names = numbered(40)
    queued = invoke(dep, make_inputs(tmp_path / "in", names), "--no-wait", jobs=jobs)
    name, job_dir = queued["name"], Path(queued["job_dir"])
    wait_for(lambda: len(done_ids(job_dir)) >= 2, "2 finished mini-batches", timeout=120, interval=0.05)
    pid = running_pid(name, "instance-0")
    os.kill(pid, signal.SIGSTOP)
    job = wait_final(job_dir, timeout=180)
    assert job["status"] == "Completed", job
    assert_accounted(job, names, columns=("file", "row", "pad"))
    done_rows = Counter(r["Mini-batch Id"] for r in processed(job) if r["Status"] == layout.STATUS_DONE)
    assert len(done_rows) == 40 and max(done_rows.values()) == 1
    assert "No progress update in 6 seconds from instance-0" in (job_dir / layout.LOG_HOST).read_text()
    assert not job_containers(name, all_=True)


# -- 4. the job folder on a full disk --------------------------------------------------------------------


@pytest.fixture
def small_jobs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder = tmp_path / "small-disk"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], check=True)
    monkeypatch.setenv("BEPBUILD_JOBS_DIR", str(folder))
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


BIG_ROWS_SCRIPT = """
import os

def run(mini_batch):
    return [f"{os.path.basename(p)} {i} {'w' * 1000}" for p in mini_batch for i in range(100)]
"""


def test_full_job_folder_stops_with_one_line_then_resume_completes(
    deploy, jobs: list[str], tmp_path: Path, small_jobs_dir: Path,
) -> None:
    dep = deploy(BIG_ROWS_SCRIPT, mini_batch_size=1, instance_count=2)
    names = numbered(40)  # 40 x 100 KB of results: twice what the disk holds
    inputs = make_inputs(tmp_path / "in", names)
    out_dir = tmp_path / "scores"
    name = f"job-{uuid.uuid4().hex[:12]}"
    jobs.append(name)
    res = bep("batch-endpoint", "invoke", "--name", dep.endpoint, "--input", str(inputs), "--job-name", name,
              "--output-path", str(out_dir), "-q", "-o", "json", code=1, timeout=300)
    assert res.stdout == "" and "Traceback" not in res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no space left on device"), res.stderr
    assert f"bepbuild job resume --name {name}" in lines[0]
    job_dir = small_jobs_dir / name
    stopped = bep_json("job", "show", "--name", name)
    assert stopped["status"] == "Failed" and "no space left" in stopped["error"]
    before = done_ids(job_dir)
    assert 0 < len(before) < 40
    # nothing is stranded: every mini-batch is done or back in pending, with no try counted for the disk
    pending = [json.loads(p.read_text()) for p in (job_dir / layout.PENDING_DIR).glob("*.json")]
    assert len(before) + len(pending) == 40 and all(b["attempt"] == 0 for b in pending)
    assert not job_containers(name, all_=True)

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_jobs_dir)], check=True)
    job = bep_json("job", "resume", "--name", name, "-q", timeout=300)
    assert job["status"] == "Completed", job
    assert job["counts"] == {"mini_batches": 40, "done": 40, "failed": 0, "items_succeeded": 40, "items_failed": 0}
    assert_accounted(job, names, {n: 100 for n in names}, columns=("file", "row", "pad"))
    done_rows = Counter(r["Mini-batch Id"] for r in processed(job) if r["Status"] == layout.STATUS_DONE)
    assert len(done_rows) == 40 and max(done_rows.values()) == 1
    assert done_ids(job_dir) >= before


# -- 5. two jobs on one endpoint at once -----------------------------------------------------------------


def test_two_jobs_on_one_endpoint_at_once(deploy, jobs: list[str], tmp_path: Path) -> None:
    dep = deploy(frame_script(delay=0.1), mini_batch_size=2, instance_count=2)
    first, second = numbered(24, "a"), numbered(20, "b")
    queued = [invoke(dep, make_inputs(tmp_path / "a", first), "--no-wait", jobs=jobs),
              invoke(dep, make_inputs(tmp_path / "b", second), "--no-wait", jobs=jobs)]
    assert queued[0]["output_file"] != queued[1]["output_file"]
    ends = [wait_final(Path(q["job_dir"]), timeout=240) for q in queued]
    for job, names in zip(ends, (first, second), strict=True):
        assert job["status"] == "Completed", job
        assert job["counts"]["items_succeeded"] == len(names) and job["counts"]["items_failed"] == 0
        assert_exactly_once(read_predictions(job["output_file"], ["file", "size", "ratio"]), names)
        assert not job_containers(job["name"], all_=True)


# -- 6. hostile file names through a container ---------------------------------------------------------------


def test_hostile_file_names_in_a_container(deploy, jobs: list[str], tmp_path: Path) -> None:
    dep = deploy(ECHO, mini_batch_size=4, instance_count=2)
    expected = make_weird_inputs(tmp_path / "in")
    job = invoke(dep, tmp_path / "in", jobs=jobs)
    assert job["status"] == "Completed", job
    assert job["counts"]["items_succeeded"] == len(expected) and job["counts"]["items_failed"] == 0
    assert read_echo_rows(job["output_file"]) == expected
