"""What a job needs to run on a swarm compute: its folder, inputs and outputs on the shared path, and
its image where every node runs the same bytes.

The shared path is mounted at the same path on every node and on the invoking machine (NFS, CephFS,
Azure Files; a local folder on a one-node swarm). Job folders live in `<shared>/bepbuild-jobs/`
(`naming.shared_jobs_dir`); an input outside the shared path is copied into the job folder's
`inputs/`; outputs must be written under the shared path. Images are built here as always, pushed
once to the compute's registry (the content tag says whether it is there) and run by digest; a
one-node swarm whose node is this engine runs the local image by its id.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from bepbuild_runtime import layout

from .. import naming
from ..errors import BuildError, EngineError, UserError
from .inputs import InputSpec, items

SWARM = "swarm"


def is_swarm(resources: dict[str, Any] | None) -> bool:
    """Whether a job's resources (service._resources) name a swarm compute."""
    return bool(resources) and resources.get("kind") == SWARM


def resources(compute: dict[str, Any]) -> dict[str, Any]:
    """The part of a swarm compute a job records (it runs with these even if the compute changes)."""
    return {"kind": SWARM, "shared_path": compute["shared_path"], "registry": compute.get("registry"),
            "docker_host": compute.get("docker_host"), "constraints": list(compute.get("constraints") or [])}


def jobs_dir(res: dict[str, Any]) -> Path:
    """Where the job folders of a swarm compute live; one line when the shared path is not here."""
    shared = Path(res["shared_path"])
    if not shared.is_dir():
        raise UserError(f"compute {res.get('compute')}: its shared path {shared} is not a folder on this machine: "
                        "mount it here at the same path as on the nodes")
    folder = naming.shared_jobs_dir(shared)
    folder.mkdir(exist_ok=True)
    return folder


def under(path: Path, root: Path) -> bool:
    """Whether `path` (resolved) lies inside `root` (resolved)."""
    path, root = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    return path == root or root in path.parents


def check_output(out_dir: Path, res: dict[str, Any], given: str | None) -> None:
    """An --output-path must be under the shared path (the nodes write it), and not in its jobs folder."""
    if not given:
        return
    if not under(out_dir, Path(res["shared_path"])):
        raise UserError(f"--output-path {given} is not under compute {res.get('compute')}'s shared path "
                        f"{res['shared_path']}: the cluster's nodes write the outputs")
    if under(out_dir, naming.shared_jobs_dir(res["shared_path"])):
        raise UserError(f"--output-path {given} is inside the jobs folder {naming.shared_jobs_dir(res['shared_path'])}"
                        ", bepbuild's own files: give a folder outside it")


def stage_input(spec: InputSpec, job_dir: Path, res: dict[str, Any]) -> InputSpec:
    """The input as the nodes see it: in place when it is under the shared path, else its files copied
    into the job folder's inputs/ (the names the queue will list, contents only, never links)."""
    if spec.url is not None or under(spec.root, Path(res["shared_path"])):
        return spec
    target = job_dir / layout.INPUTS_DIR
    target.mkdir(exist_ok=True)
    for name in items(spec):
        tmp = target / f".{name}.copying"
        shutil.copyfile(spec.root / name, tmp)
        os.replace(tmp, target / name)
    return InputSpec(spec.given, spec.type, target, single=spec.single, skipped=spec.skipped, special=spec.special)


def image_ref(tag: str, image_id: str, res: dict[str, Any]) -> str:
    """What the nodes run: `<registry>@sha256:...` (pushed now unless the registry has the content tag
    already), or without a registry the local image id (a one-node swarm on this engine only)."""
    from .. import image_push, images
    from .swarm import connect

    api = connect(res.get("docker_host"))
    registry = res.get("registry")
    if not registry:
        with images.engine_calls("swarm nodes"):
            nodes = api.nodes()
            here = images.engine().api.info().get("Swarm", {}).get("NodeID")
        if len(nodes) != 1 or nodes[0]["ID"] != here:
            raise UserError(f"compute {res.get('compute')} has {len(nodes)} node(s) and its images must reach "
                            "them: give it a registry (bepbuild compute create ... --registry HOST:PORT/REPO)")
        return image_id
    content_tag = images.tag_part(tag)
    target = f"{registry}:{content_tag}"
    digest = remote_digest(target)
    if digest is None:
        import requests
        import urllib3

        try:
            digest = image_push.push(tag, registry, repo_tag=content_tag)["digest"]
        except BuildError as e:
            raise EngineError(f"cannot push {tag} to {registry}: {e.message}") from e
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as e:
            raise EngineError(f"cannot push {tag} to {registry}: the engine stopped answering "
                              f"({type(e).__name__})") from e
    return f"{registry}@{digest}"


def remote_digest(ref: str) -> str | None:
    """The digest of `ref` in its registry, or None when the registry does not have it."""
    import docker.errors

    from .. import images

    try:
        with images.engine_calls(f"inspect {ref} in its registry"):
            return images.engine().api.inspect_distribution(ref)["Descriptor"]["digest"]
    except docker.errors.APIError:
        return None
