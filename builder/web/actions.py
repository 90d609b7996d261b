"""The job verbs behind the dashboard's buttons and the REST API: the very functions the CLI calls
(`batch-endpoint invoke --no-wait`, `job cancel`, `job resume --no-wait`), never a copy of them.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..jobs import service
from ..store import Store


def _verbs() -> ModuleType:
    """The module holding cancel and resume (`jobs.lifecycle` where it exists, else `jobs.service`)."""
    try:
        from ..jobs import lifecycle
    except ImportError:
        return service
    return lifecycle


def invoke_detached(store: Store, req: service.InvokeRequest) -> dict[str, Any]:
    """`bepbuild batch-endpoint invoke --no-wait`: prepare the job, run it in the background."""
    job = service.invoke(store, req)
    service.run_detached(job["name"])
    return store.get_job(job["name"])


def cancel(store: Store, name: str) -> dict[str, Any]:
    """`bepbuild job cancel`."""
    return _verbs().cancel(store, name)


def resume_detached(store: Store, name: str) -> dict[str, Any]:
    """`bepbuild job resume --no-wait`."""
    _verbs().resume(store, name)
    service.run_detached(name)
    return store.get_job(name)
