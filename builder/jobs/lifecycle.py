"""Job verbs after invoke: resume, cancel, delete.

Each one first takes the job's host lock (hostlock.hold), so it never acts on a job that a live host
is preparing or running; resume keeps the lock for the run it prepares. A job whose host is gone
may still run on its own instances: resume refuses it, cancel and delete stop them.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from bepbuild_runtime import layout, queue

from .. import config, naming
from ..errors import BepbuildError, ConflictError, JobError, NotFoundError, UserError
from ..store import Store
from . import cluster, hostlock, inputs, pinning, records
from .backends import make


def resume(store: Store, name: str) -> Path:
    """Make a job that did not finish ready for another run; its finished mini-batches stay done.

    A job whose host died while it was being prepared has its preparation finished (a process job's
    snapshot copied again while the deployment still holds the code and model it was invoked with,
    the input listed again and the queue written), or is marked Failed in one line when that cannot
    be done.
    The host lock taken here stays with this process for the run that follows (run_attached, or
    run_detached, which hands it to the background process), so no other host can start between
    this check and that run.
    """
    job = _not_completed(store, name)
    job_dir = Path(job["job_dir"])
    if not (job_dir / layout.CONTROL_DIR).is_dir():  # the invoking process died before the folder was made
        raise _unpreparable(store, name, None, f"its job folder {job_dir} was never made")
    hostlock.hold(job_dir)  # refuse while a live host prepares or drives the job
    try:
        job = _not_completed(store, name)  # again, under the lock: a host may have just finished it
        if not (job_dir / layout.JOB_FILE).exists():
            raise _unpreparable(store, name, job_dir, f"its {layout.JOB_FILE} was never written")
        doc = records.read_job(job_dir)
        if make(doc["backend"], doc).alive(doc):
            raise ConflictError(f"job {name} is still running on its instances (no host watches it, they finish it "
                                f"themselves): follow it with `bepbuild job stream --name {name}`, or cancel it")
        hostlock.unlink_in_job(job_dir, layout.CANCEL_FLAG)
        hostlock.unlink_in_job(job_dir, layout.OUTCOME_FILE)  # of the run that ended Failed or Canceled
        if queue.total_count(job_dir) is None:
            _snapshot_again(store, job_dir, doc)
        pinning.check_runnable(doc)  # the image or snapshot it was invoked with, or one line: it is gone
        if queue.total_count(job_dir) is None:
            _prepare_again(store, job_dir, doc)
        # A new run: leases of the earlier one are void at once (coordinator.Lease).
        doc.update(status="Queued", error=None, run=int(doc.get("run") or 0) + 1)
        try:
            records.write_job(job_dir, doc)
        except OSError as e:
            if not queue.is_no_space(e):
                raise
            raise JobError(f"no space left on device in {job_dir}: free space, then resume job {name} again") from None
        store.update_job(name, status="Queued", error=None)
    except BaseException:
        hostlock.release(job_dir)
        raise
    return job_dir


def _not_completed(store: Store, name: str) -> dict[str, Any]:
    job = records.refresh(store, records.lookup(store, name))  # it may have ended on its own
    if job.get("status") == "Completed":
        raise ConflictError(f"job {name} is already Completed")
    return job


def _unpreparable(store: Store, name: str, job_dir: Path | None, why: str) -> JobError:
    """Record a job that cannot be prepared again as Failed; the error to raise."""
    msg = (f"job {name} was interrupted while being prepared and cannot be resumed: {why}; "
           f"remove it with `bepbuild job delete --name {name}`")
    changes = {"status": "Failed", "error": msg, "ended_at": records.now()}
    if job_dir is not None and (job_dir / layout.JOB_FILE).exists():
        try:
            records.set_state(store, job_dir, records.read_job(job_dir), **changes)
            return JobError(msg)
        except (OSError, ValueError):
            pass
    store.update_job(name, **changes)
    return JobError(msg)


def _snapshot_again(store: Store, job_dir: Path, doc: dict[str, Any]) -> None:
    """A process job whose host died before its snapshot was whole: copy it again from the deployment,
    only while that still deploys the code and model the job was invoked with (else Failed, one line)."""
    if doc.get("backend") != "process" or (job_dir / layout.SNAPSHOT_DIR).is_dir():
        return
    name, pinned = doc["name"], doc.get("snapshot_of") or {}
    try:
        dep = store.get_deployment(doc["endpoint"], doc["deployment"])
    except NotFoundError:
        raise _unpreparable(store, name, job_dir, "its snapshot was never made whole and its deployment is "
                                                  "gone") from None
    if not pinned.get("code_sha256") or (dep.get("code_sha256"), dep.get("model")) != (
            pinned["code_sha256"], pinned.get("model")):
        raise _unpreparable(store, name, job_dir, "its snapshot was never made whole and the deployment no longer "
                                                  "holds the code and model it was invoked with")
    try:
        pinning.snapshot(store, dep, job_dir)
    except BepbuildError as e:
        raise _unpreparable(store, name, job_dir, e.line()) from None
    except OSError as e:
        if queue.is_no_space(e):
            raise JobError(f"no space left on device in {job_dir}: free space, then resume job {name} again") from None
        raise _unpreparable(store, name, job_dir, f"{e.strerror}: {e.filename}") from None


def _prepare_again(store: Store, job_dir: Path, doc: dict[str, Any]) -> None:
    """Finish the preparation a dead invoke left half done: list the input again, write the queue
    (write_queue starts over from its staging folder), make the output folder."""
    from .service import _write_queue  # the one definition of the preparation's last steps

    name = doc["name"]
    given = (doc.get("input") or {}).get("path") or doc.get("input_root") or "?"
    try:
        spec = _input_again(store, job_dir, doc)
        records.set_state(store, job_dir, doc, status="Preparing", input_root=str(spec.root))
        _write_queue(store, job_dir, doc, spec, given,
                     own_output=Path(doc["output_dir"]) == job_dir / layout.OUTPUTS_DIR)
    except BepbuildError as e:
        raise _unpreparable(store, name, job_dir, e.line()) from None
    except OSError as e:
        if queue.is_no_space(e):
            raise JobError(f"no space left on device in {job_dir}: free space, then resume job {name} again") from None
        raise _unpreparable(store, name, job_dir, f"{e.strerror}: {e.filename}") from None


def _input_again(store: Store, job_dir: Path, doc: dict[str, Any]) -> inputs.InputSpec:
    """The job's input as invoke resolved it, ready to be listed again (UserError when it cannot be)."""
    given = doc.get("input") or {}
    kind, root = given.get("type"), Path(given.get("root") or "")
    if given.get("url"):  # downloaded into the job folder: start the download over
        target = owned_job_dir(store, doc) / layout.INPUTS_DIR
        shutil.rmtree(target, ignore_errors=True)
        spec = inputs.InputSpec(given["url"], kind, Path(), url=given["url"])
        inputs.download(spec, target)
        return spec
    if kind == "uri_folder":
        if not root.is_absolute() or not root.is_dir():
            raise UserError(f"the input folder {root} is gone")
        return inputs.InputSpec(given.get("path") or str(root), kind, root)
    spec = inputs.resolve(store, given.get("path") or "", "uri_file")
    if spec.root != root:
        raise UserError(f"--input {given.get('path')} no longer names the file it named ({root})")
    return spec


def cancel(store: Store, name: str) -> dict[str, Any]:
    """Ask a running job to stop: instances stop claiming and the job ends Canceled."""
    job = records.refresh(store, records.lookup(store, name), look=False)  # it may have ended on its own
    if job.get("status") in records.FINAL:
        raise ConflictError(f"job {name} already ended: {job['status']}")
    job_dir = Path(job["job_dir"])
    os.close(hostlock.open_in_job(job_dir, layout.CANCEL_FLAG, os.O_WRONLY | os.O_CREAT))
    store.update_job(name, cancel_requested=True)
    try:
        with hostlock.host_lock(job_dir):
            # No host drives the job (it died, or was never started): stop its instances, end it here.
            if not (job_dir / layout.JOB_FILE).exists():
                store.update_job(name, status="Canceled", error=records.CANCELED, ended_at=records.now())
                return store.get_job(name)
            doc = records.read_job(job_dir)
            make(doc["backend"], doc).remove_job(doc)
            records.record(store, job_dir, doc, "Canceled", records.CANCELED)
    except ConflictError:
        pass  # the live host sees the flag and ends the job Canceled itself
    return store.get_job(name)


def delete(store: Store, name: str) -> dict[str, Any]:
    """Remove a job that no host is running: its instances left behind, its folder, its record.

    The folder is removed only after proving it is the one bepbuild made for this job (directly in
    the jobs folder, a real folder, its job.json naming the job); an --output-path folder outside it
    is never touched. Returns the deleted record.
    """
    job = records.lookup(store, name)
    try:
        job_dir = owned_job_dir(store, job)
    except NotTheJobs as e:  # its folder is gone and another took its name: forget the job, keep that folder
        store.delete_job(name)
        raise UserError(f"forgot job {name}; {e.message}") from None
    if (job_dir / layout.CONTROL_DIR).is_dir():
        with hostlock.host_lock(job_dir):  # refused while a live host prepares or runs it
            doc = records.read_job(job_dir) if (job_dir / layout.JOB_FILE).is_file() else job
            make(doc.get("backend") or "process", doc).remove_job(doc)
            _remove_tree(job_dir)
    elif job_dir.exists():
        _remove_tree(job_dir)
    store.delete_job(name)
    return job


class NotTheJobs(UserError):
    """A folder at the job's path that holds no job.json naming the job: not proven to be its folder."""


def owned_job_dir(store: Store, job: dict[str, Any]) -> Path:
    """The folder of `job`, proven to be the one bepbuild made for it (NotTheJobs when a folder there
    does not name the job in its job.json); UserError otherwise."""
    name = job["name"]
    recorded = Path(job.get("job_dir") or "")
    jobs = Path(os.path.realpath(config.jobs_dir()))
    res = job.get("resources") or {}
    if job.get("backend") == cluster.SWARM and res.get("shared_path"):  # its compute's jobs folder
        jobs = Path(os.path.realpath(naming.shared_jobs_dir(res["shared_path"])))

    def refuse(why: str) -> UserError:
        return UserError(f"job {name}: {why}; not removing {recorded} (bepbuild only removes job folders it "
                         f"made in its jobs folder {jobs}: BEPBUILD_JOBS_DIR)")

    if not recorded.is_absolute() or recorded.name in ("", ".", ".."):
        raise refuse("its recorded folder is not an absolute path")
    if recorded.is_symlink():
        raise refuse("its folder is a symbolic link")
    if Path(os.path.realpath(recorded)).parent != jobs or Path(os.path.realpath(recorded)).name != recorded.name:
        raise refuse("its folder is not in the jobs folder")
    if recorded.exists():
        if not recorded.is_dir():
            raise refuse("it is not a folder")
        # job.json is written before the job is registered: a folder without one naming the job is
        # not the job's, though it has its name (a user's, made after the job's was removed by hand).
        owner = _recorded_name(recorded)
        if owner != name:
            why = f"its {layout.JOB_FILE} names job {owner!r}" if owner else f"it holds no {layout.JOB_FILE} naming it"
            raise NotTheJobs(f"not removing {recorded}: {why}, so it is not the folder bepbuild made for the job")
        for other in store.list_jobs():
            out = Path(other.get("output_dir") or "/")
            if other["name"] != name and (out == recorded or recorded in out.parents):
                raise refuse(f"job {other['name']} writes its outputs into it")
    return recorded


def _recorded_name(job_dir: Path) -> str | None:
    """The name in the folder's job.json, a regular file (never read through a link)."""
    try:
        fd = os.open(job_dir / layout.JOB_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            doc = json.loads(f.read()) if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (OSError, ValueError):
        return None
    return doc.get("name") if isinstance(doc, dict) else None


def _remove_tree(folder: Path) -> None:
    """Remove a job folder; a failure is one line (the record stays, so delete can be run again)."""
    errors: list[str] = []
    shutil.rmtree(folder, onerror=lambda _f, path, exc: errors.append(f"{path}: {exc[1]}"))
    if errors:
        raise JobError(f"could not remove all of {folder} ({errors[0]}); fix that and run the delete again")
