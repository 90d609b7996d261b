"""One worker process: prepare the process, import the scoring script, init(), then claim-run-complete.

Forked by the supervisor, which watches it through a small shared array (`state`): the phase,
when the current run() started (time.monotonic, system-wide on Linux) and which mini-batch it is.
Writing two floats per mini-batch is the cheapest channel there is; the supervisor reads them to
enforce the timeout and to know what a killed worker was doing.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from . import layout, output, queue, reports
from .settings import APPEND_ROW, Settings

# Indexes into the shared state array, and the phases.
PHASE, STARTED, BATCH = 0, 1, 2
STATE_SIZE = 3
PHASE_INIT, PHASE_READY = 0.0, 1.0
IDLE_POLL_SECONDS = 0.05  # pending/ empty: look again this often (items of dead workers come back)


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


def thread_env(spec: WorkerSpec) -> dict[str, str]:
    """Variables to set in the worker: thread counts, GPU, then the deployment's own variables."""
    env = {name: str(spec.threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    if spec.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = spec.gpu
        env["AZ_BATCHAI_GPU_COUNT_FOUND"] = str(spec.gpu_count)
    env[layout.ENV_WORKER] = spec.name
    env.update(spec.settings.environment_variables)  # the user's choice wins
    return env


def make_workdir(spec_env: dict[str, str], worker: str) -> str | None:
    """A fresh temp folder for a worker to run in (Azure runs workers in one), in the temp dir the
    worker will see (the deployment's TMPDIR/TEMP/TMP win); None where none can be made.

    Made and removed by the supervisor, not the worker: a worker that fails init() or crashes
    never gets to clean up, and the process backend's temp dir is the host's.
    """
    wanted = next((spec_env[k] for k in ("TMPDIR", "TEMP", "TMP") if spec_env.get(k)), None)
    for folder in ([wanted] if wanted else []) + [None]:
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


def _loop(spec: WorkerSpec, run: Callable[[list[str]], Any], logs: reports.WorkerLogs, state: Any,
          stop: Any) -> None:
    job, worker, settings = spec.job_dir, spec.name, spec.settings
    claimer = queue.Claimer(job, worker)
    prefix = spec.input_dir.rstrip("/") + "/" if spec.input_dir else ""
    formatter = output.format_append_row if settings.output_action == APPEND_ROW else output.count_summary
    tries = settings.tries
    clock, wall, cpu = time.perf_counter, time.time, time.process_time
    parent = os.getppid()
    # Stop when told, or when the supervisor is gone (an orphan must not go on claiming work).
    while not stop.value and os.getppid() == parent:
        batch = claimer.claim()
        if batch is None:
            time.sleep(IDLE_POLL_SECONDS)
            continue
        start, t0, c0 = wall(), clock(), cpu()
        items = batch["items"]
        state[BATCH] = float(batch["id"])
        state[STARTED] = time.monotonic()
        try:
            result = run([prefix + item for item in items])
            state[STARTED] = 0.0
            run_seconds = clock() - t0
            outcome = formatter(result, len(items))
        except BaseException:  # noqa: B036 - whatever run() raises fails this attempt only
            state[STARTED] = 0.0
            run_seconds = clock() - t0
            summary = _traceback_to(job, worker, f"run() failed on mini-batch {batch['id']}:")
            queue.fail_attempt(job, worker, batch, summary, tries, layout.STATUS_EXCEPTION)
            logs.attempt(batch, layout.STATUS_EXCEPTION, start=start, elapsed=clock() - t0,
                         process_seconds=cpu() - c0, run_seconds=run_seconds,
                         error_category=reports.USER_ERROR, error_message=summary)
            continue
        if outcome.warning:
            logs.note(f"mini-batch {batch['id']}: {outcome.warning}")
        elapsed = clock() - t0
        queue.complete(job, worker, batch, outcome.text, outcome.succeeded,
                       {"start": start, "elapsed": round(elapsed, 6), "run_seconds": round(run_seconds, 6)})
        logs.attempt(batch, layout.STATUS_DONE, start=start, elapsed=clock() - t0,
                     process_seconds=cpu() - c0, run_seconds=run_seconds, succeeded=outcome.succeeded)
