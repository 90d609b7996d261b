"""`python -m bepbuild_runtime` as real subprocesses on a real job folder, with small scoring scripts."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bepbuild_runtime import layout, queue
from bepbuild_runtime.record import read as read_record

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"
PYTHON = sys.executable  # the interpreter the runtime runs under: set per test by `runtime_python`


@pytest.fixture(autouse=True, params=["host", "oldest"])
def runtime_python(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs the runtime under the host's Python and under its minimum (layout.MIN_PYTHON)."""
    python = sys.executable if request.param == "host" else request.getfixturevalue("oldest_python")
    monkeypatch.setattr(sys.modules[__name__], "PYTHON", python)
    return python

# One scoring script whose behaviour depends on the file names of the mini-batch.
SCRIPT = """
import os, sys, time

MARKS = os.environ["MARKS"]

def _mark(name, text):
    with open(os.path.join(MARKS, name), "a") as f:
        f.write(text + "\\n")

def init():
    _mark("init.txt", os.environ["BEPBUILD_WORKER"])
    print("hello from init", flush=True)
    if os.environ.get("FAIL_INIT") == "raise":
        raise RuntimeError("init is broken")
    if os.environ.get("FAIL_INIT") == "exit":
        os._exit(5)

def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    for name in names:
        if name.startswith("bad"):
            raise ValueError("cannot score " + name)
        if name.startswith("slow"):
            time.sleep(60)
        if name.startswith("crashonce"):
            marker = os.path.join(MARKS, name + ".crashed")
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(3)
        if name.startswith("nap"):
            time.sleep(0.1)
        if name.startswith("crashall"):
            os._exit(3)
        time.sleep(float(os.environ.get("RUN_SECONDS", "0")))
        with open(os.path.join(os.path.dirname(mini_batch[0]), name)) as f:
            f.read()
    env = os.environ
    return [f"{n} {env['OMP_NUM_THREADS']} {env['MKL_NUM_THREADS']} {env['BEPBUILD_WORKER']} "
            f"{env.get('CUDA_VISIBLE_DEVICES', '-')}" for n in names]

def shutdown():
    _mark("shutdown.txt", os.environ["BEPBUILD_WORKER"])
"""


def make_job(tmp_path: Path, files: list[str], script: str = SCRIPT, **settings: Any) -> dict[str, Path]:
    """A job folder with its queue, an input folder and a code folder."""
    paths = {name: tmp_path / name for name in ("job", "in", "code", "marks", "pkg")}
    for p in paths.values():
        p.mkdir()
    for name in files:
        (paths["in"] / name).write_text(name)
    (paths["code"] / "score.py").write_text(textwrap.dedent(script))
    (paths["pkg"] / "bepbuild_runtime").symlink_to(RUNTIME)  # importable however the project is installed
    env_vars = {"MARKS": str(paths["marks"]), **settings.pop("environment_variables", {})}
    job = {"settings": {"mini_batch_size": 2, "max_concurrency_per_instance": 1, "max_retries": 3,
                        "timeout": 30, "environment_variables": env_vars, **settings},
           "scoring_script": "score.py"}
    (paths["job"] / layout.JOB_FILE).write_text(json.dumps(job))
    queue.write_queue(paths["job"], sorted(files), job["settings"]["mini_batch_size"])
    return paths


def start(paths: dict[str, Path], instance: str = "i0", new_session: bool = False,
          **env: str) -> subprocess.Popen[str]:
    full_env = {**os.environ, "PYTHONPATH": str(paths["pkg"]), layout.ENV_CODE_DIR: str(paths["code"]), **env}
    full_env.pop(layout.ENV_OUTPUT_PATH, None)
    return subprocess.Popen(
        [PYTHON, "-m", "bepbuild_runtime", "--job-dir", str(paths["job"]),
         "--input-dir", str(paths["in"]), "--instance", instance],
        env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=new_session)


def run(paths: dict[str, Path], instance: str = "i0", timeout: float = 60, **env: str) -> int:
    proc = start(paths, instance, **env)
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode not in (0, layout.EXIT_STOPPED, layout.EXIT_INIT_FAILED):
        pytest.fail(f"runtime exited {proc.returncode}\n{out}\n{err}")
    return proc.returncode


def attempts(job: Path) -> list[dict[str, str]]:
    rows = []
    for f in sorted((job / layout.LOG_ATTEMPTS_DIR).glob("*.csv")):
        with open(f, newline="") as fh:
            rows += list(csv.DictReader(fh))
    return rows


def marks(paths: dict[str, Path], name: str) -> list[str]:
    f = paths["marks"] / name
    return f.read_text().split() if f.exists() else []


def merged(job: Path) -> list[str]:
    """The output the instances' coordinator merged (it must be there once they all exited 0)."""
    out = job / "outputs" / "predictions.csv"
    return out.read_text().splitlines()


def test_two_instances_score_every_item_exactly_once(tmp_path: Path) -> None:
    files = [f"f{i:03d}.txt" for i in range(47)]
    # RUN_SECONDS: the job lasts long enough for the second instance's workers to start on a busy machine
    paths = make_job(tmp_path, files, mini_batch_size=4, max_concurrency_per_instance=2,
                     environment_variables={"MKL_NUM_THREADS": "7", "RUN_SECONDS": "0.1"})
    env = {layout.ENV_CPUS: "4", layout.ENV_GPUS: "3,5"}
    procs = [start(paths, "i0", **env), start(paths, "i1", **env)]
    for p in procs:
        p.communicate(timeout=60)
        assert p.returncode == 0
    lines = merged(paths["job"])
    assert sorted(line.split()[0] for line in lines) == files  # all, once, in id order
    assert [line.split()[0] for line in lines] == files
    for line in lines:
        _, omp, mkl, worker, cuda = line.split()
        assert omp == "2" and mkl == "7"  # 4 CPUs / 2 workers; the user's own MKL value wins
        assert cuda == {"0": "3", "1": "5"}[worker.rpartition(".")[2]]
    counts = queue.counts(paths["job"])
    assert (counts.done, counts.failed, counts.items_succeeded, counts.items_failed) == (12, 0, 47, 0)
    assert sorted(marks(paths, "init.txt")) == ["i0.0", "i0.1", "i1.0", "i1.1"]
    assert sorted(marks(paths, "shutdown.txt")) == ["i0.0", "i0.1", "i1.0", "i1.1"]
    rows = attempts(paths["job"])
    assert len(rows) == 12 and {r["Status"] for r in rows} == {layout.STATUS_DONE}
    assert list(rows[0]) == list(layout.PROCESSED_COLUMNS)
    assert not os.listdir(paths["job"] / layout.RUNNING_DIR)  # folders cleaned on exit
    stdout = paths["job"] / layout.LOG_USER_STDOUT / "i0" / "i0.0.stdout.txt"
    assert "hello from init" in stdout.read_text()
    node = "".join(f.read_text() for f in (paths["job"] / layout.LOG_SYS_NODE).glob("*/*.*.txt"))
    assert node.count("RUN_DONE") == 12


def test_failing_run_is_retried_max_retries_times_then_failed(tmp_path: Path) -> None:
    files = [f"ok{i}.txt" for i in range(8)] + ["bad1.txt", "bad2.txt"]
    paths = make_job(tmp_path, files, mini_batch_size=2, max_retries=3)
    assert run(paths) == 0
    job = paths["job"]
    failed = sorted(os.listdir(job / layout.FAILED_DIR))
    assert failed == ["000000000.json"]  # bad1, bad2 sort first and share the first mini-batch
    record = json.loads((job / layout.FAILED_DIR / failed[0]).read_text())
    assert record["attempt"] == 3 and "cannot score bad1.txt" in record["error"]
    rows = [r for r in attempts(job) if r["Status"] == layout.STATUS_EXCEPTION]
    assert [(r["Mini-batch Id"], r["Picked Count"]) for r in rows] == [("000000000", str(i)) for i in (1, 2, 3)]
    counts = queue.counts(job)
    assert (counts.items_succeeded, counts.items_failed, counts.done, counts.failed) == (8, 2, 4, 1)
    assert len(merged(job)) == 8
    errors = (job / layout.LOG_USER_ERROR / "i0" / "i0.0.txt").read_text()
    assert errors.count("Traceback") == 3 and "ValueError: cannot score bad1.txt" in errors


def test_timeout_kills_the_worker_and_a_fresh_one_calls_init_again(tmp_path: Path) -> None:
    files = ["a.txt", "slow.txt", "z1.txt", "z2.txt"]
    paths = make_job(tmp_path, files, mini_batch_size=1, max_retries=2, timeout=1)
    started = time.monotonic()
    assert run(paths) == 0
    assert time.monotonic() - started < 20
    job = paths["job"]
    assert marks(paths, "init.txt") == ["i0.0"] * 3  # first start + one restart per timeout
    record = json.loads((job / layout.FAILED_DIR / "000000001.json").read_text())
    assert record["status"] == layout.STATUS_TIMEOUT and record["items"] == ["slow.txt"]
    assert "did not finish in 1 seconds" in record["error"]
    timeouts = [r for r in attempts(job) if r["Status"] == layout.STATUS_TIMEOUT]
    assert [r["Picked Count"] for r in timeouts] == ["1", "2"]
    assert all(float(r["Run Method Seconds"]) >= 1 for r in timeouts)
    assert sorted(line.split()[0] for line in merged(job)) == ["a.txt", "z1.txt", "z2.txt"]


def test_worker_that_dies_has_its_batch_requeued(tmp_path: Path) -> None:
    files = ["a.txt", "crashall.txt", "crashonce.txt", "d.txt"]
    paths = make_job(tmp_path, files, mini_batch_size=1, max_retries=2)
    assert run(paths) == 0
    job = paths["job"]
    assert sorted(line.split()[0] for line in merged(job)) == ["a.txt", "crashonce.txt", "d.txt"]
    record = json.loads((job / layout.FAILED_DIR / "000000001.json").read_text())
    assert record["status"] == layout.STATUS_LOST and record["items"] == ["crashall.txt"]
    assert "returncode 3" in record["error"]
    done = read_record(str(job / layout.DONE_DIR / "000000002.json"))
    assert done["attempt"] == 1  # crashonce: lost once, then done
    lost = [r["Mini-batch Id"] for r in attempts(job) if r["Status"] == layout.STATUS_LOST]
    assert sorted(lost) == ["000000001", "000000001", "000000002"]
    assert len(marks(paths, "init.txt")) == 4  # a new worker after each of the three deaths


DATAFRAME_SCRIPT = """
import os
import pandas as pd

def init():
    pass

def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    return pd.DataFrame({"file": names, "label": ["class " + n[0] for n in names],
                         "probability": [0.5] * len(names)})
"""


@pytest.mark.parametrize("runtime_python", ["host"], indirect=True)  # pandas is in the host's venv only
def test_dataframe_output_is_formatted_like_azure(tmp_path: Path) -> None:
    files = ["a one.png", "b.png", "c.png"]
    paths = make_job(tmp_path, files, script=DATAFRAME_SCRIPT, mini_batch_size=2)
    assert run(paths) == 0
    out = paths["job"] / "outputs" / "predictions.csv"  # merged by the instance's coordinator
    assert out.read_text() == '"a one.png" "class a" 0.5\nb.png "class b" 0.5\nc.png "class c" 0.5\n'
    back = pd.read_csv(out, header=None, names=["file", "label", "probability"], sep=" ")
    assert back["file"].tolist() == files


SUMMARY_SCRIPT = """
import os

def init():
    pass

def run(mini_batch):
    out = os.environ["AZUREML_BI_OUTPUT_PATH"]
    for p in mini_batch:
        with open(os.path.join(out, os.path.basename(p) + ".out"), "w") as f:
            f.write("x")
    return mini_batch[:1]  # only the first item counts as a success
"""


def test_summary_only_counts_and_writes_no_results(tmp_path: Path) -> None:
    files = [f"s{i}.csv" for i in range(5)]
    paths = make_job(tmp_path, files, script=SUMMARY_SCRIPT, mini_batch_size=2, output_action="summary_only")
    assert run(paths) == 0
    job = paths["job"]
    assert queue.merge_results(job, tmp_path / "merged.csv") == 0  # no record has rows
    assert (tmp_path / "merged.csv").read_text() == ""
    counts = queue.counts(job)
    assert (counts.done, counts.items_succeeded, counts.items_failed) == (3, 3, 2)
    assert sorted(os.listdir(job / "outputs")) == [f + ".out" for f in files]


@pytest.mark.parametrize("how", ["raise", "exit"])
def test_init_failing_3_times_per_worker_stops_the_instance(tmp_path: Path, how: str) -> None:
    # Azure: a worker whose init() fails is restarted; a node stops trying after 3 x its workers
    # failures (max_retries is about mini-batches, not init()).
    paths = make_job(tmp_path, ["a.txt", "b.txt"], max_retries=1, environment_variables={"FAIL_INIT": how})
    assert run(paths) == layout.EXIT_INIT_FAILED
    job = paths["job"]
    assert marks(paths, "init.txt") == ["i0.0"] * 3
    assert "init() failed 3 times in a row" in (job / layout.LOG_SYS_NODE / "i0" / "_main.txt").read_text()
    if how == "raise":
        assert "RuntimeError: init is broken" in (job / layout.LOG_USER_ERROR / "i0" / "i0.0.txt").read_text()
    pending = json.loads((job / layout.PENDING_DIR / "000000000.json").read_text())
    assert pending["attempt"] == 0  # init failures do not spend the mini-batch's tries


def test_cancel_flag_stops_claiming(tmp_path: Path) -> None:
    paths = make_job(tmp_path, ["a.txt", "b.txt"])
    (paths["job"] / layout.CANCEL_FLAG).touch()
    assert run(paths) == layout.EXIT_STOPPED
    assert len(os.listdir(paths["job"] / layout.PENDING_DIR)) == 1
    assert os.listdir(paths["job"] / layout.DONE_DIR) == []


def _wait_for_done(job: Path, n: int = 1) -> None:
    deadline = time.monotonic() + 20
    while len(os.listdir(job / layout.DONE_DIR)) < n and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["cancel", "outcome", "sigterm", "sigterm-group"])
def test_stop_mid_job_finishes_in_flight_work_and_loses_nothing(tmp_path: Path, how: str) -> None:
    files = [f"nap{i:02d}.txt" for i in range(40)]
    paths = make_job(tmp_path, files, mini_batch_size=1, max_concurrency_per_instance=2)
    job = paths["job"]
    proc = start(paths, new_session=True)
    try:
        _wait_for_done(job)
        if how == "sigterm":
            proc.terminate()
        elif how == "sigterm-group":  # as the process backend stops an instance
            os.killpg(proc.pid, signal.SIGTERM)
        elif how == "cancel":
            (job / layout.CANCEL_FLAG).touch()
        else:  # another instance's coordinator ended the job (error threshold)
            (job / layout.STATE_DIR).mkdir(exist_ok=True)
            (job / layout.OUTCOME_FILE).write_text(json.dumps({"status": "Failed", "error": "threshold"}))
        proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == layout.EXIT_STOPPED
    done, pending = os.listdir(job / layout.DONE_DIR), os.listdir(job / layout.PENDING_DIR)
    assert len(done) < 40 and len(done) + len(pending) == 40  # stopped early, nothing lost
    assert os.listdir(job / layout.RUNNING_DIR) == []
    assert all(json.loads((job / layout.PENDING_DIR / p).read_text())["attempt"] == 0 for p in pending)
    assert sorted(marks(paths, "shutdown.txt")) == ["i0.0", "i0.1"]


def test_workers_die_with_their_supervisor(tmp_path: Path) -> None:
    paths = make_job(tmp_path, [f"nap{i:02d}.txt" for i in range(40)], mini_batch_size=1,
                     max_concurrency_per_instance=2)
    job = paths["job"]
    proc = start(paths)
    try:
        _wait_for_done(job)
        node = "".join(f.read_text() for f in (job / layout.LOG_SYS_NODE / "i0").glob("i0.*.txt"))
        pids = [int(w.split("=")[1]) for w in node.split() if w.startswith("pid=")]
        assert pids
        proc.kill()
        proc.communicate(timeout=10)
    finally:
        proc.kill()
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)
    done = len(os.listdir(job / layout.DONE_DIR))
    time.sleep(0.5)
    assert len(os.listdir(job / layout.DONE_DIR)) == done  # nobody goes on working


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


def test_waits_for_claims_of_a_dead_instance_until_the_host_requeues_them(tmp_path: Path) -> None:
    paths = make_job(tmp_path, ["a.txt", "b.txt", "c.txt"], mini_batch_size=1)
    job = paths["job"]
    queue.Claimer(job, "dead.0").claim()  # an instance that died holding a.txt
    queue.Claimer(job, "i0.0").claim()  # a claim left by an earlier life of this very instance
    proc = start(paths)
    try:
        deadline = time.monotonic() + 20
        while len(os.listdir(job / layout.DONE_DIR)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.6)
        assert proc.poll() is None  # still waiting: a.txt is claimed by dead.0
        assert sorted(os.listdir(job / layout.DONE_DIR)) == ["000000001.json", "000000002.json"]
        assert (job / layout.RUNNING_DIR / "i0.0" / layout.HEARTBEAT_FILE).exists()
        assert queue.requeue_worker(job, "dead.0", "instance dead.0 exited") == {"000000000": "requeued"}
        proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert len(os.listdir(job / layout.DONE_DIR)) == 3
    # The earlier life's claim went back untouched: the host charges a try when an instance dies on
    # its own; what a new life finds was stopped (or lost with its host), not the mini-batch's fault.
    assert read_record(str(job / layout.DONE_DIR / "000000001.json"))["attempt"] == 0


@pytest.mark.parametrize("breakage", ["no job.json", "no script"])
def test_configuration_errors_exit_2(tmp_path: Path, breakage: str) -> None:
    paths = make_job(tmp_path, ["a.txt"])
    if breakage == "no job.json":
        os.unlink(paths["job"] / layout.JOB_FILE)
    else:
        os.unlink(paths["code"] / "score.py")
    proc = start(paths)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == layout.EXIT_USAGE
    assert ("job.json" if breakage == "no job.json" else "scoring script not found") in err


LONG_SCRIPT = """
def run(mini_batch):
    return [p.rsplit("/", 1)[1] + " part" + str(i) for p in mini_batch for i in range(3)]
"""


def test_more_rows_than_inputs_are_kept_but_capped_in_the_counts(tmp_path: Path) -> None:
    paths = make_job(tmp_path, ["a.txt", "b.txt"], script=LONG_SCRIPT, mini_batch_size=2)
    assert run(paths) == 0
    assert len(merged(paths["job"])) == 6
    done = read_record(str(paths["job"] / layout.DONE_DIR / "000000000.json"))
    assert (done["succeeded"], done["failed"]) == (2, 0)
    node = (paths["job"] / layout.LOG_SYS_NODE / "i0" / "i0.0.txt").read_text()
    assert "run() returned 6 items, which is more than input count 2" in node


@pytest.mark.parametrize("how", ["init fails", "worker crashes", "run() times out", "clean"])
def test_worker_temp_folders_are_removed_however_the_worker_ends(tmp_path: Path, how: str) -> None:
    # Workers run in a temp folder (as Azure's do): on the process backend it is in the host's /tmp,
    # so one left behind by an init() failure or a crash would pile up there.
    files = {"init fails": ["a.txt"], "worker crashes": ["crashonce.txt", "b.txt"],
             "run() times out": ["slow.txt", "b.txt"], "clean": ["a.txt", "b.txt"]}[how]
    env = {"FAIL_INIT": "raise"} if how == "init fails" else {}
    paths = make_job(tmp_path, files, mini_batch_size=1, max_retries=1, timeout=1,
                     max_concurrency_per_instance=2, environment_variables=env)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    assert run(paths, TMPDIR=str(tmp)) == (layout.EXIT_INIT_FAILED if how == "init fails" else 0)
    assert len(marks(paths, "init.txt")) >= 2  # every worker got as far as init()
    assert os.listdir(tmp) == []


NAP_SCRIPT = """
import os, time

MARKS = os.environ["MARKS"]

def init():
    with open(os.path.join(MARKS, "init.txt"), "a") as f:
        f.write(os.environ["BEPBUILD_WORKER"] + "\\n")
    if len(open(os.path.join(MARKS, "init.txt")).read().split()) == 1 and os.environ.get("BIG"):
        import resource, signal  # the first worker cannot write a file past 1 MB
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    for name in names:
        marker = os.path.join(MARKS, name + ".crashed")
        if name.endswith("-crash.txt") and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(3)
    time.sleep(0.05)  # longer than the file work: the writer thread records and claims ahead
    if os.environ.get("BIG") and names[0].startswith("02-"):
        return [names[0] + " " + "x" * (2 << 20)]  # rows its record cannot hold in the first worker
    return names
"""


def test_a_worker_that_dies_charges_a_try_only_to_the_mini_batch_in_its_run(tmp_path: Path) -> None:
    # While run() works, the worker's writer thread has claimed the next mini-batch and may still be
    # recording finished ones: when it dies, only the one in run() counts a try (max_retries 2: a
    # second charge would fail a mini-batch).
    files = [f"{i:02d}-{'crash' if i in (3, 6) else 'nap'}.txt" for i in range(9)]
    paths = make_job(tmp_path, files, script=NAP_SCRIPT, mini_batch_size=1, max_retries=2)
    assert run(paths) == 0
    job = paths["job"]
    assert os.listdir(job / layout.FAILED_DIR) == []
    attempts_of = {p.name[:-5]: read_record(str(p))["attempt"] for p in (job / layout.DONE_DIR).iterdir()}
    assert attempts_of == {layout.mini_batch_id(i): int(i in (3, 6)) for i in range(9)}
    lost = sorted(r["Mini-batch Id"] for r in attempts(job) if r["Status"] == layout.STATUS_LOST)
    assert lost == [layout.mini_batch_id(3), layout.mini_batch_id(6)]
    assert sorted(line.split()[0] for line in merged(job)) == files


QUICK_SCRIPT = """
import os, time

MARKS = os.environ["MARKS"]

def run(mini_batch):
    name = os.path.basename(mini_batch[0])
    with open(os.path.join(MARKS, "runs.txt"), "a") as f:
        f.write(name + "\\n")
    marker = os.path.join(MARKS, "crashed")
    if name == "040.txt" and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(3)
    time.sleep(0.001)  # short: the worker claims and records several mini-batches at a time
    return [name]
"""


def test_a_worker_that_dies_holding_finished_mini_batches_charges_only_the_one_in_run(tmp_path: Path) -> None:
    # With a short run() and no writer thread, the worker records finished mini-batches a few at a
    # time (worker._Held) and claims a few ahead. When it dies, those finished but not yet recorded
    # go back untouched and run again; only the one in run() is charged (max_retries 2: a second
    # charge would fail a mini-batch); every row is written once.
    files = [f"{i:03d}.txt" for i in range(80)]
    paths = make_job(tmp_path, files, script=QUICK_SCRIPT, mini_batch_size=1, max_retries=2,
                     environment_variables={layout.ENV_WRITER_DEPTH: "0"})
    assert run(paths) == 0
    job = paths["job"]
    assert os.listdir(job / layout.FAILED_DIR) == []
    attempts_of = {p.name[:-5]: read_record(str(p))["attempt"] for p in (job / layout.DONE_DIR).iterdir()}
    assert attempts_of == {layout.mini_batch_id(i): int(i == 40) for i in range(80)}
    runs = marks(paths, "runs.txt")
    again = sorted({name for name in runs if runs.count(name) > 1} - {"040.txt"})
    assert again and all(name < "040.txt" for name in again)  # finished, held, lost with the worker, run again
    assert sorted(line.split()[0] for line in merged(job)) == files
    done_rows = [r for r in attempts(job) if r["Status"] == layout.STATUS_DONE]
    assert sorted(r["Mini-batch Id"] for r in done_rows) == sorted(attempts_of)  # one attempts row each


KILLED_IN_FLUSH_SCRIPT = """
import os, signal, time

MARKS = os.environ["MARKS"]
_rename = os.rename
armed = {"on": False, "done": 0}

def rename(src, dst, *args, **kwargs):  # the worker's own renames: SIGKILL it in the middle of a flush
    out = _rename(src, dst, *args, **kwargs)
    if armed["on"] and "/done/" in str(dst):
        armed["done"] += 1
        if armed["done"] == 3:
            os.kill(os.getpid(), signal.SIGKILL)
    return out

os.rename = rename
calls = [0]

def run(mini_batch):
    name = os.path.basename(mini_batch[0])
    calls[0] += 1
    if calls[0] == 30 and not os.path.exists(os.path.join(MARKS, "armed")):
        open(os.path.join(MARKS, "armed"), "w").close()
        armed["on"] = True
    time.sleep(0.0005)
    return [name]
"""


def test_a_worker_killed_while_it_records_held_mini_batches_charges_none_of_them(tmp_path: Path) -> None:
    # SIGKILL (the OOM killer, kill -9) while the worker writes the records it held, after run()
    # returned: no mini-batch was in run(), so none is charged (max_retries 1: a charge fails it).
    files = [f"{i:03d}.txt" for i in range(100)]
    paths = make_job(tmp_path, files, script=KILLED_IN_FLUSH_SCRIPT, mini_batch_size=1, max_retries=1,
                     environment_variables={layout.ENV_WRITER_DEPTH: "0"})
    assert run(paths) == 0
    job = paths["job"]
    assert (paths["marks"] / "armed").exists()
    assert os.listdir(job / layout.FAILED_DIR) == []
    assert [r for r in attempts(job) if r["Status"] != layout.STATUS_DONE] == []  # nobody charged
    assert sorted(line.split()[0] for line in merged(job)) == files
    logged = {r["Mini-batch Id"] for r in attempts(job)}
    assert len(set(os.listdir(job / layout.DONE_DIR)) - {f"{bid}.json" for bid in logged}) <= 1  # the one killed


BIG_INT_SCRIPT = """
import os
import pandas as pd

def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    big = 10 ** 5000 if names[0] == "051.txt" else 1  # str() of it raises ValueError (Python 3.11's digits limit)
    return pd.DataFrame({"file": names, "n": [big] * len(names)}, dtype=object)
"""


@pytest.mark.parametrize("runtime_python", ["host"], indirect=True)  # pandas, and the digits limit of 3.11+
def test_rows_that_cannot_be_made_text_fail_their_own_mini_batch(tmp_path: Path) -> None:
    # The rows of a plain DataFrame become text when the worker records the mini-batch, after run()
    # returned: a value whose str() raises must fail that mini-batch, as a run() exception would,
    # and nothing else.
    files = [f"{i:03d}.txt" for i in range(80)]
    paths = make_job(tmp_path, files, script=BIG_INT_SCRIPT, mini_batch_size=1, max_retries=1,
                     environment_variables={layout.ENV_WRITER_DEPTH: "0"})
    assert run(paths) == 0
    job = paths["job"]
    assert os.listdir(job / layout.FAILED_DIR) == [f"{layout.mini_batch_id(51)}.json"]
    statuses = {(r["Mini-batch Id"], r["Status"]) for r in attempts(job) if r["Status"] != layout.STATUS_DONE}
    assert statuses == {(layout.mini_batch_id(51), layout.STATUS_EXCEPTION)}
    assert sorted(line.split()[0] for line in merged(job)) == [f for f in files if f != "051.txt"]
    assert "Exceeds the limit" in (job / layout.LOG_USER_ERROR / "i0" / "i0.0.txt").read_text()


def test_a_failed_result_write_is_never_dropped(tmp_path: Path) -> None:
    # The worker cannot write the third mini-batch's record (its rows pass the first worker's file
    # size limit): it must not go on as if that mini-batch were done. It ends, one try is charged,
    # a fresh worker does the rest, once each.
    files = [f"{i:02d}-nap.txt" for i in range(5)]
    paths = make_job(tmp_path, files, script=NAP_SCRIPT, mini_batch_size=1, environment_variables={"BIG": "1"})
    assert run(paths) == 0
    job = paths["job"]
    assert "File too large" in (job / layout.LOG_USER_STDERR / "i0" / "i0.0.stderr.txt").read_text()
    assert len(marks(paths, "init.txt")) == 2
    assert [r["Status"] for r in attempts(job)].count(layout.STATUS_LOST) == 1
    assert sorted(line.split()[0] for line in merged(job)) == files


NO_NEW_PRIVS = """
def run(mini_batch):
    with open("/proc/self/status") as f:
        flag = [line.split()[1] for line in f if line.startswith("NoNewPrivs:")][0]
    return [p.rsplit("/", 1)[1] + " " + flag for p in mini_batch]
"""


@pytest.mark.parametrize("asked", ["1", ""])
def test_no_new_privileges_on_request_for_engines_that_cannot_set_it(tmp_path: Path, asked: str) -> None:
    paths = make_job(tmp_path, ["a.txt"], script=NO_NEW_PRIVS, mini_batch_size=1)
    assert run(paths, **{layout.ENV_NO_NEW_PRIVILEGES: asked}) == 0
    expected = "1" if asked else open("/proc/self/status").read().split("NoNewPrivs:")[1].split()[0]
    assert merged(paths["job"]) == [f"a.txt {expected}"]


def test_gpus_swarm_gives_a_task_go_round_robin_to_its_workers(tmp_path: Path) -> None:
    paths = make_job(tmp_path, [f"nap{i}.txt" for i in range(8)], mini_batch_size=1, max_concurrency_per_instance=2)
    env = {layout.ENV_SWARM_GPUS: "GPU-aaa,GPU-bbb"}
    assert run(paths, **env) == 0
    cuda = {line.split()[3]: line.split()[4] for line in merged(paths["job"])}
    assert cuda == {"i0.0": "GPU-aaa", "i0.1": "GPU-bbb"}
