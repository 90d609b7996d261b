"""The dashboard in-process (Starlette's TestClient): the token on every route, the pages, a job's
live state, its failures and outputs, and the file routes' containment."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from test_jobs_process import DEPLOYMENT, ENDPOINT, Cli, make_inputs, register
from webkit import SCORE_OR_FAIL, TOKEN, make_images

from bepbuild.web.app import create_app

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def cli() -> Cli:
    return Cli()


@pytest.fixture
def web() -> TestClient:
    with TestClient(create_app(TOKEN, backend="process"), headers=AUTH) as client:
        yield client


@pytest.fixture
def anonymous() -> TestClient:
    with TestClient(create_app(TOKEN, backend="process")) as client:
        yield client


def text(html: str) -> str:
    """The visible words of an HTML fragment (tags dropped, spaces collapsed)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def failing_job(cli: Cli, tmp_path: Path) -> dict:
    register(SCORE_OR_FAIL, mini_batch_size=2, retry_settings={"max_retries": 2, "timeout": 30})
    folder = tmp_path / "in"
    make_images(folder, 5)
    make_images(folder, 1, prefix="bad")
    return cli.invoke("--input", str(folder), "--job-name", "job-with-failure")


# -- the token -------------------------------------------------------------------------------------

ROUTES = [
    ("GET", "/"), ("GET", "/endpoints"), ("GET", "/jobs"), ("GET", "/jobs/any-job"), ("GET", "/jobs/any-job/live"),
    ("GET", "/jobs/any-job/mini-batches"), ("GET", "/jobs/any-job/outputs"),
    ("GET", "/jobs/any-job/files/job/job.json"), ("GET", "/static/style.css"), ("GET", "/static/app.js"),
    ("GET", "/endpoints/ep/jobs"), ("GET", "/endpoints/ep/jobs/any-job"), ("POST", "/endpoints/ep/jobs"),
    ("POST", "/jobs/any-job/cancel"), ("POST", "/jobs/any-job/resume"), ("GET", "/no/such/route"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_refuses_a_request_without_the_token(anonymous: TestClient, method: str, path: str) -> None:
    for headers, query in (({}, ""), ({"Authorization": "Bearer wrong-token-0123456789"}, ""),
                           ({}, "?token=wrong"), ({"Authorization": f"Basic {TOKEN}"}, ""),
                           ({}, f"?token={TOKEN[:-1]}")):
        r = anonymous.request(method, path + query, headers=headers, follow_redirects=False)
        assert r.status_code == 401, (method, path, headers, query, r.status_code)
        assert r.json()["error"]["code"] == "Unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
    r = anonymous.request(method, path, headers={"Accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 401 and "401 Unauthorized" in r.text


def test_the_token_is_accepted_as_bearer_header_or_query_parameter(anonymous: TestClient) -> None:
    assert anonymous.get("/endpoints", headers=AUTH).status_code == 200
    r = anonymous.get(f"/endpoints?token={TOKEN}")
    assert r.status_code == 200
    assert r.headers["referrer-policy"] == "no-referrer" and "script-src 'self'" in r.headers["content-security-policy"]
    # Every link on the page carries the token, so the browser never asks twice.
    links = re.findall(r'(?:href|src)="([^"]+)"', r.text)
    assert links and all(f"token={TOKEN}" in link for link in links), links


# -- pages -----------------------------------------------------------------------------------------


def test_endpoints_page_lists_deployments_with_the_default_marked(web: TestClient, cli: Cli, tmp_path: Path) -> None:
    register()
    register(deployment="other-dpl", default=False)
    make_inputs(tmp_path / "in", 3)
    job = cli.invoke("--input", str(tmp_path / "in"))
    r = web.get("/endpoints")
    assert r.status_code == 200
    page = text(r.text)
    assert ENDPOINT in page and DEPLOYMENT in page and "other-dpl" in page
    rows = re.findall(r"<tr>\s*<td class=\"name\">(.*?)</td>", r.text, re.S)
    assert [text(x).strip() for x in rows] == [f"{DEPLOYMENT} default", "other-dpl"]  # the default first, marked
    assert job["name"] in page and "Completed" in page  # last jobs
    assert "(no server)" in page  # no scoring URI: the app runs without a published server here


def test_jobs_page_filters_by_endpoint_deployment_and_status(web: TestClient, cli: Cli, tmp_path: Path) -> None:
    register()
    register(deployment="other-dpl", default=False)
    register(endpoint="second-ep")
    make_inputs(tmp_path / "in", 2)
    a = cli.invoke("--input", str(tmp_path / "in"), "--job-name", "job-a")
    b = cli.invoke("--input", str(tmp_path / "in"), "--job-name", "job-b", "--deployment-name", "other-dpl")
    c = cli.json("batch-endpoint", "invoke", "--name", "second-ep", "--backend", "process", "-q",
                 "--input", str(tmp_path / "in"), "--job-name", "job-c")

    def names(**query: str) -> list[str]:
        r = web.get("/jobs", params=query)
        assert r.status_code == 200, r.text
        return re.findall(r'<td><a href="/jobs/([^?"]+)\?', r.text)

    assert names() == ["job-c", "job-b", "job-a"]
    assert names(endpoint=ENDPOINT) == ["job-b", "job-a"]
    assert names(endpoint=ENDPOINT, deployment="other-dpl") == ["job-b"]
    assert names(endpoint=ENDPOINT.upper(), deployment="Other-DPL") == ["job-b"]  # names ignore case
    assert names(deployment=DEPLOYMENT) == ["job-c", "job-a"]  # a deployment of that name in any endpoint
    assert names(status="Completed") == ["job-c", "job-b", "job-a"]
    assert names(status="Failed") == []
    assert {a["status"], b["status"], c["status"]} == {"Completed"}
    r = web.get("/jobs", params={"endpoint": "no-such-ep"}, headers={"Accept": "text/html"})
    assert r.status_code == 404 and "no-such-ep" in text(r.text)


def test_job_page_live_state_of_a_finished_job(web: TestClient, cli: Cli, tmp_path: Path) -> None:
    job = failing_job(cli, tmp_path)
    assert job["status"] == "Completed", job  # error_threshold -1: failed items do not fail the job
    r = web.get(f"/jobs/{job['name']}")
    assert r.status_code == 200
    assert job["name"] in text(r.text) and "mini_batch_size" in text(r.text)
    live = web.get(f"/jobs/{job['name']}/live").json()
    assert live["final"] is True and live["status"] == "Completed"
    p = live["progress"]
    assert (p["total"], p["done"], p["failed"], p["items_succeeded"], p["items_failed"]) == (3, 2, 1, 4, 2)
    assert p["percent"] == 100.0
    progress = text(live["html"]["progress"])
    assert "3 / 3 mini-batches" in progress and "4 items succeeded" in progress and "2 items failed" in progress
    # The traceback of the failing mini-batch, from logs/user/error/.
    failures = live["html"]["failures"]
    assert "Traceback (most recent call last)" in failures
    assert "ValueError: cannot score bad-00.png: the pixels are upside down" in failures
    # Charts: a line per instance, a bar per attempt, the retry and the failures in their colours.
    assert "<polyline" in live["html"]["chart"] and "instance-0" in live["html"]["chart"]
    bars = re.findall(r'<rect class="mb (\w+)"', live["html"]["timeline"])
    assert bars.count("ok") == 2 and bars.count("failed") == 2, bars  # bad-00's mini-batch: tried twice, failed
    actions = live["html"]["actions"]
    buttons = dict(re.findall(r'<button [^>]*data-action="[^"]*/(cancel|resume)\?[^"]*" ?(disabled)?', actions))
    assert buttons == {"cancel": "disabled", "resume": "disabled"}  # a Completed job is neither canceled nor resumed


def test_job_page_records_an_end_no_host_was_left_to_record(web: TestClient) -> None:
    """The instances' coordinator finished the job after its host was gone: the page shows it ended."""
    import json

    from webkit import big_job

    from bepbuild_runtime import layout

    job = big_job("finished-alone", 3, status="Running", done=3, prediction_rows=3)
    job_dir = Path(job["job_dir"])
    (job_dir / layout.JOB_FILE).write_text(json.dumps(job))
    (job_dir / layout.STATE_DIR).mkdir()
    (job_dir / layout.OUTCOME_FILE).write_text(json.dumps({"status": "Completed", "error": None}))
    live = web.get("/jobs/finished-alone/live").json()
    assert live["final"] is True and live["status"] == "Completed", live["status"]


def test_mini_batch_table_pages_and_failed_filter(web: TestClient, cli: Cli, tmp_path: Path) -> None:
    register(mini_batch_size=1)
    make_inputs(tmp_path / "in", 60)
    job = cli.invoke("--input", str(tmp_path / "in"))
    pages = [web.get(f"/jobs/{job['name']}/mini-batches", params={"page": p}).text for p in range(4)]
    assert "60 attempts" in text(pages[0]) and "page 1 of 3" in text(pages[0])
    assert [len(re.findall(r"<tr class=", p)) for p in pages] == [25, 25, 10, 10]  # past the end: the last page
    ids = re.findall(r"<td>(0000000\d\d)</td>", "".join(pages[:3]))
    assert ids == [f"{i:09d}" for i in reversed(range(60))]  # newest first: one worker, so by id
    failed = web.get(f"/jobs/{job['name']}/mini-batches", params={"failed": 1}).text
    assert "0 attempts" in text(failed) and "No attempt yet" in text(failed)


def test_outputs_page_shows_predictions_with_thumbnails(web: TestClient, cli: Cli, tmp_path: Path) -> None:
    job = failing_job(cli, tmp_path)
    r = web.get(f"/jobs/{job['name']}/outputs")
    assert r.status_code == 200
    page = text(r.text)
    assert "predictions.csv" in page and "4 rows" in page and "spaces" in page
    thumbs = re.findall(r'<img class="thumb" alt="([^"]+)" src="([^"]+)"', r.text)
    # bad-00.png and digit-00.png share the failed mini-batch: no rows
    assert sorted(a for a, _ in thumbs) == [f"digit-{i:02d}.png" for i in range(1, 5)]
    for name, src in thumbs:
        img = web.get(src.replace("&amp;", "&"))
        assert img.status_code == 200 and img.headers["content-type"] == "image/png"
        assert img.content == (tmp_path / "in" / name).read_bytes()
    download = web.get(f"/jobs/{job['name']}/files/output/predictions.csv", params={"download": 1})
    assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
    assert download.content == Path(job["output_file"]).read_bytes()


def test_outputs_of_summary_only_jobs_list_parquet_row_counts(web: TestClient, cli: Cli, tmp_path: Path) -> None:
    script = """
import os
import pyarrow as pa, pyarrow.parquet as pq

def init():
    pass

def run(mini_batch):
    out = os.environ["AZUREML_BI_OUTPUT_PATH"]
    names = [os.path.basename(p) for p in mini_batch]
    pq.write_table(pa.table({"file": names * 3}), os.path.join(out, names[0] + ".parquet"))
    return mini_batch
"""
    register(script, output_action="summary_only", output_file_name=None, mini_batch_size=2)
    make_inputs(tmp_path / "in", 3)
    job = cli.invoke("--input", str(tmp_path / "in"))
    assert job["status"] == "Completed", job
    page = text(web.get(f"/jobs/{job['name']}/outputs").text)
    assert "item-000.txt.parquet" in page and "6 rows" in page
    assert "item-002.txt.parquet" in page and "3 rows" in page


# -- file routes: only files inside the job's folders ---------------------------------------------------


def test_file_routes_refuse_paths_outside_the_job_folders(web: TestClient, cli: Cli, tmp_path: Path) -> None:
    job = failing_job(cli, tmp_path)
    name = job["name"]
    (tmp_path / "in" / "secret.txt").write_text("not an input image")
    (tmp_path / "in" / "sub").mkdir()
    (tmp_path / "in" / "sub" / "nested.png").write_bytes((tmp_path / "in" / "digit-00.png").read_bytes())
    (tmp_path / "outside.png").write_bytes((tmp_path / "in" / "digit-00.png").read_bytes())
    os.symlink(tmp_path / "outside.png", tmp_path / "in" / "link.png")
    os.symlink(tmp_path / "outside.png", Path(job["output_dir"]) / "link-out.png")
    os.symlink("/etc/passwd", Path(job["job_dir"]) / "logs" / "passwd.txt")
    ok = [f"/jobs/{name}/files/job/job.json", f"/jobs/{name}/files/job/logs/job_result.txt",
          f"/jobs/{name}/files/output/predictions.csv", f"/jobs/{name}/files/input/digit-01.png"]
    for url in ok:
        assert web.get(url).status_code == 200, url
    bad = [
        f"/jobs/{name}/files/job/../../registry.db", f"/jobs/{name}/files/job/%2e%2e/%2e%2e/registry.db",
        f"/jobs/{name}/files/job/..%2f..%2fregistry.db", f"/jobs/{name}/files/job//etc/passwd",
        f"/jobs/{name}/files/job/%2fetc%2fpasswd", f"/jobs/{name}/files/job/logs/passwd.txt",
        f"/jobs/{name}/files/job/", f"/jobs/{name}/files/job/logs", f"/jobs/{name}/files/output/link-out.png",
        f"/jobs/{name}/files/output/../in/digit-00.png", f"/jobs/{name}/files/input/secret.txt",
        f"/jobs/{name}/files/input/sub/nested.png", f"/jobs/{name}/files/input/link.png",
        f"/jobs/{name}/files/input/../outside.png", f"/jobs/{name}/files/secrets/job.json",
        f"/jobs/{name}/files/job/job.json%00.png", "/jobs/no-such-job/files/job/job.json",
    ]
    for url in bad:
        r = web.get(url)
        assert r.status_code == 404, (url, r.status_code, r.text[:200])
        assert "root:" not in r.text and "not an input image" not in r.text


def test_cancel_and_resume_refuse_as_the_cli_does(web: TestClient, cli: Cli, tmp_path: Path) -> None:
    register()
    make_inputs(tmp_path / "in", 2)
    name = cli.invoke("--input", str(tmp_path / "in"))["name"]
    for verb in ("cancel", "resume"):
        r = web.post(f"/jobs/{name}/{verb}")
        assert r.status_code == 409, r.text
        said = cli("job", verb, "--name", name, code=2).stderr.strip().removeprefix("error: ")
        assert r.json()["error"]["message"] == said
    r = web.post("/jobs/no-such-job/cancel")
    assert r.status_code == 404 and r.json()["error"]["message"] == "job 'no-such-job' not found"


def test_an_output_folder_the_user_chose_shows_only_the_jobs_output_file(
        web: TestClient, cli: Cli, tmp_path: Path) -> None:
    register()
    make_inputs(tmp_path / "in", 3)
    mine = tmp_path / "my-folder"
    (mine / "notes").mkdir(parents=True)
    (mine / "notes" / "diary.txt").write_text("private")
    (mine / "taxes.csv").write_text("private")
    job = cli.invoke("--input", str(tmp_path / "in"), "--output-path", str(mine))
    assert Path(job["output_file"]).parent == mine
    page = web.get(f"/jobs/{job['name']}/outputs").text
    assert "predictions.csv" in text(page) and "3 rows" in text(page)
    assert "diary" not in page and "taxes" not in page
    assert web.get(f"/jobs/{job['name']}/files/output/predictions.csv").status_code == 200
    for rel in ("taxes.csv", "notes/diary.txt", "./taxes.csv"):
        r = web.get(f"/jobs/{job['name']}/files/output/{rel}")
        assert r.status_code == 404 and "private" not in r.text, rel


def test_links_keep_a_token_with_url_characters() -> None:
    token = "a&b=c#d?e/f+g%h 0123456789"
    with TestClient(create_app(token, backend="process")) as client:
        r = client.get("/", params={"token": token})
        assert r.status_code == 200 and r.url.path == "/endpoints"
        for link in re.findall(r'(?:href|src)="([^"]+)"', r.text):
            assert client.get(link.replace("&amp;", "&")).status_code == 200, link
