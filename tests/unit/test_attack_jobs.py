"""Job verbs against job folders that are no longer what bepbuild made.

`job delete` removes a job's folder only once proven to be the one bepbuild made for it. A folder in
the jobs folder that merely has the job's name, without a job.json, passed that proof: with
BEPBUILD_JOBS_DIR pointing at a folder of the user's (where their own folders sit beside the jobs'),
a job folder removed by hand and a folder of the user's made later under the same name was deleted
with everything in it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_jobs_process import ENDPOINT, Cli, make_inputs, register

from bepbuild import config
from bepbuild.cli import app


def test_delete_never_removes_a_users_folder_that_took_the_jobs_name(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"  # the user's own folder, also their jobs folder
    monkeypatch.setenv("BEPBUILD_JOBS_DIR", str(work))
    register()
    make_inputs(tmp_path / "in", 2)
    job = Cli().invoke("--input", str(tmp_path / "in"), "--job-name", "data")
    assert job["status"] == "Completed" and Path(job["job_dir"]) == work / "data"
    shutil.rmtree(work / "data")  # the user cleans up by hand...
    (work / "data").mkdir()  # ...and later keeps their data under that name
    (work / "data" / "thesis.tex").write_text("years of work\n")
    Cli()("job", "delete", "--name", "data", "--yes", code=2)
    assert (work / "data" / "thesis.tex").read_text() == "years of work\n"
    assert config.jobs_dir() == work


def test_an_output_file_name_too_long_for_the_merge_is_refused_up_front_or_merged(tmp_path: Path) -> None:
    register()
    make_inputs(tmp_path / "in", 2)
    name = "p" * 246 + ".csv"  # 250 characters: a file name the filesystem takes
    res = Cli().runner.invoke(app, ["batch-endpoint", "invoke", "--name", ENDPOINT, "--backend", "process", "-q",
                                    "-o", "json", "--input", str(tmp_path / "in"), "--set", f"output_file_name={name}"])
    if res.exit_code == 2:  # refused before anything ran, in one line
        assert len(res.stderr.splitlines()) == 1 and "output_file_name" in res.stderr, res.stderr
        return
    job = json.loads(res.stdout)
    assert job["status"] == "Completed", job.get("error")
    assert Path(job["output_file"]).name == name


def test_the_longest_output_file_name_accepted_is_merged(tmp_path: Path) -> None:
    from bepbuild_runtime import layout

    register()
    make_inputs(tmp_path / "in", 2)
    name = "é" * ((layout.MAX_OUTPUT_FILE_NAME - 4) // 2) + "p" * ((layout.MAX_OUTPUT_FILE_NAME - 4) % 2) + ".csv"
    assert len(name.encode()) == layout.MAX_OUTPUT_FILE_NAME
    job = Cli().invoke("--input", str(tmp_path / "in"), "--set", f"output_file_name={name}")
    assert job["status"] == "Completed", job.get("error")
    assert Path(job["output_file"]).name == name
    res = Cli().runner.invoke(app, ["batch-endpoint", "invoke", "--name", ENDPOINT, "--backend", "process", "-q",
                                    "--input", str(tmp_path / "in"), "--set", f"output_file_name=x{name}"])
    assert res.exit_code == 2 and f"at most {layout.MAX_OUTPUT_FILE_NAME} bytes" in res.stderr, res.stderr


DIE_WHILE_SNAPSHOTTING = """
import os, sys
from bepbuild.jobs import pinning
from bepbuild.cli import app

def die(store, dep, job_dir):  # the host is killed while it copies the deployed code and model
    (job_dir / ".snapshot.tmp" / "code").mkdir(parents=True)
    os._exit(137)

pinning.snapshot = die
sys.argv = ["bepbuild", "batch-endpoint", "invoke", "--name", sys.argv[1], "--input", sys.argv[2],
            "--backend", "process", "--job-name", "snapjob", "-q", "-o", "none"]
app()
"""


def test_a_host_killed_while_copying_the_snapshot_leaves_a_job_that_resume_finishes_or_fails(
        tmp_path: Path) -> None:
    import subprocess
    import sys

    register()
    make_inputs(tmp_path / "in", 3)
    died = subprocess.run([sys.executable, "-c", DIE_WHILE_SNAPSHOTTING, ENDPOINT, str(tmp_path / "in")],
                          capture_output=True, text=True)
    assert died.returncode == 137, died.stderr
    res = Cli().runner.invoke(app, ["job", "resume", "--name", "snapjob", "-q", "-o", "json"])
    if res.exit_code == 0:  # the preparation was finished: a snapshot of the deployment as it is
        assert json.loads(res.stdout)["status"] == "Completed"
        return
    assert "job delete" in res.stderr, res.stderr  # the way out, in the one line
    assert Cli().json("job", "show", "--name", "snapjob")["status"] == "Failed"


def test_a_snapshot_left_half_made_is_never_copied_from_a_deployment_changed_since(tmp_path: Path) -> None:
    import subprocess
    import sys

    register()
    make_inputs(tmp_path / "in", 3)
    died = subprocess.run([sys.executable, "-c", DIE_WHILE_SNAPSHOTTING, ENDPOINT, str(tmp_path / "in")],
                          capture_output=True, text=True)
    assert died.returncode == 137, died.stderr
    register("def init():\n    pass\n\ndef run(b):\n    return ['other code']\n")  # deployed again meanwhile
    res = Cli().runner.invoke(app, ["job", "resume", "--name", "snapjob", "-q", "-o", "json"])
    assert res.exit_code == 1 and len(res.stderr.splitlines()) == 1, res.stderr
    assert "job delete --name snapjob" in res.stderr and "code and model it was invoked with" in res.stderr
    assert Cli().json("job", "show", "--name", "snapjob")["status"] == "Failed"
    Cli()("job", "delete", "--name", "snapjob", "--yes")
