"""Job verbs: invoke (create + run), show, download; running a job attached or detached.

resume, cancel and delete live in lifecycle.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bepbuild_runtime import layout, queue
from bepbuild_runtime import settings as runtime_settings

from .. import config
from ..errors import ConflictError, JobError, NotFoundError, SpecError, UserError
from ..specs import Settings
from ..specs.loader import Located, validate
from ..specs.overrides import apply, parse_assignment
from ..store import Store
from . import cluster, hostlock, inputs, outputs, pinning, records, runner

# Azure's rule for job names (they also name folders and containers).
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,254}")

# `--set` keys a job accepts (az's BatchJobSchema); the others are deployment-only.
JOB_SET_KEYS = {
    "output_file_name": ("output_file_name",),
    "mini_batch_size": ("mini_batch_size",),
    "error_threshold": ("error_threshold",),
    "max_retries": ("retry_settings", "max_retries"),
    "retry_settings.max_retries": ("retry_settings", "max_retries"),
    "timeout": ("retry_settings", "timeout"),
    "retry_settings.timeout": ("retry_settings", "timeout"),
    "instance_count": ("instance_count",),
    "compute.instance_count": ("instance_count",),
}


@dataclass
class InvokeRequest:
    endpoint: str
    input: str
    deployment: str | None = None
    input_type: str | None = None
    mini_batch_size: int | None = None
    instance_count: int | None = None
    max_retries: int | None = None
    timeout: int | None = None
    error_threshold: int | None = None
    output_path: str | None = None
    sets: Iterable[str] = ()
    job_name: str | None = None
    backend: str = "docker"
    experiment_name: str | None = None  # default: the endpoint's name, as in Azure


def _settings(dep: dict[str, Any], req: InvokeRequest) -> dict[str, Any]:
    """The deployment's settings with the job's overrides, validated like the YAML."""
    base = dict(dep.get("settings") or {})
    instance_count = int((dep.get("resources") or {}).get("instance_count", 1))
    overrides: dict[tuple[str, ...], Any] = {}
    for text in req.sets:
        parts, value = parse_assignment(text)
        key = ".".join(parts)
        if key == "job_name":
            req.job_name = str(value)
            continue
        if key in ("output_dataset.path", "output_path"):
            req.output_path = str(value)
            continue
        if key not in JOB_SET_KEYS:
            raise SpecError(
                f"--set {text!r}: {key} cannot be changed per job; one of "
                f"{', '.join(sorted(JOB_SET_KEYS))}, job_name, output_dataset.path"
            )
        overrides[JOB_SET_KEYS[key]] = value
    for flag, path in (("mini_batch_size", ("mini_batch_size",)), ("max_retries", ("retry_settings", "max_retries")),
                       ("timeout", ("retry_settings", "timeout")), ("error_threshold", ("error_threshold",)),
                       ("instance_count", ("instance_count",))):
        if getattr(req, flag) is not None:
            overrides[path] = getattr(req, flag)
    if ("instance_count",) in overrides:
        instance_count = overrides.pop(("instance_count",))
    doc = apply(base, [f"{'.'.join(k)}={_yaml_scalar(v)}" for k, v in overrides.items()])
    spec = validate(Settings, Located(doc, {}, "invoke"))
    flat = spec.model_dump(mode="json")
    retry = flat.pop("retry_settings")
    flat.update(max_retries=retry["max_retries"], timeout=retry["timeout"])
    try:
        flat["instance_count"] = int(instance_count)
        if flat["instance_count"] < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise SpecError(f"must be a positive integer, got {instance_count!r}", field="instance_count") from None
    flat.pop("instance_count_", None)
    try:  # what job.json holds is the runtime's own settings, read back as the instances will read them
        return runtime_settings.as_job(runtime_settings.from_job({"settings": flat}))
    except ValueError as e:
        raise SpecError(str(e), field="settings") from None


def job_settings(store: Store, dep: dict[str, Any], *, mini_batch_size: int | None = None
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings, resources) a job of deployment `dep` runs with, as invoke decides them, with only a
    mini-batch size of its own (`bepbuild test` runs the scoring script under these)."""
    settings = _settings(dep, InvokeRequest(endpoint=str(dep.get("endpoint_name") or ""), input="",
                                            mini_batch_size=mini_batch_size))
    return settings, _resources(store, dep, settings)


def _yaml_scalar(value: Any) -> str:
    return "null" if value is None else str(value)


def invoke(store: Store, req: InvokeRequest) -> dict[str, Any]:
    """Create a job folder and queue for an invoke; the caller then runs or detaches it."""
    ep = store.get_endpoint(req.endpoint)
    deployment = req.deployment or (ep.get("defaults") or {}).get("deployment_name")
    if not deployment:
        if not store.list_deployments(req.endpoint):
            raise NotFoundError(f"No deployment exists for endpoint {req.endpoint!r}")
        raise NotFoundError(
            f"No valid deployments to route to for endpoint {req.endpoint!r}: set a default "
            "(batch-endpoint update --set defaults.deployment_name=NAME) or pass --deployment-name"
        )
    dep = store.get_deployment(req.endpoint, deployment)
    if req.backend == "process":
        pinning.check_deployed(store, dep)  # before any job exists: a refusal leaves nothing behind
    # Names ignore case: the job records them as they were first given.
    req.endpoint, deployment = ep["name"], dep.get("name") or deployment
    settings = _settings(dep, req)
    name = req.job_name or str(uuid.uuid4())
    if not JOB_NAME.fullmatch(name):
        raise UserError(f"--job-name {name!r} is not a valid name: letters, digits, '-' and '_', "
                        "starting with a letter or digit, at most 255 characters")
    try:
        store.get_job(name)
        raise ConflictError(f"job {name!r} already exists")
    except NotFoundError:
        pass
    resources = _resources(store, dep, settings)
    # A swarm compute runs the job on its cluster, unless the instances are asked to be local processes.
    backend = cluster.SWARM if cluster.is_swarm(resources) and req.backend == "docker" else req.backend
    spec = inputs.resolve(store, req.input, req.input_type)
    job_dir = (cluster.jobs_dir(resources) if backend == cluster.SWARM else config.jobs_dir()) / name
    out_dir = outputs.output_dir(req.output_path, job_dir)
    if backend == cluster.SWARM:
        cluster.check_output(out_dir, resources, req.output_path)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--output-path {out_dir} is a file; give a folder")
    out_file = out_dir / settings["output_file_name"] if settings["output_action"] == "append_row" else None
    if out_file is not None and out_file.exists():
        raise ConflictError(f"output file exists, refusing to overwrite it: {out_file}")
    if spec.url is None and out_dir == spec.root:
        raise UserError("--output-path is the input folder: outputs would become inputs of the next job")
    if job_dir.exists():
        raise ConflictError(f"job folder exists: {job_dir}")
    # Pinned now: a resume runs this image, or this snapshot, whatever is deployed then (pinning.py).
    image_id = pinning.pin_image(dep, req.endpoint, deployment) if backend != "process" else None
    image_ref = cluster.image_ref(dep["image"], image_id, resources) if backend == cluster.SWARM and image_id else None
    snapshot = job_dir / layout.SNAPSHOT_DIR
    job: dict[str, Any] = {
        "name": name, "endpoint": req.endpoint, "deployment": deployment, "image": dep["image"], "image_id": image_id,
        "image_ref": image_ref, "backend": backend, "status": "Queued", "settings": settings,
        "scoring_script": dep["code_configuration"]["scoring_script"],
        "input": spec.to_json(), "input_root": str(spec.root), "output_dir": str(out_dir),
        "output_file": str(out_file) if out_file else None, "job_dir": str(job_dir),
        "code_dir": str(snapshot / "code"), "model_dir": str(snapshot / "model"), "resources": resources,
        "experiment_name": req.experiment_name or req.endpoint, "created_at": records.now(), "run": 1,
    }
    if backend == "process":  # what the snapshot is copied from: a resume may copy it again only from this
        job["snapshot_of"] = {"code_sha256": dep.get("code_sha256"), "model": dep.get("model")}
    _create_job_folder(store, job_dir, job)
    try:
        records.set_state(store, job_dir, job, status="Preparing")
        if backend == "process":
            pinning.snapshot(store, dep, job_dir)
        if spec.url:
            inputs.download(spec, job_dir / layout.INPUTS_DIR)
            job["input_root"] = str(spec.root)
        _write_queue(store, job_dir, job, spec, req.input, own_output=req.output_path is None)
    except BaseException as e:
        msg = e.line() if hasattr(e, "line") else str(e)
        store.update_job(name, status="Failed", error=msg)
        hostlock.release(job_dir)
        if job_dir.exists():
            shutil.rmtree(job_dir, ignore_errors=True)
        if isinstance(e, OSError) and queue.is_no_space(e):
            raise JobError(f"no space left on device for the job folder {job_dir}: free space, invoke again") from None
        raise
    return job


def _create_job_folder(store: Store, job_dir: Path, job: dict[str, Any]) -> None:
    """Make the job folder, write its job.json and take its host lock, then register the job: a job in
    the registry always has its folder, naming it in its job.json (what `job delete` takes as proof
    that the folder is the job's), held by the live process preparing or running it, or by none (it
    died). The lock stays with this process for the run (run_attached / run_detached)."""
    try:
        job_dir.mkdir(parents=True)
    except FileExistsError:
        raise ConflictError(f"job folder exists: {job_dir}") from None
    except OSError as e:
        if queue.is_no_space(e):
            raise JobError(f"no space left on device for the job folder {job_dir}: free space, invoke again") from None
        raise
    try:
        records.write_job(job_dir, job)
        queue.ensure_dirs(job_dir)
        hostlock.hold(job_dir)
        store.add_job(job["name"], job)
    except BaseException as e:
        hostlock.release(job_dir)
        shutil.rmtree(job_dir, ignore_errors=True)  # made just now, by us
        if isinstance(e, OSError) and queue.is_no_space(e):
            raise JobError(f"no space left on device for the job folder {job_dir}: free space, invoke again") from None
        raise


def _write_queue(store: Store, job_dir: Path, job: dict[str, Any], spec: inputs.InputSpec, given: str, *,
                 own_output: bool) -> None:
    """The rest of a job's preparation once its input is local: the queue, the output folder, the
    owner of both; the job then waits for its run. `given` is the --input as the user wrote it."""
    if job["backend"] == cluster.SWARM:
        spec = cluster.stage_input(spec, job_dir, job["resources"])
        job["input_root"] = str(spec.root)
    count = queue.write_queue(job_dir, inputs.items(spec), job["settings"]["mini_batch_size"])
    if count == 0:
        raise UserError(f"--input {given}: no files to score")
    out_dir = Path(job["output_dir"])
    made = own_output or not os.path.lexists(out_dir)  # only a folder made here may change owner
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--output-path {out_dir}: cannot create the folder: {e.strerror}") from None
    user, staging = outputs.share_with_containers(job_dir, out_dir, made=made, backend=job["backend"])
    job["container_user"] = user
    notes = []
    capped = (job.get("resources") or {}).get("capped_from")
    if capped:
        notes.append(f"instance_count {capped} is more than compute {job['resources']['compute']}'s max_instances: "
                     f"running {job['settings']['instance_count']} instances")
    if spec.skipped:
        notes.append(f"skipped {len(spec.skipped)} symbolic link(s) leading outside the input folder")
    if spec.special:
        notes.append(f"skipped {len(spec.special)} special file(s) in the input folder (named pipes, sockets, "
                     "devices)")
    records.set_state(store, job_dir, job, mini_batches=count, notices=notes, input_root=job["input_root"],
                     container_user=user, instance_output_dir=str(staging) if staging else None)


def _resources(store: Store, dep: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    compute = dep.get("compute")
    if not compute:
        return {}
    try:
        c = store.get_compute(compute)
    except NotFoundError:
        return {"compute": compute}
    out = {"compute": compute, "cpus": c.get("cpus"), "memory": c.get("memory"), "gpus": c.get("gpus", 0)}
    if c.get("type") == cluster.SWARM:
        out.update(cluster.resources(c))
    limit = int(c.get("max_instances", 1))
    if settings["instance_count"] > limit:  # as Azure: a cluster never grows past its max_instances
        out["capped_from"] = settings["instance_count"]
        settings["instance_count"] = limit
    return out


def job_dir_of(store: Store, name: str) -> Path:
    job = store.get_job(name)
    return Path(job["job_dir"])


def run_attached(store: Store, name: str, watch: runner.Watcher | None = None) -> dict[str, Any]:
    return runner.run(store, job_dir_of(store, name), watch=watch)


def run_detached(name: str, store: Store | None = None, started_within: float = 300.0) -> int:
    """Run the job in a background process that outlives this one; returns its pid once that process
    has started the job's instances (they run the job on their own from then on, whatever becomes
    of either process), has ended, or `started_within` seconds have passed.

    When this process holds the job's host lock (invoke and resume take it), the locked file is
    handed to the background process, so no other host can start in between.
    """
    own = Store.open() if store is None else store
    try:
        return _start_detached(own, name, started_within)
    finally:
        if store is None:
            own.close()


def _start_detached(store: Store, name: str, started_within: float) -> int:
    job_dir = job_dir_of(store, name)
    cmd = [sys.executable, "-m", "bepbuild.jobs", "run", name]
    lock = hostlock.held(job_dir)
    if lock is not None:
        cmd += ["--lock-fd", str(lock.fd)]
    log = hostlock.open_in_job(job_dir, layout.LOG_HOST, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                                env=os.environ.copy(), pass_fds=(lock.fd,) if lock is not None else ())
    finally:
        os.close(log)
        hostlock.release(job_dir)  # the background process holds it now, or none does: it did not start
    deadline = time.monotonic() + started_within
    while (proc.poll() is None and time.monotonic() < deadline
           and store.get_job(name).get("status") in ("Queued", "Preparing")):
        time.sleep(0.05)
    return proc.pid


def download(store: Store, name: str, output_name: str, dest: Path) -> tuple[Path, list[str]]:
    """Copy a job's outputs like `az ml job download --output-name score`: (the folder, links skipped)."""
    job = records.refresh(store, records.lookup(store, name))  # an end no host recorded publishes its outputs
    if output_name not in ("score", "default"):
        raise UserError(f"--output-name must be score (the only output of a model deployment), got {output_name!r}")
    return outputs.download(job, dest)


def list_jobs(store: Store, **filters: Any) -> list[dict[str, Any]]:
    """`store.list_jobs(**filters)`, after recording the end of jobs whose coordinator wrote it while
    no host was left to record it (records.refresh, without asking the engine)."""
    for job in store.list_jobs(status="Running", archived="include"):
        records.refresh(store, job, look=False)
    return store.list_jobs(**filters)


def show(store: Store, name: str) -> dict[str, Any]:
    """A job's record, brought up to date from its folder (records.refresh); while it runs, with live
    counts read from its queue."""
    job = records.refresh(store, records.lookup(store, name))
    if job.get("status") in ("Running", "Finalizing", "Preparing"):
        job_dir = Path(job["job_dir"])
        if (job_dir / layout.QUEUE_DIR).exists():
            c = queue.counts(job_dir)
            job["counts"] = {"mini_batches": c.total, "pending": c.pending, "running": c.running, "done": c.done,
                             "failed": c.failed, "items_succeeded": c.items_succeeded, "items_failed": c.items_failed}
    return job
