"""What a job page fetches: its live state, pages of its mini-batch table, its files, and the
Cancel and Resume buttons (the very service functions `bepbuild job cancel|resume --no-wait` call).
"""

from __future__ import annotations

import json
import mimetypes
import os
import time
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.routing import Route

from . import actions, attempts, charts, jobview, paths
from .app import fragment, store

TABLE_ROWS = 25
# Shown in the browser; anything else is a download (a job's HTML output must not run as our page).
INLINE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
                ".webp": "image/webp", ".bmp": "image/bmp"}
TEXT_SUFFIXES = (".txt", ".csv", ".log", ".json", ".jsonl", ".tsv", ".yaml", ".yml")


def live(request: Request) -> JSONResponse:
    """Everything on a job page that moves: progress, charts, failures, buttons."""
    from ..jobs import records

    s = store()
    job = records.refresh(s, s.get_job(request.path_params["name"]), look=False)  # an end no host recorded
    prog = jobview.progress(job)
    job_dir = Path(job.get("job_dir") or "")
    index = attempts.CACHE.get(job_dir)
    claims = [] if prog.final else jobview.running_claims(job_dir)
    now = time.time()
    with index.lock:
        chart = charts.throughput(index, now=now, running=not prog.final)
        timeline = charts.timeline(index, claims, now=now)
        attempts_count = len(index)
    found, files = jobview.failures(job_dir)
    html = {
        "progress": fragment(request, "_progress.html", job=job, progress=prog),
        "chart": chart,
        "timeline": timeline,
        "failures": fragment(request, "_failures.html", job=job, failures=found, files=files,
                             progress=prog),
        "actions": fragment(request, "_actions.html", job=job, progress=prog),
    }
    return JSONResponse({"name": job["name"], "status": prog.status, "final": prog.final,
                         "attempts": attempts_count, "progress": prog.as_dict(), "html": html})


def mini_batches(request: Request) -> HTMLResponse:
    """A page of the processed mini-batches table (newest attempt first); `failed=1` keeps the failed tries."""
    job = store().get_job(request.path_params["name"])
    try:
        page = max(0, int(request.query_params.get("page", 0)))
    except ValueError:
        page = 0
    only_failed = request.query_params.get("failed") == "1"
    index = attempts.CACHE.get(Path(job.get("job_dir") or ""))
    with index.lock:
        order = index.failed_indexes() if only_failed else index.order()
        total = len(order)
        pages = max(1, -(-total // TABLE_ROWS))
        page = min(page, pages - 1)
        newest_first = order[::-1][page * TABLE_ROWS:(page + 1) * TABLE_ROWS]
        rows = [_readable(r) for r in index.rows(newest_first)]
    return HTMLResponse(fragment(request, "_table.html", job=job, rows=rows, page=page, pages=pages, total=total,
                                 only_failed=only_failed))


def _readable(row: list[str]) -> list[str]:
    """A CSV row with its Mini-batch Detail (`{"items": [...]}`) shown as the item names."""
    row = list(row) + [""] * (len(attempts.COLUMNS) - len(row))
    try:
        items = json.loads(row[13]).get("items") or []
        row[13] = ", ".join(os.path.basename(str(i)) for i in items)
    except (ValueError, AttributeError):
        pass
    return row


def job_file(request: Request) -> FileResponse:
    """A file of one of the job's folders (job, output, input): never one outside them."""
    job = store().get_job(request.path_params["name"])
    target = paths.job_file(job, request.path_params["area"], request.path_params["path"])
    suffix = target.suffix.lower()
    if suffix in INLINE_TYPES:
        return FileResponse(target, media_type=INLINE_TYPES[suffix])
    if suffix in TEXT_SUFFIXES and request.query_params.get("download") != "1":
        return FileResponse(target, media_type="text/plain; charset=utf-8")
    media = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return FileResponse(target, media_type=media, filename=target.name,
                        headers={"Content-Security-Policy": "sandbox"})


async def cancel(request: Request) -> JSONResponse:
    """`bepbuild job cancel`."""
    name = request.path_params["name"]
    return JSONResponse(await run_in_threadpool(lambda: actions.cancel(store(), name)))


async def resume(request: Request) -> JSONResponse:
    """`bepbuild job resume --no-wait`: prepare the job again, then run it in the background."""
    name = request.path_params["name"]
    return JSONResponse(await run_in_threadpool(lambda: actions.resume_detached(store(), name)))


def routes() -> list[Route]:
    return [
        Route("/jobs/{name}/live", live),
        Route("/jobs/{name}/mini-batches", mini_batches),
        Route("/jobs/{name}/files/{area}/{path:path}", job_file),
        Route("/jobs/{name}/cancel", cancel, methods=["POST"]),
        Route("/jobs/{name}/resume", resume, methods=["POST"]),
    ]
