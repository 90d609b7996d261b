"""A job of 100,000 mini-batches on the dashboard: every view is bounded (a page of the table, the
last attempts on the timeline, a bounded number of chart points), whatever the job's size. The
timings are bench/dashboard.py's business; this checks what is shown."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient
from webkit import TOKEN, big_job

from bepbuild.web import charts
from bepbuild.web.app import create_app
from bepbuild.web.routes_api import TABLE_ROWS

N = 100_000


@pytest.fixture
def web() -> TestClient:
    with TestClient(create_app(TOKEN, backend="process"), headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def test_a_job_of_100k_mini_batches_opens_with_bounded_views(web: TestClient) -> None:
    big_job("big-job", N, status="Completed", done=0, attempts=N, prediction_rows=N)
    page = web.get("/jobs/big-job")
    assert page.status_code == 200
    live = web.get("/jobs/big-job/live").json()
    assert live["attempts"] == N and live["progress"]["total"] == N
    timeline = live["html"]["timeline"]
    assert timeline.count('<rect class="mb') == charts.MAX_BARS
    assert f"last {charts.MAX_BARS:,} of {N:,} attempts" in timeline
    for points in re.findall(r'<polyline [^>]*points="([^"]*)"', live["html"]["chart"]):
        assert len(points.split()) <= charts.MAX_BUCKETS
    last = web.get("/jobs/big-job/mini-batches", params={"page": N // TABLE_ROWS - 1}).text
    ids = re.findall(r"<td>(\d{9})</td>", last)
    assert ids == [f"{i:09d}" for i in reversed(range(TABLE_ROWS))]  # the oldest attempts, last page
    assert f"page {N // TABLE_ROWS:,} of {N // TABLE_ROWS:,}" in last
    failed = web.get("/jobs/big-job/mini-batches", params={"failed": 1}).text
    assert f"{len(range(0, N, 97)):,} attempts" in failed
    out = web.get("/jobs/big-job/outputs", params={"page": 1999}).text
    assert "100,000 rows" in out and "page 2,000 of 2,000" in out
    assert re.findall(r"<td>(img-\d+\.png)</td>", out) == [f"img-{i:06d}.png" for i in range(N - 50, N)]
