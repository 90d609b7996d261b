"""Helpers and fixtures for job tests against the real engine (shared by test_jobs, test_faults, ...).

The fixtures (`session_home`, `home`, `jobs`, `deploy`) are made available to every module of this
folder by conftest.py, so one session-wide BEPBUILD_HOME (one lock, one environment layer) serves
them all. Test deployments are small purpose-built ones: a scoring script, a one-file model, and the
shared conda file below.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bepbuild import config
from bepbuild_runtime import layout

REPO = Path(__file__).resolve().parents[2]
BEPBUILD = Path(sys.executable).parent / "bepbuild"
DOCKER = "/usr/bin/docker"
FINAL = ("Completed", "Failed", "Canceled")

# The one environment of every test deployment: same content, same lock, one env layer per session.
CONDA = """\
name: bepbuild-jobs-test
channels:
  - conda-forge
dependencies:
  - python=3.11
  - pip
  - pip:
    - pandas
"""

# init() leaves one line per call in the output folder (writable in containers, readable here).
RECORD_INIT = """
import os

def _record_init():
    with open(os.path.join(os.environ["AZUREML_BI_OUTPUT_PATH"], "init-calls.txt"), "a") as f:
        f.write(f"{os.environ.get('BEPBUILD_WORKER')} {os.getpid()}\\n")
"""

# A DataFrame per mini-batch: file name, size, and a float (formatting must match across backends).
SCRIPT_FRAME = RECORD_INIT + """
import time
import pandas as pd

DELAY = @DELAY@

def init():
    _record_init()

def run(mini_batch):
    if DELAY:
        time.sleep(DELAY)
    names = [os.path.basename(p) for p in mini_batch]
    sizes = [os.path.getsize(p) for p in mini_batch]
    return pd.DataFrame({"file": names, "size": sizes, "ratio": [s / 7 for s in sizes]})
"""


def frame_script(delay: float = 0.0) -> str:
    return SCRIPT_FRAME.replace("@DELAY@", repr(delay))


# -- helpers ----------------------------------------------------------------------------------------


def bep(*args: str, code: int | None = 0, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the `bepbuild` command line with this process's environment (BEPBUILD_HOME included)."""
    res = subprocess.run([str(BEPBUILD), *args], capture_output=True, text=True, timeout=timeout,
                         env=os.environ.copy())
    if code is not None:
        assert res.returncode == code, (args, res.returncode, res.stdout[-3000:], res.stderr[-3000:])
    return res


def bep_json(*args: str, code: int | None = 0, timeout: float = 600) -> Any:
    return json.loads(bep(*args, "-o", "json", code=code, timeout=timeout).stdout)


def make_inputs(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (folder / name).write_text(f"{name}\n" + "y" * i)
    return folder


def numbered(n: int, prefix: str = "doc") -> list[str]:
    return [f"{prefix}-{i:03d}.txt" for i in range(n)]


def read_predictions(path: str | Path, names: list[str]) -> pd.DataFrame:
    """Read append_row output the way the Azure examples do."""
    return pd.read_csv(path, header=None, names=names, sep=" ")


def assert_exactly_once(predictions: pd.DataFrame, names: list[str]) -> None:
    seen = Counter(predictions["file"])
    dupes = {k: v for k, v in seen.items() if v > 1}
    assert not dupes, f"scored more than once: {dupes}"
    assert set(seen) == set(names), (set(names) - set(seen), set(seen) - set(names))


def processed(job: dict[str, Any]) -> list[dict[str, str]]:
    with open(Path(job["job_dir"]) / layout.LOG_PROCESSED_MINI_BATCHES, newline="") as f:
        return list(csv.DictReader(f))


def init_calls(job: dict[str, Any]) -> list[str]:
    path = Path(job["output_dir"]) / "init-calls.txt"
    return path.read_text().splitlines() if path.exists() else []


def read_job_file(job_dir: Path) -> dict[str, Any]:
    return json.loads((job_dir / layout.JOB_FILE).read_text())


def done_ids(job_dir: Path) -> set[str]:
    return {p.stem for p in (job_dir / layout.DONE_DIR).glob("*.json")}


def wait_for(check: Callable[[], Any], what: str, timeout: float = 120, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(interval)


def wait_final(job_dir: Path, timeout: float = 180) -> dict[str, Any]:
    """job.json once the job ended. A job whose host is gone ends on its own: about once a second
    the job is looked at as `job show` does, which records that end."""
    from bepbuild.jobs import service
    from bepbuild.store import Store

    looked = [0.0]

    def final() -> dict[str, Any] | None:
        if time.monotonic() - looked[0] > 1.0:
            looked[0] = time.monotonic()
            store = Store.open()
            try:
                service.show(store, job_dir.name)
            finally:
                store.close()
        try:
            job = read_job_file(job_dir)
        except (FileNotFoundError, ValueError):
            return None
        return job if job.get("status") in FINAL else None

    return wait_for(final, f"{job_dir.name} to end", timeout)


def job_containers(job: str, instance: str | None = None, all_: bool = False) -> list[str]:
    cmd = [DOCKER, "ps", "-q", "--filter", f"label=io.bepbuild.job={job}"]
    if instance:
        cmd += ["--filter", f"label=io.bepbuild.instance={instance}"]
    if all_:
        cmd.append("-a")
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One BEPBUILD_HOME for the test deployments: the lock and wheelhouse are resolved once."""
    home = tmp_path_factory.mktemp("jobs-home")
    (home / ".built-images").write_text("")
    yield home
    # The test images are many and small; the BuildKit cache keeps the shared env layer.
    built = sorted(set((home / ".built-images").read_text().split()))
    if built:
        subprocess.run([DOCKER, "rmi", *built], capture_output=True)


@pytest.fixture
def home(session_home: Path, bepbuild_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BEPBUILD_HOME", str(session_home))
    return session_home


@pytest.fixture
def jobs() -> Iterator[list[str]]:
    """Names of the jobs a test starts: whatever is left running is canceled and its containers removed."""
    names: list[str] = []
    yield names
    for name in names:
        for cid in job_containers(name, all_=True):
            subprocess.run([DOCKER, "rm", "-f", cid], capture_output=True)
        job_dir = config.jobs_dir() / name
        if (job_dir / layout.JOB_FILE).exists() and read_job_file(job_dir).get("status") not in FINAL:
            (job_dir / layout.CANCEL_FLAG).touch()


@dataclass
class Deployed:
    endpoint: str
    deployment: str
    image: str
    folder: Path


@pytest.fixture
def deploy(home: Path, tmp_path: Path) -> Callable[..., Deployed]:
    """Write and deploy a small deployment with `script` as its scoring script; a unique endpoint per
    call unless `endpoint` is given (deploying to it again is a redeploy)."""

    def make(script: str, *, deployment: str = "test-dpl", instance_count: int = 1, compute: str | None = None,
             endpoint: str | None = None, **settings: Any) -> Deployed:
        endpoint = endpoint or f"bt-{uuid.uuid4().hex[:10]}"
        folder = write_deployment(tmp_path / f"{endpoint}.{deployment}", script, endpoint=endpoint,
                                  deployment=deployment, instance_count=instance_count, compute=compute, **settings)
        doc = bep_json("deploy", str(folder / "deployment.yml"), "--set-default", "-q")
        with open(home / ".built-images", "a") as f:
            f.write(doc["image"] + "\n")
        return Deployed(endpoint, deployment, doc["image"], folder)

    return make


def write_deployment(folder: Path, script: str, *, endpoint: str, deployment: str = "test-dpl",
                     instance_count: int = 1, compute: str | None = None, **settings: Any) -> Path:
    """A small deployment in `folder` (deployment.yml, endpoint.yml, code/score.py, a one-file model, the
    shared conda file) with `script` as its scoring script; returns the folder."""
    (folder / "code").mkdir(parents=True, exist_ok=True)
    (folder / "model").mkdir(exist_ok=True)
    (folder / "model" / "weights.txt").write_text("0.5\n")
    (folder / "code" / "score.py").write_text(textwrap.dedent(script))
    (folder / "conda.yaml").write_text(CONDA)
    (folder / "endpoint.yml").write_text(f"name: {endpoint}\ndescription: test endpoint\n")
    s: dict[str, Any] = {"max_concurrency_per_instance": 1, "mini_batch_size": 1, "output_action": "append_row",
                         "retry_settings": {"max_retries": 3, "timeout": 30}, "error_threshold": -1,
                         "logging_level": "info"}
    for key, value in settings.items():
        if key in ("max_retries", "timeout"):
            s["retry_settings"][key] = value
        else:
            s[key] = value
    spec = {
        "$schema": "https://azuremlschemas.azureedge.net/latest/modelBatchDeployment.schema.json",
        "name": deployment, "endpoint_name": endpoint, "type": "model",
        "model": {"name": f"{endpoint}-model", "path": "model"},
        "code_configuration": {"code": "code", "scoring_script": "score.py"},
        "environment": {"name": "bepbuild-jobs-test-env", "image": config.base_image(), "conda_file": "conda.yaml"},
        "resources": {"instance_count": instance_count},
        "settings": s,
    }
    if compute:
        spec["compute"] = compute
    (folder / "deployment.yml").write_text(json.dumps(spec, indent=1))  # JSON is YAML
    return folder


def invoke(dep: Deployed, inputs: Path, *args: str, code: int | None = 0, jobs: list[str] | None = None,
           timeout: float = 300) -> dict[str, Any]:
    name = f"job-{uuid.uuid4().hex[:12]}"
    if jobs is not None:
        jobs.append(name)
    return bep_json("batch-endpoint", "invoke", "--name", dep.endpoint, "--input", str(inputs), "--job-name", name,
                    "-q", *args, code=code, timeout=timeout)
