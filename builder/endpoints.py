"""Endpoint verbs: create, update (`--set defaults.deployment_name=...`), delete."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import NotFoundError, SpecError
from .specs import BatchEndpoint, load_endpoint
from .specs.loader import Located, validate
from .specs.overrides import apply
from .store import Store


def _doc(spec: BatchEndpoint) -> dict[str, Any]:
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True)


def create(store: Store, file: Path | None, *, name: str | None, sets: Iterable[str] = ()) -> dict[str, Any]:
    """Create (or overwrite, as az does) an endpoint from a YAML file and/or --name."""
    if file is not None:
        spec = load_endpoint(file, sets=sets, name=name).spec
    else:
        if not name:
            raise SpecError("give --file or --name")
        spec = validate(BatchEndpoint, Located(apply({"name": name}, list(sets)), {}, "--set"))
    if spec.defaults.deployment_name:
        spec.defaults.deployment_name = _check_deployment(store, spec.name, spec.defaults.deployment_name)
    store.put_endpoint(spec.name, _doc(spec))
    return store.get_endpoint(spec.name)


def update(store: Store, name: str, *, sets: Iterable[str] = (), file: Path | None = None) -> dict[str, Any]:
    """Apply `--set` (and/or a file) to a registered endpoint."""
    current = store.get_endpoint(name)
    name = current["name"]  # as first given (names ignore case)
    base = {k: v for k, v in current.items() if k not in ("created_at", "updated_at")}
    if file is not None:
        base = {**base, **load_endpoint(file, name=name).spec.model_dump(mode="json", by_alias=True, exclude_none=True)}
    data = apply(base, list(sets))
    if str(data.get("name")).lower() != name.lower():
        raise SpecError("the name of an endpoint cannot be changed", field="name")
    spec = validate(BatchEndpoint, Located(data, {}, f"endpoint {name}"))
    if spec.defaults.deployment_name:
        spec.defaults.deployment_name = _check_deployment(store, name, spec.defaults.deployment_name)
    store.put_endpoint(name, _doc(spec))
    return store.get_endpoint(name)


def set_default(store: Store, endpoint: str, deployment: str) -> dict[str, Any]:
    return update(store, endpoint, sets=[f"defaults.deployment_name={deployment}"])


def delete(store: Store, name: str) -> list[dict[str, Any]]:
    """Delete the endpoint and its deployments; jobs are kept."""
    return store.delete_endpoint(name)


def delete_deployment(store: Store, endpoint: str, name: str) -> dict[str, Any]:
    """Delete a deployment; when it was the default, the endpoint is left without a default."""
    gone = store.delete_deployment(endpoint, name)
    ep = store.get_endpoint(endpoint)
    if str((ep.get("defaults") or {}).get("deployment_name")).lower() == name.lower():
        ep = {k: v for k, v in ep.items() if k not in ("created_at", "updated_at")}
        ep["defaults"] = {}
        store.put_endpoint(endpoint, ep)
    return gone


def _check_deployment(store: Store, endpoint: str, deployment: str) -> str:
    """The deployment's name as stored (names ignore case); a SpecError when there is none."""
    try:
        return str(store.get_deployment(endpoint, deployment)["name"])
    except NotFoundError as e:
        raise SpecError(
            f"defaults.deployment_name: deployment {deployment!r} does not exist in endpoint {endpoint!r}"
        ) from e
