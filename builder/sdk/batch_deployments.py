"""`ml_client.batch_deployments`: create/update (build the image), get, list, delete, list_jobs."""

from __future__ import annotations

import logging
from typing import Any

from azure.ai.ml.entities import BatchDeployment, BatchJob
from azure.core.paging import ItemPaged
from azure.core.polling import LROPoller

from .. import deploy, endpoints
from . import convert, entities
from ._base import Operations
from .errors import sdk_errors
from .poller import finished, paged

log = logging.getLogger("bepbuild.sdk")


class BatchDeploymentOperations(Operations):
    """Batch deployments: a model, scoring code and environment built into one image."""

    @sdk_errors
    def begin_create_or_update(self, deployment: BatchDeployment, *, skip_script_validation: bool = False,
                               **kwargs: Any) -> LROPoller[BatchDeployment]:
        """Build the deployment's image (or reuse it when nothing changed) and register the deployment,
        as `batch-deployment create` does; the endpoint must exist. Done when this returns."""
        doc = convert.deployment_doc(deployment)
        label = f"{type(deployment).__name__} {deployment.name!r}"
        opts = deploy.DeployOptions(skip_script_validation=skip_script_validation)
        with self._store() as store, convert.written(doc, label) as file:
            rec = deploy.create(store, file, create_endpoint=False, opts=opts, log=log.debug)
            for notice in rec.get("notices") or []:
                log.warning("%s", notice if notice.startswith("warning: ") else f"note: {notice}")
            log.info("image %s %s", rec["image"], "built" if rec.get("built") else "up to date, not rebuilt")
            return finished(entities.deployment_entity(store.get_deployment(rec["endpoint_name"], rec["name"])))

    @sdk_errors
    def get(self, name: str, endpoint_name: str, **kwargs: Any) -> BatchDeployment:
        """The deployment as a ModelBatchDeployment (model and environment as azureml: references)."""
        with self._store() as store:
            return entities.deployment_entity(store.get_deployment(endpoint_name, name))

    @sdk_errors
    def list(self, endpoint_name: str, **kwargs: Any) -> ItemPaged[BatchDeployment]:
        """The endpoint's deployments."""
        with self._store() as store:
            store.get_endpoint(endpoint_name)
            return paged([entities.deployment_entity(rec) for rec in store.list_deployments(endpoint_name)])

    @sdk_errors
    def begin_delete(self, name: str, endpoint_name: str, **kwargs: Any) -> LROPoller[None]:
        """Delete the deployment (its image stays until pruned)."""
        with self._store() as store:
            endpoints.delete_deployment(store, endpoint_name, name)
        return finished(None)

    @sdk_errors
    def list_jobs(self, endpoint_name: str, *, name: str | None = None, **kwargs: Any) -> ItemPaged[BatchJob]:
        """The jobs of the endpoint's deployment `name` (every deployment's without it), newest first."""
        with self._store() as store:
            ep = store.get_endpoint(endpoint_name)
            dep = store.get_deployment(ep["name"], name)["name"] if name else None
            return paged([entities.batch_job(rec) for rec in store.list_jobs(endpoint=ep["name"], deployment=dep)])
