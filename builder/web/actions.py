"""The job verbs behind the dashboard's buttons and the REST API: the very functions the CLI calls
(`batch-endpoint invoke --no-wait`, `job cancel`, `job resume --no-wait`), never a copy of them.
"""

from __future__ import annotations

from typing import Any

from ..jobs import lifecycle, service
from ..store import Store


def invoke_detached(store: Store, req: service.InvokeRequest) -> dict[str, Any]:
    """`bepbuild batch-endpoint invoke --no-wait`: prepare the job, run it in the background (which
    takes over the host lock the preparation holds)."""
    job = service.invoke(store, req)
    service.run_detached(job["name"], store)
    return store.get_job(job["name"])


def cancel(store: Store, name: str) -> dict[str, Any]:
    """`bepbuild job cancel`."""
    return lifecycle.cancel(store, name)


def resume_detached(store: Store, name: str) -> dict[str, Any]:
    """`bepbuild job resume --no-wait`."""
    lifecycle.resume(store, name)  # holds the job's host lock, for the run below
    service.run_detached(name, store)
    return store.get_job(name)
