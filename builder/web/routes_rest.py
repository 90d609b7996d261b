"""Azure's REST surface of a batch endpoint: POST its scoring_uri to start a job, GET the job.

    POST /endpoints/{endpoint}/jobs            start a job (detached, as `invoke --no-wait`)
    GET  /endpoints/{endpoint}/jobs            the endpoint's jobs, newest first
    GET  /endpoints/{endpoint}/jobs/{job}      one job, with live counts while it runs (`job show`)

Answers are the job records `bepbuild job show` prints, plus Azure's `id` and `properties.status`;
errors are `{"error": {"code", "message"}}` with the CLI's one-line message: 400 bad body or
settings, 401 no token, 404 unknown endpoint, deployment or job, 409 conflicts.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..errors import NotFoundError, UserError
from ..jobs import service
from . import actions, rest
from .app import error_json, store

MAX_BODY = 1 << 20


def resource(endpoint: str, job: dict[str, Any]) -> dict[str, Any]:
    """A job as the REST API answers it: the job record with Azure's `id` and `properties`."""
    return {**job, "id": f"/endpoints/{endpoint}/jobs/{job['name']}",
            "properties": {"status": job.get("status"), "endpointName": endpoint,
                           "deploymentName": job.get("deployment"), "experimentName": job.get("experiment_name")}}


def _same_endpoint(endpoint: str, job: dict[str, Any]) -> str:
    """The endpoint's registered name, when `job` is one of its jobs (NotFoundError otherwise)."""
    s = store()
    name = s.get_endpoint(endpoint)["name"]
    try:
        owner = s.get_endpoint(str(job.get("endpoint")))["name"]
    except NotFoundError:
        owner = None
    if owner != name:
        raise NotFoundError(f"job {job['name']!r} not found for endpoint {name!r}")
    return name


async def invoke(request: Request) -> JSONResponse:
    endpoint = request.path_params["endpoint"]
    raw = await request.body()
    if len(raw) > MAX_BODY:
        return error_json(413, "UserError", f"request body: larger than {MAX_BODY} bytes")
    try:
        body = json.loads(raw or b"null")
    except ValueError as e:
        raise UserError(f"request body: not valid JSON ({e})") from None
    deployment = request.headers.get(rest.DEPLOYMENT_HEADER)
    backend = request.app.state.backend

    def work() -> tuple[str, dict[str, Any]]:
        s = store()
        name = s.get_endpoint(endpoint)["name"]  # 404 before a body error for an unknown endpoint
        return name, actions.invoke_detached(s, rest.parse(name, body, deployment, backend))

    name, job = await run_in_threadpool(work)
    return JSONResponse(resource(name, job))


def list_jobs(request: Request) -> JSONResponse:
    s = store()
    name = s.get_endpoint(request.path_params["endpoint"])["name"]
    return JSONResponse({"value": [resource(name, j) for j in s.list_jobs(endpoint=name)]})


def show_job(request: Request) -> JSONResponse:
    job = service.show(store(), request.path_params["job"])
    name = _same_endpoint(request.path_params["endpoint"], job)
    return JSONResponse(resource(name, job))


def routes() -> list[Route]:
    return [
        Route("/endpoints/{endpoint}/jobs", invoke, methods=["POST"]),
        Route("/endpoints/{endpoint}/jobs", list_jobs, methods=["GET"]),
        Route("/endpoints/{endpoint}/jobs/{job}", show_job, methods=["GET"]),
    ]
