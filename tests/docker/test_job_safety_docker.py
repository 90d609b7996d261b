"""Jobs on the real engine never run the wrong code nor touch what is not theirs.

- endpoint/deployment pairs that join alike with '-' (`abc-def` + `ghi`, `abc` + `def-ghi`) keep
  their own context, image and code;
- a job runs the image it was invoked with: a redeploy while it is stopped keeps that image for
  its resume, a later redeploy removes it once the job is done, and a resume whose image is gone
  says so in one line;
- two jobs whose names share a long prefix run side by side, and a container that is not a job's
  is never removed;
- as root, an output folder the user made keeps its owner and files; the containers' outputs are
  published into it, never over a file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from jobkit import (
    BEPBUILD,
    DOCKER,
    bep,
    bep_json,
    done_ids,
    invoke,
    job_containers,
    make_inputs,
    numbered,
    wait_final,
    wait_for,
)

from bepbuild import config, naming
from bepbuild_runtime import layout

pytestmark = pytest.mark.docker

TAGGED = """
import os, time

def run(mini_batch):
    time.sleep(@DELAY@)
    return [f"@TAG@ {os.path.basename(p)}" for p in mini_batch]
"""


def tagged(tag: str, delay: float = 0.0) -> str:
    return TAGGED.replace("@TAG@", tag).replace("@DELAY@", repr(delay))


def test_a_code_change_of_the_same_size_reaches_the_new_image(deploy, jobs: list[str], tmp_path: Path) -> None:
    """BuildKit sends a context file again only when its size or time changed; context files get a
    time from their content, so an edit that keeps the size is in the rebuilt image too."""
    inputs = make_inputs(tmp_path / "in", numbered(3))
    v1 = deploy(tagged("AAAA"), mini_batch_size=1)
    assert rows(invoke(v1, inputs, jobs=jobs)) == sorted(f"AAAA {n}" for n in numbered(3))
    v2 = deploy(tagged("BBBB"), mini_batch_size=1, endpoint=v1.endpoint)
    assert v2.image != v1.image
    assert rows(invoke(v2, inputs, jobs=jobs)) == sorted(f"BBBB {n}" for n in numbered(3))


def image_exists(ref: str) -> bool:
    return subprocess.run([DOCKER, "image", "inspect", ref], capture_output=True).returncode == 0


def rows(job: dict) -> list[str]:
    return sorted(Path(job["output_file"]).read_text().splitlines())


def test_pairs_that_join_alike_keep_their_own_context_image_and_code(deploy, jobs: list[str], tmp_path: Path) -> None:
    u = uuid.uuid4().hex[:8]
    first = deploy(tagged("first"), endpoint=f"bt{u}-abc", deployment="ghi-dpl")
    second = deploy(tagged("second"), endpoint=f"bt{u}", deployment="abc-ghi-dpl")
    assert f"{first.endpoint}-{first.deployment}" == f"{second.endpoint}-{second.deployment}"
    assert first.image.split(":")[0] != second.image.split(":")[0]
    assert naming.context_dir(first.endpoint, first.deployment) != naming.context_dir(second.endpoint,
                                                                                     second.deployment)
    names = numbered(3)
    inputs = make_inputs(tmp_path / "in", names)
    for dep, tag in ((first, "first"), (second, "second")):
        for backend in ("docker", "process"):
            job = invoke(dep, inputs, "--backend", backend, jobs=jobs)
            assert job["status"] == "Completed", job
            assert rows(job) == sorted(f"{tag} {n}" for n in names), (tag, backend)
    assert image_exists(first.image) and image_exists(second.image)


def start_and_kill_host(endpoint: str, inputs: Path, name: str, at_least: int) -> Path:
    """Invoke in a host process, SIGKILL it once `at_least` mini-batches are done, and remove what it
    left running (as an engine restart would): the job is stopped, nobody holds its image."""
    job_dir = config.jobs_dir() / name
    host = subprocess.Popen([str(BEPBUILD), "batch-endpoint", "invoke", "--name", endpoint, "--input", str(inputs),
                             "--job-name", name, "-q", "-o", "none"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        wait_for(lambda: job_dir.is_dir() and len(done_ids(job_dir)) >= at_least, f"{at_least} mini-batches",
                 timeout=180, interval=0.05)
    finally:
        host.send_signal(signal.SIGKILL)
        host.wait()
    for cid in job_containers(name, all_=True):
        subprocess.run([DOCKER, "rm", "-f", cid], capture_output=True, check=True)
    return job_dir


def test_a_resume_after_a_redeploy_runs_the_image_the_job_started_with(deploy, jobs: list[str],
                                                                        tmp_path: Path) -> None:
    v1 = deploy(tagged("v1", delay=0.2), mini_batch_size=1)
    names = numbered(24)
    inputs = make_inputs(tmp_path / "in", names)
    name = f"job-{uuid.uuid4().hex[:12]}"
    jobs.append(name)
    start_and_kill_host(v1.endpoint, inputs, name, at_least=3)
    v2 = deploy(tagged("v2-new"), mini_batch_size=1, endpoint=v1.endpoint)
    assert v2.image != v1.image
    assert image_exists(v1.image), "the redeploy removed the image of a job that can still resume"
    job = bep_json("job", "resume", "--name", name, "-q", timeout=300)
    assert job["status"] == "Completed", job
    assert rows(job) == sorted(f"v1 {n}" for n in names)
    assert bep_json("deployment", "show", "--endpoint-name", v1.endpoint, "--name", v1.deployment)[
        "retained_images"] == [v1.image]
    # new jobs run the new code; once the job is done, the next redeploy removes both older images
    assert rows(invoke(v2, inputs, jobs=jobs)) == sorted(f"v2-new {n}" for n in names)
    v3 = deploy(tagged("v3-newest"), mini_batch_size=1, endpoint=v1.endpoint)
    assert not image_exists(v1.image) and not image_exists(v2.image) and image_exists(v3.image)
    assert bep_json("deployment", "show", "--endpoint-name", v1.endpoint, "--name", v1.deployment)[
        "retained_images"] == []


def test_a_resume_whose_image_is_gone_says_so_in_one_line(deploy, jobs: list[str], tmp_path: Path) -> None:
    dep = deploy(tagged("gone", delay=0.2), mini_batch_size=1)
    inputs = make_inputs(tmp_path / "in", numbered(20))
    name = f"job-{uuid.uuid4().hex[:12]}"
    jobs.append(name)
    start_and_kill_host(dep.endpoint, inputs, name, at_least=2)
    subprocess.run([DOCKER, "rmi", "-f", dep.image], capture_output=True, check=True)
    res = bep("job", "resume", "--name", name, "-q", code=1)
    err = res.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), res.stderr
    assert f"image {dep.image}" in err[0] and f"of job {name} is gone" in err[0], err[0]
    assert "Docker engine failed" not in err[0]
    assert not job_containers(name, all_=True)


def test_jobs_sharing_a_long_name_prefix_run_side_by_side(deploy, jobs: list[str], tmp_path: Path) -> None:
    dep = deploy(tagged("side", delay=0.1), mini_batch_size=1, max_concurrency_per_instance=2)
    names = numbered(16)
    inputs = make_inputs(tmp_path / "in", names)
    prefix = f"job-{uuid.uuid4().hex}-{'x' * 20}"  # 57 characters in common
    pair = [f"{prefix}-first", f"{prefix}-second"]
    # a container that is nobody's job, named as instances used to be (job[:36]): it must survive
    stranger = f"bepbuild-{pair[0][:36]}-instance-0"
    subprocess.run([DOCKER, "create", "--name", stranger, config.base_image(), "true"], capture_output=True,
                   check=True)
    try:
        for name in pair:
            jobs.append(name)
            bep("batch-endpoint", "invoke", "--name", dep.endpoint, "--input", str(inputs), "--job-name", name,
                "--no-wait", "-q", "-o", "none")
        for name in pair:
            job = wait_final(config.jobs_dir() / name)
            assert job["status"] == "Completed", job
            assert rows(job) == sorted(f"side {n}" for n in names)
            assert job.get("error") is None
        exists = subprocess.run([DOCKER, "container", "inspect", stranger], capture_output=True)
        assert exists.returncode == 0, "a container that is no job's was removed"
    finally:
        subprocess.run([DOCKER, "rm", "-f", stranger], capture_output=True)


WRITES_OUTPUTS = """
import os

def run(mini_batch):
    out = os.environ["AZUREML_BI_OUTPUT_PATH"]
    os.makedirs(os.path.join(out, "parts"), exist_ok=True)
    for p in mini_batch:
        name = os.path.basename(p)
        with open(os.path.join(out, "parts", name + ".out"), "w") as f:
            f.write(name)
        with open(os.path.join(out, name + ".top"), "w") as f:
            f.write(name)
    return mini_batch
"""


@pytest.mark.skipif(os.getuid() != 0, reason="needs root: containers run as another user only for a root host")
def test_an_output_folder_the_user_made_keeps_its_owner_and_files(deploy, jobs: list[str], tmp_path: Path) -> None:
    dep = deploy(WRITES_OUTPUTS, output_action="summary_only", mini_batch_size=2)
    names = numbered(5)
    inputs = make_inputs(tmp_path / "in", names)
    for label, files in (("empty", {}), ("full", {"mine.txt": "keep", f"{names[0]}.top": "mine, not the job's"})):
        out = tmp_path / label
        out.mkdir(mode=0o755)
        for f, text in files.items():
            (out / f).write_text(text)
        os.chown(out, 4242, 4242)
        job = invoke(dep, inputs, "--output-path", str(out), jobs=jobs)
        assert job["status"] == "Completed", job
        st = out.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (4242, 4242, 0o755), label
        for f, text in files.items():
            assert (out / f).read_text() == text, f  # never overwritten
        for n in names:
            assert (out / "parts" / f"{n}.out").read_text() == n
            assert (out / "parts" / f"{n}.out").stat().st_uid == 4242
            if f"{n}.top" not in files:
                assert (out / f"{n}.top").read_text() == n
        if files:  # the one that could not be placed stays in the job folder, and the job says so
            assert (Path(job["job_dir"]) / layout.OUTPUTS_DIR / f"{names[0]}.top").read_text() == names[0]
            assert any(f"{names[0]}.top" in n for n in job.get("notices") or []), job.get("notices")
    # a folder bepbuild makes is the containers' to write: no publishing needed
    job = invoke(dep, inputs, "--output-path", str(tmp_path / "made" / "here"), jobs=jobs)
    assert job["status"] == "Completed" and not job.get("instance_output_dir"), job
    assert sorted(p.name for p in (tmp_path / "made" / "here" / "parts").iterdir()) == sorted(f"{n}.out" for n in names)


# -- a host whose containers run as its own user never writes through folders they replaced --------------

# Run as a host whose containers run as the host user itself (a non-root host in the docker group):
# here root, with containers as uid 0 (every capability dropped, as always), so they own the job
# folder as a non-root host's containers own that user's, and may replace control/ or logs/ whole.
AS_HOST_USER = """
import os, sys
from bepbuild.jobs import outputs

def same_user(job_dir, out_dir, *, made, backend):
    return f"{os.getuid()}:{os.getgid()}", None

outputs.share_with_containers = same_user
from bepbuild.cli import main
sys.argv = ["bepbuild", *sys.argv[1:]]
main()
"""

RELINK = """
import os

JOB = os.environ["BEPBUILD_JOB_DIR"]
ELSEWHERE = @ELSEWHERE@  # a folder of the host no container sees

def init():
    for rel in ("control", "logs"):
        if not os.path.islink(os.path.join(JOB, rel)):
            os.rename(os.path.join(JOB, rel), os.path.join(JOB, rel + ".moved." + str(os.getpid())))
            os.symlink(ELSEWHERE, os.path.join(JOB, rel))

def run(mini_batch):
    return [os.path.basename(p) for p in mini_batch]
"""


@pytest.mark.skipif(os.getuid() != 0, reason="needs root: it runs the containers as the host user, uid 0")
def test_folders_replaced_by_links_in_a_container_never_lead_the_host_elsewhere(deploy, jobs: list[str],
                                                                                 tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dep = deploy(RELINK.replace("@ELSEWHERE@", repr(str(elsewhere))))
    name = f"job-{uuid.uuid4().hex[:12]}"
    jobs.append(name)
    res = subprocess.run([sys.executable, "-c", AS_HOST_USER, "batch-endpoint", "invoke", "--name", dep.endpoint,
                          "--input", str(make_inputs(tmp_path / "in", numbered(3))), "--job-name", name, "-q",
                          "-o", "json"], capture_output=True, text=True, timeout=300,
                         # its supervisor cannot write its logs any more: killed when silent, soon
                         env={**os.environ, "BEPBUILD_PROGRESS_UPDATE_TIMEOUT": "15"})
    job_dir = config.jobs_dir() / name
    assert json.loads((job_dir / layout.JOB_FILE).read_text())["status"] in ("Completed", "Failed"), res.stderr
    assert list(elsewhere.iterdir()) == []  # the host's container log, reports and lock stayed in the job folder
    assert (job_dir / layout.LOGS_DIR).is_dir() and not (job_dir / layout.LOGS_DIR).is_symlink()
