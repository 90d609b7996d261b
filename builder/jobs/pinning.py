"""What a job runs is fixed when it is invoked, never looked up again.

- docker: the id of the deployment's image at invoke (`job["image_id"]`); instances are created
  from that id, so a redeploy that moves the tag changes nothing for the job;
- swarm: the same id, and what the nodes run (`job["image_ref"]`): the image pushed to the
  compute's registry, by digest, or that id on a one-node swarm (jobs/cluster.py);
- process: a snapshot in the job folder (`snapshot/code`, `snapshot/model`), copied at invoke from
  the deployment's rendered code (checked against the hash recorded at deploy) and from the
  registered model. Copies, not links: a scoring script that writes into its code or
  `$AZUREML_MODEL_DIR` changes the job's copy, never the registry's files.

A resume runs the same image or snapshot, or refuses in one line when it is gone. Images that a job
may still run are kept by `deploy.prune_previous_image` (`held_images`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from bepbuild_runtime import layout

from ..errors import JobError, NotFoundError, UserError
from ..hashing import tree_sha256
from ..store import Store


def may_run_again(job: dict[str, Any]) -> bool:
    """Whether a job can still start instances: `job resume` takes every job that is not Completed."""
    return job.get("status") != "Completed"


def pin_image(dep: dict[str, Any], endpoint: str, deployment: str) -> str:
    """The id of the deployment's image now (docker backend), or a one-line error when it is gone."""
    from .. import images

    image_id = images.image_id(dep["image"])
    if image_id is None:
        raise NotFoundError(f"image {dep['image']} of deployment {deployment} of endpoint {endpoint} is not on the "
                            f"Docker engine: deploy it again (bepbuild deploy)")
    return image_id


def check_deployed(store: Store, dep: dict[str, Any]) -> tuple[Path, Path]:
    """Where a deployment's code and registered model are, checked for a snapshot (process backend):
    the code must still be what was deployed. Returns (code folder, model file or folder)."""
    where = f"deployment {dep.get('name')} of endpoint {dep.get('endpoint_name')}"
    if not dep.get("context") or not dep.get("code_sha256"):
        raise UserError(f"{where} was deployed by an earlier bepbuild: deploy it again to run it with "
                        "--backend process")
    from ..registry import resolve

    try:
        model = resolve(store, "model", dep["model"])
    except NotFoundError as e:
        raise NotFoundError(f"{where}: its model {dep['model']} is gone: {e.message}") from None
    code_src, model_src = Path(dep["context"]) / "code", Path(model["path"])
    if not code_src.is_dir() or not model_src.exists():
        raise NotFoundError(f"{where}: its code ({code_src}) or model ({model_src}) is gone: deploy it again")
    _check_code(code_src, dep, where)
    return code_src, model_src


def _check_code(code: Path, dep: dict[str, Any], where: str) -> None:
    try:
        same = tree_sha256(code) == dep["code_sha256"]
    except ValueError:
        same = False
    if not same:
        raise UserError(f"{where}: its build context {dep['context']} no longer holds the deployed code (a later "
                        "build or a failed deploy rendered over it): deploy it again")


def snapshot(store: Store, dep: dict[str, Any], job_dir: Path) -> tuple[Path, Path]:
    """Copy the deployment's code and model into `job_dir` (process backend); returns (code_dir, model_dir).

    Made under a temporary name and renamed: a job has its whole snapshot or none (a host killed
    while copying leaves none: its resume copies it again, never runs half a snapshot).
    """
    code_src, model_src = check_deployed(store, dep)
    root = job_dir / layout.SNAPSHOT_DIR
    tmp = job_dir / f".{layout.SNAPSHOT_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # inside the job folder, made by an earlier try of this one
    # copytree copies file contents (never links: contexts hard-link the registry's files) and keeps
    # modes, so the copy hashes like its source.
    shutil.copytree(code_src, tmp / "code", symlinks=False)
    (tmp / "model").mkdir()
    if model_src.is_dir():
        shutil.copytree(model_src, tmp / "model" / model_src.name, symlinks=False)
    else:
        shutil.copy2(model_src, tmp / "model" / model_src.name)
    _check_code(tmp / "code", dep, f"deployment {dep.get('name')} of endpoint {dep.get('endpoint_name')}")
    os.rename(tmp, root)
    return root / "code", root / "model"


def check_runnable(job: dict[str, Any]) -> None:
    """Before instances start (again): what the job was pinned to must still be there. (A swarm job
    pushed to a registry runs by digest: the registry keeps it, and a node that cannot pull it says so.)"""
    name = str(job.get("name"))
    if job.get("backend") in ("docker", "swarm"):
        from .. import images

        ref = job.get("image_id") or job["image"]
        pushed = job.get("backend") == "swarm" and job.get("image_ref") and job["image_ref"] != job.get("image_id")
        if not pushed and images.image_id(ref) is None:
            raise JobError(image_gone(name, job["image"], job.get("image_id")))
        return
    for key in ("code_dir", "model_dir"):
        if not Path(job[key]).is_dir():
            raise JobError(f"the {key.split('_')[0]} of job {name} is gone ({job[key]}): it cannot go on with "
                           "the code it started with; invoke it again")


def image_gone(job: str, tag: str, image_id: str | None) -> str:
    """The one line for a job whose pinned image was removed from the engine."""
    pinned = f" ({image_id[:19]})" if image_id and image_id != tag else ""
    return (f"image {tag}{pinned} of job {job} is gone (removed from the Docker engine): the job cannot go on "
            "with the code it started with; invoke it again")


def held_images(store: Store) -> set[str]:
    """Tags and ids of images that jobs of this home may still run (docker jobs not Completed, archived
    ones too: `job resume` takes them)."""
    held: set[str] = set()
    for job in store.list_jobs(archived="include"):
        if job.get("backend") in ("docker", "swarm") and may_run_again(job):
            held.update(v for v in (job.get("image"), job.get("image_id")) if v)
    return held
