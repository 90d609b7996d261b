"""Names derived from endpoints, deployments and jobs: folders, image repositories, containers, Swarm
services and networks, assets.

Every derived name is decided here, and each is injective: two different (endpoint, deployment)
pairs, or two different jobs, never share one. Endpoint and deployment names are letters, digits
and '-' (Azure's rule), so joining them with '-' is ambiguous (`abc-def` + `ghi` and `abc` +
`def-ghi`); the parts are joined with a character neither can hold ('/' in folders and image
repository paths, '.' in asset names). Endpoint and deployment names ignore case, so derived names
are lower-cased: two spellings of one resource share its names, as they should.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from . import config

_CONTAINER_JOB_CHARS = 40
_CONTAINER_HASH_CHARS = 16
_SERVICE_JOB_CHARS = 20  # Swarm names services with at most 63 characters
_SERVICE_INSTANCE_CHARS = 16
SHARED_JOBS_DIR = "bepbuild-jobs"  # the jobs folder under a swarm compute's shared path


def context_dir(endpoint: str, deployment: str) -> Path:
    """The build context of a deployment: `BEPBUILD_HOME/contexts/endpoints/<endpoint>/<deployment>`.

    The extra `endpoints/` level keeps these apart from contexts of earlier versions
    (`contexts/<endpoint>-<deployment>`): such a folder can never be the parent of a new one.
    """
    return config.home() / "contexts" / "endpoints" / endpoint.lower() / deployment.lower()


def image_repo(endpoint: str, deployment: str) -> str:
    """The image repository of a deployment: `bepbuild/<endpoint>/<deployment>` (tags: `image_tag`)."""
    return f"bepbuild/{endpoint}/{deployment}".lower()


def image_tag(endpoint: str, deployment: str, content_hash: str) -> str:
    """A deployment image's tag: `<repository>:<content hash[:16]>-<home id>`.

    One tag per BEPBUILD_HOME: two homes on one engine deploying the same content each tag the
    image (the engine keeps it while one tag is left), and a redeploy or `build --force` in one
    moves or removes only its own tag (`is_own_image_tag`).
    """
    return f"{image_repo(endpoint, deployment)}:{content_hash[:16]}-{config.home_id()}"


def is_own_image_tag(tag: str) -> bool:
    """Whether `tag` is a deployment image tag this BEPBUILD_HOME made (`image_tag`)."""
    repo, _, label = tag.rpartition(":")
    return repo.startswith("bepbuild/") and "/" not in label and label.endswith(f"-{config.home_id()}")


def environment_image_repo(environment: str) -> str:
    """The repository of an environment built from a Docker build context (`bepbuild/env-<name>`).

    Two path components, so never a deployment's repository (three). Asset names may hold what a
    repository may not ('_' or '.' at an end, runs of them, upper case): those become '-'. Names
    that map to one repository are harmless here, since the tag is the build context's hash.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", environment.lower()).strip("-")[:100].strip("-") or "env"
    return f"bepbuild/env-{slug}"


def inline_model_name(endpoint: str, deployment: str) -> str:
    """The registered name of a deployment's inline model that has no name of its own."""
    return f"{endpoint}.{deployment}-model".lower()


def inline_environment_name(endpoint: str, deployment: str) -> str:
    """The registered name of a deployment's inline environment that has no name of its own."""
    return f"{endpoint}.{deployment}-env".lower()


def container_name(job: str, job_dir: Path, instance: str) -> str:
    """The container of one instance of a job: unique per job folder (so per home and job).

    Job names may be 255 characters long and two may share any prefix: the readable prefix is
    followed by a hash of the job folder, which is what identifies the job on this engine.
    """
    return f"bepbuild-{job[:_CONTAINER_JOB_CHARS]}-{_job_digest(job_dir)}-{instance}"


def test_container_name(scratch: str, what: str) -> str:
    """A container of `bepbuild test` (`what`: probe or pytest): named after its run's scratch folder, unique."""
    return f"bepbuild-test-{scratch}-{what}"


def pytest_image(scratch: str, image_id: str, lock_digest: str) -> str:
    """The image `bepbuild test --pytest` derives from a deployment's image (`image_id`) and a pytest lock:
    one per test run (`scratch`), so a run that removes its own never takes another's."""
    digest = hashlib.sha256(f"{image_id}\n{lock_digest}".encode()).hexdigest()[:12]
    return f"bepbuild/test-pytest:{scratch}-{digest}"


def _job_digest(job_dir: Path) -> str:
    return hashlib.sha256(str(Path(job_dir).absolute()).encode()).hexdigest()[:_CONTAINER_HASH_CHARS]


def service_name(job: str, job_dir: Path, instance: str) -> str:
    """The Swarm service of one instance of a job (its task's container is named after it by Swarm):
    unique per job folder, at most 63 characters (Swarm's limit)."""
    if len(instance) > _SERVICE_INSTANCE_CHARS:
        raise ValueError(f"instance name {instance!r} is longer than {_SERVICE_INSTANCE_CHARS} characters")
    return f"bepbuild-{job[:_SERVICE_JOB_CHARS]}-{_job_digest(job_dir)}-{instance}"


def job_network(job: str, job_dir: Path) -> str:
    """The job's own `--internal` overlay network on a swarm (its tasks' only network)."""
    return f"bepbuild-{job[:_SERVICE_JOB_CHARS]}-{_job_digest(job_dir)}"


def shared_jobs_dir(shared_path: str | Path) -> Path:
    """The folder holding the job folders of a swarm compute, under its shared path."""
    return Path(shared_path) / SHARED_JOBS_DIR

