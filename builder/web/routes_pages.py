"""The dashboard's pages: endpoints, jobs, a job, a job's outputs.

Pages render what is cheap at once (records, counts, settings); the live parts of a job page
(progress, charts, failures, the mini-batch table) come from `routes_api` right after, and again
while the job runs.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from . import catalog, jobview, outputs
from .app import TOKEN_PARAM, render, store
from .paths import own_output_folder, relative


def _int(request: Request, name: str, default: int = 0) -> int:
    try:
        return max(0, int(request.query_params.get(name, default)))
    except ValueError:
        return default


def index(request: Request) -> Response:
    query = urllib.parse.urlencode({TOKEN_PARAM: request.query_params.get(TOKEN_PARAM, "")})
    return RedirectResponse(f"/endpoints?{query}", status_code=307)


def endpoints_page(request: Request) -> HTMLResponse:
    views = catalog.endpoints(store(), request.app.state.server)
    return render(request, "endpoints.html", endpoints=views, server=request.app.state.server, active="endpoints")


def jobs_page(request: Request) -> HTMLResponse:
    q = request.query_params
    flt = catalog.JobFilter(endpoint=q.get("endpoint") or None, deployment=q.get("deployment") or None,
                            status=q.get("status") or None)
    page = _int(request, "page")
    rows, total = catalog.jobs(store(), flt, page)
    s = store()
    choices = {ep["name"]: [d["name"] for d in s.list_deployments(ep["name"])] for ep in s.list_endpoints()}
    return render(request, "jobs.html", jobs=rows, total=total, page=page, page_size=catalog.JOBS_PAGE, flt=flt,
                  choices=choices, statuses=catalog.STATUSES, active="jobs")


def job_page(request: Request) -> HTMLResponse:
    job = store().get_job(request.path_params["name"])
    prog = jobview.progress(job)
    return render(request, "job.html", job=job, progress=prog, settings=jobview.settings_rows(job), active="jobs")


def outputs_page(request: Request) -> HTMLResponse:
    job = store().get_job(request.path_params["name"])
    files, cut = outputs.list_files(job)
    page = outputs.predictions_page(job, _int(request, "page"))
    out_dir = Path(job.get("output_dir") or "")
    output_rel = relative(out_dir, Path(job["output_file"])) if job.get("output_file") else None
    return render(request, "outputs.html", job=job, files=files, cut=cut, page=page, output_rel=output_rel,
                  separator=outputs.separator(job), page_rows=outputs.PAGE_ROWS,
                  own_folder=own_output_folder(job), active="jobs")


def routes() -> list[Route]:
    return [
        Route("/", index),
        Route("/endpoints", endpoints_page),
        Route("/jobs", jobs_page),
        Route("/jobs/{name}", job_page),
        Route("/jobs/{name}/outputs", outputs_page),
    ]
