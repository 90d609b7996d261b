"""Environment images: a base image plus one locked environment, built once and shared.

``bepbuild/env:<hash>`` (`tag_for`): the hash is that of the environment's own build context (its
Dockerfiles, the lock or conda file, and a manifest naming the base image by id), so it changes
exactly when the base, the lock (or conda file) or the template changes, and every deployment whose
environment comes to the same starts FROM the same image, from any endpoint and any bepbuild home
on the engine. The context is small and its own: written only when the image must be built (the
locked wheels as hard links into the wheelhouse, bind-mounted by BuildKit, copied into a throwaway
stage by the legacy builder) and removed after. A deployment's context never holds the wheelhouse.

Environments used as they are (the `image` strategy) or built from the user's Docker context (`build`)
have no environment image: the base image, or the built one, is theirs.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import __version__, config, images, locking
from .environments import BaseInfo, EnvPlan
from .errors import BuildError
from .render import content_hash, template_text

Log = Callable[[str], None]
REPOSITORY = "bepbuild/env"
KIND = "environment"
# The labels `environment list --images` and `environment prune` read (deployment images name theirs too).
KIND_LABEL = "io.bepbuild.kind"
HASH_LABEL = "io.bepbuild.content-hash"
ENV_IMAGE_LABEL = "io.bepbuild.environment-image"
ENV_IMAGE_ID_LABEL = "io.bepbuild.environment-image-id"
STAGE_LABEL = "io.bepbuild.stage"
VENDOR_LABEL = "org.opencontainers.image.vendor"


def tag_for(content_hash: str) -> str:
    """The environment image of a context hash: ``bepbuild/env:<first 16 hex digits>`` (the full hash is a label)."""
    return f"{REPOSITORY}:{content_hash[:16]}"


@dataclass
class EnvContext:
    """An environment image's context, held in memory until it must be built."""

    tag: str
    content_hash: str
    files: dict[str, bytes]
    plan: EnvPlan
    base: BaseInfo
    lock: locking.Lock | None

    def labels(self) -> dict[str, str]:
        """What the image holds: the packages, its Python, its base, the size of its wheels."""
        if self.lock is not None:
            packages = [f"{p.name}=={p.version}" for p in self.lock.packages]
            house = locking.wheelhouse()
            wheels = sum((house / p.filename).stat().st_size for p in self.lock.packages
                         if (house / p.filename).is_file())
        else:
            conda = self.plan.conda_file or {}
            packages = [str(d) for d in conda.get("dependencies", []) if isinstance(d, str)]
            packages += [r for d in conda.get("dependencies", []) if isinstance(d, dict) for r in d.get("pip", [])]
            wheels = 0
        python = self.base.python if self.plan.strategy == "pip" else (self.plan.python_pin or self.base.python)
        return {
            VENDOR_LABEL: "bepbuild",
            "org.opencontainers.image.title": f"bepbuild environment {self.tag}",
            "org.opencontainers.image.description": (f"{self.plan.strategy} environment of {len(packages)} package(s) "
                                                     f"on {self.base.image}"),
            KIND_LABEL: KIND,
            HASH_LABEL: self.content_hash,
            "io.bepbuild.strategy": self.plan.strategy,
            "io.bepbuild.python": python or "",
            "io.bepbuild.base-image": self.base.image,
            "io.bepbuild.base-image-id": self.base.image_id,
            "io.bepbuild.lock-sha256": self.lock.digest if self.lock else "",
            "io.bepbuild.packages": " ".join(packages),
            "io.bepbuild.package-count": str(len(packages)),
            "io.bepbuild.wheels-bytes": str(wheels),
            "io.bepbuild.version": __version__,
        }


@dataclass
class EnvImage:
    """The environment image a deployment starts FROM, and whether this deploy built it."""

    tag: str
    image_id: str
    built: bool
    seconds: float


def dockerfile(plan: EnvPlan, base_image: str, conda: str | None, *, legacy: bool = False,
               template_dir: Path | None = None) -> str:
    """The environment image's Dockerfile (`legacy` for builders without RUN --mount)."""
    return template_text("Dockerfile.env.j2", template_dir, plan=plan, base_image=base_image,
                         conda=conda or "conda", legacy=legacy)


def prepare(plan: EnvPlan, base: BaseInfo, lock: locking.Lock | None,
            template_dir: Path | None = None) -> EnvContext | None:
    """The environment image's context for a plan on `base` (None for environments used as they are)."""
    if plan.strategy not in ("pip", "conda"):
        return None
    files = {
        "Dockerfile": dockerfile(plan, base.image, base.conda, template_dir=template_dir).encode(),
        "Dockerfile.legacy": dockerfile(plan, base.image, base.conda, legacy=True, template_dir=template_dir).encode(),
    }
    manifest = {"base_image": base.image, "base_image_id": base.image_id, "base_python": base.python,
                "strategy": plan.strategy, "lock_sha256": lock.digest if lock else None}
    files["bepbuild.env.json"] = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    if plan.strategy == "pip":
        assert lock is not None
        files["env/requirements.lock"] = lock.text().encode()
    else:
        files["env/conda.yaml"] = yaml.safe_dump(plan.conda_file, sort_keys=False).encode()
    digest = content_hash(files)
    return EnvContext(tag_for(digest), digest, files, plan, base, lock)


def ensure(ctx: EnvContext, *, backend: str = "auto", force: bool = False, log: Log = lambda line: None) -> EnvImage:
    """The environment image of `ctx`: found on the engine (one inspect), or built now from its own context."""
    start = time.monotonic()
    if not force:
        found = images.inspect(ctx.tag)
        if found is not None:
            _check_same(ctx, (found.get("Config") or {}).get("Labels") or {})
            return EnvImage(ctx.tag, found["Id"], False, time.monotonic() - start)
    root = config.home() / "contexts" / "environments"
    root.mkdir(parents=True, exist_ok=True)
    sweep_stale(root)
    folder = Path(tempfile.mkdtemp(prefix=f"{ctx.content_hash[:16]}-", dir=root))
    try:
        for rel, data in ctx.files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data)
        if ctx.lock is not None:
            locking.materialize(ctx.lock, folder / "wheels")
        secrets: dict[str, Path] = {}
        network = "none"
        if ctx.plan.strategy == "conda":
            network = "host"
            ca = config.ca_bundle()
            if ca:
                secrets["ca"] = ca
        log(f"building environment image {ctx.tag} ({ctx.plan.strategy} on {ctx.base.image})")
        result = images.build(folder, ctx.tag, labels=ctx.labels(), network=network, secrets=secrets,
                              backend=backend, on_line=log, force=force,
                              log_path=config.home() / "logs" / "builds" / f"env_{ctx.content_hash[:16]}.log")
    finally:
        config.remove_owned(folder, root)
    return EnvImage(ctx.tag, result.image_id, result.built, time.monotonic() - start)


def sweep_stale(root: Path, max_age: float = 86400.0) -> None:
    """Remove temporary build contexts in `root` that a killed build left (a day old: none is building still)."""
    now = time.time()
    for old in root.iterdir():
        try:
            if now - old.lstat().st_mtime > max_age:
                config.remove_owned(old, root)
        except OSError:  # removed meanwhile by another sweep
            continue


def _check_same(ctx: EnvContext, labels: dict[str, str]) -> None:
    """An image found under the tag must be this context's (the tag holds only part of the hash)."""
    have = labels.get(HASH_LABEL)
    if have != ctx.content_hash:
        raise BuildError(f"{ctx.tag} exists but was built from another context ({have or 'no content hash'}, "
                         f"not {ctx.content_hash}): remove it (docker rmi {ctx.tag}) and deploy again", source=ctx.tag)
