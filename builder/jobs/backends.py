"""Instance backends: where the runtime's supervisor processes run.

- docker: one container per instance from the deployment's image, isolated by default
  (`isolation.container_options`: `--network none`, non-root, read-only root filesystem, all
  capabilities dropped, limits from the compute profile; inputs and model read-only);
- process: the same runtime as local processes in the current Python environment (debugging,
  fast tests, machines without an engine). Same job folder, same outputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bepbuild_runtime import layout
from bepbuild_runtime._fs import open_dir_beneath, remove_tree_at

from .. import naming
from ..errors import EngineError, JobError
from . import isolation
from .hostlock import open_in_job

JOB_LABEL = "io.bepbuild.job"
JOB_DIR_LABEL = "io.bepbuild.job-dir"
INSTANCE_LABEL = "io.bepbuild.instance"


@dataclass
class InstancePlan:
    """What every instance of a job gets."""

    job: str
    job_dir: Path
    input_root: Path
    output_dir: Path
    image: str  # docker: the image id the job was invoked with (jobs/pinning)
    code_dir: Path  # process backend: the job's snapshot of the deployed code
    model_dir: Path  # process backend: the folder holding the snapshot's <model-folder-name>/
    scoring_script: str
    cpus: float | None = None
    memory: str | None = None
    gpus: int = 0
    pids_limit: int = isolation.PIDS_LIMIT
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None  # uid:gid for containers
    image_name: str | None = None  # docker: the tag `image` had at invoke (for messages)


class Backend(Protocol):
    """Where a job's instances run: each kind owns how it starts, watches and stops them."""

    def start(self, plan: InstancePlan, instance: str) -> None: ...

    def exited(self) -> dict[str, int]:
        """Instances that have stopped since the last call, with their exit codes."""
        ...

    def running(self) -> list[str]: ...

    def stop(self, instance: str | None = None) -> None: ...

    def kill(self, instance: str) -> None:
        """SIGKILL `instance` now (it went silent: a stopped or hung process ignores anything softer)."""
        ...

    def cleanup(self) -> None: ...

    def pause(self, seconds: float) -> None:
        """Sleep up to `seconds`, waking early when an instance exits."""
        ...

    def alive(self, job: dict[str, Any]) -> bool:
        """Whether any instance of `job` runs, whoever started it (this object need not have)."""
        ...

    def remove_job(self, job: dict[str, Any]) -> int:
        """Stop and remove every instance of `job` that is left, whoever started it; how many."""
        ...


def instance_name(i: int) -> str:
    return f"instance-{i}"


class ProcessBackend:
    """`python -m bepbuild_runtime` subprocesses, one per instance."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._changed = threading.Event()  # set by a waiter thread when an instance exits
        self._job_dir: Path | None = None

    def start(self, plan: InstancePlan, instance: str) -> None:
        env = {**os.environ, **plan.env}
        # Its workers' temp folders: in the job folder, removed when it ends (a supervisor killed -9
        # cannot remove them itself), not in the host's temp dir.
        self._job_dir = plan.job_dir
        if self._make_work(instance):
            env[layout.ENV_WORK_ROOT] = str(plan.job_dir / layout.WORK_DIR / instance)
        env[layout.ENV_MODEL_DIR] = str(plan.model_dir)
        env[layout.ENV_OUTPUT_PATH] = str(plan.output_dir)
        if plan.cpus:
            env[layout.ENV_CPUS] = str(max(1, int(plan.cpus)))
        # The scoring code imports its sibling modules; the runtime itself must come from here.
        runtime_parent = str(Path(__import__("bepbuild_runtime").__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (runtime_parent, str(plan.code_dir), env.get("PYTHONPATH")) if p)
        log = open(plan.job_dir / layout.instance_log(instance, "process"), "ab")  # noqa: SIM115
        cmd = [sys.executable, "-m", "bepbuild_runtime", "--job-dir", str(plan.job_dir), "--input-dir",
               str(plan.input_root), "--instance", instance, "--code-dir", str(plan.code_dir),
               "--scoring-script", plan.scoring_script]
        self.procs[instance] = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                                start_new_session=True)
        log.close()
        # Instances outlive a killed host (own session): resume finds and stops them by this file.
        (plan.job_dir / _pid_file(instance)).write_text(f"{self.procs[instance].pid}\n")
        proc = self.procs[instance]
        threading.Thread(target=lambda: (proc.wait(), self._changed.set()), daemon=True,
                         name=f"wait-{instance}").start()

    def pause(self, seconds: float) -> None:
        self._changed.wait(seconds)
        self._changed.clear()

    def exited(self) -> dict[str, int]:
        out = {}
        for name, proc in list(self.procs.items()):
            code = proc.poll()
            if code is not None:
                out[name] = code
                del self.procs[name]
                self._remove_work(name)
        return out

    def running(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is None]

    def stop(self, instance: str | None = None) -> None:
        import signal

        for name, proc in list(self.procs.items()):
            if instance is None or name == instance:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def kill(self, instance: str) -> None:
        import signal

        proc = self.procs.get(instance)
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def cleanup(self) -> None:
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._remove_work(None)

    def _make_work(self, instance: str) -> bool:
        """Make work/<instance> in the job folder (work/ is the host's: anything else found in its place,
        a file or a link the scoring code left, is removed); False when it cannot be made."""
        for clear in (instance, None, False):  # a file at work/<instance>, then at work/
            try:
                os.close(open_dir_beneath(str(self._job_dir), f"{layout.WORK_DIR}/{instance}"))
                return True
            except NotADirectoryError:
                if clear is not False:
                    self._remove_work(clear)
            except OSError:
                break
        return False

    def _remove_work(self, instance: str | None) -> None:
        """Remove work/<instance> (None: all of work/) from the job folder, following no link and
        making nothing."""
        if self._job_dir is None:
            return
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self._job_dir, flags)
            if instance:
                try:
                    work = os.open(layout.WORK_DIR, flags, dir_fd=fd)
                finally:
                    os.close(fd)
                fd = work
        except OSError:
            return  # missing, or not a folder: nothing of ours to remove below it
        try:
            remove_tree_at(fd, instance or layout.WORK_DIR)
        finally:
            os.close(fd)

    def alive(self, job: dict[str, Any]) -> bool:
        return bool(_job_process_groups(Path(job["job_dir"])))

    def remove_job(self, job: dict[str, Any]) -> int:
        """Stop the job's instances left by an earlier host, then remove work/ (their temp folders: a
        host killed before its instances ended, or one that resumed or canceled the job without
        starting any, leaves them)."""
        killed = stop_job_processes(Path(job["job_dir"]))
        self._job_dir = Path(job["job_dir"])
        self._remove_work(None)
        return killed


class DockerBackend:
    """One container per instance, from the deployment's image."""

    def __init__(self) -> None:
        from .. import images

        self.client = images.engine()
        self.containers: dict[str, Any] = {}
        self.plans: dict[str, InstancePlan] = {}
        # Exit codes reported by one waiter thread per container (blocked in the engine's wait, so
        # the host loop never polls the engine); None: the wait failed, ask the engine instead.
        self._exits: dict[str, int | None] = {}
        self._changed = threading.Event()

    def start(self, plan: InstancePlan, instance: str) -> None:
        import docker

        name = naming.container_name(plan.job, plan.job_dir, instance)
        labels = job_labels(plan)
        try:
            old = self.client.containers.get(name)
        except docker.errors.NotFound:
            old = None
        if old is not None:
            # A leftover of an earlier life of this job is replaced; anything else is not ours to remove.
            if not _is_job_s(old, labels):
                raise JobError(f"could not start {instance} of job {plan.job}: a container named {name} exists and "
                               "is not this job's; remove or rename it")
            old.remove(force=True)
        env = {
            **plan.env,
            layout.ENV_JOB_DIR: layout.CONTAINER_JOB_DIR,
            layout.ENV_INPUT_DIR: layout.CONTAINER_INPUT_DIR,
            layout.ENV_INSTANCE: instance,
            layout.ENV_OUTPUT_PATH: layout.CONTAINER_OUTPUT_DIR,
        }
        self.plans[instance] = plan
        options = isolation.container_options(
            isolation.Limits(cpus=plan.cpus, memory=plan.memory, gpus=plan.gpus, pids=plan.pids_limit), env,
            user=plan.user or f"{layout.RUNTIME_UID}:{layout.RUNTIME_GID}")
        volumes = {
            str(plan.job_dir): {"bind": layout.CONTAINER_JOB_DIR, "mode": "rw"},
            str(plan.input_root): {"bind": layout.CONTAINER_INPUT_DIR, "mode": "ro"},
            str(plan.output_dir): {"bind": layout.CONTAINER_OUTPUT_DIR, "mode": "rw"},
        }
        try:
            # create + start, not run: run pulls a missing image from a registry (the network).
            container = self.client.containers.create(
                plan.image, detach=True, name=name, volumes=volumes, labels={**labels, INSTANCE_LABEL: instance},
                **options,
            )
            self.containers[instance] = container
            container.start()
        except docker.errors.ImageNotFound as e:
            from .pinning import image_gone

            raise JobError(image_gone(plan.job, plan.image_name or plan.image, plan.image)) from e
        except docker.errors.APIError as e:
            raise EngineError(f"could not start {instance}: {e.explanation or e}") from e
        self._exits.pop(instance, None)
        threading.Thread(target=self._wait, args=(instance, self.containers[instance].id), daemon=True,
                         name=f"wait-{instance}").start()

    def _wait(self, instance: str, container_id: str) -> None:
        """Block in the engine's wait for the container (own client: the SDK's is not thread-safe)."""
        import docker

        code: int | None = None
        try:
            api = docker.from_env(version=self.client.api.api_version).api
            try:
                code = int(api.wait(container_id, timeout=None).get("StatusCode", -1))
            finally:
                api.close()
        except Exception:
            code = None
        self._exits[instance] = code
        self._changed.set()

    def pause(self, seconds: float) -> None:
        self._changed.wait(seconds)
        self._changed.clear()

    def exited(self) -> dict[str, int]:
        out = {}
        for name, c in list(self.containers.items()):
            if name not in self._exits:
                continue  # its waiter is still blocked: running
            code = self._exits[name]
            if code is None:  # the wait failed: ask the engine
                import docker

                try:
                    c.reload()
                except docker.errors.NotFound:  # removed behind our back: it is gone
                    out[name] = -1
                    del self.containers[name]
                    continue
                except Exception as e:
                    # The engine does not answer: what became of the instance is unknown, and an engine
                    # going away is not the mini-batches' fault. Stop the job (resumable), charge no try.
                    raise EngineError(f"the engine stopped answering about {name}: {type(e).__name__}") from e
                if c.status not in ("exited", "dead"):
                    continue
                code = int(c.attrs["State"].get("ExitCode", -1))
            del self._exits[name]
            out[name] = code
            self._save_logs(c, name)
            try:
                c.remove(force=True)
            except Exception:
                pass
            del self.containers[name]
        return out

    def _save_logs(self, c: Any, instance: str) -> None:
        """Keep what the container printed (the supervisor's own stderr) with the job's logs."""
        plan = self.plans.get(instance)
        if plan is None:
            return
        try:
            data = c.logs(stdout=True, stderr=True)
        except Exception:
            return
        append_instance_log(plan, instance, "docker", data)

    def running(self) -> list[str]:
        return list(self.containers)

    def stop(self, instance: str | None = None) -> None:
        for name, c in list(self.containers.items()):
            if instance is None or name == instance:
                try:
                    c.stop(timeout=15)
                except Exception:
                    pass

    def kill(self, instance: str) -> None:
        c = self.containers.get(instance)
        if c is not None:
            try:
                c.kill()
            except Exception:  # already gone or exiting: its waiter reports the exit
                pass

    def cleanup(self) -> None:
        for c in self.containers.values():
            try:
                c.remove(force=True)
            except Exception:
                pass
        self.containers.clear()

    def alive(self, job: dict[str, Any]) -> bool:
        return any(c.status in ("created", "running", "restarting", "paused")
                   for c in _job_containers(self.client, job["name"], Path(job["job_dir"])))

    def remove_job(self, job: dict[str, Any]) -> int:
        found = _job_containers(self.client, job["name"], Path(job["job_dir"]))
        for c in found:
            c.remove(force=True)
        return len(found)


def append_instance_log(plan: InstancePlan, instance: str, backend: str, data: bytes) -> None:
    """Append what an instance printed to its log in the job folder, never through a link: the
    instance may write into the job folder (logs/ itself, for a non-root host)."""
    try:
        fd = open_in_job(plan.job_dir, layout.instance_log(instance, backend), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    except OSError:
        return
    with open(fd, "ab") as f:
        f.write(data)


def _pid_file(instance: str) -> str:
    return layout.instance_pid_file(instance)


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _job_process_groups(job_dir: Path) -> dict[Path, int]:
    """{pid file: pid} of process-backend instances of the job that still run: each instance is a
    session (and process group) of its own, so they outlive the host that started them. Only
    groups whose leader is still the runtime of this job count (a pid may have been reused)."""
    found = {}
    for pid_file in sorted((job_dir / layout.CONTROL_DIR).glob("*" + layout.INSTANCE_PID_SUFFIX)):
        try:
            pid = int(pid_file.read_text())
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError, IndexError):
            continue
        if b"bepbuild_runtime" in cmd and str(job_dir).encode() in cmd and state != "Z":
            found[pid_file] = pid
    return found


def stop_job_processes(job_dir: Path, wait: float = 10.0) -> int:
    """Kill process-backend instances of a job that are left (before resuming, canceling or deleting
    it): two lives of one instance would share its workers' folders."""
    import signal
    import time

    killed = []
    live = _job_process_groups(job_dir)
    for pid_file in sorted((job_dir / layout.CONTROL_DIR).glob("*" + layout.INSTANCE_PID_SUFFIX)):
        pid = live.get(pid_file)
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        pid_file.unlink(missing_ok=True)
    deadline = time.monotonic() + wait
    while any(_group_members(pid) for pid in killed) and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(killed)


def job_labels(plan: InstancePlan) -> dict[str, str]:
    """The labels that make a container one of this job's: its name, and its folder (names repeat
    across bepbuild homes on one engine, folders do not)."""
    return {JOB_LABEL: plan.job, JOB_DIR_LABEL: str(Path(plan.job_dir).absolute())}


def _is_job_s(container: Any, labels: dict[str, str]) -> bool:
    """Whether `container` is one of the job's (`labels` from job_labels).

    Containers made before the folder label existed carry the job's name only: they are the job's
    when they mount its folder as the job folder.
    """
    have = container.labels or {}
    if JOB_DIR_LABEL in have:
        return have.get(JOB_DIR_LABEL) == labels[JOB_DIR_LABEL] and have.get(JOB_LABEL) == labels[JOB_LABEL]
    if have.get(JOB_LABEL) != labels[JOB_LABEL]:
        return False
    mounts = (getattr(container, "attrs", None) or {}).get("Mounts") or []
    return any(m.get("Destination") == layout.CONTAINER_JOB_DIR and m.get("Source") == labels[JOB_DIR_LABEL]
               for m in mounts)


def _job_containers(client: Any, job: str, job_dir: Path) -> list[Any]:
    """The containers of a job on the engine, whoever made them; only the job's own."""
    labels = {JOB_LABEL: job, JOB_DIR_LABEL: str(Path(job_dir).absolute())}
    return [c for c in client.containers.list(all=True, filters={"label": f"{JOB_LABEL}={job}"})
            if _is_job_s(c, labels)]


KINDS = ("docker", "process", "swarm")


def make(kind: str, job: dict[str, Any] | None = None) -> Backend:
    """The backend of kind `kind` (for `job`: a swarm job names its manager): the one place that
    chooses."""
    if kind == "docker":
        return DockerBackend()
    if kind == "process":
        return ProcessBackend()
    if kind == "swarm":
        from .swarm import SwarmBackend

        return SwarmBackend.for_job(job or {})
    from ..errors import UserError

    raise UserError(f"--backend must be docker or process, got {kind!r}")
