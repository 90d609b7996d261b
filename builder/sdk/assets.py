"""`ml_client.models`, `.environments`, `.data`: registered, versioned assets.

create_or_update writes the entity as the YAML file the CLI's `--file` takes and registers it the
way `bepbuild model|environment|data create --file` does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from azure.ai.ml.entities import Data, Environment, Model
from azure.core.paging import ItemPaged

from .. import registry
from ..specs import load_data, load_environment, load_model
from . import convert, entities
from ._base import Operations, archived_view
from .errors import invalid, sdk_errors
from .poller import paged


class _Versioned(Operations):
    kind = ""
    make: Callable[[dict[str, Any]], Any] = staticmethod(lambda rec: rec)

    @sdk_errors
    def get(self, name: str, version: str | None = None, label: str | None = None, **kwargs: Any) -> Any:
        """One version (default: `label="latest"`, the last one registered and not archived)."""
        with self._store() as store:
            return type(self).make(store.get_version(self.kind, name, None if version is None else str(version),
                                                     label))

    @sdk_errors
    def list(self, name: str | None = None, *, list_view_type: Any = None, **kwargs: Any) -> ItemPaged[Any]:
        """The latest version of each asset, or every version of `name`."""
        with self._store() as store:
            found = store.list_assets(self.kind, name, archived=archived_view(list_view_type))
            return paged([type(self).make(rec) for rec in found])

    @sdk_errors
    def archive(self, name: str, version: str | None = None, label: str | None = None, **kwargs: Any) -> None:
        """Hide a version (every version without `version`/`label`) from lists and from `latest`."""
        self._set_archived(name, version, label, True)

    @sdk_errors
    def restore(self, name: str, version: str | None = None, label: str | None = None, **kwargs: Any) -> None:
        """Show an archived version (or every version) again."""
        self._set_archived(name, version, label, False)

    def _set_archived(self, name: str, version: str | None, label: str | None, archived: bool) -> None:
        with self._store() as store:
            if label is not None:
                version = store.get_version(self.kind, name, None, label)["version"]
            store.set_archived(self.kind, name, None if version is None else str(version), archived)


def _check(entity: Any, cls: type) -> None:
    if not isinstance(entity, cls):
        raise invalid(f"expected a {cls.__name__}, got {type(entity).__name__}")


class ModelOperations(_Versioned):
    """Models: versioned copies of a model file or folder."""

    kind = "model"
    make = staticmethod(entities.model_entity)

    @sdk_errors
    def create_or_update(self, model: Model, **kwargs: Any) -> Model:
        """Register the model: its file or folder (relative to the working directory) is copied into the
        registry as a new version, or an identical given version is returned."""
        _check(model, Model)
        with self._store() as store, convert.written(convert.model_doc(model), f"Model {model.name!r}") as file:
            spec = (loaded := load_model(file)).spec
            rec = registry.register_model(store, name=str(spec.name), path=loaded.paths["path"], type=spec.type,
                                          version=spec.version, description=spec.description, tags=spec.tags)
            return entities.model_entity(rec)

    @sdk_errors
    def download(self, name: str, version: str | None = None, download_path: str | os.PathLike[str] = ".",
                 **kwargs: Any) -> None:
        """Copy a registered model to DOWNLOAD_PATH/NAME/ (never overwriting)."""
        with self._store() as store:
            registry.download_model(store, name, None if version is None else str(version), None, Path(download_path))


class EnvironmentOperations(_Versioned):
    """Environments: a base image plus a conda file, or a Docker build context."""

    kind = "environment"
    make = staticmethod(entities.environment_entity)

    @sdk_errors
    def create_or_update(self, environment: Environment, **kwargs: Any) -> Environment:
        """Register the environment (a build context is copied into the registry)."""
        _check(environment, Environment)
        doc = convert.environment_doc(environment)
        with self._store() as store, convert.written(doc, f"Environment {environment.name!r}") as file:
            loaded = load_environment(file)
            return entities.environment_entity(registry.register_environment(store, loaded, loaded.spec))


class DataOperations(_Versioned):
    """Data assets: named, versioned references to input folders, files or http(s) URLs."""

    kind = "data"
    make = staticmethod(entities.data_entity)

    @sdk_errors
    def create_or_update(self, data: Data, **kwargs: Any) -> Data:
        """Register the data asset by reference (it is read in place), usable as Input(path="azureml:NAME@latest")."""
        _check(data, Data)
        with self._store() as store, convert.written(convert.data_doc(data), f"Data {data.name!r}") as file:
            loaded = load_data(file)
            spec = loaded.spec
            rec = registry.register_data(store, name=spec.name, path=str(loaded.paths.get("path", spec.path)),
                                         type=spec.type, version=spec.version, description=spec.description)
            return entities.data_entity(rec)
