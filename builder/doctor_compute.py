"""`bepbuild doctor --compute NAME`: is a swarm compute ready to run jobs? One line per check.

The manager answers and is in an active swarm; every node is ready (with its CPUs, memory and GPUs);
the registry answers; and a task on every node writes into the shared path as the runtime's user
(the mount is there, at the same path, and writable: NFS root squashing or a missing mount show here).
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from bepbuild_runtime import layout

from . import config, naming
from .doctor import FAIL, OK, WARN, Check
from .errors import BepbuildError
from .store import Store

PROBE_SECONDS = 120.0  # a node that has not written its file by then fails the shared-path check
DOCTOR_LABEL = "io.bepbuild.doctor"


def run_checks(store: Store, name: str) -> list[Check]:
    """Every check of compute `name`, in order; later checks are reported, not run, once the manager fails."""
    compute = store.get_compute(name)
    if compute.get("type") != "swarm":
        return [Check("compute", OK, f"{name} is an amlcompute profile: it runs on this machine's engine "
                                     "(bepbuild doctor checks it)")]
    from .jobs.swarm import connect

    results: list[Check] = []
    try:
        api = connect(compute.get("docker_host"))
        info = api.info()
    except BepbuildError as e:
        return [Check("manager", FAIL, e.message, "start the engine, or fix --docker-host of the compute")]
    except Exception as e:  # every way of not reaching it
        return [Check("manager", FAIL, f"no answer ({type(e).__name__})", "fix --docker-host of the compute")]
    swarm = info.get("Swarm") or {}
    where = compute.get("docker_host") or "this machine's engine"
    if swarm.get("LocalNodeState") != "active":
        return [Check("swarm", FAIL, f"{where} is not in a swarm ({swarm.get('LocalNodeState')})",
                      "docker swarm init (then join the other nodes)")]
    if not swarm.get("ControlAvailable"):
        return [Check("swarm", FAIL, f"{where} is a swarm worker, not a manager",
                      "point --docker-host of the compute at a manager")]
    results.append(Check("swarm", OK, f"{where}: manager of a swarm of {swarm.get('Nodes', '?')} node(s)"))
    nodes = api.nodes()
    for node in nodes:
        results.append(_node_check(node))
    results.append(_registry_check(compute))
    results.append(_shared_path_check(api, compute, nodes))
    return results


def _node_check(node: dict[str, Any]) -> Check:
    desc = node.get("Description") or {}
    res = desc.get("Resources") or {}
    gpus = sum(int((g.get("DiscreteResourceSpec") or {}).get("Value") or 0) + (1 if g.get("NamedResourceSpec") else 0)
               for g in res.get("GenericResources") or [] if "GPU" in str(g).upper())
    status = (node.get("Status") or {}).get("State")
    availability = (node.get("Spec") or {}).get("Availability")
    detail = (f"{res.get('NanoCPUs', 0) / 1e9:g} CPUs, {res.get('MemoryBytes', 0) / 2**30:.1f} GiB, {gpus} GPUs; "
              f"{status}, {availability}, {(node.get('Spec') or {}).get('Role')}")
    name = f"node {desc.get('Hostname') or node.get('ID', '?')[:12]}"
    if status != "ready":
        return Check(name, FAIL, detail, "bring the node back (its engine), or remove it from the swarm")
    if availability != "active":
        return Check(name, WARN, detail, "docker node update --availability active, to run tasks there")
    return Check(name, OK, detail)


def _registry_check(compute: dict[str, Any]) -> Check:
    registry = compute.get("registry")
    if not registry:
        return Check("registry", OK, "none: a one-node swarm runs the local image (more nodes need --registry)")
    host = registry.split("/", 1)[0]
    for scheme in ("https", "http"):
        try:
            with urllib.request.urlopen(f"{scheme}://{host}/v2/", timeout=10) as r:  # noqa: S310 - the user's registry
                code = r.status
        except urllib.error.HTTPError as e:
            code = e.code  # 401: it answers, and wants a login (docker login)
        except (urllib.error.URLError, OSError):
            continue
        if code in (200, 401):
            return Check("registry", OK, f"{scheme}://{host}/v2/ answers ({code})")
    return Check("registry", FAIL, f"{host} does not answer the registry API",
                 "start the registry, or fix --registry of the compute")


def _shared_path_check(api: Any, compute: dict[str, Any], nodes: list[dict[str, Any]]) -> Check:
    """A global job writes one file per node into the shared path, as the runtime user."""
    from .jobs import cluster, isolation

    shared = Path(compute["shared_path"])
    if not shared.is_dir():
        return Check("shared path", FAIL, f"{shared} is not a folder on this machine",
                     "mount it here at the same path as on the nodes")
    token = uuid.uuid4().hex[:12]
    probe = naming.shared_jobs_dir(shared) / f".doctor-{token}"
    user = isolation.container_user()
    try:
        probe.mkdir(parents=True)
        if os.getuid() == 0:  # the runtime's user must write there, as it writes job folders
            uid, gid = (int(x) for x in user.split(":"))
            os.chown(probe, uid, gid)
    except OSError as e:
        return Check("shared path", FAIL, f"cannot write {shared} here: {e.strerror}", "make it writable")
    service = network = None
    try:
        image = cluster.image_ref(config.base_image(), _image_id(config.base_image()), {**compute, "compute":
                                                                                        compute["name"]})
        network = api.create_network(f"bepbuild-doctor-{token}", driver="overlay", internal=True,
                                     labels={DOCTOR_LABEL: token})["Id"]
        template = {
            "ContainerSpec": {"Image": image, "User": user, "ReadOnly": True, "CapabilityDrop": ["ALL"],
                              "Command": ["sh", "-c", 'touch "/mnt/probe/$NODE"'],
                              "Env": ["NODE={{.Node.ID}}"], "Labels": {DOCTOR_LABEL: token},
                              "Mounts": [{"Type": "bind", "Source": str(probe), "Target": "/mnt/probe"}]},
            "RestartPolicy": {"Condition": "none"},
            "Networks": [{"Target": network}],
        }
        service = api.create_service(template, name=f"bepbuild-doctor-{token}", labels={DOCTOR_LABEL: token},
                                     mode={"GlobalJob": {}})["ID"]
        wanted = {n["ID"]: (n.get("Description") or {}).get("Hostname") or n["ID"][:12] for n in nodes
                  if (n.get("Status") or {}).get("State") == "ready" and (n.get("Spec") or {}).get("Availability")
                  == "active"}
        deadline = time.monotonic() + PROBE_SECONDS
        while time.monotonic() < deadline and not all((probe / node).exists() for node in wanted):
            errors = [t["Status"].get("Err") for t in api.tasks(filters={"service": service})
                      if t["Status"].get("State") in ("rejected", "failed")]
            if errors:
                return Check("shared path", FAIL, f"a task could not write {shared}: {errors[0]}",
                             f"mount {shared} at the same path on every node, writable by uid {user}")
            time.sleep(0.5)
        missing = [host for node, host in wanted.items() if not (probe / node).exists()]
    except BepbuildError as e:
        return Check("shared path", FAIL, f"cannot run a task: {e.message}", "fix the checks above first")
    finally:
        _remove(api, service, network)
        for p in probe.glob("*"):
            p.unlink(missing_ok=True)
        probe.rmdir()
    if missing:
        return Check("shared path", FAIL, f"no file from {', '.join(missing)} in {PROBE_SECONDS:g} s",
                     f"mount {shared} at the same path on those nodes, writable by uid {user}")
    return Check("shared path", OK, f"{shared} written by a task on each of {len(wanted)} node(s) as {user} "
                                    f"(the runtime's user; mounts at {layout.CONTAINER_JOB_DIR} the same way)")


def _image_id(tag: str) -> str:
    from . import images
    from .errors import NotFoundError

    found = images.image_id(tag)
    if found is None:
        raise NotFoundError(f"the base image {tag} is not on this engine (bepbuild doctor)")
    return found


def _remove(api: Any, service: str | None, network: str | None) -> None:
    """Remove the check's service, wait for its task's container to be gone, then its network (a
    network still attached to a container being removed cannot go)."""
    import docker

    from .jobs import swarm

    try:
        if service is not None:
            swarm.remove_services(api, [service])
        if network is not None:
            swarm.remove_network(api, network)
    except docker.errors.DockerException:
        pass  # the engine went away: leaving the swarm removes both
