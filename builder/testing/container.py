"""One container of `bepbuild test`: created with a job's isolation, watched, and removed whatever happens.

Removed in a `finally`, with SIGINT, SIGTERM and SIGHUP held back while it is (`deferred_signals`),
and SIGTERM/SIGHUP turned into the KeyboardInterrupt Ctrl-C raises (`signals_interrupt`), so a test
that is stopped leaves nothing behind. A test killed outright (SIGKILL) cannot clean up: its
container and scratch folder carry its owner (`owner()`: boot, pid and start time of the process),
and the next `bepbuild test` removes those whose owner is gone (`sweep`).

Peak memory comes from the engine (the container's cgroup stats, sampled for as long as it runs).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import config, images, naming
from ..errors import EngineError, NotFoundError
from ..jobs import isolation
from ..owners import owner, owner_gone

TEST_LABEL = "io.bepbuild.test"  # the scratch folder's name
SCRATCH_LABEL = "io.bepbuild.test-scratch"  # its absolute path
OWNER_LABEL = "io.bepbuild.test-owner"  # owner() of the process that made it
OWNER_FILE = ".owner"  # owner() in the scratch folder
SCRATCH_PREFIX = "test-"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class Mount:
    source: Path
    target: str
    writable: bool = False


@dataclass
class Ran:
    """What one container did."""

    exit_code: int | None
    oom_killed: bool
    log: str
    peak_memory: int | None  # bytes, from the engine's stats; None when it ran too briefly to be sampled
    seconds: float
    memory_limit: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- owners and leftovers ---------------------------------------------------------------------------------


def new_scratch() -> Path:
    """A scratch folder of this test run under `config.scratch_dir()`, marked with its owner."""
    import tempfile

    root = config.scratch_dir()
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=root))
    (folder / OWNER_FILE).write_text(owner() + "\n")
    return folder


def remove_scratch(folder: Path) -> None:
    """Remove a scratch folder (only one inside `config.scratch_dir()`; links are removed, never followed)."""
    import shutil

    root = config.scratch_dir()
    if not folder.exists() and not folder.is_symlink():
        return
    # Containers may have written here as another user; the host user owns the folders above.
    with contextlib.suppress(OSError):
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                os.chmod(path, 0o700)
    try:
        config.remove_owned(folder, root)
    except OSError:
        shutil.rmtree(config.owned_path(root, folder.name), ignore_errors=True)


def sweep() -> int:
    """Remove the containers and scratch folders of `bepbuild test` runs whose process is gone; returns how many."""
    import docker

    removed = 0
    with contextlib.suppress(docker.errors.DockerException, EngineError):
        for c in images.engine().containers.list(all=True, filters={"label": TEST_LABEL}):
            if owner_gone((c.labels or {}).get(OWNER_LABEL, "")):
                with contextlib.suppress(docker.errors.DockerException):
                    c.remove(force=True)
                    removed += 1
    root = config.scratch_dir()
    if root.is_dir():
        for folder in root.glob(SCRATCH_PREFIX + "*"):
            try:
                who = (folder / OWNER_FILE).read_text().strip()
            except OSError:
                continue
            if owner_gone(who):
                remove_scratch(folder)
                removed += 1
    return removed


# -- signals -----------------------------------------------------------------------------------------------


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP end the command as Ctrl-C does, so its `finally` blocks run (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back while cleaning up: a second Ctrl-C must not leave a container."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# -- one container -----------------------------------------------------------------------------------------


class _MemorySampler(threading.Thread):
    """The container's memory use from the engine's stats stream, for as long as it runs."""

    def __init__(self, container_id: str) -> None:
        super().__init__(daemon=True, name="memory-stats")
        self.container_id = container_id
        self.peak: int | None = None

    def run(self) -> None:
        import docker

        try:
            api = docker.from_env(version=images.engine().api.api_version).api  # own client: not thread-safe
            try:
                for frame in api.stats(self.container_id, stream=True, decode=True):
                    mem = (frame or {}).get("memory_stats") or {}
                    # cgroup v1 keeps the peak (max_usage); v2 only the current use, sampled once a second
                    seen = max(int(mem.get("max_usage") or 0), int(mem.get("usage") or 0))
                    if seen:
                        self.peak = max(self.peak or 0, seen)
            finally:
                api.close()
        except Exception:  # the stats end with the container, or the engine does not give them
            return


def run(image_id: str, *, scratch: Path, what: str, command: list[str], env: dict[str, str], mounts: list[Mount],
        limits: isolation.Limits, working_dir: str | None = None) -> Ran:
    """Run one container of `image_id` to its end with a job's isolation; it is removed before this returns."""
    import docker

    client = images.engine()
    name = naming.test_container_name(scratch.name, what)
    labels = {TEST_LABEL: scratch.name, SCRATCH_LABEL: str(scratch), OWNER_LABEL: owner(),
              "org.opencontainers.image.vendor": "bepbuild"}
    volumes = {str(m.source): {"bind": m.target, "mode": "rw" if m.writable else "ro"} for m in mounts}
    options = isolation.container_options(limits, env)
    start = time.monotonic()
    container = None
    try:
        try:
            # create + start, not run: run would pull a missing image (the network)
            container = client.containers.create(image_id, command=command, entrypoint=["python3", "-m",
                                                 "bepbuild_runtime.probe"], name=name, labels=labels,
                                                 volumes=volumes, detach=True, working_dir=working_dir,
                                                 **options)
            sampler = _MemorySampler(container.id)
            sampler.start()
            container.start()
            status = container.wait()
        except docker.errors.ImageNotFound as e:
            raise NotFoundError(f"image {image_id} is not on the Docker engine: build or deploy it again") from e
        except docker.errors.APIError as e:
            raise EngineError(f"could not run the test container: {e.explanation or e}") from e
        sampler.join(timeout=5)
        container.reload()
        log = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
        state = container.attrs.get("State") or {}
        return Ran(int(status.get("StatusCode", -1)), bool(state.get("OOMKilled")), log, sampler.peak,
                   time.monotonic() - start, limits.memory)
    finally:
        with deferred_signals():
            _remove(client, container, name)


def _remove(client: Any, container: Any, name: str) -> None:
    """Remove the container, by name too: a signal between create and the assignment leaves no handle."""
    import docker

    for ref in ([container] if container is not None else []) + [name]:
        try:
            (ref if not isinstance(ref, str) else client.containers.get(ref)).remove(force=True)
            return
        except docker.errors.NotFound:
            continue
        except docker.errors.DockerException:
            continue
