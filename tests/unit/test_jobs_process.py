"""Jobs end to end on the process backend: invoke, show/list, cancel, overrides and refusals.

No engine: the model is registered, the deployment row is put straight into the store and its
rendered code (under `naming.context_dir`) is written by hand, which is all `jobs.service.invoke`
and the process backend read. Scoring scripts are pure stdlib and return lists.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bepbuild import config, endpoints, naming, registry
from bepbuild.cli import app
from bepbuild.hashing import tree_sha256
from bepbuild.jobs import runner, service
from bepbuild.store import Store
from bepbuild_runtime import layout

BEPBUILD = Path(sys.executable).parent / "bepbuild"
ENDPOINT = "jobs-ep"
DEPLOYMENT = "jobs-dpl"

# Records every init() (one line per call) and answers one `<file> <size>` line per input.
SCRIPT = """
import os

def init():
    with open(os.path.join(os.environ["AZUREML_BI_OUTPUT_PATH"], "init-calls.txt"), "a") as f:
        f.write(f"{os.getpid()}\\n")

def run(mini_batch):
    return [f"{os.path.basename(p)} {os.path.getsize(p)}" for p in mini_batch]
"""


def settings(**overrides: Any) -> dict[str, Any]:
    """Deployment settings as `deploy` stores them (nested retry_settings)."""
    s: dict[str, Any] = {
        "environment_variables": {}, "error_threshold": -1, "logging_level": "info",
        "max_concurrency_per_instance": 1, "mini_batch_size": 4, "output_action": "append_row",
        "output_file_name": "predictions.csv", "retry_settings": {"max_retries": 3, "timeout": 30},
    }
    s.update(overrides)
    return s


def register(script: str = SCRIPT, *, endpoint: str = ENDPOINT, deployment: str = DEPLOYMENT,
             default: bool = True, **setting_overrides: Any) -> None:
    """A deployment as `bepbuild deploy` would leave it, minus the image (the process backend needs none)."""
    store = Store.open()
    try:
        if not store.has_endpoint(endpoint):
            endpoints.create(store, None, name=endpoint)
        source = config.home() / "model-sources" / f"{endpoint}.{deployment}" / "model"
        source.mkdir(parents=True, exist_ok=True)
        (source / "weights.txt").write_text("42\n")
        model = registry.register_model(store, name=naming.inline_model_name(endpoint, deployment), path=source,
                                        reuse_same_content=True)
        context = naming.context_dir(endpoint, deployment)  # a redeploy renders over the same folder
        (context / "code").mkdir(parents=True, exist_ok=True)
        (context / "code" / "score.py").write_text(textwrap.dedent(script))
        (context / "model" / "model").mkdir(parents=True, exist_ok=True)
        for f in Path(model["path"]).iterdir():  # hard links to the registry's files, as render makes them
            (context / "model" / "model" / f.name).unlink(missing_ok=True)
            os.link(f, context / "model" / "model" / f.name)
        store.put_deployment(endpoint, deployment, {
            "name": deployment, "endpoint_name": endpoint, "type": "model",
            "image": naming.image_tag(endpoint, deployment, "0" * 64),  # never built: the process backend needs none
            "model": f"azureml:{model['name']}:{model['version']}", "model_folder": "model",
            "context": str(context), "code_sha256": tree_sha256(context / "code"),
            "code_configuration": {"code": str(context / "code"), "scoring_script": "score.py"},
            "settings": settings(**setting_overrides), "resources": {"instance_count": 1, "properties": {}},
        })
        if default:
            endpoints.set_default(store, endpoint, deployment)
    finally:
        store.close()


def make_inputs(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"item-{i:03d}.txt" for i in range(n)]
    for i, name in enumerate(names):
        (folder / name).write_text("x" * (i + 1))
    return names


class Cli:
    """The Typer app in-process; checks the exit code and, for errors, the one-line stderr."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int = 0):
        result = self.runner.invoke(app, list(args))
        assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr, result.exception)
        if code == 2:
            assert "Traceback" not in result.stderr
            assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: "), result.stderr
        return result

    def json(self, *args: str, code: int = 0) -> Any:
        return json.loads(self(*args, "-o", "json", code=code).stdout)

    def invoke(self, *args: str, code: int = 0) -> dict[str, Any]:
        return self.json("batch-endpoint", "invoke", "--name", ENDPOINT, "--backend", "process", "-q", *args,
                         code=code)


@pytest.fixture
def cli() -> Cli:
    return Cli()


def lines(path: str | Path) -> list[str]:
    return Path(path).read_text().splitlines()


def expected_rows(folder: Path, names: list[str]) -> set[str]:
    return {f"{n} {(folder / n).stat().st_size}" for n in names}


def processed_rows(job: dict[str, Any]) -> list[dict[str, str]]:
    with open(Path(job["job_dir"]) / layout.LOG_PROCESSED_MINI_BATCHES, newline="") as f:
        return list(csv.DictReader(f))


# -- the happy path ---------------------------------------------------------------------------------


def test_process_backend_scores_every_file_once(cli: Cli, tmp_path: Path) -> None:
    register()
    names = make_inputs(tmp_path / "in", 10)
    job = cli.invoke("--input", str(tmp_path / "in"))
    assert job["status"] == "Completed", job
    assert job["counts"] == {"mini_batches": 3, "done": 3, "failed": 0, "items_succeeded": 10, "items_failed": 0}
    rows = lines(job["output_file"])
    assert len(rows) == 10 and set(rows) == expected_rows(tmp_path / "in", names)
    assert Path(job["output_file"]).parent == Path(job["job_dir"]) / layout.OUTPUTS_DIR
    # One worker, no failures: init() ran exactly once.
    assert len(lines(Path(job["output_dir"]) / "init-calls.txt")) == 1
    report = processed_rows(job)
    assert sorted(r["Mini-batch Id"] for r in report) == ["000000000", "000000001", "000000002"]
    assert {r["Status"] for r in report} == {layout.STATUS_DONE}
    assert (Path(job["job_dir"]) / layout.LOG_RESULT).read_text().startswith(f"Job {job['name']} completed.")


def test_job_show_and_list(cli: Cli, tmp_path: Path) -> None:
    register()
    make_inputs(tmp_path / "in", 3)
    first = cli.invoke("--input", str(tmp_path / "in"), "--job-name", "job-one")
    second = cli.invoke("--input", str(tmp_path / "in"), "--job-name", "job-two")
    shown = cli.json("job", "show", "--name", "job-one")
    assert shown["name"] == "job-one" and shown["status"] == "Completed"
    assert shown["counts"] == first["counts"]
    assert shown["endpoint"] == ENDPOINT and shown["deployment"] == DEPLOYMENT
    listed = cli.json("job", "list")
    assert [j["name"] for j in listed] == [second["name"], first["name"]]  # newest first
    assert cli.json("job", "list", "--endpoint-name", "other-endpoint") == []
    assert cli("job", "show", "--name", "job-one", "-o", "tsv", "--query", "status").stdout.strip() == "Completed"
    cli("job", "show", "--name", "no-such-job", code=2)


# -- what invoke refuses ----------------------------------------------------------------------------


def test_set_key_not_allowed_per_job(cli: Cli, tmp_path: Path) -> None:
    register()
    make_inputs(tmp_path / "in", 2)
    for key in ("logging_level=debug", "max_concurrency_per_instance=4", "output_action=summary_only"):
        res = cli("batch-endpoint", "invoke", "--name", ENDPOINT, "--input", str(tmp_path / "in"),
                  "--backend", "process", "--set", key, code=2)
        assert key.split("=")[0] in res.stderr
    assert cli.json("job", "list") == []


def test_allowed_set_keys_apply(cli: Cli, tmp_path: Path) -> None:
    register()
    names = make_inputs(tmp_path / "in", 7)
    job = cli.invoke("--input", str(tmp_path / "in"), "--set", "mini_batch_size=2",
                     "--set", "retry_settings.max_retries=5", "--set", "output_file_name=scores.txt")
    assert job["status"] == "Completed"
    assert job["settings"]["mini_batch_size"] == 2 and job["settings"]["max_retries"] == 5
    assert job["counts"]["mini_batches"] == 4
    assert Path(job["output_file"]).name == "scores.txt"
    assert set(lines(job["output_file"])) == expected_rows(tmp_path / "in", names)


def test_unknown_deployment(cli: Cli, tmp_path: Path) -> None:
    register()
    make_inputs(tmp_path / "in", 2)
    res = cli("batch-endpoint", "invoke", "--name", ENDPOINT, "--deployment-name", "nope-dpl",
              "--input", str(tmp_path / "in"), "--backend", "process", code=2)
    assert "nope-dpl" in res.stderr and "not found" in res.stderr


def test_unknown_endpoint(cli: Cli, tmp_path: Path) -> None:
    make_inputs(tmp_path / "in", 2)
    res = cli("batch-endpoint", "invoke", "--name", "ghost-ep", "--input", str(tmp_path / "in"), code=2)
    assert "ghost-ep" in res.stderr


def test_no_default_deployment(cli: Cli, tmp_path: Path) -> None:
    register(default=False)
    store = Store.open()
    # put_deployment does not make it the default; the endpoint has none.
    assert not (store.get_endpoint(ENDPOINT).get("defaults") or {}).get("deployment_name")
    store.close()
    make_inputs(tmp_path / "in", 2)
    res = cli("batch-endpoint", "invoke", "--name", ENDPOINT, "--input", str(tmp_path / "in"),
              "--backend", "process", code=2)
    assert "No valid deployments to route to" in res.stderr
    # Naming the deployment still works.
    job = cli.invoke("--input", str(tmp_path / "in"), "--deployment-name", DEPLOYMENT)
    assert job["status"] == "Completed"


def test_missing_input(cli: Cli, tmp_path: Path) -> None:
    register()
    res = cli("batch-endpoint", "invoke", "--name", ENDPOINT, "--input", str(tmp_path / "absent"),
              "--backend", "process", code=2)
    assert "There is no folder on target path" in res.stderr


def test_uri_file_input_is_one_mini_batch(cli: Cli, tmp_path: Path) -> None:
    register()
    make_inputs(tmp_path / "in", 5)
    single = tmp_path / "in" / "item-003.txt"
    job = cli.invoke("--input", str(single))
    assert job["status"] == "Completed"
    assert job["input"]["type"] == "uri_file"
    assert job["counts"] == {"mini_batches": 1, "done": 1, "failed": 0, "items_succeeded": 1, "items_failed": 0}
    assert lines(job["output_file"]) == ["item-003.txt 4"]
    # An explicit --input-type that contradicts the path is refused.
    res = cli("batch-endpoint", "invoke", "--name", ENDPOINT, "--input", str(tmp_path / "in"),
              "--input-type", "uri_file", "--backend", "process", code=2)
    assert "uri_folder" in res.stderr


def test_job_name_reuse_is_refused(cli: Cli, tmp_path: Path) -> None:
    register()
    make_inputs(tmp_path / "in", 2)
    first = cli.invoke("--input", str(tmp_path / "in"), "--job-name", "same-name")
    before = Path(first["output_file"]).read_bytes()
    res = cli("batch-endpoint", "invoke", "--name", ENDPOINT, "--input", str(tmp_path / "in"),
              "--backend", "process", "--job-name", "same-name", code=2)
    assert "same-name" in res.stderr and "already exists" in res.stderr
    again = cli.json("job", "show", "--name", "same-name")
    assert again["status"] == "Completed"  # the refused invoke did not touch the first job
    assert Path(first["output_file"]).read_bytes() == before


# -- outcomes ----------------------------------------------------------------------------------------


def test_append_row_with_no_success_fails_with_azure_message(cli: Cli, tmp_path: Path) -> None:
    register("def run(mini_batch):\n    return []\n")
    make_inputs(tmp_path / "in", 5)
    job = cli.invoke("--input", str(tmp_path / "in"), code=1)
    assert job["status"] == "Failed"
    assert job["error"] == runner.NO_RESULT
    assert job["error"].startswith("No succeeded mini batch item returned from run().")
    # Empty returns are failed items, not failed attempts: every mini-batch is done, once.
    assert job["counts"] == {"mini_batches": 2, "done": 2, "failed": 0, "items_succeeded": 0, "items_failed": 5}
    assert not Path(job["output_file"]).exists()
    assert {r["Status"] for r in processed_rows(job)} == {layout.STATUS_DONE}
    assert runner.NO_RESULT in (Path(job["job_dir"]) / layout.LOG_ERROR).read_text()


def test_partial_results_count_missing_items_as_failed(cli: Cli, tmp_path: Path) -> None:
    # Every mini-batch returns one row less than it got (success = min(len(result), len(mini_batch))).
    register("import os\ndef run(mini_batch):\n    return [os.path.basename(p) for p in mini_batch[1:]]\n",
             mini_batch_size=3)
    make_inputs(tmp_path / "in", 7)  # batches of 3, 3, 1
    job = cli.invoke("--input", str(tmp_path / "in"))
    assert job["status"] == "Completed"
    assert job["counts"]["items_succeeded"] == 4 and job["counts"]["items_failed"] == 3
    assert len(lines(job["output_file"])) == 4


def test_cancel_ends_the_job_canceled(cli: Cli, tmp_path: Path) -> None:
    register("import os, time\ndef run(mini_batch):\n    time.sleep(0.2)\n"
             "    return [os.path.basename(p) for p in mini_batch]\n", mini_batch_size=1)
    make_inputs(tmp_path / "in", 40)  # 8 s of work: the cancel lands long before the end
    queued = cli.invoke("--input", str(tmp_path / "in"), "--no-wait", "--job-name", "to-cancel")
    assert queued["status"] not in runner.FINAL
    job_dir = Path(queued["job_dir"])
    deadline = time.monotonic() + 20
    while not any((job_dir / layout.DONE_DIR).glob("*.json")):
        assert time.monotonic() < deadline, "no mini-batch finished"
        time.sleep(0.05)
    cancelled = cli.json("job", "cancel", "--name", "to-cancel")
    assert cancelled["cancel_requested"] is True
    assert (job_dir / layout.CANCEL_FLAG).exists()
    store = Store.open()
    try:
        while (job := store.get_job("to-cancel"))["status"] not in runner.FINAL:
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
    finally:
        store.close()
    assert job["status"] == "Canceled"
    assert 0 < job["counts"]["done"] < 40
    assert not Path(job["output_file"]).exists()
    # Canceling an ended job is refused.
    res = cli("job", "cancel", "--name", "to-cancel", code=2)
    assert "already ended" in res.stderr


def _invoke_then_kill_host(name: str, inputs: Path, done: int) -> Path:
    """Invoke in a subprocess (attached: its process is the job's host) and kill -9 it once `done`
    mini-batches are done; its instances (own sessions) live on."""
    job_dir = config.jobs_dir() / name
    host = subprocess.Popen([str(BEPBUILD), "batch-endpoint", "invoke", "--name", ENDPOINT, "--input", str(inputs),
                             "--backend", "process", "--job-name", name, "-q", "-o", "none"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    try:
        while not (job_dir.is_dir() and len(list((job_dir / layout.DONE_DIR).glob("*.json"))) >= done):
            assert time.monotonic() < deadline and host.poll() is None, "no mini-batch finished"
            time.sleep(0.05)
    finally:
        host.kill()
        host.wait()
    return job_dir


def test_a_job_whose_host_is_killed_completes_on_its_own_merged_once(cli: Cli, tmp_path: Path) -> None:
    """SIGKILL the invoking process: the job does not depend on it. Its instances (own sessions) go on,
    their coordinator merges the output once, and `job show` records the end. A resume meanwhile is
    refused: two lives of the job would share its instances' worker folders."""
    register("import os, time\ndef run(mini_batch):\n    time.sleep(0.2)\n"
             "    return [os.path.basename(p) for p in mini_batch]\n", mini_batch_size=1)
    names = make_inputs(tmp_path / "in", 24)
    job_dir = _invoke_then_kill_host("host-killed", tmp_path / "in", 3)
    assert len(list((job_dir / layout.DONE_DIR).glob("*.json"))) < 24
    res = cli("job", "resume", "--name", "host-killed", code=2)
    assert "still running on its instances" in res.stderr
    job = wait_final("host-killed")
    assert job["status"] == "Completed", job
    assert job["counts"]["done"] == 24 and job["counts"]["items_succeeded"] == 24
    rows = lines(job["output_file"])
    assert sorted(rows) == sorted(names)
    done_rows = Counter(r["Mini-batch Id"] for r in processed_rows(job) if r["Status"] == layout.STATUS_DONE)
    assert len(done_rows) == 24 and max(done_rows.values()) == 1, {k: v for k, v in done_rows.items() if v > 1}
    main_log = (job_dir / layout.LOG_SYS_NODE / "instance-0" / layout.LOG_SYS_NODE_MAIN).read_text()
    assert main_log.count("exiting with code 0") == 1, main_log  # one life, which ended the job
    assert not runtime_processes(job_dir)
    assert not list(Path(job["output_dir"]).glob(f"*{layout.MERGE_TMP_INFIX}*"))


def test_resume_after_the_host_and_its_instances_died_does_not_run_two_lives_at_once(cli: Cli, tmp_path: Path) -> None:
    """The machine gone: host and instances killed -9. `job show` finds nothing left running it and
    records it Failed, resumable; the resume finishes it without redoing what was done."""
    register("import os, time\ndef run(mini_batch):\n    time.sleep(0.2)\n"
             "    return [os.path.basename(p) for p in mini_batch]\n", mini_batch_size=1)
    names = make_inputs(tmp_path / "in", 24)
    job_dir = _invoke_then_kill_host("machine-gone", tmp_path / "in", 3)
    kill_instances(job_dir)
    before = {p.stem for p in (job_dir / layout.DONE_DIR).glob("*.json")}
    assert len(before) < 24
    shown = cli.json("job", "show", "--name", "machine-gone")
    assert shown["status"] == "Failed" and "bepbuild job resume --name machine-gone" in shown["error"], shown
    job = cli.json("job", "resume", "--name", "machine-gone", "-q")
    assert job["status"] == "Completed", job
    assert job["counts"]["done"] == 24 and job["counts"]["items_succeeded"] == 24
    assert sorted(lines(job["output_file"])) == sorted(names)
    done_rows = Counter(r["Mini-batch Id"] for r in processed_rows(job) if r["Status"] == layout.STATUS_DONE)
    assert max(done_rows.values()) == 1, {k: v for k, v in done_rows.items() if v > 1}
    # The first life was killed, never drained: only the second life's supervisor exited normally.
    main_log = (job_dir / layout.LOG_SYS_NODE / "instance-0" / layout.LOG_SYS_NODE_MAIN).read_text()
    assert main_log.count("exiting with code") == 1, main_log
    assert not runtime_processes(job_dir)


def kill_instances(job_dir: Path) -> None:
    """kill -9 of every runtime process of the job (supervisors and workers), as a machine's death."""
    for pid in runtime_processes(job_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while runtime_processes(job_dir):
        assert time.monotonic() < deadline, "the instances did not die"
        time.sleep(0.02)


def runtime_processes(job_dir: Path) -> list[int]:
    """Live `python -m bepbuild_runtime` processes working on `job_dir`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"bepbuild_runtime" in cmd and str(job_dir).encode() in cmd and state != "Z":
            found.append(int(entry.name))
    return found


FAIL_ON_BAD = """
import os

def run(mini_batch):
    for p in mini_batch:
        if "bad" in os.path.basename(p):
            raise ValueError("bad input " + os.path.basename(p))
    return [os.path.basename(p) for p in mini_batch]
"""


@pytest.mark.parametrize(("threshold", "status"), [(-1, "Completed"), (3, "Completed"), (2, "Failed")])
def test_error_threshold_counts_failed_items_above_it(cli: Cli, tmp_path: Path, threshold: int, status: str) -> None:
    register(FAIL_ON_BAD, mini_batch_size=1, retry_settings={"max_retries": 2, "timeout": 30})
    names = make_inputs(tmp_path / "in", 6)
    for i in range(3):
        (tmp_path / "in" / f"bad-{i}.txt").write_text("!")
    job = cli.invoke("--input", str(tmp_path / "in"), "--error-threshold", str(threshold),
                     code=0 if status == "Completed" else 1)
    assert job["status"] == status, job
    assert job["settings"]["error_threshold"] == threshold
    if status == "Completed":
        # Failed only when failed items go *above* the threshold: 3 failed items, threshold 3 is fine.
        assert job["counts"]["items_failed"] == 3 and job["counts"]["items_succeeded"] == 6
        assert sorted(lines(job["output_file"])) == names
        attempts = Counter(r["Mini-batch Id"] for r in processed_rows(job) if r["Status"] == layout.STATUS_EXCEPTION)
        assert sorted(attempts.values()) == [2, 2, 2]  # max_retries tries each
    else:
        assert job["error"].startswith("Exceeded error threshold")
        assert not Path(job["output_file"]).exists()


def test_init_failure_fails_the_job(cli: Cli, tmp_path: Path) -> None:
    register("def init():\n    raise RuntimeError('no model here')\n\ndef run(mini_batch):\n    return mini_batch\n")
    make_inputs(tmp_path / "in", 3)
    job = cli.invoke("--input", str(tmp_path / "in"), code=1)
    assert job["status"] == "Failed"
    assert "init() failed" in job["error"]
    assert job["counts"]["done"] == 0
    errors = "".join(p.read_text() for p in (Path(job["job_dir"]) / layout.LOG_USER_ERROR).rglob("*.txt"))
    assert errors.count("RuntimeError: no model here") == 3  # max_retries tries of init() in a row


@pytest.mark.parametrize("flag", [("--mini-batch-size", "0"), ("--instance-count", "0"), ("--max-retries", "-1"),
                                  ("--timeout", "0"), ("--error-threshold", "-2"),
                                  ("--set", "output_file_name=../escape.csv")])
def test_bad_override_values(cli: Cli, tmp_path: Path, flag: tuple[str, str]) -> None:
    register()
    make_inputs(tmp_path / "in", 2)
    cli("batch-endpoint", "invoke", "--name", ENDPOINT, "--input", str(tmp_path / "in"), "--backend", "process",
        *flag, code=2)
    assert cli.json("job", "list") == []


def test_output_file_name_with_summary_only_is_refused(cli: Cli, tmp_path: Path) -> None:
    register("def run(mini_batch):\n    return mini_batch\n", output_action="summary_only", output_file_name=None)
    make_inputs(tmp_path / "in", 2)
    res = cli("batch-endpoint", "invoke", "--name", ENDPOINT, "--input", str(tmp_path / "in"), "--backend",
              "process", "--set", "output_file_name=x.csv", code=2)
    assert "summary_only" in res.stderr
    job = cli.invoke("--input", str(tmp_path / "in"))
    assert job["status"] == "Completed" and job["output_file"] is None
    assert job["counts"]["items_succeeded"] == 2


def test_download_logs_and_stream(cli: Cli, tmp_path: Path) -> None:
    register()
    names = make_inputs(tmp_path / "in", 5)
    job = cli.invoke("--input", str(tmp_path / "in"), "--job-name", "dl-job")
    target = Path(cli("job", "download", "--name", "dl-job", "--download-path", str(tmp_path / "dl")).stdout.strip())
    assert target == tmp_path / "dl" / "named-outputs" / "score"
    assert (target / "predictions.csv").read_bytes() == Path(job["output_file"]).read_bytes()
    assert len(lines(target / "predictions.csv")) == len(names)
    cli("job", "download", "--name", "dl-job", "--output-name", "other", "--download-path", str(tmp_path), code=2)
    logs = cli("job", "logs", "--name", "dl-job").stdout
    assert "job_result.txt" in logs and "completed" in logs
    assert "Status: Completed" in cli("job", "stream", "--name", "dl-job").stdout.splitlines()


def wait_final(name: str, timeout: float = 30) -> dict[str, Any]:
    """The job once it ended, as `job show` sees it (which records an end no host is left to record)."""
    deadline = time.monotonic() + timeout
    store = Store.open()
    try:
        while (job := service.show(store, name))["status"] not in runner.FINAL:
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
    finally:
        store.close()
    return job


def test_resume_of_a_job_still_running_is_refused(cli: Cli, tmp_path: Path) -> None:
    register("import os, time\ndef run(mini_batch):\n    time.sleep(0.1)\n"
             "    return [os.path.basename(p) for p in mini_batch]\n", mini_batch_size=1)
    names = make_inputs(tmp_path / "in", 20)
    queued = cli.invoke("--input", str(tmp_path / "in"), "--no-wait", "--job-name", "busy")
    job_dir = Path(queued["job_dir"])
    deadline = time.monotonic() + 20
    while not any((job_dir / layout.DONE_DIR).glob("*.json")):
        assert time.monotonic() < deadline, "no mini-batch finished"
        time.sleep(0.05)
    res = cli("job", "resume", "--name", "busy", code=2)
    assert "still being run" in res.stderr
    job = wait_final("busy")
    assert job["status"] == "Completed", job
    assert sorted(lines(job["output_file"])) == names
    done_rows = Counter(r["Mini-batch Id"] for r in processed_rows(job) if r["Status"] == layout.STATUS_DONE)
    assert len(done_rows) == 20 and max(done_rows.values()) == 1
    res = cli("job", "resume", "--name", "busy", code=2)
    assert "already Completed" in res.stderr


def test_two_jobs_racing_for_one_output_file(cli: Cli, tmp_path: Path) -> None:
    """Both pass the check at invoke; the one that merges second fails cleanly (not stuck Finalizing)."""
    # run() naps: `invoke --no-wait` returns once the instances run, and the second invoke must come
    # before the first job merged (its output would then be refused at invoke already).
    register("import os, time\ndef run(mini_batch):\n    time.sleep(0.5)\n"
             "    return [os.path.basename(p) for p in mini_batch]\n", mini_batch_size=2)
    make_inputs(tmp_path / "in", 6)
    out = tmp_path / "shared-out"
    for name in ("race-a", "race-b"):
        cli.invoke("--input", str(tmp_path / "in"), "--no-wait", "--job-name", name, "--output-path", str(out))
    ends = sorted((wait_final("race-a"), wait_final("race-b")), key=lambda j: j["status"])
    assert [j["status"] for j in ends] == ["Completed", "Failed"]
    assert "output file exists" in ends[1]["error"] and str(out / "predictions.csv") in ends[1]["error"]
    assert len(lines(out / "predictions.csv")) == 6


def test_cancel_of_a_job_whose_host_died_ends_it_and_stops_its_instances(cli: Cli, tmp_path: Path) -> None:
    """No host is left to see the flag: cancel itself stops the instances and ends the job."""
    register("import os, time\ndef run(mini_batch):\n    time.sleep(0.2)\n"
             "    return [os.path.basename(p) for p in mini_batch]\n", mini_batch_size=1)
    make_inputs(tmp_path / "in", 40)
    job_dir = config.jobs_dir() / "orphaned"
    host = subprocess.Popen([str(BEPBUILD), "batch-endpoint", "invoke", "--name", ENDPOINT, "--input",
                             str(tmp_path / "in"), "--backend", "process", "--job-name", "orphaned", "-q",
                             "-o", "none"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    try:
        while not (job_dir.is_dir() and any((job_dir / layout.DONE_DIR).glob("*.json"))):
            assert time.monotonic() < deadline and host.poll() is None, "no mini-batch finished"
            time.sleep(0.05)
    finally:
        host.kill()
        host.wait()
    assert runtime_processes(job_dir), "the instances outlive their host"
    job = cli.json("job", "cancel", "--name", "orphaned")
    assert job["status"] == "Canceled" and job["cancel_requested"] is True
    assert not runtime_processes(job_dir)
    assert cli.json("job", "show", "--name", "orphaned")["status"] == "Canceled"
