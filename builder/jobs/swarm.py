"""The swarm backend: a job's instances as Docker Swarm services, on every node of a cluster.

One service per instance (`naming.service_name`), in replicated mode with one task and restart
condition `none`: Swarm never starts an instance again by itself, so bepbuild's own retries,
timeouts and `error_threshold` count exactly as on the docker backend. (Job-mode services are not
used: removing one in Engine 20.10 leaves its running task's container running.) The services and
their containers carry the job's labels; the job's tasks share its own `--internal` overlay network
(`naming.job_network`), their only network: services cannot use `--network none`, and an internal
network has no gateway, so nothing leaves the cluster.

Isolation as far as Swarm allows: the same user, read-only root filesystem with a private /tmp,
every capability dropped, pids/CPU/memory limits, the job folder read-write and the inputs
read-only. Swarm services cannot set `no-new-privileges`: the runtime sets it on itself before it
starts any worker (`BEPBUILD_NO_NEW_PRIVILEGES`). GPUs are Swarm generic resources (`NVIDIA-GPU`)
that the nodes advertise; the runtime reads the ones Swarm gives a task (docs/cluster.md).

Every path a task mounts is on the compute's shared path, the same on every node.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bepbuild_runtime import layout

from .. import naming
from ..errors import EngineError, JobError
from .backends import INSTANCE_LABEL, JOB_DIR_LABEL, JOB_LABEL, InstancePlan, append_instance_log

GPU_KIND = "NVIDIA-GPU"  # the generic resource GPU nodes advertise (node-generic-resources)
STOP_GRACE_SECONDS = 15  # as the docker backend's stop: SIGTERM, then SIGKILL
TMP_BYTES = 1 << 30  # the private /tmp, as on the docker backend
SHM_BYTES = 256 << 20
POLL_SECONDS = 0.25  # how often the manager is asked about the tasks
PENDING_LIMIT_SECONDS = 300.0  # a task no node can take (resources, constraints) for this long fails the job
GONE_WAIT_SECONDS = 120.0  # how long removing a job's services waits for their containers to be gone
TERMINAL = ("complete", "failed", "shutdown", "rejected", "orphaned", "remove")


def connect(docker_host: str | None) -> Any:
    """The low-level client of the swarm's manager: `docker_host` (tcp://, ssh://, unix://; TLS from
    DOCKER_TLS_VERIFY/DOCKER_CERT_PATH as the docker CLI reads them), or the local engine."""
    import docker

    if not docker_host:
        from .. import images

        return images.engine().api
    try:
        client = docker.from_env(version="auto", environment={**os.environ, "DOCKER_HOST": docker_host})
        client.ping()
    except Exception as e:  # every way of not reaching it
        raise EngineError(f"the swarm manager {docker_host} does not answer ({type(e).__name__}: {e})") from e
    return client.api


def _bytes(size: str) -> int:
    from docker.utils import parse_bytes

    return int(parse_bytes(size))


def labels_of(job: str, job_dir: Path, instance: str | None = None) -> dict[str, str]:
    """The labels of a job's services, containers and network."""
    labels = {JOB_LABEL: job, JOB_DIR_LABEL: str(Path(job_dir).absolute())}
    if instance is not None:
        labels[INSTANCE_LABEL] = instance
    return labels


def task_template(plan: InstancePlan, instance: str, network: str, constraints: list[str]) -> dict[str, Any]:
    """The TaskTemplate of one instance's service."""
    env = {
        **plan.env,
        layout.ENV_JOB_DIR: layout.CONTAINER_JOB_DIR,
        layout.ENV_INPUT_DIR: layout.CONTAINER_INPUT_DIR,
        layout.ENV_INSTANCE: instance,
        layout.ENV_OUTPUT_PATH: layout.CONTAINER_OUTPUT_DIR,
        layout.ENV_NO_NEW_PRIVILEGES: "1",
    }
    limits: dict[str, Any] = {"Pids": plan.pids_limit}
    reservations: dict[str, Any] = {}
    if plan.cpus:
        limits["NanoCPUs"] = int(plan.cpus * 1e9)
        env[layout.ENV_CPUS] = str(max(1, int(plan.cpus)))
    if plan.memory:
        limits["MemoryBytes"] = _bytes(plan.memory)
    if plan.gpus:
        reservations["GenericResources"] = [{"DiscreteResourceSpec": {"Kind": GPU_KIND, "Value": plan.gpus}}]
    mounts = [
        {"Type": "bind", "Source": str(plan.job_dir), "Target": layout.CONTAINER_JOB_DIR, "ReadOnly": False},
        {"Type": "bind", "Source": str(plan.input_root), "Target": layout.CONTAINER_INPUT_DIR, "ReadOnly": True},
        {"Type": "bind", "Source": str(plan.output_dir), "Target": layout.CONTAINER_OUTPUT_DIR, "ReadOnly": False},
        {"Type": "tmpfs", "Target": "/tmp", "TmpfsOptions": {"SizeBytes": TMP_BYTES}},
        {"Type": "tmpfs", "Target": "/dev/shm", "TmpfsOptions": {"SizeBytes": SHM_BYTES}},
    ]
    container = {
        "Image": plan.image,
        "Env": [f"{k}={v}" for k, v in sorted(env.items())],
        "User": plan.user or f"{layout.RUNTIME_UID}:{layout.RUNTIME_GID}",
        "ReadOnly": True,
        "CapabilityDrop": ["ALL"],
        "Mounts": mounts,
        "StopGracePeriod": STOP_GRACE_SECONDS * 10**9,
        "Labels": labels_of(plan.job, plan.job_dir, instance),
    }
    template: dict[str, Any] = {
        "ContainerSpec": container,
        "Resources": {"Limits": limits, **({"Reservations": reservations} if reservations else {})},
        "RestartPolicy": {"Condition": "none"},
        "Networks": [{"Target": network}],
    }
    if constraints:
        template["Placement"] = {"Constraints": list(constraints)}
    return template


class SwarmBackend:
    """One service per instance on the swarm of the job's compute."""

    def __init__(self, api: Any, constraints: list[str] | None = None) -> None:
        self.api = api
        self.constraints = list(constraints or [])
        self.services: dict[str, str] = {}  # instance -> service id
        self.tasks: dict[str, str] = {}  # instance -> its task's id, once seen
        self.plans: dict[str, InstancePlan] = {}
        self.stopping: set[str] = set()  # instances whose service we removed
        self.pending_since: dict[str, float] = {}
        self.network: str | None = None
        self._next_poll = 0.0
        self._exits: dict[str, int] = {}

    @classmethod
    def for_job(cls, job: dict[str, Any]) -> SwarmBackend:
        """The backend of a job on a swarm compute (its manager and placement, as invoke recorded them)."""
        res = job.get("resources") or {}
        return cls(connect(res.get("docker_host")), res.get("constraints") or [])

    # -- the network ---------------------------------------------------------------------------
    def _ensure_network(self, plan: InstancePlan) -> str:
        if self.network is not None:
            return self.network
        name = naming.job_network(plan.job, plan.job_dir)
        labels = labels_of(plan.job, plan.job_dir)
        for net in self.api.networks(names=[name]):
            if net.get("Name") == name:
                if (net.get("Labels") or {}) != labels:
                    raise JobError(f"could not start job {plan.job}: a network named {name} exists and is not this "
                                   "job's; remove or rename it")
                self.network = net["Id"]
                return self.network
        created = self.api.create_network(name, driver="overlay", internal=True, labels=labels, attachable=False,
                                          check_duplicate=True)
        self.network = created["Id"]
        return self.network

    # -- instances -----------------------------------------------------------------------------
    def start(self, plan: InstancePlan, instance: str) -> None:
        import docker

        network = self._ensure_network(plan)
        name = naming.service_name(plan.job, plan.job_dir, instance)
        labels = labels_of(plan.job, plan.job_dir, instance)
        for old in self.api.services(filters={"name": name}):
            if old["Spec"]["Name"] != name:
                continue
            if (old["Spec"].get("Labels") or {}) != labels:
                raise JobError(f"could not start {instance} of job {plan.job}: a service named {name} exists and is "
                               "not this job's; remove or rename it")
            self._remove_and_wait([old["ID"]])  # what an earlier life of this instance left
        try:
            created = self.api.create_service(task_template(plan, instance, network, self.constraints), name=name,
                                              labels=labels, mode={"Replicated": {"Replicas": 1}})
        except docker.errors.APIError as e:
            raise EngineError(f"could not start {instance}: {e.explanation or e}") from e
        self.services[instance] = created["ID"]
        self.plans[instance] = plan
        self.tasks.pop(instance, None)
        self.stopping.discard(instance)
        self.pending_since.pop(instance, None)

    def _poll(self) -> None:
        """Ask the manager about every task once; record the instances that ended."""
        import docker

        for instance, service in list(self.services.items()):
            if instance in self._exits:
                continue
            task = None
            try:
                if instance in self.stopping:
                    tid = self.tasks.get(instance)
                    if (tid and self.api.tasks(filters={"id": tid})) or _containers_of(self.api, [service]):
                        continue  # its container is still stopping: wait until it is gone
                    self._exits[instance] = layout.EXIT_STOPPED
                    continue
                tasks = self.api.tasks(filters={"service": service})
            except docker.errors.NotFound:
                self._exits[instance] = layout.EXIT_STOPPED if instance in self.stopping else -1
                continue
            if tasks:
                task = max(tasks, key=lambda t: t.get("CreatedAt", ""))
            if task is None:
                continue
            self.tasks[instance] = task["ID"]
            status = task.get("Status") or {}
            state = status.get("State")
            if state == "rejected":
                raise JobError(f"Swarm could not run {instance} of job {self.plans[instance].job}: "
                               f"{status.get('Err') or 'rejected'}")
            if state == "pending" and status.get("Err"):
                since = self.pending_since.setdefault(instance, time.monotonic())
                if time.monotonic() - since > PENDING_LIMIT_SECONDS:
                    raise JobError(f"no node of the swarm takes {instance} of job {self.plans[instance].job} "
                                   f"({status['Err']}); see bepbuild doctor --compute")
                continue
            if state in TERMINAL:
                code = (status.get("ContainerStatus") or {}).get("ExitCode")
                self._exits[instance] = int(code) if code is not None and state in ("complete", "failed") else -1

    def exited(self) -> dict[str, int]:
        now = time.monotonic()
        if now >= self._next_poll:
            self._next_poll = now + POLL_SECONDS
            self._poll()
        out = {}
        for instance in list(self._exits):
            out[instance] = self._exits.pop(instance)
            service = self.services.pop(instance)
            if instance not in self.stopping:
                self._save_logs(instance, service)
                self._remove_and_wait([service])
            self.tasks.pop(instance, None)
            self.stopping.discard(instance)
        return out

    def _save_logs(self, instance: str, service: str) -> None:
        """Keep what the task printed (the supervisor's own stderr) with the job's logs."""
        plan = self.plans.get(instance)
        if plan is None:
            return
        try:
            data = b"".join(self.api.service_logs(service, stdout=True, stderr=True))
        except Exception:
            return
        append_instance_log(plan, instance, "swarm", data)

    def running(self) -> list[str]:
        return list(self.services)

    def stop(self, instance: str | None = None) -> None:
        """Remove the services: Swarm stops their tasks (SIGTERM, then SIGKILL after the grace);
        an instance counts as exited once its container is gone."""
        for name, service in list(self.services.items()):
            if (instance is None or name == instance) and name not in self.stopping:
                if name not in self.tasks:
                    self._poll_task(name, service)
                self._save_logs(name, service)
                try:
                    self.api.remove_service(service)
                except Exception:
                    pass
                self.stopping.add(name)

    def _poll_task(self, instance: str, service: str) -> None:
        try:
            tasks = self.api.tasks(filters={"service": service})
        except Exception:
            return
        if tasks:
            self.tasks[instance] = max(tasks, key=lambda t: t.get("CreatedAt", ""))["ID"]

    def kill(self, instance: str) -> None:
        """A silent instance: its container killed at once when it runs on this engine's node, its
        service removed in any case."""
        self._kill_local(instance)
        self.stop(instance)

    def _kill_local(self, instance: str) -> None:
        service = self.services.get(instance)
        if service is None:
            return
        try:
            node = self.api.info()["Swarm"]["NodeID"]
            for task in self.api.tasks(filters={"service": service}):
                cid = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
                if cid and task.get("NodeID") == node:
                    self.api.kill(cid)
        except Exception:
            pass

    def pause(self, seconds: float) -> None:
        time.sleep(seconds)

    def cleanup(self) -> None:
        self._remove_and_wait(list(self.services.values()))
        self.services.clear()
        if self.network is not None:
            self._remove_network(self.network)
            self.network = None

    # -- what is left of a job, whoever started it ---------------------------------------------
    def _job_tasks(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        labels = labels_of(job["name"], Path(job["job_dir"]))
        return [t for t in self.api.tasks(filters={"label": f"{JOB_LABEL}={job['name']}"})
                if all(((t.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels", {}).get(k) == v
                       for k, v in labels.items())]

    def alive(self, job: dict[str, Any]) -> bool:
        return any((t.get("Status") or {}).get("State") not in TERMINAL for t in self._job_tasks(job))

    def remove_job(self, job: dict[str, Any]) -> int:
        labels = labels_of(job["name"], Path(job["job_dir"]))
        services = [s["ID"] for s in self.api.services(filters={"label": f"{JOB_LABEL}={job['name']}"})
                    if all((s["Spec"].get("Labels") or {}).get(k) == v for k, v in labels.items())]
        self._remove_and_wait(services, job)
        name = naming.job_network(job["name"], Path(job["job_dir"]))
        for net in self.api.networks(names=[name]):
            if net.get("Name") == name and (net.get("Labels") or {}) == labels:
                self._remove_network(net["Id"])
        return len(services)

    def _remove_and_wait(self, services: list[str], job: dict[str, Any] | None = None) -> None:
        remove_services(self.api, services, [t["ID"] for t in self._job_tasks(job)] if job is not None else [])

    def _remove_network(self, network: str) -> None:
        remove_network(self.api, network)


def remove_services(api: Any, services: list[str], tasks: list[str] | None = None) -> None:
    """Remove services and wait until their tasks (and `tasks`) and their containers are gone: two
    lives of one instance would share its worker folders, and a network is not free before."""
    import docker

    tasks = list(tasks or [])
    for service in services:
        try:
            tasks += [t["ID"] for t in api.tasks(filters={"service": service})]
            api.remove_service(service)
        except docker.errors.NotFound:
            continue
    deadline = time.monotonic() + GONE_WAIT_SECONDS
    while time.monotonic() < deadline:
        # A task is done with once it is gone or has ended (Engine 20.10 keeps listing the ended task
        # of a removed job-mode service: the doctor's check runs one).
        tasks = [tid for tid in tasks if any((t.get("Status") or {}).get("State") not in TERMINAL
                                             for t in api.tasks(filters={"id": tid}))]
        left = _containers_of(api, services) if services else []
        for container in left:
            # An ended container of this service: Swarm removes those of replicated services, Engine
            # 20.10 leaves those of job-mode ones; nothing runs in it any more.
            if container.get("State") in ENDED_STATES:
                try:
                    api.remove_container(container["Id"], force=True)
                except docker.errors.APIError:  # NotFound included: Swarm removed it meanwhile
                    pass
        if not tasks and not left:
            return
        time.sleep(0.2)


ENDED_STATES = ("exited", "dead", "created")


def _containers_of(api: Any, services: list[str]) -> list[dict[str, Any]]:
    """Containers of `services` on the manager's own node. A task is gone from the manager before its
    node removed the container; other nodes' engines remove theirs the same way."""
    return [c for c in api.containers(all=True, filters={"label": "com.docker.swarm.service.id"})
            if (c.get("Labels") or {}).get("com.docker.swarm.service.id") in services]


def remove_network(api: Any, network: str) -> None:
    """Remove a network once nothing uses it (30 s at most after the services using it are gone)."""
    import docker

    deadline = time.monotonic() + 30
    while True:
        try:
            api.remove_network(network)
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:  # still in use by a task being removed
            if time.monotonic() > deadline:
                return
            time.sleep(0.5)
