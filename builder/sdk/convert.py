"""SDK entities -> the YAML documents bepbuild validates, written to a file for its loaders.

The SDK's own `_to_dict()` gives each entity's YAML form; this module only removes what the
service fills in (ids, states), what has no local meaning (listed in IGNORED), and what the SDK
dumps twice (a `type: model` deployment's settings also appear at the top level), turns a
registered asset into its `azureml:NAME:VERSION` reference and local paths into absolute ones
(relative to the working directory, as the SDK reads them). Everything else goes to bepbuild's
loaders as it is, so an unknown or invalid field gets the same one-line error as in a YAML file.
"""

from __future__ import annotations

import enum
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from azure.ai.ml.entities import (
    AmlCompute,
    BatchDeployment,
    BatchEndpoint,
    Data,
    Environment,
    Model,
    ModelBatchDeployment,
)

from ..errors import SpecError
from ..specs.deployment import FLAT_SETTINGS
from ..specs.loader import display_name
from .errors import invalid

# What the service fills in: never part of a spec.
READ_ONLY = ("id", "creation_context", "provisioning_state", "scoring_uri", "openapi_uri", "location")
# Fields that apply only on Azure, accepted and dropped (docs/az-compat.md, "Python SDK").
IGNORED = {
    "model": ("job_name", "intellectual_property", "datastore"),
    "environment": ("properties", "datastore", "intellectual_property"),
    "data": ("properties", "datastore", "intellectual_property"),
    "compute": ("enable_node_public_ip", "ssh_public_access_enabled", "ssh_settings", "network_settings",
                "identity", "resource_id", "created_on", "properties"),
}
# A deployment's inline model is registered with its name, version, description, tags, path and type only.
INLINE_MODEL_IGNORED = ("properties", "stage", "flavors")
# What a compute spec holds that AmlCompute cannot: kept from the stored profile on an update.
LOCAL_COMPUTE_KEYS = ("cpus", "memory", "gpus")


def plain(value: Any) -> Any:
    """JSON-ready data: OrderedDicts as dicts, enums as their values, paths as strings."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def local_path(path: Any) -> Any:
    """A local path made absolute against the working directory; URIs and references unchanged."""
    if not isinstance(path, (str, os.PathLike)):
        return path
    text = os.fspath(path)
    if not text or "://" in text or text.startswith("azureml:"):
        return text
    return os.path.abspath(os.path.expanduser(text))


def _without(doc: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in keys}


def _registered(entity: Any) -> str | None:
    """`azureml:NAME:VERSION` for an asset entity that came from the registry (it has an id)."""
    if getattr(entity, "id", None) and getattr(entity, "name", None) and getattr(entity, "version", None):
        return f"azureml:{entity.name}:{entity.version}"
    return None


def endpoint_doc(endpoint: BatchEndpoint) -> dict[str, Any]:
    """A BatchEndpoint as an endpoint YAML document."""
    doc = _without(plain(endpoint._to_dict()), READ_ONLY)
    defaults = doc.get("defaults")
    if isinstance(defaults, dict):
        doc["defaults"] = {k: v for k, v in defaults.items() if v is not None}
    return doc


def _anonymous(entity: Any, doc: dict[str, Any]) -> dict[str, Any]:
    # The SDK names an unnamed asset itself (a content hash, CliV2AnonymousEnvironment); bepbuild
    # names a deployment's unnamed inline assets after the deployment, as it does for YAML files.
    if getattr(entity, "_is_anonymous", False):
        return _without(doc, ("name", "version"))
    return doc


def model_doc(model: Model, *, inline: bool = False) -> dict[str, Any]:
    """A Model as a model YAML document (`inline`: the fields of a deployment's inline model)."""
    doc = _without(plain(model._to_dict()), READ_ONLY + IGNORED["model"] + (INLINE_MODEL_IGNORED if inline else ()))
    doc = _anonymous(model, doc)
    if "path" in doc:
        doc["path"] = local_path(doc["path"])
    return doc


def environment_doc(env: Environment) -> dict[str, Any]:
    """An Environment as an environment YAML document (the SDK has read its conda file already)."""
    doc = _anonymous(env, _without(plain(env._to_dict()), READ_ONLY + IGNORED["environment"]))
    if not doc.get("inference_config"):  # the SDK dumps an empty one for build contexts
        doc.pop("inference_config", None)
    build = doc.get("build")
    if isinstance(build, dict) and "path" in build:
        build["path"] = local_path(build["path"])
    if isinstance(doc.get("conda_file"), (str, os.PathLike)):
        doc["conda_file"] = local_path(doc["conda_file"])
    return doc


def data_doc(data: Data) -> dict[str, Any]:
    """A Data asset as a data YAML document."""
    doc = _without(plain(data._to_dict()), READ_ONLY + IGNORED["data"])
    if "path" in doc:
        doc["path"] = local_path(doc["path"])
    return doc


def compute_doc(compute: Any) -> dict[str, Any]:
    """An AmlCompute as a compute YAML document (the only kind of compute there is locally)."""
    if not isinstance(compute, AmlCompute):
        raise invalid(f"{type(compute).__name__} {getattr(compute, 'name', '')!r}: only AmlCompute exists "
                      "locally (a resource profile for the containers of a deployment)")
    return _without(plain(compute._to_dict()), READ_ONLY + IGNORED["compute"])


def deployment_doc(deployment: BatchDeployment) -> dict[str, Any]:
    """A ModelBatchDeployment (or the legacy BatchDeployment) as a deployment YAML document."""
    if not isinstance(deployment, BatchDeployment) or (
            type(deployment) is not BatchDeployment and not isinstance(deployment, ModelBatchDeployment)):
        raise invalid(f"{type(deployment).__name__} {getattr(deployment, 'name', '')!r}: only model deployments "
                      "(ModelBatchDeployment, or the legacy BatchDeployment) run locally")
    doc = _without(plain(deployment._to_dict()), READ_ONLY)
    for key, entity in (("model", deployment.model), ("environment", deployment.environment)):
        if isinstance(entity, (Model, Environment)):
            ref = _registered(entity)
            if ref is not None:
                doc[key] = ref
            else:
                doc[key] = model_doc(entity, inline=True) if key == "model" else environment_doc(entity)
    code = doc.get("code_configuration")
    if isinstance(code, dict) and "code" in code:
        code["code"] = local_path(code["code"])
    if doc.get("type") == "model":
        # The SDK dumps each setting at the top level too; the REST body (and bepbuild) read `settings`.
        doc = _without(doc, FLAT_SETTINGS)
        settings = doc.get("settings")
        resources = doc.get("resources")
        if isinstance(settings, dict) and isinstance(resources, dict) and "instance_count" in resources:
            settings.pop("instance_count", None)  # copied into resources by the SDK, not sent by it
    return doc


@contextmanager
def written(doc: dict[str, Any], label: str) -> Iterator[Path]:
    """`doc` as a YAML file for bepbuild's loaders; their errors name `label` instead of the file.

    The file lives in a new temporary folder, removed afterwards; every path in `doc` is absolute,
    so where the file lies does not matter.
    """
    folder = Path(tempfile.mkdtemp(prefix="bepbuild-sdk-"))
    path = folder / "spec.yml"
    try:
        path.write_text(json.dumps(doc, indent=1), encoding="utf-8")  # JSON is YAML
        try:
            yield path
        except SpecError as e:
            shown = display_name(path)
            source = e.source or ""
            if source == shown or source.startswith(shown + ":"):
                raise SpecError(e.message, source=label, field=e.field) from e
            raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
