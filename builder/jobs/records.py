"""The host's record of a job: job.json and the registry, brought up to date from the job folder.

A job runs on its own once its instances are started: their coordinator (bepbuild_runtime.coordinator)
merges the output and writes `state/outcome.json`. The host records that end (status, counts,
reports, outputs published into a user's folder) when it sees it: the host that launched the
instances at their end, or any later `bepbuild` command that looks at the job (`refresh`) when that
host is gone. Only the outcome's status and error are taken from the runtime's file (scoring code
runs as the runtime user and could write it); everything else the host reads or counts itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bepbuild_runtime import coordinator, layout, queue

from .. import naming
from ..errors import BepbuildError, ConflictError, NotFoundError
from ..store import Store
from . import hostlock, outputs, reports

FINAL = ("Completed", "Failed", "Canceled")
LIVE = ("Running", "Finalizing")
CANCELED = "canceled by the user"
ERROR_CHARS = 2000  # of an outcome's error: a message, not a file
EXIT_GRACE_SECONDS = 5.0  # instances still stopping when their job's end is recorded: removed after this


def now() -> str:
    """A UTC timestamp, as jobs record them."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read_job(job_dir: Path) -> dict[str, Any]:
    """The job's job.json."""
    return json.loads((job_dir / layout.JOB_FILE).read_text())


def write_job(job_dir: Path, job: dict[str, Any]) -> None:
    """Replace the job's job.json (never through a link)."""
    reports.write_file(job_dir / layout.JOB_FILE, json.dumps(job, indent=1, sort_keys=True))


def set_state(store: Store, job_dir: Path, job: dict[str, Any], **changes: Any) -> None:
    """Change fields of a job in its job.json and in the registry."""
    job.update(changes)
    write_job(job_dir, job)
    store.update_job(job["name"], **{k: job[k] for k in changes})


def outcome_of(job_dir: Path) -> tuple[str, str | None] | None:
    """(status, error) of the outcome the job's coordinator wrote, or None."""
    found = coordinator.read_outcome(job_dir)
    if found is None:
        return None
    error = found.get("error")
    return found["status"], (str(error)[:ERROR_CHARS] if error is not None else None)


def record(store: Store, job_dir: Path, job: dict[str, Any], status: str, error: str | None) -> dict[str, Any]:
    """Record the end of a job whose instances are gone: outputs published into a user's folder, the
    processed mini-batches report, the counts, the status, the result and error logs."""
    published = outputs.publish(job)  # what containers wrote for a folder the user made (outputs.py)
    if published:
        set_state(store, job_dir, job, notices=[*(job.get("notices") or []), *published])
    out = job.get("output_file")
    if status == "Completed" and out and job.get("instance_output_dir") and not Path(out).is_file():
        status, error = "Failed", f"output file exists, refusing to overwrite: {out}"  # kept in the job folder
    reports.processed_mini_batches(job_dir)
    counts = queue.counts(job_dir)
    summary = (f"{counts.done + counts.failed} mini-batches ({counts.failed} failed); items: "
               f"{counts.items_succeeded} succeeded, {counts.items_failed} failed")
    set_state(store, job_dir, job, status=status, error=error, ended_at=now(), summary=summary,
              counts={"mini_batches": counts.total, "done": counts.done, "failed": counts.failed,
                      "items_succeeded": counts.items_succeeded, "items_failed": counts.items_failed})
    reports.overview(job_dir, job, counts, [])
    reports.result(job_dir, job)
    return job


def lookup(store: Store, name: str) -> dict[str, Any]:
    """Job `name` from the registry; a job this machine's registry does not know may have been
    submitted from another machine to a swarm compute both know: its folder on the compute's shared
    path is then registered here (any machine that sees the shared path and the manager can show,
    stream, cancel, resume and download it)."""
    try:
        return store.get_job(name)
    except NotFoundError:
        for compute in store.list_computes():
            if compute.get("type") != "swarm" or not compute.get("shared_path"):
                continue
            folder = naming.shared_jobs_dir(compute["shared_path"]) / name
            try:
                doc = read_job(folder)
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict) and doc.get("name") == name and doc.get("job_dir") == str(folder):
                store.add_job(name, doc)
                return store.get_job(name)
        raise


def gone(job: dict[str, Any]) -> str:
    """The error of a running job that no host watches and no instance runs any more."""
    name = job["name"]
    return (f"no instance of job {name} is running and the job did not finish (its host and its instances are "
            f"gone); run `bepbuild job resume --name {name}`")


def refresh(store: Store, job: dict[str, Any], *, look: bool = True) -> dict[str, Any]:
    """`job` (a registry record) brought up to date when no host watches it: the outcome its
    coordinator wrote is recorded (and what is left of its instances removed); with `look`, a
    running job none of whose instances is alive any more is recorded Failed, resumable. A job whose
    host lives is that host's to record: returned as it is."""
    if job.get("status") in FINAL:
        return job
    job_dir = Path(job.get("job_dir") or "")
    if not job.get("job_dir") or not (job_dir / layout.JOB_FILE).is_file():
        return job
    if outcome_of(job_dir) is None and not (look and job.get("status") in LIVE):
        return job
    try:
        with hostlock.host_lock(job_dir):
            return _refresh(store, job_dir)
    except ConflictError:
        return job  # a live host drives the job and records its end itself
    except BepbuildError:
        return job  # the engine does not answer: what runs is unknown, nothing to record


def _refresh(store: Store, job_dir: Path) -> dict[str, Any]:
    from .backends import make

    doc = read_job(job_dir)
    if doc.get("status") in FINAL:
        store.update_job(doc["name"], **{k: doc.get(k) for k in ("status", "error", "ended_at", "counts", "summary")})
        return store.get_job(doc["name"])
    backend = make(doc["backend"], doc)
    ended = outcome_of(job_dir)
    if ended is None:
        if backend.alive(doc):
            return store.get_job(doc["name"])
        ended = outcome_of(job_dir)  # written just before the last instance exited
    else:  # every instance stops once the outcome is there: let them end on their own first
        deadline = time.monotonic() + EXIT_GRACE_SECONDS
        while backend.alive(doc) and time.monotonic() < deadline:
            time.sleep(0.1)
    backend.remove_job(doc)
    if ended is None:
        set_state(store, job_dir, doc, status="Failed", error=gone(doc), ended_at=now())
        return doc
    return record(store, job_dir, doc, *ended)
