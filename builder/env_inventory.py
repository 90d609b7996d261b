"""The environment images on the engine: what each holds, who uses it, and pruning what nobody uses.

Only images bepbuild made are ever looked at or removed, found by their labels (`env_images`): the
environment images (``io.bepbuild.kind=environment``) and, for pruning, dangling images of
deployments and of the legacy builder's install stages. An environment image is in use while a
deployment of this home names it, or a deployment image on the engine (of any bepbuild home) was
built FROM it; a dangling deployment image is kept while a job may still run it (the rule of
`deploy.prune_images`: `jobs.pinning.held_images`) or a container uses it. Images younger than
`min_age` are left alone: a deploy running now may be about to build FROM one.
"""

from __future__ import annotations

import time
from typing import Any, TypedDict

from . import env_images, images
from .store import Store

DEFAULT_MIN_AGE = 600.0


class EnvImageRow(TypedDict):
    """One environment image, as `environment list --images` shows it."""

    image: str
    image_id: str
    python: str
    strategy: str
    packages: int
    size: int  # the whole image, bytes
    environment_size: int  # what the environment adds to its base image, bytes
    deployments: int  # deployments of this home that start FROM it
    images: int  # deployment images on the engine built FROM it (every bepbuild home)
    base_image: str
    created: str


class PruneResult(TypedDict):
    """What `environment prune` removed (or would remove, with dry_run) and what it kept."""

    environment_images: list[str]
    deployment_images: list[str]
    bytes: int  # the removed images' sizes (layers they share with kept images are not freed)
    kept: list[dict[str, str]]


def _env_label(row: dict[str, Any], key: str) -> str:
    return str((row.get("Labels") or {}).get(key) or "")


def _tags(row: dict[str, Any]) -> list[str]:
    return [t for t in row.get("RepoTags") or [] if t != "<none>:<none>"]


def _own_tag(row: dict[str, Any]) -> str:
    mine = [t for t in _tags(row) if t.startswith(env_images.REPOSITORY + ":")]
    return mine[0] if mine else (_tags(row) or [row["Id"]])[0]


def _store_refs(store: Store) -> tuple[set[str], set[str]]:
    """(environment images, deployment images) this home's deployments name, as tags and ids."""
    env_refs: set[str] = set()
    dep_refs: set[str] = set()
    for ep in store.list_endpoints():
        for d in store.list_deployments(ep["name"]):
            env_refs.update(v for v in (d.get("environment_image"), d.get("environment_image_id")) if v)
            dep_refs.update(v for v in (d.get("image"), d.get("image_id"), *(d.get("retained_images") or [])) if v)
    return env_refs, dep_refs


def _deployment_counts(store: Store) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ep in store.list_endpoints():
        for d in store.list_deployments(ep["name"]):
            for ref in {d.get("environment_image"), d.get("environment_image_id")} - {None}:
                counts[str(ref)] = counts.get(str(ref), 0) + 1
    return counts


def _built_from(deployment_images: list[dict[str, Any]]) -> dict[str, int]:
    """How many deployment images name each environment image (by tag and by id)."""
    counts: dict[str, int] = {}
    for row in deployment_images:
        for key in (env_images.ENV_IMAGE_LABEL, env_images.ENV_IMAGE_ID_LABEL):
            ref = _env_label(row, key)
            if ref:
                counts[ref] = counts.get(ref, 0) + 1
    return counts


def list_images(store: Store) -> list[EnvImageRow]:
    """Every environment image on the engine, with its size and how many deployments use it."""
    envs = images.list_labelled(f"{env_images.KIND_LABEL}={env_images.KIND}")
    deps = images.list_labelled(f"{env_images.KIND_LABEL}=deployment")
    used_here = _deployment_counts(store)
    built = _built_from(deps)
    base_sizes: dict[str, int] = {}
    rows: list[EnvImageRow] = []
    for row in sorted(envs, key=lambda r: -int(r.get("Created") or 0)):
        tag, image_id = _own_tag(row), row["Id"]
        base_id = _env_label(row, "io.bepbuild.base-image-id")
        if base_id and base_id not in base_sizes:
            base = images.inspect(base_id)
            base_sizes[base_id] = int(base.get("Size") or 0) if base else 0
        size = int(row.get("Size") or 0)
        rows.append(EnvImageRow(
            image=tag, image_id=image_id, python=_env_label(row, "io.bepbuild.python"),
            strategy=_env_label(row, "io.bepbuild.strategy"),
            packages=int(_env_label(row, "io.bepbuild.package-count") or 0), size=size,
            environment_size=max(0, size - base_sizes.get(base_id, 0)),
            deployments=max(used_here.get(tag, 0), used_here.get(image_id, 0)),
            images=max(built.get(tag, 0), built.get(image_id, 0)),
            base_image=_env_label(row, "io.bepbuild.base-image"),
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(row.get("Created") or 0))),
        ))
    return rows


def prune(store: Store, *, min_age: float = DEFAULT_MIN_AGE, dry_run: bool = False) -> PruneResult:
    """Remove the environment images nobody uses and the dangling images of deployments bepbuild made."""
    from .jobs.pinning import held_images

    held = held_images(store)
    env_refs, dep_refs = _store_refs(store)
    now = time.time()
    result = PruneResult(environment_images=[], deployment_images=[], bytes=0, kept=[])

    def keep(ref: str, why: str) -> None:
        result["kept"].append({"image": ref, "why": why})

    def young(row: dict[str, Any]) -> bool:
        # An image built from the build cache carries the cache's creation time: when it was tagged counts too.
        if now - int(row.get("Created") or 0) < min_age:
            return True
        found = images.inspect(row["Id"]) if min_age > 0 else None
        tagged = ((found or {}).get("Metadata") or {}).get("LastTagTime") or ""
        return bool(tagged) and now - _timestamp(tagged) < min_age

    deps = images.list_labelled(f"{env_images.KIND_LABEL}=deployment")
    dangling = images.list_labelled("org.opencontainers.image.vendor=bepbuild", dangling=True)
    gone: set[str] = set()
    for row in dangling:
        labels = row.get("Labels") or {}
        if "io.bepbuild.deployment" not in labels and env_images.STAGE_LABEL not in labels:
            continue  # an environment or base image that lost its tag: not this verb's to judge
        image_id = row["Id"]
        if image_id in held or image_id in dep_refs:
            keep(image_id, "a job of this home may still run it")
        elif young(row):
            keep(image_id, "made in the last minutes (a build may still use it)")
        elif images.used_by_container(image_id):
            keep(image_id, "a container uses it")
        elif dry_run or images.remove_unused(image_id):
            gone.add(image_id)
            result["deployment_images"].append(image_id)
            result["bytes"] += int(row.get("Size") or 0)
        else:
            keep(image_id, "the engine refused to remove it (an image is built on it)")
    built = _built_from([row for row in deps if row["Id"] not in gone])
    for row in images.list_labelled(f"{env_images.KIND_LABEL}={env_images.KIND}"):
        tag, image_id = _own_tag(row), row["Id"]
        ours = [t for t in _tags(row) if t.startswith(env_images.REPOSITORY + ":")]
        if not ours:
            continue  # only its other tags are left: someone else's name for it
        if env_refs & {tag, image_id}:
            keep(tag, "a deployment of this home uses it")
        elif built.get(tag) or built.get(image_id):
            keep(tag, "a deployment image on the engine was built from it")
        elif young(row):
            keep(tag, "made in the last minutes (a deploy may be about to use it)")
        elif images.used_by_container(image_id):
            keep(tag, "a container uses it")
        else:
            if not dry_run:
                for t in ours:
                    images.remove_image(t)
            result["environment_images"].append(tag)
            result["bytes"] += int(row.get("Size") or 0)
    return result


def _timestamp(text: str) -> float:
    """The engine's RFC 3339 times (nanoseconds, a zone or Z) as seconds since the epoch; 0 when unreadable."""
    import datetime

    head, _, rest = text.partition(".")
    zone = rest.lstrip("0123456789") if rest else text[19:]
    try:
        when = datetime.datetime.fromisoformat(head[:19] + (zone.replace("Z", "+00:00") or "+00:00"))
    except ValueError:
        return 0.0
    return when.timestamp()
