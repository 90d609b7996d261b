"""The entrypoint process of an instance: start the workers, keep them alive, stop when done.

One loop, no threads (workers are forked from it): wait on the workers' sentinels for up to
POLL_SECONDS, then handle exits, enforce run() and init() timeouts, touch heartbeats, look at the
control flags and at the queue. A dead or killed worker's claims go back to the queue before a
fresh worker (which calls init() again) takes its place under the same name.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from . import coordinator, layout, queue, reports, settings
from .worker import (
    PHASE,
    PHASE_READY,
    STARTED,
    STATE_SIZE,
    WorkerSpec,
    current_batch,
    make_workdir,
    remove_workdir,
    worker_main,
)

PR_SET_NO_NEW_PRIVS = 38  # prctl(2)
INIT_TRIES_PER_WORKER = 3  # Azure: a node stops trying after 3 x process_count_per_node init() failures
POLL_SECONDS = 0.05  # a poll costs ~50 us (sentinels, flags, a first pending entry): stop soon after the drain
STOP_GRACE_SECONDS = 5.0  # after SIGTERM/SIGINT, how long in-flight run() calls may finish
EMPTY_GRACE_SECONDS = 5.0  # queue looks empty but queue/count disagrees: trust the listing after this


class ConfigError(Exception):
    """The job folder, settings or scoring script cannot be used (exit 2)."""


@dataclass
class Options:
    """Where things are: the command line and environment of `python -m bepbuild_runtime`."""

    job_dir: str
    input_dir: str | None
    instance: str
    code_dir: str | None = None
    scoring_script: str | None = None


@dataclass
class Slot:
    """One worker position; its process is replaced when it dies."""

    index: int
    name: str
    state: Any
    proc: Any = None
    spawned: float = 0.0
    ready: bool = False
    killed: str | None = None  # why we killed it (timeout), if we did
    extra: dict[str, Any] = field(default_factory=dict)


def cpu_count() -> int:
    """CPUs this instance may use: BEPBUILD_CPUS, else the affinity mask."""
    raw = os.environ.get(layout.ENV_CPUS)
    if raw:
        try:
            return max(1, int(float(raw)))
        except ValueError:
            pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_script(opts: Options, job: dict[str, Any]) -> tuple[str, str]:
    """(code dir, absolute scoring script path); job.json's `scoring_script` overrides the env."""
    code_dir = opts.code_dir or os.environ.get(layout.ENV_CODE_DIR) or layout.IMAGE_CODE_DIR
    script = job.get("scoring_script") or opts.scoring_script or os.environ.get(layout.ENV_SCORING_SCRIPT)
    if not script:
        raise ConfigError(f"no scoring script: set {layout.ENV_SCORING_SCRIPT} or job.json scoring_script")
    path = script if os.path.isabs(script) else os.path.join(code_dir, script)
    if not os.path.isfile(path):
        raise ConfigError(f"scoring script not found: {path}")
    return os.path.abspath(code_dir), os.path.abspath(path)


class Supervisor:
    """Runs the workers of one instance until the queue drains, a stop flag appears, or init() keeps failing."""

    def __init__(self, opts: Options) -> None:
        self.job = os.path.abspath(opts.job_dir)
        if not os.path.isfile(layout.path(self.job, layout.JOB_FILE)):
            raise ConfigError(f"no {layout.JOB_FILE} in {self.job}")
        try:
            job = settings.load_job(self.job)
            self.settings = settings.from_job(job)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.instance = opts.instance
        self.code_dir, self.script = resolve_script(opts, job)
        self.input_dir = os.path.abspath(opts.input_dir) if opts.input_dir else None  # workers chdir
        n = self.settings.max_concurrency_per_instance
        self.threads = max(1, cpu_count() // n)
        # GPUs: given by the backend, or by Swarm as generic resources of the task.
        gpus = os.environ.get(layout.ENV_GPUS) or os.environ.get(layout.ENV_SWARM_GPUS, "")
        self.gpus = [g.strip() for g in gpus.split(",") if g.strip()]
        self.ctx = multiprocessing.get_context("fork")
        self.stop_flag = self.ctx.RawValue("b", 0)
        self.slots = [Slot(i, layout.worker_name(self.instance, i), self.ctx.RawArray("d", STATE_SIZE))
                      for i in range(n)]
        self.main_log = reports.main_log_path(self.job, self.instance)
        self.init_failures = 0  # in a row, on this instance
        self.init_limit = INIT_TRIES_PER_WORKER * n
        self.exit_code: int | None = None  # set when we decided to stop
        self.signalled = 0
        self.stop_deadline: float | None = None
        output_dir = os.environ.get(layout.ENV_OUTPUT_PATH) or layout.path(self.job, layout.OUTPUTS_DIR)
        self.coord = coordinator.Coordinator(self.job, self.instance, self.settings, output_dir,
                                             coordinator.run_number(job))
        self.coord_failed = False

    # -- logging -------------------------------------------------------------------------------
    def note(self, message: str) -> None:
        """A line in logs/sys/node/<instance>/_main.txt and on our stderr (the container log)."""
        line = f"{reports.now_iso()} {self.instance} {message}\n"
        try:
            reports.append_text(self.main_log, line)
        except OSError as exc:  # a full job folder must not kill the supervisor: stderr still works
            if not queue.is_no_space(exc):
                raise
        sys.stderr.write(line)
        sys.stderr.flush()

    # -- workers -------------------------------------------------------------------------------
    def start(self, slot: Slot) -> None:
        """Start (or restart) the worker of `slot`."""
        for i in range(STATE_SIZE):
            slot.state[i] = 0.0
        queue.touch_heartbeat(self.job, slot.name)  # the host must see it alive from the start
        gpu = self.gpus[slot.index % len(self.gpus)] if self.gpus else None
        slot.extra["workdir"] = make_workdir(self.settings.environment_variables, slot.name,
                                             os.environ.get(layout.ENV_WORK_ROOT) or None)
        spec = WorkerSpec(self.job, self.input_dir, self.instance, slot.index, slot.name, self.code_dir,
                          self.script, self.settings, self.threads, gpu, len(self.gpus),
                          workdir=slot.extra["workdir"])
        slot.proc = self.ctx.Process(target=worker_main, args=(spec, slot.state, self.stop_flag),
                                     name=slot.name)
        slot.proc.start()
        slot.spawned, slot.ready, slot.killed = time.monotonic(), False, None

    def kill(self, slot: Slot, why: str) -> None:
        """Kill the worker of `slot` now (SIGKILL: a stuck run() may ignore anything softer)."""
        slot.killed = why
        slot.proc.kill()
        slot.proc.join()

    def reap(self, slot: Slot) -> None:
        """Handle the exit of the worker of `slot`: give back its claims, restart it if useful."""
        proc, slot.proc = slot.proc, None
        proc.join()
        remove_workdir(slot.extra.pop("workdir", None))  # however it ended: it cannot clean up after a crash
        code = proc.exitcode
        stopping = self.exit_code is not None
        was_ready = slot.state[PHASE] >= PHASE_READY  # shared memory outlives the process
        if was_ready:
            self.init_failures = 0
        if code == layout.EXIT_NO_SPACE:
            queue.release_claims(self.job, slot.name)  # the worker did; again, in case it died first
            self.no_space(f"worker {slot.name} pid={proc.pid}")
            return
        if slot.killed == layout.STATUS_TIMEOUT:
            self._fail_timed_out(slot)
        elif not was_ready and slot.killed != "stopped":
            # Exit 72, an init() timeout, or a crash (os._exit, segfault) before init() returned.
            self.init_failures += 1
            self.note(f"worker {slot.name} pid={proc.pid}: init() failed, returncode {code} "
                      f"({self.init_failures} in a row, limit {self.init_limit})")
            if self.init_failures >= self.init_limit and not stopping:
                self.note(f"init() failed {self.init_failures} times in a row: stopping this instance; "
                          f"see {layout.LOG_USER_ERROR}/{self.instance}/")
                self.begin_stop(layout.EXIT_INIT_FAILED)
        elif code != layout.EXIT_OK or not stopping:
            self.note(f"worker {slot.name} pid={proc.pid} exited with returncode {code}")
        if self.exit_code == layout.EXIT_NO_SPACE:  # stopping on a full disk: not this batch's fault
            queue.release_claims(self.job, slot.name)
            return
        if slot.killed == "stopped":  # killed by us at the stop deadline: not this batch's fault either
            released = queue.release_worker(self.job, slot.name)
            if released:
                self.note(f"gave back the claims of {slot.name} untouched: {released}")
            return
        reason = f"worker {slot.name} pid={proc.pid} exited with returncode {code}"
        # A try is charged to the mini-batch whose run() it was in (after a timeout, already failed);
        # the others were claimed ahead of run() or had finished it (worker.py): they go back untouched.
        in_run = None if slot.killed == layout.STATUS_TIMEOUT else current_batch(slot.state)
        queue.release_unstarted(self.job, slot.name, in_run)
        outcomes = queue.requeue_worker(self.job, slot.name, reason, self.settings.max_retries)
        if outcomes:
            self.note(f"requeued claims of {slot.name}: {outcomes}")
        if self.exit_code is None:
            self.start(slot)

    def _fail_timed_out(self, slot: Slot) -> None:
        bid = current_batch(slot.state)
        message = (f"mini batch {bid} did not finish in {self.settings.timeout:g} seconds. "
                   f"Stopping this process.")
        self.note(f"worker {slot.name}: {message}")
        reports.append_text(reports.user_error_path(self.job, slot.name), f"{reports.now_iso()} {message}\n")
        for batch in queue.claims(self.job, slot.name):
            if batch["id"] != bid:
                continue  # anything else it held goes back untouched in reap()
            if queue.fail_attempt(self.job, slot.name, batch, message, self.settings.max_retries,
                                  layout.STATUS_TIMEOUT) is None:
                continue  # given back meanwhile: whoever took it logged the try
            started = slot.extra.get("started_wall", time.time())
            with reports.WorkerLogs(self.job, slot.name) as logs:
                logs.attempt(batch, layout.STATUS_TIMEOUT, start=started, elapsed=time.time() - started,
                             run_seconds=time.time() - started, error_category=reports.USER_ERROR,
                             error_message=message)

    def check_timeouts(self, now: float) -> None:
        """Kill workers whose run() or init() ran too long."""
        timeout = self.settings.timeout
        for slot in self.slots:
            if slot.proc is None:
                continue
            started = slot.state[STARTED]
            if started and now - started > timeout:
                # Remember the wall-clock start for the report, then kill.
                slot.extra["started_wall"] = time.time() - (now - started)
                self.kill(slot, layout.STATUS_TIMEOUT)
            elif not slot.ready and slot.state[PHASE] < PHASE_READY and now - slot.spawned > 3 * timeout + 30:
                self.note(f"worker {slot.name}: init() did not finish in {3 * timeout + 30:g} seconds")
                self.kill(slot, layout.STATUS_INIT_TIMEOUT)

    def note_ready(self) -> None:
        """A worker that finished init() resets the count of init() failures in a row."""
        for slot in self.slots:
            if slot.proc is not None and not slot.ready and slot.state[PHASE] >= PHASE_READY:
                slot.ready = True
                self.init_failures = 0

    # -- stopping ------------------------------------------------------------------------------
    def begin_stop(self, code: int, grace: float | None = None) -> None:
        """Stop claiming; workers finish their current mini-batch, call shutdown() and exit.

        Whatever still runs after `grace` seconds (default: the run() timeout plus
        STOP_GRACE_SECONDS, so a hanging shutdown() cannot keep the instance alive) is killed.
        """
        if self.exit_code is None:
            self.exit_code = code
            self.stop_flag.value = 1
        if grace is None:
            grace = self.settings.timeout + STOP_GRACE_SECONDS
        deadline = time.monotonic() + grace
        if self.stop_deadline is None or deadline < self.stop_deadline:
            self.stop_deadline = deadline

    def no_space(self, where: str) -> None:
        """The job folder is full: stop, and give every claim back untouched (resume redoes them)."""
        self.note(f"{where}: no space left in the job folder; stopping, claims go back untouched")
        self.begin_stop(layout.EXIT_NO_SPACE)
        self.exit_code = layout.EXIT_NO_SPACE  # even if we were stopping for another reason
        for slot in self.slots:
            if slot.proc is None:
                queue.release_claims(self.job, slot.name)

    def on_signal(self, signum: int, _frame: Any) -> None:
        """SIGTERM/SIGINT: stop claiming, give in-flight work STOP_GRACE_SECONDS; twice: now."""
        self.signalled += 1
        self.begin_stop(layout.EXIT_STOPPED, STOP_GRACE_SECONDS if self.signalled == 1 else 0.0)

    def check_flags(self) -> bool:
        """Stop on control/cancel, or once the job has its outcome; True if either is there."""
        if os.path.exists(layout.path(self.job, layout.CANCEL_FLAG)):
            self.note(f"{layout.CANCEL_FLAG} found: stop claiming")
            self.begin_stop(layout.EXIT_STOPPED)
            return True
        outcome = self.coord.outcome()
        if outcome is not None:
            self.note(f"the job ended {outcome['status']}: stop claiming")
            self.begin_stop(layout.EXIT_OK if outcome["status"] == coordinator.COMPLETED else layout.EXIT_STOPPED)
            return True
        return False

    def coordinate(self, now: float) -> None:
        """This instance's turn as a candidate coordinator (coordinator.py). The coordinator's own
        failures are noted once and never end the instance: another instance may coordinate."""
        own = {slot.name for slot in self.slots if slot.proc is not None}
        try:
            self.coord.step(now, own)
        except Exception as exc:  # noqa: BLE001
            if queue.is_no_space(exc):
                raise
            if not self.coord_failed:
                self.coord_failed = True
                self.note(f"coordinator: {type(exc).__name__}: {exc}")

    def await_outcome(self) -> int:
        """The queue is drained and our workers are gone: stay until the job has its outcome, writing it
        ourselves when we hold (or take over) the coordinator's lease. Returns the exit code."""
        self.note("waiting for the job's outcome")
        next_beat = 0.0
        while True:
            if time.monotonic() >= next_beat:  # still alive, for whoever watches heartbeats
                for slot in self.slots:
                    queue.touch_heartbeat(self.job, slot.name)
                next_beat = time.monotonic() + layout.HEARTBEAT_SECONDS
            if self.signalled or os.path.exists(layout.path(self.job, layout.CANCEL_FLAG)):
                return layout.EXIT_STOPPED
            try:
                outcome = self.coord.finalize(time.monotonic())
            except Exception as exc:  # noqa: BLE001 - a job must end even when finalizing it fails
                if queue.is_no_space(exc):
                    raise
                why = f"finalizing the job failed: {type(exc).__name__}: {exc}"
                self.note(f"coordinator: {why}")
                try:
                    outcome = self.coord.decide(coordinator.FAILED, why)
                except OSError:
                    outcome = None
                if outcome is None:
                    return layout.EXIT_FAILURE
            if outcome is not None:
                self.note(f"the job ended {outcome['status']}")
                return layout.EXIT_OK
            time.sleep(coordinator.STEP_SECONDS / 5)

    def check_queue(self, now: float, empty_since: list[float | None]) -> None:
        """Stop on control flags, or when every mini-batch is done or failed."""
        if self.check_flags():
            return
        if not queue.looks_empty(self.job):
            empty_since[0] = None
            return
        if empty_since[0] is None:
            empty_since[0] = now
            if queue.total_count(self.job) is None:
                return  # no count to check: ask twice, one poll apart (a batch may have been between listings)
            # With the count, is_drained is definitive at once: every id has a done or failed record.
        if queue.is_drained(self.job) or now - empty_since[0] > EMPTY_GRACE_SECONDS:
            self.note("queue drained: stopping")
            self.begin_stop(layout.EXIT_OK)

    # -- main loop -----------------------------------------------------------------------------
    def run(self) -> int:
        """Run until done; return the exit code."""
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        if os.environ.get(layout.ENV_NO_NEW_PRIVILEGES) == "1":
            no_new_privileges()
        self.note(f"starting {len(self.slots)} workers, {self.threads} threads each; script {self.script}")
        # Claims left by an earlier life of this instance (same name) are ours to give back. Untouched:
        # the host counted a try when that life died on its own; what is left was stopped by a host
        # (or lost with one), which is not the mini-batches' fault.
        try:
            queue.release_instance(self.job, self.instance)
        except OSError as exc:
            if not queue.is_no_space(exc):
                raise
            self.no_space("start")
            return layout.EXIT_NO_SPACE
        if self.check_flags():  # cancelled, or ended, before we started: claim nothing
            code = layout.EXIT_STOPPED if self.exit_code is None else self.exit_code
            self.note(f"exiting with code {code}")
            return code
        for slot in self.slots:
            self.start(slot)
        next_beat = 0.0
        empty_since: list[float | None] = [None]
        while True:
            live = [s.proc.sentinel for s in self.slots if s.proc is not None]
            if not live:
                if self.exit_code == layout.EXIT_OK and self.coord.outcome() is None:
                    try:
                        self.exit_code = self.await_outcome()
                    except OSError as exc:
                        if not queue.is_no_space(exc):
                            raise
                        self.no_space("coordinator")
                break
            multiprocessing.connection.wait(live, timeout=POLL_SECONDS)
            try:
                next_beat = self.step(next_beat, empty_since)
            except OSError as exc:  # a write into the full job folder (requeue, logs)
                if not queue.is_no_space(exc):
                    raise
                self.no_space("supervisor")
        for slot in self.slots:  # all exited: nothing should be left, but never strand a claim
            if self.exit_code == layout.EXIT_NO_SPACE:
                queue.release_claims(self.job, slot.name)
                continue
            try:
                queue.requeue_worker(self.job, slot.name, "instance stopped", self.settings.max_retries)
            except OSError as exc:
                if not queue.is_no_space(exc):
                    raise
                self.no_space("stop")
        code = layout.EXIT_OK if self.exit_code is None else self.exit_code
        self.note(f"exiting with code {code}")
        return code


    def step(self, next_beat: float, empty_since: list[float | None]) -> float:
        """One turn of the main loop after waiting: exits, timeouts, heartbeats, queue and flags."""
        for slot in self.slots:
            if slot.proc is not None and slot.proc.exitcode is not None:
                self.reap(slot)
        now = time.monotonic()
        self.note_ready()
        self.check_timeouts(now)
        for slot in self.slots:
            if slot.proc is not None and slot.killed:
                self.reap(slot)
        if now >= next_beat:
            for slot in self.slots:
                if slot.proc is not None:
                    queue.touch_heartbeat(self.job, slot.name)
            next_beat = now + layout.HEARTBEAT_SECONDS
        self.coordinate(now)
        if self.exit_code is None:
            self.check_queue(now, empty_since)
        if self.stop_deadline is not None and now >= self.stop_deadline:
            for slot in self.slots:
                if slot.proc is not None:
                    self.kill(slot, "stopped")
                    self.reap(slot)
        return next_beat


def no_new_privileges() -> None:
    """Set no_new_privs on this process and, through fork, its workers: what `--security-opt
    no-new-privileges` does for a container, for engines that cannot set it (Swarm services)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    except (OSError, AttributeError) as exc:
        sys.stderr.write(f"bepbuild_runtime: cannot set no_new_privs: {exc}\n")


def main(opts: Options) -> int:
    """Run one instance; the exit code is one of layout.EXIT_*."""
    try:
        sup = Supervisor(opts)
    except ConfigError as exc:
        sys.stderr.write(f"bepbuild_runtime: {exc}\n")
        if os.path.isfile(layout.path(opts.job_dir, layout.JOB_FILE)):  # never create a job folder
            try:
                reports.append_text(reports.main_log_path(opts.job_dir, opts.instance),
                                    f"{reports.now_iso()} {opts.instance} configuration error: {exc}\n")
            except OSError:
                pass
        return layout.EXIT_USAGE
    return sup.run()
