"""The job folder and image layout: the one contract shared by host and container.

The host (`bepbuild.jobs`) and the instances (`bepbuild_runtime`) talk only through a job folder
on a shared filesystem. Every name below is part of that contract; both sides import it from here
so they never drift. Stdlib only.

Job folder::

    <job>/job.json                       settings, inputs, state (host writes; runtime reads)
    <job>/queue/count                    how many mini-batches write_queue wrote (decimal)
    <job>/queue/pending/<id>.json        a mini-batch waiting: {"id", "items", "attempt"}
    <job>/queue/running/<worker>/<id>.json   claimed by atomic rename; <worker> = <instance>.<n>
    <job>/queue/running/<worker>/.heartbeat  touched every HEARTBEAT_SECONDS while the worker lives
    <job>/queue/done/<id>.json           finished: the claim, its counts and timings, then its rows (record.py)
    <job>/queue/failed/<id>.json         out of tries: the mini-batch plus the last error
    <job>/results/<id>.csv               rows of one mini-batch, as an older runtime kept them (still merged)
    <job>/control/cancel                 flag: stop claiming (the user canceled the job)
    <job>/control/host.lock              flock of the one host process driving the job (holds its pid)
    <job>/state/lease.<term>             the coordinator lease of term <term> (runtime writes; see coordinator)
    <job>/state/merging.json             the coordinator merging the output: its token and the output file
    <job>/state/outcome.json             how the job ended, as its coordinator decided (the host records it)
    <job>/snapshot/{code,model}          process backend: the job's copy of the deployed code and model
    <job>/work/<instance>/               process backend: its workers' temp folders (the host removes it)
    <job>/inputs/                        http(s) inputs downloaded; a swarm job's inputs copied to the shared path
    <job>/logs/...                       Azure-like logs (see LOG_* below)
    <output dir>/<output_file_name>      merged result; the output dir is AZUREML_BI_OUTPUT_PATH
"""

from __future__ import annotations

import os

# The oldest Python the runtime runs on (Azure's curated images and examples pin python=3.8): it is
# copied into images whose Python the user picks. The builder refuses an image with an older one;
# scripts/check_runtime_python.py and the tests (the runtime run under that Python) hold it to this.
MIN_PYTHON = (3, 8)

JOB_FILE = "job.json"
QUEUE_DIR = "queue"
PENDING_DIR = "queue/pending"
RUNNING_DIR = "queue/running"
DONE_DIR = "queue/done"
FAILED_DIR = "queue/failed"
RESULTS_DIR = "results"
CONTROL_DIR = "control"
CANCEL_FLAG = "control/cancel"
HOST_LOCK = "control/host.lock"  # flock held by the host process driving the job; its pid inside
OUTPUTS_DIR = "outputs"  # default output dir when no --output-path is given
INPUTS_DIR = "inputs"  # http(s) inputs downloaded, and a swarm job's inputs copied onto the shared path
SNAPSHOT_DIR = "snapshot"  # process backend: the job's copy of the deployed code/ and model/
WORK_DIR = "work"  # process backend: work/<instance>/ holds its workers' temp folders, removed by the host
LOGS_DIR = "logs"
# Written by the instances (the runtime user), read by the host as data it does not trust: job.json
# and control/ stay the host's, so scoring code (which runs as the runtime user) cannot change what
# the host does; it can only stop or fail its own job.
STATE_DIR = "state"
LEASE_PREFIX = "state/lease."  # + zero-padded term: created exclusively, renewed by its mtime
LEASE_TERM_WIDTH = 9
MERGING_FILE = "state/merging.json"
OUTCOME_FILE = "state/outcome.json"
MERGE_TMP_INFIX = ".merging-"  # <output dir>/.<output file><infix><token>: the merge's temp file
LEASE_TOKEN_CHARS = 16  # a coordinator's token (its lease, its merge's temp file)
# The longest output_file_name (UTF-8 bytes) whose merge temp file still fits a file name (255 bytes);
# the other temp names beside outputs (publish, download) are shorter.
MAX_OUTPUT_FILE_NAME = 255 - len(".") - len(MERGE_TMP_INFIX) - LEASE_TOKEN_CHARS

QUEUE_COUNT_FILE = "queue/count"  # number of mini-batches written by write_queue (decimal text)
QUEUE_STAGING_DIR = "queue/.pending-staging"  # write_queue builds the queue here, then renames it
TMP_PREFIX = ".tmp."  # temp files live in the writer's running/<worker>/ folder, never in queue dirs

HEARTBEAT_FILE = ".heartbeat"
HEARTBEAT_SECONDS = 2.0
HEARTBEAT_EXPIRY_SECONDS = 30.0
LEASE_SECONDS = 10.0  # a coordinator lease not renewed for this long (as its observer counts time) is taken over
# running/.taken-<token>.<worker>: a dead worker's folder, taken by the one giving its claims back
TAKEN_PREFIX = ".taken-"

# Mini-batch ids are zero-padded so that a plain sort is the merge order.
MINI_BATCH_ID_WIDTH = 9
RESULT_SUFFIX = ".csv"

# Logs, laid out like Azure ML's.
LOG_PROGRESS_PREFIX = "logs/job_progress_overview."  # + yyyymmddhh + ".txt"
LOG_RESULT = "logs/job_result.txt"
LOG_ERROR = "logs/job_error.txt"
LOG_HOST = "logs/host.txt"  # stdout/stderr of a detached host (invoke/resume --no-wait)
INSTANCE_PID_SUFFIX = ".process.pid"  # control/<instance>.process.pid: a process-backend instance's pid
# logs/<instance><suffix>: what an instance printed itself, per backend
INSTANCE_LOG_SUFFIXES = {"process": ".process.txt", "docker": ".container.txt", "swarm": ".task.txt"}
LOG_USER_STDOUT = "logs/user/stdout"  # /<instance>/<worker>.stdout.txt
LOG_USER_STDERR = "logs/user/stderr"  # /<instance>/<worker>.stderr.txt
LOG_USER_ERROR = "logs/user/error"  # /<instance>/<worker>.txt (tracebacks)
LOG_SYS_NODE = "logs/sys/node"  # /<instance>/<worker>.txt (one line per mini-batch)
LOG_SYS_NODE_MAIN = "_main.txt"  # /<instance>/_main.txt: the supervisor's own lines (worker exits, stop)
LOG_JOB_REPORT_DIR = "logs/sys/job_report"
LOG_ATTEMPTS_DIR = "logs/sys/job_report/attempts"  # /<worker>.csv, merged at the end
LOG_PROCESSED_MINI_BATCHES = "logs/sys/job_report/processed_mini-batches.csv"
PROCESSED_COLUMNS = (
    "Mini-batch Id",
    "Picked Count",
    "Process",
    "Start Time",
    "Total",
    "Succeeded",
    "Failed",
    "Elapsed Seconds",
    "Process Seconds",
    "Run Method Seconds",
    "Status",
    "Error Category",
    "Error Message",
    "Mini-batch Detail",
)

# Attempt statuses (as in Azure's processed_mini-batches.csv).
STATUS_DONE = "RUN_DONE"
STATUS_EXCEPTION = "RUN_EXCEPTION"
STATUS_TIMEOUT = "RUN_TIMEOUT"
STATUS_INIT_FAILED = "INIT_FAILED"
STATUS_LOST = "WORKER_LOST"
STATUS_INIT_TIMEOUT = "INIT_TIMEOUT"

# Exit codes of `python -m bepbuild_runtime` (the supervisor) and of its worker processes.
EXIT_OK = 0  # the queue is drained
EXIT_FAILURE = 1  # unexpected error in the runtime itself
EXIT_USAGE = 2  # bad arguments or settings, missing job folder or scoring script
EXIT_TIMEOUT = 71  # worker: killed because run() exceeded the timeout (Azure's code)
EXIT_INIT_FAILED = 72  # worker: init() failed; supervisor: init() failed 3 x its workers times in a row
EXIT_STOPPED = 82  # supervisor: stopped early by control/cancel, control/abort or SIGTERM/SIGINT
EXIT_NO_SPACE = 73  # worker, supervisor: the job folder is full; claims went back untouched

# Inside an image.
IMAGE_ROOT = "/opt/bepbuild"
IMAGE_VENV = "/opt/bepbuild/venv"
IMAGE_RUNTIME_DIR = "/opt/bepbuild/runtime"  # on PYTHONPATH; holds the bepbuild_runtime package
IMAGE_MODEL_DIR = "/opt/bepbuild/model"  # AZUREML_MODEL_DIR; the model sits in <model-folder-name>/
IMAGE_CODE_DIR = "/opt/bepbuild/code"  # scoring code; on PYTHONPATH
RUNTIME_UID = 10001  # the non-root user scoring containers run as
RUNTIME_GID = 10001

# Mount points of a scoring container.
CONTAINER_JOB_DIR = "/mnt/bepbuild/job"
CONTAINER_INPUT_DIR = "/mnt/bepbuild/inputs"
CONTAINER_OUTPUT_DIR = "/mnt/bepbuild/outputs"

# `bepbuild test` (python -m bepbuild_runtime.probe): what the host hands the probe, where it answers.
CONTAINER_PROBE_REQUEST_DIR = "/mnt/bepbuild/test/request"  # read-only: PROBE_REQUEST
CONTAINER_PROBE_RESULT_DIR = "/mnt/bepbuild/test/result"  # writable: PROBE_RESULT, the JUnit report
CONTAINER_PYTEST_DIR = "/mnt/bepbuild/test/paths"  # the user's test paths, read-only, /<n>/ each
PROBE_REQUEST = "request.json"
PROBE_RESULT = "result.json"
PROBE_JUNIT = "junit.xml"
IMAGE_LOCK = "/opt/bepbuild/requirements.lock"  # the lock an environment image was installed from
IMAGE_PYTEST_DIR = "/opt/bepbuild/pytest"  # pytest, only in the derived image `bepbuild test --pytest` builds

# Environment variables the runtime reads (set in the image, or by the process backend).
ENV_MODEL_DIR = "AZUREML_MODEL_DIR"
ENV_OUTPUT_PATH = "AZUREML_BI_OUTPUT_PATH"
ENV_CODE_DIR = "BEPBUILD_CODE_DIR"
ENV_SCORING_SCRIPT = "BEPBUILD_SCORING_SCRIPT"
ENV_JOB_DIR = "BEPBUILD_JOB_DIR"
ENV_INPUT_DIR = "BEPBUILD_INPUT_DIR"
ENV_INSTANCE = "BEPBUILD_INSTANCE"
ENV_CPUS = "BEPBUILD_CPUS"  # CPUs the instance may use; split among its workers for thread counts
ENV_GPUS = "BEPBUILD_GPUS"  # comma-separated GPU ids of the instance; given round-robin to workers
ENV_WORKER = "BEPBUILD_WORKER"  # set by the runtime in each worker: its name (<instance>.<n>)
ENV_WRITER_DEPTH = "BEPBUILD_WRITER_DEPTH"  # "0": a worker writes its results itself, no writer thread (worker.py)
ENV_WORK_ROOT = "BEPBUILD_WORK_ROOT"  # where the supervisor makes its workers' temp folders (process backend)
ENV_HOLD_SECONDS = "BEPBUILD_HOLD_SECONDS"  # "0": a worker claims and records one mini-batch at a time (worker.py)
ENV_NO_NEW_PRIVILEGES = "BEPBUILD_NO_NEW_PRIVILEGES"  # "1": the supervisor sets no_new_privs itself (Swarm tasks)
ENV_SWARM_GPUS = "DOCKER_RESOURCE_NVIDIA-GPU"  # Swarm's generic resources given to a task (GPU ids)


def mini_batch_id(index: int) -> str:
    """The id of the index-th mini-batch (0-based): sortable, fixed width."""
    return str(index).zfill(MINI_BATCH_ID_WIDTH)


def is_mini_batch_id(text: object) -> bool:
    """Whether `text` is an id `mini_batch_id` makes: ASCII digits, at least the padded width.

    Claim files are written where scoring code can write: the host takes nothing else from one
    for a name (an id with '/' or '..' would lead out of the job folder)."""
    return (isinstance(text, str) and len(text) >= MINI_BATCH_ID_WIDTH and text.isascii()
            and text.isdigit())


def worker_name(instance: str, number: int) -> str:
    """The name of worker `number` of `instance`, also its folder under running/."""
    return f"{instance}.{number}"


def instance_of(worker: str) -> str:
    """The instance part of a worker name (the inverse of `worker_name`)."""
    return worker.rpartition(".")[0] or worker


def instance_pid_file(instance: str) -> str:
    """The job-folder-relative name of the pid file of process-backend instance `instance`."""
    return f"{CONTROL_DIR}/{instance}{INSTANCE_PID_SUFFIX}"


def instance_log(instance: str, backend: str) -> str:
    """The job-folder-relative name of the log of what instance `instance` printed itself."""
    return f"{LOGS_DIR}/{instance}{INSTANCE_LOG_SUFFIXES[backend]}"


def lease_file(term: int) -> str:
    """The job-folder-relative name of the coordinator lease of `term`."""
    return LEASE_PREFIX + str(term).zfill(LEASE_TERM_WIDTH)


def taken_dir(worker: str, token: str) -> str:
    """The name under running/ of `worker`'s folder once taken by `token` (see queue.take_worker)."""
    return f"{TAKEN_PREFIX}{token}.{worker}"


def worker_of_folder(name: str) -> str:
    """The worker a folder under running/ belongs to (its own folder, or one taken from it)."""
    if name.startswith(TAKEN_PREFIX):
        return name[len(TAKEN_PREFIX):].partition(".")[2]
    return name


def path(job_dir: str | os.PathLike[str], *parts: str) -> str:
    """Join a job-folder-relative name onto the job folder."""
    return os.path.join(os.fspath(job_dir), *parts)
