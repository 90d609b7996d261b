"""`ml_client.compute` (AmlCompute: local resource profiles) and `ml_client.datastores` (local folders)."""

from __future__ import annotations

from typing import Any

from azure.ai.ml.entities import AmlCompute, Datastore
from azure.core.paging import ItemPaged
from azure.core.polling import LROPoller

from .. import config
from ..errors import NotFoundError
from ..specs import load_compute
from . import convert, entities
from ._base import Operations
from .errors import sdk_errors
from .poller import finished, paged


class ComputeOperations(Operations):
    """Computes: how many instances a deployment may use (and, set with the CLI, what each one gets)."""

    @sdk_errors
    def begin_create_or_update(self, compute: AmlCompute, **kwargs: Any) -> LROPoller[AmlCompute]:
        """Create or replace the profile, validated as `compute create --file` validates it; its local
        limits (cpus, memory, gpus: set with the CLI, unknown to AmlCompute) are kept."""
        doc = convert.compute_doc(compute)
        with self._store() as store:
            try:
                current = store.get_compute(str(compute.name))
            except NotFoundError:
                current = {}
            doc.update({k: current[k] for k in convert.LOCAL_COMPUTE_KEYS if current.get(k) is not None})
            with convert.written(doc, f"AmlCompute {compute.name!r}") as file:
                spec = load_compute(file).spec
            store.put_compute(spec.name, spec.model_dump(mode="json", by_alias=True, exclude_none=True))
            return finished(entities.compute_entity(store.get_compute(spec.name)))

    @sdk_errors
    def get(self, name: str, **kwargs: Any) -> AmlCompute:
        """The profile, as an AmlCompute with provisioning_state Succeeded."""
        with self._store() as store:
            return entities.compute_entity(store.get_compute(name))

    @sdk_errors
    def list(self, *, compute_type: str | None = None, **kwargs: Any) -> ItemPaged[AmlCompute]:
        """Every profile (they are all AmlCompute)."""
        with self._store() as store:
            found = store.list_computes()
        if compute_type is not None and compute_type.lower() != "amlcompute":
            found = []
        return paged([entities.compute_entity(rec) for rec in found])

    @sdk_errors
    def begin_delete(self, name: str, **kwargs: Any) -> LROPoller[None]:
        """Delete the profile."""
        with self._store() as store:
            store.delete_compute(name)
        return finished(None)


class DatastoreOperations(Operations):
    """Datastores: folders under BEPBUILD_HOME/datastores; `workspaceblobstore` is the default one."""

    def _entity(self, name: str) -> Datastore:
        if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
            raise NotFoundError(f"datastore {name!r} not found: a datastore name is one folder name")
        return entities.datastore_entity(name, str(config.home() / "datastores" / name))

    @sdk_errors
    def get_default(self, **kwargs: Any) -> Datastore:
        """The default datastore: `azureml://datastores/workspaceblobstore/paths/...` outputs land in its folder."""
        return self._entity(entities.DEFAULT_DATASTORE)

    @sdk_errors
    def get(self, name: str, **kwargs: Any) -> Datastore:
        """The datastore `name` (any name: its folder is made when a job writes to it)."""
        return self._entity(name)

    @sdk_errors
    def list(self, **kwargs: Any) -> ItemPaged[Datastore]:
        """The default datastore and those jobs have written to."""
        folder = config.home() / "datastores"
        names = {entities.DEFAULT_DATASTORE}
        if folder.is_dir():
            names.update(p.name for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
        return paged([self._entity(n) for n in sorted(names)])
