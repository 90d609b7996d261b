"""The dashboard in a real browser: what a person sees (visible text, not pixels), screenshots kept
in each test's tmp folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from test_jobs_process import DEPLOYMENT, ENDPOINT, Cli, make_inputs, register
from webkit import SCORE_OR_FAIL, invoke_body, make_images, poll_job

pytestmark = pytest.mark.browser


def shot(page: Any, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)


def test_endpoints_page_lists_a_deployment(server: Any, page: Any, tmp_path: Path) -> None:
    register()
    register(deployment="blue-dpl", default=False)
    page.goto(server.page("/endpoints"))
    card = page.locator(f"#endpoint-{ENDPOINT}")
    text = card.inner_text()
    assert ENDPOINT in text and DEPLOYMENT in text and "blue-dpl" in text
    first_row = card.locator("table.deployments tbody tr").first.inner_text()
    assert DEPLOYMENT in first_row and "default" in first_row
    assert f"{server.base}/endpoints/{ENDPOINT}/jobs" in text  # the scoring URI
    shot(page, tmp_path, "endpoints")


def test_a_request_without_the_token_is_refused(server: Any, page: Any, tmp_path: Path) -> None:
    register()
    for path in ("/endpoints", "/jobs", f"/endpoints/{ENDPOINT}/jobs", "/static/app.js"):
        response = page.goto(server.base + path)
        assert response.status == 401, path
        assert "401" in page.inner_text("body") and ENDPOINT not in page.content()
    shot(page, tmp_path, "refused")


def test_job_page_progress_moves_while_the_job_runs_then_shows_the_final_counts(
        server: Any, page: Any, tmp_path: Path) -> None:
    register(SCORE_OR_FAIL, mini_batch_size=1)
    make_inputs(tmp_path / "in", 16)
    name = server.client.post(f"/endpoints/{ENDPOINT}/jobs", json=invoke_body(tmp_path / "in")).json()["name"]
    page.goto(server.page(f"/jobs/{name}"))
    page.evaluate("window.__loadedOnce = true")  # gone if the page reloaded
    seen: list[float] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        seen.append(float(page.get_attribute("#progress [role=progressbar]", "aria-valuenow")))
        if 0 < seen[-1] < 100 and not (tmp_path / "running.png").exists():
            shot(page, tmp_path, "running")
        if page.get_attribute("#job", "data-final") == "true":
            break
        time.sleep(0.25)
    moving = sorted({v for v in seen if 0 < v < 100})
    assert len(moving) >= 2, seen  # the bar moved while the job ran
    assert seen == sorted(seen), seen  # and never went back
    page.wait_for_function("document.querySelector('#progress').innerText.includes('Completed')")
    progress = page.inner_text("#progress")
    assert "16 / 16 mini-batches" in progress and "100%" in progress
    assert "16\nitems succeeded" in progress and "0\nitems failed" in progress
    assert page.evaluate("window.__loadedOnce") is True
    # the table is fetched again once the job is final (an answer to an earlier request never replaces it)
    page.wait_for_function("document.querySelector('#table').innerText.includes('16 attempts')")
    assert len(page.locator("#table tbody tr").all()) > 0
    assert page.locator("#timeline svg rect.mb.ok").count() == 16
    shot(page, tmp_path, "completed")


def test_a_failures_traceback_is_shown(server: Any, page: Any, tmp_path: Path) -> None:
    register(SCORE_OR_FAIL, mini_batch_size=2, retry_settings={"max_retries": 2, "timeout": 30})
    make_images(tmp_path / "in", 3)
    make_images(tmp_path / "in", 1, prefix="bad")
    name = server.client.post(f"/endpoints/{ENDPOINT}/jobs", json=invoke_body(tmp_path / "in")).json()["name"]
    poll_job(server.client, ENDPOINT, name)
    page.goto(server.page(f"/jobs/{name}"))
    page.wait_for_selector("#failures details.failure")
    failures = page.inner_text("#failures")
    assert "Traceback (most recent call last)" in failures
    assert "ValueError: cannot score bad-00.png: the pixels are upside down" in failures
    page.click("text=failed tries")
    page.wait_for_function("document.querySelector('#table').innerText.includes('2 attempts')")
    table = page.inner_text("#table")
    assert table.count("RUN_EXCEPTION") == 2 and "RUN_DONE" not in table
    shot(page, tmp_path, "failure")


def test_thumbnails_render_beside_predictions_of_image_inputs(server: Any, page: Any, tmp_path: Path) -> None:
    register(SCORE_OR_FAIL, mini_batch_size=3)
    names = make_images(tmp_path / "in", 7)
    name = server.client.post(f"/endpoints/{ENDPOINT}/jobs", json=invoke_body(tmp_path / "in")).json()["name"]
    assert poll_job(server.client, ENDPOINT, name)["status"] == "Completed"
    page.goto(server.page(f"/jobs/{name}/outputs"))
    thumbs = page.locator("#predictions img.thumb")
    assert thumbs.count() == 7
    page.wait_for_function("[...document.querySelectorAll('img.thumb')].every(i => i.complete && i.naturalWidth > 0)")
    rows = page.locator("#predictions tbody tr").all_inner_texts()
    assert [r.split("\t")[-2] for r in rows] == names  # each image beside its own row
    assert "7 rows" in page.inner_text("#predictions")
    shot(page, tmp_path, "outputs")


def test_cancel_and_resume_buttons(server: Any, page: Any, tmp_path: Path) -> None:
    register(SCORE_OR_FAIL, mini_batch_size=1)
    make_inputs(tmp_path / "in", 20)
    name = server.client.post(f"/endpoints/{ENDPOINT}/jobs", json=invoke_body(tmp_path / "in")).json()["name"]
    page.goto(server.page(f"/jobs/{name}"))
    page.wait_for_function("document.querySelector('#progress').innerText.includes('Running')")
    page.click("button:has-text('Cancel')")
    page.wait_for_function("document.querySelector('#progress').innerText.includes('Canceled')", timeout=60_000)
    assert page.locator("button:has-text('Cancel')").is_disabled()
    page.click("button:has-text('Resume')")
    page.wait_for_function("document.querySelector('#progress').innerText.includes('Completed')", timeout=90_000)
    assert "20 / 20 mini-batches" in page.inner_text("#progress")
    shot(page, tmp_path, "resumed")
    shown = Cli().json("job", "show", "--name", name)  # the CLI's record agrees
    assert shown["status"] == "Completed" and shown["counts"]["items_succeeded"] == 20
