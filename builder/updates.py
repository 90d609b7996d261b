"""`update` verbs for what may change after creation: descriptions and tags of asset versions and
jobs, a compute's limits. Everything else a record holds (files, hashes, settings a job ran with)
never changes once written; a key outside the allowed set is one error line naming it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .errors import SpecError
from .specs import ComputeSpec
from .specs.loader import Located, validate
from .specs.overrides import apply, parse_assignment
from .store import Store

ASSET_KEYS = ("description", "tags", "stage")
JOB_KEYS = ("description", "display_name", "tags", "experiment_name")


def _changes(current: dict[str, Any], sets: Iterable[str], allowed: tuple[str, ...], what: str) -> dict[str, Any]:
    sets = list(sets)
    if not sets:
        raise SpecError("nothing to update: give --set KEY=VALUE", field="--set")
    for text in sets:
        key = parse_assignment(text)[0][0]
        if key not in allowed:
            raise SpecError(f"--set {text!r}: {key} of a {what} cannot be changed; one of {', '.join(allowed)}")
    base = {k: current.get(k) for k in allowed}
    base["tags"] = dict(current.get("tags") or {})
    new = apply(base, sets)
    if not isinstance(new.get("tags"), dict):
        raise SpecError("tags must be a mapping (--set tags.KEY=VALUE)", field="tags")
    new["tags"] = {str(k): "" if v is None else str(v) for k, v in new["tags"].items()}
    for key in allowed:
        if key != "tags" and new.get(key) is not None and not isinstance(new[key], str):
            new[key] = str(new[key])
    return {k: v for k, v in new.items() if v != base.get(k) or k == "tags"}


def update_asset(store: Store, kind: str, name: str, version: str | None, label: str | None,
                 sets: Iterable[str]) -> dict[str, Any]:
    """Change the description, tags or stage of one version (default: the latest)."""
    current = store.get_version(kind, name, version, label)
    changes = _changes(current, sets, ASSET_KEYS, kind)
    return store.update_versions(kind, current["name"], current["version"], changes)[0]


def update_job(store: Store, name: str, sets: Iterable[str]) -> dict[str, Any]:
    """Change a job's description, display name, tags or experiment name."""
    return store.update_job(name, **_changes(store.get_job(name), sets, JOB_KEYS, "job"))


def archive_job(store: Store, name: str, archived: bool) -> dict[str, Any]:
    """Hide a job from `job list` (or show it again); its folder and outputs stay."""
    store.get_job(name)
    return store.update_job(name, archived=archived)


def update_compute(store: Store, name: str, sets: Iterable[str]) -> dict[str, Any]:
    """Apply `--set` to a compute profile, validated as `compute create` validates it."""
    current = store.get_compute(name)
    base = {k: v for k, v in current.items() if k not in ("created_at", "updated_at")}
    doc = apply(base, list(sets))
    if str(doc.get("name")).lower() != str(current["name"]).lower():
        raise SpecError("the name of a compute cannot be changed", field="name")
    spec = validate(ComputeSpec, Located(doc, {}, f"compute {name}"))
    store.put_compute(spec.name, spec.model_dump(mode="json", by_alias=True, exclude_none=True))
    return store.get_compute(spec.name)
