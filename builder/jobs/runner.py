"""Launch a job's instances and watch them while this process lives: the host side of a run.

The job runs on its own once its instances are started: their coordinator (bepbuild_runtime.
coordinator) gives back the claims of dead workers, stops at the error threshold, merges the output
and writes the outcome. The host adds what needs the engine, for as long as it lives: it starts the
instances, sees them exit (their claims given back at once, a try counted, the instance started
again), kills an instance that shows no progress, stops them on cancel, and records the end
(records.py). A host that dies changes nothing for the job; `job show` records its end later.

All state lives in the job folder, so the same function also resumes a job: what an earlier life of
the job left is stopped and its claims given back untouched, finished mini-batches stay done.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bepbuild_runtime import coordinator, layout, queue
from bepbuild_runtime import settings as runtime_settings

from ..errors import EngineError, JobError, UserError
from ..store import Store
from . import pinning, reports
from .backends import Backend, InstancePlan, instance_name, make
from .hostlock import host_lock, release
from .records import CANCELED, FINAL, now, read_job, record, set_state, write_job

__all__ = ["FINAL", "NO_RESULT", "read_job", "run", "set_state", "write_job"]

POLL_SECONDS = 0.1
NO_RESULT = coordinator.NO_RESULT
# Supervisor exits after which restarting the instance cannot help.
FATAL_EXITS = {layout.EXIT_USAGE: "the runtime refused its configuration",
               layout.EXIT_INIT_FAILED: "init() failed on every try"}

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
PROGRESS_TIMEOUT_ENV = "BEPBUILD_PROGRESS_UPDATE_TIMEOUT"  # seconds; overrides the job's setting
WATCH_GAP_SECONDS = 2.0  # the host loop (a turn every 0.1 s) paused this long: so does its watchdog's clock
HOST = "host"  # the coordinator candidate name of a host that finalizes a job itself

Watcher = Callable[[queue.QueueCounts, list[str], dict[str, Any]], None]


def plan_for(job: dict[str, Any], job_dir: Path) -> InstancePlan:
    res = job.get("resources") or {}
    return InstancePlan(
        job=job["name"], job_dir=job_dir, input_root=Path(job["input_root"]),
        output_dir=Path(job.get("instance_output_dir") or job["output_dir"]),
        image=job.get("image_ref") or job.get("image_id") or job["image"], code_dir=Path(job["code_dir"]),
        model_dir=Path(job["model_dir"]), scoring_script=job["scoring_script"], cpus=res.get("cpus"),
        memory=res.get("memory"), gpus=int(res.get("gpus") or 0), user=job.get("container_user"),
        image_name=job["image"],
    )


def run(store: Store, job_dir: Path, *, watch: Watcher | None = None) -> dict[str, Any]:
    """Start the job in `job_dir` and watch it until it is Completed, Failed or Canceled; return job.json.

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
        set_state(store, job_dir, job, status="Failed", error=e.message, ended_at=now())


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
    set_state(store, job_dir, job, status="Failed", error=msg, ended_at=now())
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
    changes = {"status": "Failed", "error": msg, "ended_at": now()}
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


def _ended(job_dir: Path) -> bool:
    return os.path.exists(job_dir / layout.OUTCOME_FILE)


def _run(store: Store, job_dir: Path, watch: Watcher | None) -> dict[str, Any]:
    job = read_job(job_dir)
    try:
        settings = runtime_settings.from_job(job)
    except ValueError as e:
        raise JobError(f"job {job.get('name')}: {layout.JOB_FILE}: {e}") from None
    n = settings.instance_count
    silent_after = progress_timeout(job)
    backend: Backend = make(job["backend"], job)
    # An earlier life of this job (a resume) may have left instances: stop them, then give back what
    # they held untouched. Neither that life's end nor this stop is the mini-batches' fault; an instance
    # that died on its own had its claims charged by whoever saw it die.
    backend.remove_job(job)
    queue.release_instance(job_dir)
    pinning.check_runnable(job)  # the image or snapshot the job was invoked with, never another one
    plan = plan_for(job, job_dir)
    # Lists done/ about once a second at 100,000 mini-batches; shared with counts(), so the job's
    # record at its end reads only the records that appeared since the last poll.
    reader = queue.shared_reader(job_dir, queue.ProgressReader.DISPLAY_BUDGET)
    error: str | None = None
    restarts, max_restarts = 0, n * (settings.max_retries + 1)
    stopping = False  # the host stopped the instances itself (cancel): their claims go back untouched
    signs: dict[str, float] = {}  # instance -> wall-clock time of its last sign of life
    silenced: dict[str, str] = {}  # instances killed for going silent -> why
    next_watch, last_tick, last_overview = 0.0, time.time(), 0.0
    try:
        if not _ended(job_dir):
            for i in range(n):
                backend.start(plan, instance_name(i))
                signs[instance_name(i)] = time.time()
        # Running: the instances run the job on their own from here (run_detached waits for this).
        set_state(store, job_dir, job, status="Running", started_at=job.get("started_at") or now())
        while True:
            counts = reader.read()
            running = backend.running()
            if watch:
                watch(counts, running, job)
            mono = time.monotonic()
            if mono - last_overview > 5:
                reports.overview(job_dir, job, counts, running)
                last_overview = mono
            if not stopping and (job_dir / layout.CANCEL_FLAG).exists():
                stopping = True
                backend.stop()
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
                    queue.requeue_instance(job_dir, inst, reason, settings.max_retries)
                if stopping or _ended(job_dir) or code == layout.EXIT_OK or queue.is_drained(job_dir):
                    continue  # nothing left for it to do (a drained job is finalized by whoever remains)
                if code in FATAL_EXITS:
                    error = f"{inst}: {FATAL_EXITS[code]} (exit code {code}); see logs/user/error/"
                    continue
                if restarts >= max_restarts:
                    error = f"instances exited {restarts} times without finishing the queue (last: {reason})"
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
            if mono >= next_watch:  # the progress watchdog: once a second is plenty
                next_watch = mono + 1.0
                for inst in _silent(job_dir, backend.running(), signs, silent_after):
                    if inst not in silenced:
                        silenced[inst] = f"No progress update in {silent_after:g} seconds from {inst}; killed it"
                        reports.note(job_dir, silenced[inst])
                    backend.kill(inst)
            backend.pause(POLL_SECONDS)  # wakes early when an instance exits
    except BaseException:
        backend.stop()
        backend.cleanup()
        raise
    backend.cleanup()
    return _conclude(store, job_dir, job, settings, stopping, error)


def _conclude(store: Store, job_dir: Path, job: dict[str, Any], settings: runtime_settings.Settings,
              canceled: bool, error: str | None) -> dict[str, Any]:
    """Every instance is gone: record the outcome their coordinator wrote, or decide it here."""
    ended = coordinator.read_outcome(job_dir)
    if ended is None and not canceled and error is None:
        # Drained, but the coordinator died with the last instances before it wrote the outcome: finish
        # its work here (the same code, taking its lease over).
        output_dir = job.get("instance_output_dir") or job["output_dir"]
        ended = coordinator.finalize_drained(str(job_dir), settings, output_dir, coordinator.run_number(job), HOST)
    if ended is not None:
        status, why = ended["status"], ended.get("error")
    elif canceled:
        status, why = "Canceled", CANCELED
    else:
        status, why = "Failed", error or "the queue was not finished"
    return record(store, job_dir, job, status, why)


def _silent(job_dir: Path, running: list[str], signs: dict[str, float], limit: float) -> list[str]:
    """Running instances that showed no sign of life (a heartbeat of one of their workers, which their
    supervisor touches every few seconds) for more than `limit` seconds since they were started."""
    for folder, when in queue.heartbeats(job_dir).items():
        inst = layout.instance_of(layout.worker_of_folder(folder))
        if inst in signs and when > signs[inst]:
            signs[inst] = when
    t = time.time()
    return [inst for inst in running if t - signs.get(inst, t) > limit]


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
