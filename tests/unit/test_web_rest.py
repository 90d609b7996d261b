"""Azure's REST invoke of an endpoint: POST the scoring URI, GET the job, every error code with the
CLI's one-line message; once in-process (TestClient), once against a real `bepbuild serve`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from test_jobs_process import DEPLOYMENT, ENDPOINT, Cli, expected_rows, lines, make_inputs, register
from webkit import BEPBUILD, TOKEN, Server, invoke_body, poll_job

from bepbuild.web.app import create_app

AUTH = {"Authorization": f"Bearer {TOKEN}"}
URI = f"/endpoints/{ENDPOINT}/jobs"


@pytest.fixture
def cli() -> Cli:
    return Cli()


@pytest.fixture
def web() -> TestClient:
    with TestClient(create_app(TOKEN, backend="process"), headers=AUTH) as client:
        yield client


def cli_error(cli: Cli, *args: str) -> str:
    """The CLI's one-line error for the same invoke, without its `error: ` prefix."""
    res = cli("batch-endpoint", "invoke", "--backend", "process", *args, code=2)
    return res.stderr.strip().removeprefix("error: ")


def test_invoke_then_poll_to_completed(web: TestClient, tmp_path: Path) -> None:
    register()
    names = make_inputs(tmp_path / "in", 9)
    r = web.post(URI, json=invoke_body(tmp_path / "in"))
    assert r.status_code == 200, r.text
    started = r.json()
    assert started["status"] in ("Queued", "Preparing", "Running", "Finalizing", "Completed")
    assert started["properties"]["status"] == started["status"]
    assert started["deployment"] == DEPLOYMENT and started["backend"] == "process"
    assert started["id"] == f"{URI}/{started['name']}"
    job = poll_job(web, ENDPOINT, started["name"])
    assert job["status"] == "Completed", job
    assert job["counts"]["items_succeeded"] == 9
    assert set(lines(job["output_file"])) == expected_rows(tmp_path / "in", names)
    listed = web.get(URI).json()["value"]
    assert [j["name"] for j in listed] == [started["name"]]


def test_header_picks_a_non_default_deployment_and_outputs_go_where_asked(web: TestClient, tmp_path: Path) -> None:
    register()
    register(deployment="other-dpl", default=False, mini_batch_size=1)
    make_inputs(tmp_path / "in", 3)
    body = invoke_body(tmp_path / "in")
    body["properties"]["OutputData"] = {"score": {"JobOutputType": "UriFile", "Uri": str(tmp_path / "out" / "s.csv")}}
    r = web.post(URI, json=body, headers={"azureml-model-deployment": "other-dpl"})
    assert r.status_code == 200, r.text
    job = poll_job(web, ENDPOINT, r.json()["name"])
    assert job["status"] == "Completed" and job["deployment"] == "other-dpl"
    assert job["counts"]["mini_batches"] == 3  # the other deployment's mini_batch_size
    assert job["output_file"] == str(tmp_path / "out" / "s.csv") and len(lines(job["output_file"])) == 3
    # A UriFile input is one file, one mini-batch.
    r = web.post(URI, json=invoke_body(tmp_path / "in" / "item-001.txt", kind="UriFile"))
    job = poll_job(web, ENDPOINT, r.json()["name"])
    assert job["status"] == "Completed" and lines(job["output_file"]) == ["item-001.txt 2"]


BAD_BODIES: list[tuple[Any, str]] = [
    ("not json", "request body: not valid JSON"),
    ([], "request body: must be a JSON object"),
    ({}, "request body: properties: required"),
    ({"properties": {}}, "request body: properties.InputData: give one input"),
    ({"properties": {"InputData": {"a": {"JobInputType": "UriFolder", "Uri": "/x"},
                                   "b": {"JobInputType": "UriFolder", "Uri": "/y"}}}},
     "request body: properties.InputData: model deployments take exactly one input, got 2"),
    ({"properties": {"InputData": {"n": {"JobInputType": "Literal", "Value": "3"}}}},
     "request body: properties.InputData: Uri is required"),
    ({"properties": {"InputData": {"n": {"JobInputType": "Literal", "Uri": "3"}}}},
     "request body: properties.InputData.JobInputType: Unsupported input type 'Literal'"),
    ({"properties": {"InputData": {"n": {"JobInputType": "UriFolder", "Uri": "/in"}},
                     "OutputData": {"score": {"JobOutputType": "MLTable", "Uri": "/out"}}}},
     "request body: properties.OutputData.JobOutputType: 'MLTable'"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
def test_bad_bodies_are_400_with_one_line(web: TestClient, body: Any, message: str) -> None:
    register()
    content = body if isinstance(body, str) else json.dumps(body)
    r = web.post(URI, content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["message"].startswith(message), err
    assert "\n" not in err["message"] and err["code"] == "UserError"
    assert web.get(URI).json()["value"] == []  # nothing half-made


def test_error_codes_and_messages_match_the_cli(web: TestClient, cli: Cli, tmp_path: Path) -> None:
    register()
    make_inputs(tmp_path / "in", 2)
    body = invoke_body(tmp_path / "in")
    # 404: unknown endpoint, unknown deployment, unknown job; the CLI's words.
    r = web.post("/endpoints/ghost-ep/jobs", json=body)
    assert r.status_code == 404
    assert r.json()["error"]["message"] == cli_error(cli, "--name", "ghost-ep", "--input", str(tmp_path / "in"))
    r = web.post(URI, json=body, headers={"azureml-model-deployment": "nope-dpl"})
    assert r.status_code == 404
    assert r.json()["error"]["message"] == cli_error(cli, "--name", ENDPOINT, "--deployment-name", "nope-dpl",
                                                     "--input", str(tmp_path / "in"))
    r = web.get(f"{URI}/no-such-job")
    assert r.status_code == 404 and r.json()["error"]["message"] == "job 'no-such-job' not found"
    # 400: a missing input folder, as the CLI says it.
    r = web.post(URI, json=invoke_body(tmp_path / "missing"))
    assert r.status_code == 400
    assert r.json()["error"]["message"] == cli_error(cli, "--name", ENDPOINT, "--input", str(tmp_path / "missing"))
    # 409: the output file exists (never overwritten).
    (tmp_path / "taken.csv").write_text("someone's\n")
    out = {"o": {"JobOutputType": "UriFile", "Uri": str(tmp_path / "taken.csv")}}
    r = web.post(URI, json={"properties": {**body["properties"], "OutputData": out}})
    assert r.status_code == 409
    assert r.json()["error"]["message"] == cli_error(cli, "--name", ENDPOINT, "--input", str(tmp_path / "in"),
                                                     "--output-path", str(tmp_path), "--set",
                                                     "output_file_name=taken.csv")
    assert (tmp_path / "taken.csv").read_text() == "someone's\n"
    # 401 without the token, whatever the body.
    with TestClient(create_app(TOKEN, backend="process")) as anonymous:
        r = anonymous.post(URI, json=body)
        assert r.status_code == 401 and r.json()["error"]["code"] == "Unauthorized"
    # 413 for a body no invoke needs.
    r = web.post(URI, content=b"{" + b" " * (1 << 20) + b"}", headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert web.get(URI).json()["value"] == []


def test_a_job_is_found_only_under_its_own_endpoint(web: TestClient, cli: Cli, tmp_path: Path) -> None:
    register()
    register(endpoint="second-ep")
    make_inputs(tmp_path / "in", 2)
    job = cli.invoke("--input", str(tmp_path / "in"), "--job-name", "first-job")
    assert web.get(f"{URI}/first-job").json()["status"] == "Completed"
    assert web.get(f"/endpoints/{ENDPOINT.upper()}/jobs/first-job").status_code == 200  # names ignore case
    r = web.get("/endpoints/second-ep/jobs/first-job")
    assert r.status_code == 404 and "first-job" in r.json()["error"]["message"]
    assert job["name"] == "first-job"


# -- a real server ----------------------------------------------------------------------------------


def test_real_server_scoring_uri_invoke_and_stop(bepbuild_home: Path, tmp_path: Path) -> None:
    register()
    names = make_inputs(tmp_path / "in", 12)
    server = Server(bepbuild_home)
    try:
        shown = json.loads(subprocess.run([str(BEPBUILD), "batch-endpoint", "show", "--name", ENDPOINT],
                                          capture_output=True, text=True, check=True).stdout)
        assert shown["scoring_uri"] == f"{server.base}/endpoints/{ENDPOINT}/jobs"
        assert shown["scoring_uri"].startswith("http://127.0.0.1:")
        r = server.client.post(shown["scoring_uri"], json=invoke_body(tmp_path / "in"))
        assert r.status_code == 200, r.text
        job = poll_job(server.client, ENDPOINT, r.json()["name"])
        assert job["status"] == "Completed", job
        assert set(lines(job["output_file"])) == expected_rows(tmp_path / "in", names)
        assert server.client.get(shown["scoring_uri"], headers={"Authorization": "Bearer nope"}).status_code == 401
    finally:
        server.stop()
    assert server.proc.returncode == 0
    assert not (bepbuild_home / "serve.json").exists()  # removed on a clean stop
    shown = json.loads(subprocess.run([str(BEPBUILD), "batch-endpoint", "show", "--name", ENDPOINT],
                                      capture_output=True, text=True, check=True).stdout)
    assert "scoring_uri" not in shown


def test_a_failed_background_start_lets_the_job_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server lives on after a failed start: it must not keep the host lock the preparation took."""
    from bepbuild.jobs import hostlock, service

    register()
    make_inputs(tmp_path / "in", 2)

    def no_process(*args: Any, **kwargs: Any) -> None:
        raise OSError(24, "Too many open files")

    app = create_app(TOKEN, backend="process")
    with monkeypatch.context() as m, TestClient(app, headers=AUTH, raise_server_exceptions=False) as web:
        m.setattr(service.subprocess, "Popen", no_process)
        r = web.post(URI, json=invoke_body(tmp_path / "in"))
        assert r.status_code == 500
        assert r.json()["error"]["message"] == "internal error: OSError: [Errno 24] Too many open files"
        [job] = web.get(URI).json()["value"]
    assert hostlock.held(Path(job["job_dir"])) is None
    Cli()("job", "resume", "--name", job["name"], "-q")  # the job can be run after all
    assert Cli().json("job", "show", "--name", job["name"])["status"] == "Completed"
