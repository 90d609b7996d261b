"""Run a job to its end: start instances, watch the queue, requeue what dead instances held,
enforce the error threshold, then merge results and write the final status.

All state lives in the job folder, so the same function also resumes a job whose host process
or instances died: claims under running/ are given back first, finished mini-batches stay done.
"""

from __future__ import annotations

import errno
import filecmp
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bepbuild_runtime import layout, queue
from bepbuild_runtime import settings as runtime_settings

from ..errors import EngineError, JobError, UserError
from ..store import Store
from . import outputs, pinning, reports
from .backends import Backend, InstancePlan, instance_name, make, remove_job_containers, stop_job_processes
from .hostlock import host_lock, release

POLL_SECONDS = 0.1
FINAL = ("Completed", "Failed", "Canceled")
NO_RESULT = (
    "No succeeded mini batch item returned from run(). Please check 'response: run()' in "
    "https://aka.ms/batch-inference-documentation"
)
# Supervisor exits after which restarting the instance cannot help.
FATAL_EXITS = {layout.EXIT_USAGE: "the runtime refused its configuration",
               layout.EXIT_INIT_FAILED: "init() failed on every try"}

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
PROGRESS_TIMEOUT_ENV = "BEPBUILD_PROGRESS_UPDATE_TIMEOUT"  # seconds; overrides the job's setting
WATCH_GAP_SECONDS = 2.0  # the host loop (a turn every 0.1 s) paused this long: so does its watchdog's clock

Watcher = Callable[[queue.QueueCounts, list[str], dict[str, Any]], None]


def read_job(job_dir: Path) -> dict[str, Any]:
    return json.loads((job_dir / layout.JOB_FILE).read_text())


def write_job(job_dir: Path, job: dict[str, Any]) -> None:
    reports.write_file(job_dir / layout.JOB_FILE, json.dumps(job, indent=1, sort_keys=True))


def set_state(store: Store, job_dir: Path, job: dict[str, Any], **changes: Any) -> None:
    job.update(changes)
    write_job(job_dir, job)
    store.update_job(job["name"], **{k: job[k] for k in changes})


def plan_for(job: dict[str, Any], job_dir: Path) -> InstancePlan:
    res = job.get("resources") or {}
    return InstancePlan(
        job=job["name"], job_dir=job_dir, input_root=Path(job["input_root"]),
        output_dir=Path(job.get("instance_output_dir") or job["output_dir"]),
        image=job.get("image_id") or job["image"], code_dir=Path(job["code_dir"]), model_dir=Path(job["model_dir"]),
        scoring_script=job["scoring_script"], cpus=res.get("cpus"), memory=res.get("memory"),
        gpus=int(res.get("gpus") or 0), user=job.get("container_user"), image_name=job["image"],
    )


def run(store: Store, job_dir: Path, *, watch: Watcher | None = None) -> dict[str, Any]:
    """Drive the job in `job_dir` until it is Completed, Failed or Canceled; return job.json.

    Runs under the job's host lock: the one this process took when it checked the job (invoke,
    resume), or one taken now; released when the run ends.
    """
    with host_lock(job_dir):
        try:
            return _run(store, job_dir, watch)
        except Exception as e:
            if isinstance(e, OSError) and e.errno in NO_SPACE:
                raise _stopped_for_space(store, job_dir, e) from None
            if _engine_failed(e):
                raise _stopped_for_engine(store, job_dir, e) from None
            if isinstance(e, JobError):  # the job cannot go on (its image is gone, ...): record why
                _record_failure(store, job_dir, e)
            raise
        finally:
            release(job_dir)


def _record_failure(store: Store, job_dir: Path, e: JobError) -> None:
    job = read_job(job_dir)
    if job.get("status") not in FINAL:
        set_state(store, job_dir, job, status="Failed", error=e.message, ended_at=_now())


def _engine_failed(e: BaseException) -> bool:
    """The Docker engine went away or refused us (a restart, a crash): not a bug of ours."""
    if isinstance(e, EngineError):
        return True
    docker_errors, requests_exceptions = sys.modules.get("docker.errors"), sys.modules.get("requests.exceptions")
    return bool((docker_errors and isinstance(e, docker_errors.DockerException))
                or (requests_exceptions and isinstance(e, requests_exceptions.RequestException)))


def _stopped_for_engine(store: Store, job_dir: Path, e: Exception) -> EngineError:
    """The engine failed mid-job. Its instances are gone or stopped with it; their claims are given
    back by the resume (which removes what is left of them first). Record the job Failed and say in
    one line how to go on."""
    job = read_job(job_dir)
    why = e.message if isinstance(e, EngineError) else f"{type(e).__name__}: {e}"
    why = why.splitlines()[0][:300] if why else type(e).__name__
    msg = (f"the Docker engine failed during job {job['name']} ({why}); the job stopped: when the engine "
           f"answers again, run `bepbuild job resume --name {job['name']}`")
    set_state(store, job_dir, job, status="Failed", error=msg, ended_at=_now())
    return EngineError(msg)


def _stopped_for_space(store: Store, job_dir: Path, e: OSError) -> JobError:
    """The job folder (or the output folder) is full. The instances are stopped by now: give their
    claims back untouched (a full disk is not the mini-batches' fault), record the job Failed, and
    say in one line how to go on. Finished mini-batches stay done: resume redoes nothing twice."""
    for worker in queue_workers(job_dir):
        queue.release_claims(job_dir, worker)
    job = read_job(job_dir)
    where = e.filename or _fullest(job_dir, Path(job["output_dir"]))
    msg = (f"no space left on device ({where}): job {job['name']} stopped; free space, then run "
           f"`bepbuild job resume --name {job['name']}`")
    changes = {"status": "Failed", "error": msg, "ended_at": _now()}
    try:
        set_state(store, job_dir, job, **changes)
    except OSError:  # job.json cannot be rewritten on the full disk: the registry knows
        store.update_job(job["name"], **changes)
    return JobError(msg)


def _fullest(*folders: Path) -> Path:
    """The folder whose filesystem has the least room left (the one that filled up)."""
    def room(p: Path) -> int:
        try:
            st = os.statvfs(p)
        except OSError:
            return 1 << 62
        return st.f_bavail * st.f_frsize

    return min(folders, key=room)


def queue_workers(job_dir: Path) -> list[str]:
    try:
        return sorted(os.listdir(job_dir / layout.RUNNING_DIR))
    except FileNotFoundError:
        return []


def _run(store: Store, job_dir: Path, watch: Watcher | None) -> dict[str, Any]:
    job = read_job(job_dir)
    settings = job["settings"]
    max_retries = int(settings["max_retries"])
    threshold = int(settings["error_threshold"])
    n = int(settings["instance_count"])
    silent_after = progress_timeout(job)
    # An earlier life of this job (its host died) may have left instances running: stop them, then
    # give back what they held untouched. Neither the host's death nor this stop is the mini-batches'
    # fault; an instance that died on its own had its claims charged by the host that saw it die.
    stop_leftovers(job, job_dir)
    queue.release_instance(job_dir)
    pinning.check_runnable(job)  # the image or snapshot the job was invoked with, never another one
    backend: Backend = make(job["backend"])
    plan = plan_for(job, job_dir)
    if job.get("status") != "Running":
        set_state(store, job_dir, job, status="Running", started_at=job.get("started_at") or _now())
    reader = queue.ProgressReader(job_dir)
    counts = reader.read()
    error: str | None = None
    outcome: str | None = None
    restarts, max_restarts = 0, n * (max_retries + 1)
    stopping = False  # the host stopped the instances itself (cancel): their claims go back untouched
    signs: dict[str, float] = {}  # instance -> wall-clock time of its last sign of life
    silenced: dict[str, str] = {}  # instances killed for going silent -> why
    next_watch, last_tick = 0.0, time.time()
    try:
        if not queue.is_drained(job_dir):
            for i in range(n):
                backend.start(plan, instance_name(i))
                signs[instance_name(i)] = time.time()
        last_overview = 0.0
        while True:
            counts = reader.read()
            running = backend.running()
            if watch:
                watch(counts, running, job)
            now = time.monotonic()
            if now - last_overview > 5:
                reports.overview(job_dir, job, counts, running)
                last_overview = now
            if outcome is None and (job_dir / layout.CANCEL_FLAG).exists():
                outcome, error = "Canceled", "canceled by the user"
                stopping = True
                backend.stop()
            if outcome is None and threshold >= 0 and counts.items_failed > threshold:
                outcome = "Failed"
                error = f"Exceeded error threshold: {counts.items_failed} failed items > {threshold}."
                (job_dir / layout.ABORT_FLAG).touch()
            for inst, code in backend.exited().items():
                if code == layout.EXIT_NO_SPACE:  # the instance gave its claims back; stop the job
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(job_dir))
                silent = silenced.pop(inst, None)
                reason = silent or f"{inst} exited with code {code}"
                if not silent and (stopping or code == layout.EXIT_STOPPED):
                    # Stopped by us, or by a signal from outside (an engine shutting down): what it
                    # still held was not the mini-batches' fault.
                    queue.release_instance(job_dir, inst)
                else:  # it died on its own, or went silent: what it held counts as a try
                    for worker in os.listdir(job_dir / layout.RUNNING_DIR):
                        if layout.instance_of(worker) == inst:
                            queue.requeue_worker(job_dir, worker, reason, max_retries)
                if outcome is not None or queue.is_drained(job_dir):
                    continue
                if code in FATAL_EXITS:
                    error = f"{inst}: {FATAL_EXITS[code]} (exit code {code}); see logs/user/error/"
                    if not backend.running():
                        outcome = "Failed"
                    continue
                if restarts >= max_restarts:
                    error = f"instances exited {restarts} times without finishing the queue (last: {reason})"
                    if not backend.running():
                        outcome = "Failed"
                    continue
                restarts += 1
                backend.start(plan, inst)
                signs[inst] = time.time()
            if not backend.running():
                break
            tick = time.time()  # wall-clock, as heartbeats are (and a machine's sleep shows in it)
            if tick - last_tick > WATCH_GAP_SECONDS:
                # This host was not running (machine asleep, process stopped): nobody could be seen
                # for that long, which says nothing about the instances.
                for inst in signs:
                    signs[inst] += tick - last_tick
            last_tick = tick
            if now >= next_watch:  # the progress watchdog: once a second is plenty
                next_watch = now + 1.0
                for inst in _silent(job_dir, backend.running(), signs, silent_after):
                    if inst not in silenced:
                        silenced[inst] = f"No progress update in {silent_after:g} seconds from {inst}; killed it"
                        reports.note(job_dir, silenced[inst])
                    backend.kill(inst)
            for worker in queue.stale_workers(job_dir):
                if layout.instance_of(worker) not in backend.running():
                    queue.requeue_worker(job_dir, worker, "heartbeat expired", max_retries)
            getattr(backend, "pause", time.sleep)(POLL_SECONDS)  # wakes early when an instance exits
    except BaseException:
        backend.stop()
        backend.cleanup()
        raise
    backend.cleanup()
    counts = reader.read()
    return finalize(store, job_dir, job, counts, outcome, error)


def _silent(job_dir: Path, running: list[str], signs: dict[str, float], limit: float) -> list[str]:
    """Running instances that showed no sign of life (a heartbeat of one of their workers, which their
    supervisor touches every few seconds) for more than `limit` seconds since they were started."""
    for worker, when in queue.heartbeats(job_dir).items():
        inst = layout.instance_of(worker)
        if inst in signs and when > signs[inst]:
            signs[inst] = when
    now = time.time()
    return [inst for inst in running if now - signs.get(inst, now) > limit]


def progress_timeout(job: dict[str, Any]) -> float:
    """Azure's progress_update_timeout for `job`: `BEPBUILD_PROGRESS_UPDATE_TIMEOUT` if set, else
    the job's `progress_update_timeout` setting, else the runtime's default."""
    raw = os.environ.get(PROGRESS_TIMEOUT_ENV)
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = 0.0
        if not value > 0:
            raise UserError(f"{PROGRESS_TIMEOUT_ENV}={raw!r}: must be a positive number of seconds")
        return value
    try:
        return runtime_settings.from_job(job).progress_timeout
    except ValueError as e:
        raise JobError(f"job {job.get('name')}: {layout.JOB_FILE}: {e}") from None


def stop_leftovers(job: dict[str, Any], job_dir: Path) -> None:
    """Stop the instances an earlier life of the job left behind: they outlive a killed host (own
    sessions, detached containers), and two lives of one instance would share its worker folders."""
    if job.get("backend") == "docker":
        remove_job_containers(job["name"], job_dir)
    else:
        stop_job_processes(job_dir)


def finalize(store: Store, job_dir: Path, job: dict[str, Any], counts: queue.QueueCounts, outcome: str | None,
             error: str | None) -> dict[str, Any]:
    """Merge outputs and write the final status and logs."""
    settings = job["settings"]
    set_state(store, job_dir, job, status="Finalizing")
    published = outputs.publish(job)  # what containers wrote for a folder the user made (outputs.py)
    if published:
        set_state(store, job_dir, job, notices=[*(job.get("notices") or []), *published])
    reports.processed_mini_batches(job_dir)
    drained = queue.is_drained(job_dir)
    if outcome is None and not drained:
        outcome, error = "Failed", error or "the queue was not finished"
    if outcome is None and settings["output_action"] == "append_row":
        if counts.items_succeeded == 0:
            outcome, error = "Failed", NO_RESULT
        else:
            out = Path(job["output_file"])
            try:
                if not (job.get("merged") and out.exists()) and not _merged_before_host_died(job_dir, job, out):
                    set_state(store, job_dir, job, merging_pid=os.getpid())
                    queue.merge_results(job_dir, out)
                job["merged"] = True
            except FileExistsError as e:  # another job wrote the same output file meanwhile
                outcome, error = "Failed", str(e)
            except OSError as e:
                if e.errno != errno.ELOOP:  # a result replaced by a link (queue.merge_results)
                    raise
                outcome, error = "Failed", f"{e.strerror}: {e.filename}"
    status = outcome or "Completed"
    summary = (f"{counts.done + counts.failed} mini-batches ({counts.failed} failed); items: "
               f"{counts.items_succeeded} succeeded, {counts.items_failed} failed")
    set_state(
        store, job_dir, job, status=status, error=error, ended_at=_now(), summary=summary,
        counts={"mini_batches": counts.total, "done": counts.done, "failed": counts.failed,
                "items_succeeded": counts.items_succeeded, "items_failed": counts.items_failed},
    )
    reports.overview(job_dir, job, counts, [])
    reports.result(job_dir, job)
    return job


def _merged_before_host_died(job_dir: Path, job: dict[str, Any], out: Path) -> bool:
    """After a host died while merging: remove its temp file, and tell whether it had already
    published the output (it died between publishing and recording it). The output is ours when it
    is byte for byte what the merge writes; anything else is another writer's file."""
    pid = job.get("merging_pid")
    if not pid:
        return False
    (out.parent / f".{out.name}.merging-{pid}").unlink(missing_ok=True)
    if not out.is_file():
        return False
    check = job_dir / f".merge-check-{os.getpid()}"
    try:
        queue.merge_results(job_dir, check)
        return filecmp.cmp(check, out, shallow=False)
    finally:
        check.unlink(missing_ok=True)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
