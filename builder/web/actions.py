"""The job verbs behind the dashboard's buttons and the REST API: the very functions the CLI calls
(`batch-endpoint invoke --no-wait`, `job cancel`, `job resume --no-wait`), never a copy of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..jobs import hostlock, lifecycle, service
from ..store import Store


def invoke_detached(store: Store, req: service.InvokeRequest) -> dict[str, Any]:
    """`bepbuild batch-endpoint invoke --no-wait`: prepare the job, run it in the background (which
    takes over the host lock the preparation holds)."""
    job = service.invoke(store, req)
    _run_detached(store, job["name"])
    return store.get_job(job["name"])


def cancel(store: Store, name: str) -> dict[str, Any]:
    """`bepbuild job cancel`."""
    return lifecycle.cancel(store, name)


def resume_detached(store: Store, name: str) -> dict[str, Any]:
    """`bepbuild job resume --no-wait`."""
    lifecycle.resume(store, name)  # holds the job's host lock, for the run below
    _run_detached(store, name)
    return store.get_job(name)


def _run_detached(store: Store, name: str) -> None:
    """service.run_detached; should it fail, the host lock the preparation took is let go here: a
    CLI process would drop it by exiting, the server lives on and would block the job's resume."""
    try:
        service.run_detached(name, store)
    except BaseException:
        hostlock.release(Path(store.get_job(name)["job_dir"]))
        raise
