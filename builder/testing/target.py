"""What `bepbuild test` tries: a deployment's image, the settings its jobs run with, what to check it against.

Two ways to name one: a deployment file, built exactly as deploy builds it (`deploy.build` inside
`registry.preview`, into a context of the test's own, so neither the registry nor the deployed
context changes), or a registered deployment, whose image is pinned as a job pins it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import deploy, environments, registry
from ..errors import NotFoundError
from ..jobs import isolation, pinning, service
from ..specs import load_deployment
from ..store import Store


@dataclass
class Target:
    """One deployment to try, and what its jobs would run it with."""

    endpoint: str
    deployment: str
    image: str  # the tag, for people
    image_id: str  # what the container is created from
    settings: dict[str, Any]  # a job's settings (flat, runtime keys)
    limits: isolation.Limits
    scoring_script: str  # relative to the image's code folder
    lock: str | None = None  # the lock the environment must match; None: the one the image was installed from
    lock_sha256: str | None = None  # what that image lock must hash to (a registered deployment's record)
    python_pin: str | None = None  # the conda file's Python pin
    strategy: str | None = None
    built: bool = False
    notices: list[str] = field(default_factory=list)
    source: str = "registered"  # or "file"


def _limits(resources: dict[str, Any]) -> isolation.Limits:
    return isolation.Limits(cpus=resources.get("cpus"), memory=resources.get("memory"),
                            gpus=int(resources.get("gpus") or 0))


def from_file(store: Store, file: Path, *, endpoint_name: str | None, sets: list[str], opts: deploy.DeployOptions,
              scratch: Path, log: deploy.Log, mini_batch_size: int | None) -> Target:
    """Build (or reuse) the image of a deployment file as deploy would; register nothing."""
    loaded = load_deployment(file, sets=sets, endpoint_name=endpoint_name,
                             skip_script_validation=opts.skip_script_validation)
    with registry.preview(scratch / "assets"):
        p, _env, result = deploy.build(store, loaded, opts, log, context=scratch / "context")
    spec = loaded.spec
    dep = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    settings, resources = service.job_settings(store, dep, mini_batch_size=mini_batch_size)
    script = deploy.MLFLOW_DRIVER if p.generated else \
        loaded.paths["scoring_script"].relative_to(loaded.paths["code"]).as_posix()
    return Target(spec.endpoint_name, spec.name, result.tag, result.image_id, settings, _limits(resources), script,
                  lock=p.lock.text() if p.lock is not None else None,
                  python_pin=environments.requested_python(p.environment), strategy=p.plan.strategy,
                  built=result.built, notices=loaded.warnings + p.notices, source="file")


def from_registered(store: Store, endpoint: str, name: str, *, mini_batch_size: int | None) -> Target:
    """A registered deployment: the image its jobs would be pinned to now, checked against its own lock."""
    dep = store.get_deployment(endpoint, name)
    endpoint, name = dep.get("endpoint_name") or endpoint, dep.get("name") or name
    image_id = pinning.pin_image(dep, endpoint, name)
    settings, resources = service.job_settings(store, dep, mini_batch_size=mini_batch_size)
    try:
        env = registry.resolve(store, "environment", dep["environment"])
        pin = environments.requested_python(env)
    except (NotFoundError, KeyError):
        pin = None
    return Target(endpoint, name, dep["image"], image_id, settings, _limits(resources),
                  dep["code_configuration"]["scoring_script"], lock=None, lock_sha256=dep.get("lock_sha256") or None,
                  python_pin=pin, strategy=dep.get("strategy"))
