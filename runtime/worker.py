"""One worker process: prepare the process, import the scoring script, init(), then claim-run-complete.

Forked by the supervisor, which watches it through a small shared array (`state`): the phase,
when the current run() started (time.monotonic, system-wide on Linux) and which mini-batch it is.
Writing two floats per mini-batch is the cheapest channel there is; the supervisor reads them to
enforce the timeout and to know what a killed worker was doing.

While run() takes longer than a mini-batch's file work, the worker touches no file between two
run() calls: its writer thread (writer.py) records each finished mini-batch and claims the next one
while run() works (a shorter run() would only wait for the thread: the worker then does that work
itself, `_Pace`, and then claims and records a few mini-batches at a time, `_Held`). So a worker
may hold several claims: the one in run(), the next ones, and finished ones still on their way to
disk. Only the first is its own doing if it dies; the supervisor gives the others back untouched
(`current_batch`), and the finished ones run again.
"""

from __future__ import annotations

import collections
import importlib.util
import logging
import os
import queue as _queue
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from . import layout, output, queue, reports
from .settings import APPEND_ROW, Settings
from .writer import DEPTH, Writer

# Indexes into the shared state array, and the phases. BATCH holds the id + 1 of the mini-batch last
# given to run() (0: none yet).
PHASE, STARTED, BATCH = 0, 1, 2
STATE_SIZE = 3
PHASE_INIT, PHASE_READY = 0.0, 1.0
IDLE_POLL_SECONDS = 0.05  # pending/ empty: look again this often (items of dead workers come back)
HOLD_SECONDS = 0.05  # a short run(): claims taken and records written this much run() time at a time
MOST_HELD = 16  # and never more mini-batches than this at once


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, fixed by the supervisor before the fork."""

    job_dir: str
    input_dir: str | None
    instance: str
    index: int
    name: str
    code_dir: str
    scoring_script: str  # absolute path
    settings: Settings
    threads: int
    gpu: str | None = None
    gpu_count: int = 0
    workdir: str | None = None  # made by the supervisor (make_workdir), which removes it when the worker ends


def current_batch(state: Any) -> str | None:
    """The id of the mini-batch the worker last gave to run() (None before its first): the one a
    try is charged to when the worker dies. Read by the supervisor from the shared state."""
    n = int(state[BATCH])
    return layout.mini_batch_id(n - 1) if n > 0 else None


def claim_share(spec: WorkerSpec) -> tuple[int, int]:
    """(this worker's index, the job's number of workers): where its claims start in the listing
    (queue.Claimer). Instances are numbered by the trailing digits of their name (`instance-3`)."""
    per = spec.settings.max_concurrency_per_instance
    count = max(1, spec.settings.instance_count) * per
    digits = re.search(r"(\d+)$", spec.instance)
    number = int(digits.group(1)) if digits else zlib.crc32(spec.instance.encode())
    return (number * per + spec.index) % count, count


def hold_seconds() -> float:
    """How much run() time of mini-batches a worker claims and records at once (layout.ENV_HOLD_SECONDS;
    0: one at a time; at most 1 s: a crash loses what is held)."""
    try:
        value = float(os.environ.get(layout.ENV_HOLD_SECONDS, HOLD_SECONDS))
    except ValueError:
        return HOLD_SECONDS
    return min(1.0, max(0.0, value)) if value == value else HOLD_SECONDS


def writer_depth() -> int:
    """How many calls the writer thread may have waiting (layout.ENV_WRITER_DEPTH; 0: no thread)."""
    try:
        return max(0, int(os.environ.get(layout.ENV_WRITER_DEPTH, DEPTH)))
    except ValueError:
        return DEPTH


def thread_env(spec: WorkerSpec) -> dict[str, str]:
    """Variables to set in the worker: thread counts, GPU, then the deployment's own variables."""
    env = {name: str(spec.threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    if spec.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = spec.gpu
        env["AZ_BATCHAI_GPU_COUNT_FOUND"] = str(spec.gpu_count)
    env[layout.ENV_WORKER] = spec.name
    env.update(spec.settings.environment_variables)  # the user's choice wins
    return env


def make_workdir(spec_env: dict[str, str], worker: str, root: str | None = None) -> str | None:
    """A fresh temp folder for a worker to run in (Azure runs workers in one), in the temp dir the
    worker will see (the deployment's TMPDIR/TEMP/TMP win: a supervisor killed -9 leaves it there),
    else in the folder `root`, else in the system's; None where none can be made.

    Made and removed by the supervisor, not the worker: a worker that fails init() or crashes
    never gets to clean up. A supervisor killed -9 cannot either: the process backend gives it a
    `root` in the job folder (layout.ENV_WORK_ROOT), which the host removes when the instance ends.
    """
    wanted = next((spec_env[k] for k in ("TMPDIR", "TEMP", "TMP") if spec_env.get(k)), None)
    for folder in [f for f in (wanted, root) if f] + [None]:
        try:
            return tempfile.mkdtemp(prefix=f"bepbuild-{worker}-", dir=folder)
        except OSError:  # no writable temp dir (read-only root): the worker stays where it is
            continue
    return None


def remove_workdir(path: str | None) -> None:
    """Remove a folder made by make_workdir (never what a link put in its place points to)."""
    if path:
        shutil.rmtree(path, ignore_errors=True)  # fd-based on Linux: a link inside is removed, not followed


def _redirect(target_fd: int, path: str) -> None:
    fd = reports.open_append(path)
    os.dup2(fd, target_fd)
    os.close(fd)


def _die_with_parent() -> None:
    # Linux: SIGKILL this worker when the supervisor dies, so no orphan goes on claiming work
    # without a heartbeat (its claims are then requeued by the host). Best effort elsewhere.
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _prepare_process(spec: WorkerSpec) -> None:
    # The supervisor coordinates stopping: a Ctrl-C or a SIGTERM sent to the whole process group
    # must not kill workers mid-write; the supervisor lets them finish, then kills what is left.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    os.environ.update(thread_env(spec))
    sys.stdout.flush()
    sys.stderr.flush()
    instance = spec.instance
    _redirect(1, layout.path(spec.job_dir, layout.LOG_USER_STDOUT, instance, spec.name + ".stdout.txt"))
    _redirect(2, layout.path(spec.job_dir, layout.LOG_USER_STDERR, instance, spec.name + ".stderr.txt"))
    for stream in (sys.stdout, sys.stderr):
        # Line buffering: a worker killed on timeout still leaves its prints in the log.
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    configure_logging(spec.settings.log_level)


def configure_logging(level: int) -> None:
    """The root logger of a process running scoring code: one stderr handler, Azure's line format, `level`."""
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s|%(name)s|%(levelname)s|%(process)d|%(threadName)s|%(funcName)s()|%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)


def import_script(code_dir: str, script: str, level: str = "info") -> ModuleType:
    """Import the scoring script as a module, with the code dir importable (sibling modules).

    sys.argv mirrors Azure's driver (`--logging_level INFO`): scripts are expected to use
    argparse's parse_known_args.
    """
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    name = os.path.splitext(os.path.basename(script))[0]
    if name in sys.modules:  # never shadow a module already loaded (e.g. a script named json.py)
        name = "_bepbuild_scoring_script"
    sys.argv = [script, "--logging_level", level.upper()]
    spec = importlib.util.spec_from_file_location(name, script)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import scoring script {script}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _traceback_to(job_dir: str, worker: str, header: str) -> str:
    """Log the current exception to the user error file and stderr; return its one-line summary."""
    tb = traceback.format_exc()
    reports.append_text(reports.user_error_path(job_dir, worker), f"{reports.now_iso()} {header}\n{tb}\n")
    sys.stderr.write(f"{header}\n{tb}")
    etype, value = sys.exc_info()[:2]
    return f"{etype.__name__ if etype else 'Error'}: {value}"


def worker_main(spec: WorkerSpec, state: Any, stop: Any) -> None:
    """The body of a worker process; exits 0 when told to stop, 72 when init() fails, 73 when the job
    folder is full (its claims then go back untouched: a full disk is not the mini-batch's fault)."""
    try:
        _worker_main(spec, state, stop)
    except OSError as exc:
        if not queue.is_no_space(exc):
            raise
        queue.release_claims(spec.job_dir, spec.name)
        try:
            sys.stderr.write(f"no space left in the job folder: {exc}; stopping\n")
            sys.stderr.flush()
        except OSError:
            pass
        os._exit(layout.EXIT_NO_SPACE)  # no interpreter shutdown: flushing logs would fail again


def _worker_main(spec: WorkerSpec, state: Any, stop: Any) -> None:
    _prepare_process(spec)
    logs = reports.WorkerLogs(spec.job_dir, spec.name)
    logs.note(f"pid={os.getpid()} starting: threads={spec.threads} gpu={spec.gpu}")
    if spec.workdir:
        try:
            os.chdir(spec.workdir)  # Azure runs workers in a temp dir; the code dir may be read-only
        except OSError:
            pass
    try:
        module = import_script(spec.code_dir, spec.scoring_script, spec.settings.logging_level)
        init = getattr(module, "init", None)
        if init is not None:
            init()
        run = getattr(module, "run", None)
        if not callable(run):
            raise AttributeError(f"the scoring script {spec.scoring_script} has no run(mini_batch) function")
    except BaseException:  # noqa: B036 - SystemExit from init() is an init failure too
        summary = _traceback_to(spec.job_dir, spec.name, "init() failed:")
        logs.note(f"{layout.STATUS_INIT_FAILED}: {summary}")
        logs.close()
        sys.exit(layout.EXIT_INIT_FAILED)
    state[PHASE] = PHASE_READY
    logs.note("init() done; processing mini-batches")
    _loop(spec, run, logs, state, stop)
    shutdown = getattr(module, "shutdown", None)
    if callable(shutdown):
        try:
            shutdown()
        except BaseException:  # noqa: B036 - a failing shutdown() must not lose the finished work
            _traceback_to(spec.job_dir, spec.name, "shutdown() failed:")
    logs.note("stopped")
    logs.close()
    sys.exit(layout.EXIT_OK)


class _Pace:
    """Whether handing a mini-batch's file work to the writer thread pays.

    Never while run() is shorter than that work (moving averages): the worker would wait for the
    thread anyway, and the hand-off costs more than it hides (bench/overhead.py, a no-op run()).
    Otherwise it depends on what run() does: a run() that waits (a GPU, a remote call) gets the file
    work for free, but one that keeps every core busy (torch's threads on a small machine) slows by
    more than the work it is spared (bench/mnist.py: run() 3.8 ms inline, 4.7 ms beside the thread).
    So after a warm-up the worker tries both, in blocks of BLOCK mini-batches in the order ABBA,
    measures the cadence (one run() start to the next) of each, and keeps the faster; it tries again
    every RETRY mini-batches, as the load on the machine changes.
    """

    WARM_UP = 10
    BLOCK = 16
    RETRY = 2000

    def __init__(self, clock: Callable[[], float] = time.perf_counter, hold: float = HOLD_SECONDS) -> None:
        self.run = self.files = 0.0
        self.hold = hold
        self.runs = 0  # run() calls timed
        self._clock = clock
        self._last: tuple[float, bool, bool] | None = None  # the mini-batch in progress: start, mode, counted
        self._previous = True  # the mode of the mini-batch before it
        self._until_trial = self.WARM_UP
        self._plan: list[bool] = []  # the modes still to try, one per mini-batch, last first
        self._trying = False
        self._cadence: dict[bool, list[float]] = {True: [], False: []}
        self.choice = True  # overlap: the mode kept between trials

    def overlap(self) -> bool:
        """The mode of the mini-batch about to start (called once per mini-batch, before run())."""
        now = self._clock()
        if self._last is not None and self._last[2]:
            self._cadence[self._last[1]].append(now - self._last[0])
        counted = False
        if self.run <= self.files:
            mode = False
        elif self._plan:
            mode = self._plan.pop()
            self._trying = True
            counted = mode == self._previous  # the first of a block carries the switch itself
        else:
            if self._trying:
                self._decide()
            mode = self.choice
            self._until_trial -= 1
            if self._until_trial <= 0:
                self._plan = [m for m in (True, False, False, True) for _ in range(self.BLOCK)][::-1]
                self._cadence = {True: [], False: []}
                self._until_trial = self.RETRY
        self._previous = mode
        self._last = (now, mode, counted)
        return mode

    def _decide(self) -> None:
        self._trying = False
        a, b = self._cadence[True], self._cadence[False]
        if a and b:
            self.choice = sum(a) / len(a) <= sum(b) / len(b)

    def idle(self) -> None:
        """Nothing to claim: the wait is neither mode's cadence."""
        self._last = None

    def ran(self, seconds: float) -> None:
        self.run += 0.1 * (seconds - self.run)
        self.runs += 1

    def together(self) -> int:
        """How many mini-batches to claim, and to record, at a time while the worker does its file
        work itself: as many as `hold` seconds of run() (1 until the warm-up has timed run())."""
        if self.runs < self.WARM_UP:
            return 1
        return max(1, min(MOST_HELD, int(self.hold / max(self.run + self.files, 1e-6))))

    def filed(self, seconds: float) -> None:
        self.files += 0.1 * (seconds - self.files)

    def timed(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args), its time counted as file work (in whichever thread it runs)."""
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.filed(time.perf_counter() - t)


class _Ahead:
    """The worker's next mini-batch: claimed by the writer thread while run() works on this one when
    asked (`ask`), else by the worker itself when it takes it."""

    def __init__(self, claimer: queue.Claimer, writer: Writer | None, pace: _Pace) -> None:
        self._claimer, self._writer, self._pace = claimer, writer, pace
        self._slot: _queue.Queue[queue.MiniBatch | None] = _queue.Queue(maxsize=1)
        self._asked = False
        self._claimed: collections.deque[queue.MiniBatch] = collections.deque()  # taken together, not yet given

    def ask(self) -> None:
        """Claim the next mini-batch in the background (once until it is taken; not while claims
        taken together are left)."""
        if self._writer is not None and not self._asked and not self._claimed:
            self._asked = True
            self._writer.submit(self._claim)

    def _claim(self) -> None:
        self._slot.put(self._pace.timed(self._claimer.claim))

    def take(self, count: int = 1) -> queue.MiniBatch | None:
        """The next mini-batch, None when pending/ is empty; raises what the writer thread raised.

        Claiming by itself, the worker takes up to `count` at once: one after the other the claims
        find the caches warm (the first one after run() is the dearest)."""
        if self._claimed:
            return self._claimed.popleft()
        if self._writer is None or not self._asked:
            batch = self._pace.timed(self._claimer.claim)
            while batch is not None and len(self._claimed) < count - 1:
                more = self._pace.timed(self._claimer.claim)
                if more is None:
                    break
                self._claimed.append(more)
            return batch
        while True:
            try:
                batch = self._slot.get(timeout=0.05)
            except _queue.Empty:
                self._writer.check()  # the claim failed: never wait for it
                continue
            self._asked = False
            return batch


class _Held:
    """Finished mini-batches whose file work the worker does together, a few at a time.

    Right after a run() that filled the caches, a mini-batch's file work costs 3-4 x what it costs
    warm (0.2-0.3 ms after a torch run(), where the limit spends nothing): done back to back, all
    but the first find the caches warm. A held mini-batch is finished work a crash would lose, not
    rows: its claim is still in running/<worker>/, goes back untouched (the supervisor charges only
    the mini-batch in run()) and runs again. So the worker holds at most `_Pace.together()`
    mini-batches, HOLD_SECONDS of run() (none when run() takes longer), and writes them before it
    waits for work, hands work to its writer thread, or stops.
    """

    def __init__(self, hold: float = HOLD_SECONDS) -> None:
        self._hold = hold
        self._calls: list[tuple[Any, ...]] = []
        self._since = 0.0

    def add(self, *call: Any) -> None:
        """Hold one call: (fn, *args)."""
        if not self._calls:
            self._since = time.perf_counter()
        self._calls.append(call)

    def due(self, most: int) -> bool:
        """Whether the held calls are to be written now: `most` of them, or held `hold` seconds."""
        return bool(self._calls) and (len(self._calls) >= most or time.perf_counter() - self._since >= self._hold)

    def flush(self) -> None:
        """Run the held calls in order (a failure leaves the rest unwritten: their claims go back)."""
        calls, self._calls = self._calls, []
        for fn, *args in calls:
            fn(*args)


BLAME = "bepbuild_batch"  # set on an exception raised while recording a mini-batch: the one to charge


def _blamed(bid: str, fn: Callable[..., None], *args: Any) -> None:
    """fn(*args), which records mini-batch `bid`, the exception it raises tagged with `bid`: the worker
    dies of it, and its supervisor charges that mini-batch (a record that can never be written must
    not be retried for ever), not the one in run() by then."""
    try:
        fn(*args)
    except BaseException as exc:
        try:
            setattr(exc, BLAME, bid)
        except (AttributeError, TypeError):
            pass
        raise


def _record_done(job: str, worker: str, logs: reports.WorkerLogs, batch: queue.MiniBatch,
                 outcome: output.Outcome, tries: int, start: float, elapsed: float, process_seconds: float,
                 run_seconds: float) -> None:
    if outcome.warning:
        logs.note(f"mini-batch {batch['id']}: {outcome.warning}")
    try:
        text = outcome.text  # a DataFrame's rows are joined here, off the path between two run() calls
    except Exception:  # noqa: BLE001 - str() of a value failed (an int past the digits limit, memory): run()'s result
        summary = _traceback_to(job, worker, f"run() failed on mini-batch {batch['id']}:")
        _record_failure(job, worker, logs, batch, summary, tries, start, elapsed, process_seconds, run_seconds)
        return
    data = queue.encode_result(text) if text else None
    if not queue.complete(job, worker, batch, data, outcome.succeeded,
                          {"start": start, "elapsed": round(elapsed, 6), "run_seconds": round(run_seconds, 6)}):
        # Given up for dead meanwhile: whoever took our claim logged this try as lost
        logs.note(f"mini-batch {batch['id']}: finished after it was given back (this worker was given up for "
                  "dead); another try records it, or it failed")
        return
    logs.attempt(batch, layout.STATUS_DONE, start=start, elapsed=elapsed, process_seconds=process_seconds,
                 run_seconds=run_seconds, succeeded=outcome.succeeded)


def _record_failure(job: str, worker: str, logs: reports.WorkerLogs, batch: queue.MiniBatch, summary: str,
                    tries: int, start: float, elapsed: float, process_seconds: float, run_seconds: float) -> None:
    if queue.fail_attempt(job, worker, batch, summary, tries, layout.STATUS_EXCEPTION) is None:
        # Given up for dead meanwhile: whoever took our claim logged this try as lost
        logs.note(f"mini-batch {batch['id']}: failed after it was given back (this worker was given up for "
                  "dead); another try records it, or it failed")
        return
    logs.attempt(batch, layout.STATUS_EXCEPTION, start=start, elapsed=elapsed, process_seconds=process_seconds,
                 run_seconds=run_seconds, error_category=reports.USER_ERROR, error_message=summary)


def _loop(spec: WorkerSpec, run: Callable[[list[str]], Any], logs: reports.WorkerLogs, state: Any,
          stop: Any) -> None:
    job, worker, settings = spec.job_dir, spec.name, spec.settings
    claimer = queue.Claimer(job, worker, *claim_share(spec))
    prefix = spec.input_dir.rstrip("/") + "/" if spec.input_dir else ""
    formatter = output.format_append_row if settings.output_action == APPEND_ROW else output.count_summary
    tries = settings.tries
    clock, wall, cpu = time.perf_counter, time.time, time.process_time
    parent = os.getppid()
    # Started after init(): init() may fork pools, which is safest in a process with one thread.
    depth = writer_depth()
    writer = Writer(depth) if depth else None
    hold = hold_seconds()
    pace = _Pace(hold=hold)
    ahead = _Ahead(claimer, writer, pace)
    held = _Held(hold)
    overlap = False  # the mode of the mini-batch before (the writer thread claims and records one at a time)
    last = 0.0  # state[BATCH] of the last mini-batch given to run()
    try:
        # Stop when told, or when the supervisor is gone (an orphan must not go on claiming work).
        while not stop.value and os.getppid() == parent:
            batch = ahead.take(1 if overlap else pace.together())
            if writer is not None:
                writer.check()  # a failure of the thread is raised while the batch it hit is still current
            if batch is None:
                held.flush()
                pace.idle()
                time.sleep(IDLE_POLL_SECONDS)
                continue
            was, overlap = overlap, writer is not None and pace.overlap()
            if overlap:
                held.flush()
                record = writer.submit  # type: ignore[union-attr]
                if not stop.value:
                    ahead.ask()
            else:
                if was:
                    writer.wait()  # type: ignore[union-attr]  # its records first: the logs stay in run() order
                record = held.add
            start, t0, c0 = wall(), clock(), cpu()
            items = batch["items"]
            last = float(int(batch["id"]) + 1)
            state[BATCH] = last
            state[STARTED] = time.monotonic()
            try:
                result = run([prefix + item for item in items])
                state[STARTED] = state[BATCH] = 0.0  # killed from here on, it was in no run()
                run_seconds = clock() - t0
                pace.ran(run_seconds)
                outcome = formatter(result, len(items))
            except BaseException:  # noqa: B036 - whatever run() raises fails this attempt only
                state[STARTED] = state[BATCH] = 0.0
                run_seconds = clock() - t0
                summary = _traceback_to(job, worker, f"run() failed on mini-batch {batch['id']}:")
                record(_blamed, batch["id"], pace.timed, _record_failure, job, worker, logs, batch, summary, tries,
                       start, clock() - t0, cpu() - c0, run_seconds)
                if held.due(pace.together()):
                    held.flush()
                continue
            record(_blamed, batch["id"], pace.timed, _record_done, job, worker, logs, batch, outcome, tries, start,
                   clock() - t0, cpu() - c0, run_seconds)
            if held.due(pace.together()):
                held.flush()
        held.flush()
        if writer is not None:
            writer.close()  # every finished mini-batch recorded; raises a failure of the thread
    except BaseException as exc:
        # Dying of it: the supervisor charges state[BATCH]. A record that failed charges its own
        # mini-batch; anything else the last one given to run(), as a worker killed in its run().
        blamed = getattr(exc, BLAME, None)
        state[BATCH] = float(int(blamed) + 1) if blamed is not None else last
        if writer is not None:
            writer.abort()  # nothing is written after this: the claims may be given back
        raise
    queue.release_claims(job, worker)  # a mini-batch claimed ahead and never started goes back untouched
