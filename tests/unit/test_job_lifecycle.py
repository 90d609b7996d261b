"""Resume, delete and the host lock on the process backend: one host per job from the check that
admits it to the end of its run, jobs left half prepared by a dead host, and `job delete`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

from test_faults_process import NAPPING, _kill_host_after
from test_hostile import http_server as _http_server
from test_hostile import zipped
from test_jobs_process import (
    BEPBUILD,
    ENDPOINT,
    Cli,
    lines,
    make_inputs,
    processed_rows,
    register,
    runtime_processes,
    wait_final,
)

from bepbuild import config
from bepbuild.store import Store
from bepbuild_runtime import layout

http_server = _http_server  # the loopback HTTP fixture of test_hostile


def _assert_once(job: dict, names: list[str]) -> None:
    assert job["status"] == "Completed", job
    assert sorted(lines(job["output_file"])) == sorted(names)
    rows = processed_rows(job)
    assert {r["Status"] for r in rows} == {layout.STATUS_DONE}, [r for r in rows if r["Status"] != "RUN_DONE"]
    assert Counter(r["Mini-batch Id"] for r in rows).most_common(1)[0][1] == 1


# -- one host per job, from the check to the run -------------------------------------------------------


def test_a_resume_right_after_resume_no_wait_is_refused(tmp_path: Path) -> None:
    """The background host of `resume --no-wait` inherits the lock the resume took: no second host
    can slip in while it starts (before, the lock was free until the child took it)."""
    register(NAPPING, mini_batch_size=1)
    names = make_inputs(tmp_path / "in", 24)
    _kill_host_after("twice", tmp_path / "in", 2)
    cli = Cli()
    cli.json("job", "resume", "--name", "twice", "--no-wait")
    res = cli("job", "resume", "--name", "twice", "-q", code=2)
    assert "still being run by host process" in res.stderr
    _assert_once(wait_final("twice", timeout=60), names)


def test_a_resume_right_after_invoke_no_wait_is_refused(tmp_path: Path) -> None:
    register(NAPPING, mini_batch_size=1)
    names = make_inputs(tmp_path / "in", 12)
    cli = Cli()
    cli.invoke("--input", str(tmp_path / "in"), "--no-wait", "--job-name", "fresh")
    res = cli("job", "resume", "--name", "fresh", "-q", code=2)
    assert "still being run by host process" in res.stderr
    _assert_once(wait_final("fresh", timeout=60), names)


def test_concurrent_resumes_run_the_job_once(tmp_path: Path) -> None:
    register(NAPPING, mini_batch_size=1, max_concurrency_per_instance=2)
    names = make_inputs(tmp_path / "in", 30)
    job_dir = _kill_host_after("crowded", tmp_path / "in", 3)
    procs = [subprocess.Popen([str(BEPBUILD), "job", "resume", "--name", "crowded", "-q", "-o", "none"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2, 2, 2, 2, 2], results
    for code, err in results:
        if code == 2:
            assert len(err.splitlines()) == 1 and err.startswith("error: job crowded"), err
            assert "still being run by host process" in err or "already Completed" in err, err
    job = Cli().json("job", "show", "--name", "crowded")
    _assert_once(job, names)
    assert not runtime_processes(job_dir)


# -- a host killed while it prepared the job ------------------------------------------------------------

DIE_WRITING_THE_QUEUE = """
import os, sys
from bepbuild_runtime import layout, queue

def die(job_dir, items, size):  # the host is killed half way through writing a large queue
    staging = os.path.join(job_dir, layout.QUEUE_STAGING_DIR)
    os.makedirs(staging, exist_ok=True)
    with open(os.path.join(staging, layout.mini_batch_id(0) + ".json"), "w") as f:
        f.write('{"id": "000000000", "ite')
    os._exit(137)

queue.write_queue = die
from bepbuild.cli import main
sys.argv = ["bepbuild"] + sys.argv[1:]
main()
"""


def _die_while_preparing(name: str, inputs: Path, *extra: str) -> Path:
    """Invoke in a process that dies half way through writing the queue; `extra` may give --input."""
    source = [] if "--input" in extra else ["--input", str(inputs)]
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(DIE_WRITING_THE_QUEUE), "batch-endpoint", "invoke",
                          "--name", ENDPOINT, *source, "--backend", "process", "--job-name", name, "-q", *extra],
                         capture_output=True, text=True)
    assert res.returncode == 137, res
    job_dir = config.jobs_dir() / name
    assert (job_dir / layout.QUEUE_STAGING_DIR).is_dir()
    return job_dir


def test_resume_finishes_the_preparation_a_dead_host_left(tmp_path: Path) -> None:
    register(mini_batch_size=3)
    names = make_inputs(tmp_path / "in", 10)
    job_dir = _die_while_preparing("half-made", tmp_path / "in")
    cli = Cli()
    assert cli.json("job", "show", "--name", "half-made")["status"] == "Preparing"
    job = cli.json("job", "resume", "--name", "half-made", "-q")
    assert job["status"] == "Completed", job
    assert job["counts"]["mini_batches"] == 4 and job["counts"]["items_succeeded"] == 10
    assert sorted(r.split()[0] for r in lines(job["output_file"])) == names
    assert not (job_dir / layout.QUEUE_STAGING_DIR).exists()


def test_a_job_that_cannot_be_prepared_again_fails_in_one_line_and_can_be_deleted(tmp_path: Path) -> None:
    register(mini_batch_size=3)
    make_inputs(tmp_path / "in", 4)
    out = tmp_path / "kept-out"
    job_dir = _die_while_preparing("stuck", tmp_path / "in", "--output-path", str(out))
    for p in (tmp_path / "in").iterdir():
        p.unlink()
    (tmp_path / "in").rmdir()
    cli = Cli()
    res = cli("job", "resume", "--name", "stuck", "-q", code=1)
    assert len(res.stderr.splitlines()) == 1 and "cannot be resumed" in res.stderr, res.stderr
    assert "bepbuild job delete --name stuck" in res.stderr
    assert cli.json("job", "show", "--name", "stuck")["status"] == "Failed"
    out.mkdir(exist_ok=True)
    (out / "mine.txt").write_text("the user's\n")
    cli("job", "delete", "--name", "stuck", "--yes")
    assert not job_dir.exists()
    assert (out / "mine.txt").read_text() == "the user's\n"  # an --output-path folder is never touched
    cli("job", "show", "--name", "stuck", code=2)
    # the name is free again
    make_inputs(tmp_path / "in", 2)
    assert cli.invoke("--input", str(tmp_path / "in"), "--job-name", "stuck")["status"] == "Completed"


# -- job delete ----------------------------------------------------------------------------------------


def test_delete_refuses_a_job_whose_host_is_alive_and_stops_what_a_dead_host_left(tmp_path: Path) -> None:
    register(NAPPING, mini_batch_size=1)
    make_inputs(tmp_path / "in", 40)
    cli = Cli()
    cli.invoke("--input", str(tmp_path / "in"), "--no-wait", "--job-name", "alive")
    res = cli("job", "delete", "--name", "alive", "--yes", code=2)
    assert "still being run by host process" in res.stderr
    cli("job", "cancel", "--name", "alive")
    wait_final("alive")
    # a dead host's job: its instances live on until the delete stops them
    job_dir = _kill_host_after("orphan", tmp_path / "in", 1, instances=False)
    assert runtime_processes(job_dir)
    cli("job", "delete", "--name", "orphan", "--yes")
    assert not runtime_processes(job_dir) and not job_dir.exists()


def test_delete_asks_unless_yes(tmp_path: Path) -> None:
    register()
    make_inputs(tmp_path / "in", 2)
    cli = Cli()
    job = cli.invoke("--input", str(tmp_path / "in"), "--job-name", "ask-first")
    res = cli("job", "delete", "--name", "ask-first", code=2)  # stdin is not a terminal
    assert "--yes" in res.stderr
    assert Path(job["job_dir"]).is_dir()


def test_delete_never_removes_a_folder_outside_the_jobs_folder(tmp_path: Path) -> None:
    """A record whose folder is not the one bepbuild made for the job (moved jobs folder, edited
    registry): the delete refuses in one line and touches nothing."""
    register()
    make_inputs(tmp_path / "in", 2)
    cli = Cli()
    cli.invoke("--input", str(tmp_path / "in"), "--job-name", "moved")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work\n")
    (precious / layout.CONTROL_DIR).mkdir()
    (precious / layout.JOB_FILE).write_text(json.dumps({"name": "moved"}))
    store = Store.open()
    try:
        store.update_job("moved", job_dir=str(precious))
    finally:
        store.close()
    res = cli("job", "delete", "--name", "moved", "--yes", code=2)
    assert "not in the jobs folder" in res.stderr
    assert (precious / "thesis.tex").read_text() == "years of work\n"
    # a link in the jobs folder pointing at it is refused too
    link = config.jobs_dir() / "linked"
    link.symlink_to(precious)
    store = Store.open()
    try:
        store.update_job("moved", job_dir=str(link))
    finally:
        store.close()
    res = cli("job", "delete", "--name", "moved", "--yes", code=2)
    assert "symbolic link" in res.stderr
    assert (precious / "thesis.tex").exists() and link.is_symlink()
    os.unlink(link)


def test_delete_of_a_job_without_a_folder_forgets_it(tmp_path: Path) -> None:
    register()
    make_inputs(tmp_path / "in", 2)
    cli = Cli()
    job = cli.invoke("--input", str(tmp_path / "in"), "--job-name", "gone")
    import shutil

    shutil.rmtree(job["job_dir"])
    start = time.monotonic()
    cli("job", "delete", "--name", "gone", "--yes")
    assert time.monotonic() - start < 10
    cli("job", "show", "--name", "gone", code=2)


def test_resume_downloads_an_http_input_again(tmp_path: Path, http_server: tuple[str, dict]) -> None:
    url, routes = http_server
    register(mini_batch_size=1)
    routes["/docs.zip"] = (zipped({"one.txt": b"item-1", "two.txt": b"item-2"}), True)
    job_dir = _die_while_preparing("fetched", tmp_path, "--input", f"{url}/docs.zip", "--input-type", "uri_folder")
    (job_dir / layout.INPUTS_DIR / "stale-partial.txt").write_text("half a download")
    job = Cli().json("job", "resume", "--name", "fetched", "-q")
    assert job["status"] == "Completed", job
    assert sorted(r.split()[0] for r in lines(job["output_file"])) == ["one.txt", "two.txt"]


def test_a_job_folder_without_job_json_fails_in_one_line_and_delete_forgets_it_keeping_the_folder(
    tmp_path: Path,
) -> None:
    """job.json is written before a job is registered; a folder without one (left by an earlier
    bepbuild, or emptied by hand) is not proven to be the job's: delete forgets the job, keeps it."""
    register()
    make_inputs(tmp_path / "in", 2)
    cli = Cli()
    job = cli.invoke("--input", str(tmp_path / "in"), "--job-name", "bare")
    job_dir = Path(job["job_dir"])
    (job_dir / layout.JOB_FILE).unlink()
    store = Store.open()
    try:
        store.update_job("bare", status="Queued")
    finally:
        store.close()
    res = cli("job", "resume", "--name", "bare", "-q", code=1)
    assert len(res.stderr.splitlines()) == 1 and f"its {layout.JOB_FILE} was never written" in res.stderr
    assert cli.json("job", "show", "--name", "bare")["status"] == "Failed"
    res = cli("job", "delete", "--name", "bare", "--yes", code=2)
    assert len(res.stderr.splitlines()) == 1 and "forgot job bare" in res.stderr and str(job_dir) in res.stderr
    assert job_dir.is_dir()
    cli("job", "show", "--name", "bare", code=2)


DIE_AFTER_REGISTERING = """
import os, sys
from bepbuild.store import Store

add_job = Store.add_job

def die(self, name, job):  # the host is killed right after the job is registered
    add_job(self, name, job)
    os._exit(137)

Store.add_job = die
from bepbuild.cli import main
sys.argv = ["bepbuild"] + sys.argv[1:]
main()
"""


def test_a_job_registered_by_a_host_killed_at_once_has_a_folder_delete_can_prove_and_remove(tmp_path: Path) -> None:
    register()
    make_inputs(tmp_path / "in", 2)
    res = subprocess.run([sys.executable, "-c", DIE_AFTER_REGISTERING, "batch-endpoint", "invoke", "--name", ENDPOINT,
                          "--input", str(tmp_path / "in"), "--backend", "process", "--job-name", "early", "-q"],
                         capture_output=True, text=True)
    assert res.returncode == 137, res
    job_dir = config.jobs_dir() / "early"
    assert json.loads((job_dir / layout.JOB_FILE).read_text())["name"] == "early"
    Cli()("job", "delete", "--name", "early", "--yes")
    assert not job_dir.exists()


def test_delete_never_reads_a_job_json_through_a_link(tmp_path: Path) -> None:
    register()
    make_inputs(tmp_path / "in", 2)
    job_dir = Path(Cli().invoke("--input", str(tmp_path / "in"), "--job-name", "linked-doc")["job_dir"])
    shutil.rmtree(job_dir)
    job_dir.mkdir()
    (job_dir / "mine.txt").write_text("keep\n")
    elsewhere = tmp_path / "copy-of-job.json"
    elsewhere.write_text(json.dumps({"name": "linked-doc"}))
    (job_dir / layout.JOB_FILE).symlink_to(elsewhere)
    Cli()("job", "delete", "--name", "linked-doc", "--yes", code=2)
    assert (job_dir / "mine.txt").read_text() == "keep\n"


def test_links_left_in_the_job_folder_are_never_written_through(tmp_path: Path) -> None:
    """Scoring code may write in the job folder; a link it leaves at the host lock or the host log
    must not make the host (perhaps root) truncate or append to the file it points to."""
    register(NAPPING, mini_batch_size=1)
    names = make_inputs(tmp_path / "in", 8)
    job_dir = _kill_host_after("linked", tmp_path / "in", 1)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    for name in (layout.HOST_LOCK, layout.LOG_HOST):
        (job_dir / name).unlink(missing_ok=True)
        (job_dir / name).symlink_to(victim)
    Cli().json("job", "resume", "--name", "linked", "--no-wait")
    _assert_once(wait_final("linked", timeout=60), names)
    assert victim.read_text() == "precious\n"
    assert not (job_dir / layout.HOST_LOCK).is_symlink() and not (job_dir / layout.LOG_HOST).is_symlink()


def test_the_host_never_writes_through_whole_folders_replaced_by_links(tmp_path: Path) -> None:
    """A non-root host's containers run as the host user and may replace control/, logs/ or state/
    whole with a link to a folder of the host: the host's lock, cancel flag, log lines and the flags
    a resume removes must stay in the job folder (a link on the last name only would not do)."""
    from bepbuild.jobs import hostlock, lifecycle, reports

    register()
    make_inputs(tmp_path / "in", 2)
    job_dir = Path(Cli().invoke("--input", str(tmp_path / "in"), "--job-name", "relinked")["job_dir"])
    victim = tmp_path / "host-folder"
    victim.mkdir()
    for name in ("cancel", "host.lock", "host.txt", "outcome.json", "job_result.txt"):
        (victim / name).write_text("keep\n")
    before = {p.name: p.read_text() for p in victim.iterdir()}
    for rel in (layout.CONTROL_DIR, layout.LOGS_DIR, layout.STATE_DIR):
        os.rename(job_dir / rel, job_dir / f"{rel}.moved")
        (job_dir / rel).symlink_to(victim)
    store = Store.open()
    try:
        store.update_job("relinked", status="Running")
        Cli()("job", "cancel", "--name", "relinked")  # the flag, the host lock, the reports of its end
        reports.note(job_dir, "a line of the host")
        store.update_job("relinked", status="Failed")
        lifecycle.resume(store, "relinked")  # removes control/cancel and state/outcome.json
        hostlock.release(job_dir)
    finally:
        store.close()
    assert {p.name: p.read_text() for p in victim.iterdir()} == before
    for rel in (layout.CONTROL_DIR, layout.LOGS_DIR, layout.STATE_DIR):
        assert (job_dir / rel).is_dir() and not (job_dir / rel).is_symlink()


def test_the_host_neither_writes_nor_reads_its_logs_through_links(tmp_path: Path) -> None:
    """Links a scoring script leaves where the host writes job.json and its logs, and among the logs
    it copies into job_error.txt / processed_mini-batches.csv: never followed."""
    secret = tmp_path / "secret.txt"
    secret.write_text("root's secret\n")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    # run() plants the links from inside (as a container could), then fails so that the job fails
    register(f"""
import os
def run(mini_batch):
    job = os.path.dirname(os.environ["AZUREML_BI_OUTPUT_PATH"])  # the default output folder is <job>/outputs
    for name, target in ((".job.json.tmp", {str(victim)!r}),
                         ("logs/.job_result.txt.tmp", {str(victim)!r}),
                         ("logs/sys/job_report/.processed.tmp", {str(victim)!r}),
                         ("logs/user/error/instance-0/planted.txt", {str(secret)!r}),
                         ("logs/sys/job_report/attempts/planted.csv", {str(secret)!r})):
        path = os.path.join(job, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.lexists(path):
            os.symlink(target, path)
    raise RuntimeError("failing on purpose")
""", mini_batch_size=1, retry_settings={"max_retries": 1, "timeout": 30})
    make_inputs(tmp_path / "in", 2)
    job = Cli().invoke("--input", str(tmp_path / "in"), "--job-name", "planted", code=1)
    job_dir = Path(job["job_dir"])
    assert job["status"] == "Failed"
    assert (job_dir / "logs/user/error/instance-0/planted.txt").is_symlink()  # the links were planted
    assert victim.read_text() == "precious\n"
    assert "root's secret" not in (job_dir / layout.LOG_ERROR).read_text()
    assert "root's secret" not in (job_dir / layout.LOG_PROCESSED_MINI_BATCHES).read_text()
