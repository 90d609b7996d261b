"""How every scoring container is isolated: one definition for job instances and `bepbuild test`.

No network (`--network none`), a non-root user, a read-only root filesystem with a private `/tmp`,
every capability dropped, `no-new-privileges`, a pids limit, and the compute's CPU, memory and GPU
limits. Mounts are the caller's (the job folder, inputs read-only, the output folder); everything
else a scoring container may do is decided here, so a test of a deployment runs under exactly the
rules of its jobs. What each default is and how it is checked: docs/reliability.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from bepbuild_runtime import layout

PIDS_LIMIT = 4096
TMPFS = {"/tmp": "rw,exec,size=1g"}  # the only writable place besides the caller's mounts
SHM_SIZE = "256m"


@dataclass(frozen=True)
class Limits:
    """The compute's limits of one container (None: none)."""

    cpus: float | None = None
    memory: str | None = None
    gpus: int = 0
    pids: int = PIDS_LIMIT


def container_user() -> str:
    """`uid:gid` scoring containers run as: the host user, or a fixed non-root user when the host is root."""
    if os.getuid() != 0:
        return f"{os.getuid()}:{os.getgid()}"
    return f"{layout.RUNTIME_UID}:{layout.RUNTIME_GID}"


def container_options(limits: Limits, env: dict[str, str], user: str | None = None) -> dict[str, Any]:
    """The keyword arguments of `containers.create` that isolate a scoring container.

    `env` is the container's environment; the runtime's CPU and GPU variables are added to a copy
    of it. `user` defaults to `container_user()`.
    """
    import docker

    env = dict(env)
    options: dict[str, Any] = {
        "network_mode": "none",
        "user": user or container_user(),
        "read_only": True,
        "tmpfs": dict(TMPFS),
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "pids_limit": limits.pids,
        "shm_size": SHM_SIZE,
    }
    if limits.cpus:
        options["nano_cpus"] = int(limits.cpus * 1e9)
        env[layout.ENV_CPUS] = str(max(1, int(limits.cpus)))
    if limits.memory:
        options["mem_limit"] = limits.memory
    if limits.gpus:
        options["device_requests"] = [docker.types.DeviceRequest(count=limits.gpus, capabilities=[["gpu"]])]
        env[layout.ENV_GPUS] = ",".join(str(i) for i in range(limits.gpus))
    options["environment"] = env
    return options
