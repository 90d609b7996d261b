"""`ml_client.batch_endpoints`: create/update, get, list, delete, invoke, list_jobs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from azure.ai.ml.entities import BatchEndpoint, BatchJob
from azure.core.paging import ItemPaged
from azure.core.polling import LROPoller

from .. import endpoints
from ..jobs import service
from . import convert, entities
from . import invoke as invoking
from ._base import Operations
from .errors import invalid, sdk_errors
from .poller import finished, paged

log = logging.getLogger("bepbuild.sdk")


def scoring_uri(name: str) -> str | None:
    """Azure's scoring_uri of an endpoint while `bepbuild serve` runs (its REST invoke), else None."""
    from ..web.state import scoring_uri as served

    return served(name)


class BatchEndpointOperations(Operations):
    """Batch endpoints: a name and the default deployment that invoke routes to."""

    def _entity(self, rec: dict[str, Any]) -> BatchEndpoint:
        return entities.endpoint_entity(rec, scoring_uri(rec["name"]))

    @sdk_errors
    def begin_create_or_update(self, endpoint: BatchEndpoint, **kwargs: Any) -> LROPoller[BatchEndpoint]:
        """Create the endpoint, or replace it (as `batch-endpoint create` does)."""
        if not isinstance(endpoint, BatchEndpoint):
            raise invalid(f"expected a BatchEndpoint, got {type(endpoint).__name__}")
        with self._store() as store, convert.written(convert.endpoint_doc(endpoint),
                                                     f"BatchEndpoint {endpoint.name!r}") as file:
            return finished(self._entity(endpoints.create(store, file, name=None)))

    @sdk_errors
    def get(self, name: str, **kwargs: Any) -> BatchEndpoint:
        """The endpoint, with `defaults`, `provisioning_state` and, while a server runs, `scoring_uri`."""
        with self._store() as store:
            return self._entity(store.get_endpoint(name))

    @sdk_errors
    def list(self, **kwargs: Any) -> ItemPaged[BatchEndpoint]:
        """Every endpoint."""
        with self._store() as store:
            return paged([self._entity(rec) for rec in store.list_endpoints()])

    @sdk_errors
    def begin_delete(self, name: str, **kwargs: Any) -> LROPoller[None]:
        """Delete the endpoint and its deployments; its jobs are kept."""
        with self._store() as store:
            endpoints.delete(store, name)
        return finished(None)

    @sdk_errors
    def invoke(self, endpoint_name: str, *, deployment_name: str | None = None,
               inputs: Mapping[str, Any] | None = None, **kwargs: Any) -> BatchJob:
        """Start a job on the endpoint's default (or the named) deployment and return at once, as
        Azure's invoke does: the job runs in a background process (`jobs.stream` follows it).

        Takes `input=Input(path=..., type=...)` or `inputs={NAME: Input}`, `outputs={NAME: Output}`,
        `params_override=[{KEY: VALUE}, ...]`, `job_name=` and `experiment_name=`.
        """
        req = invoking.request(
            endpoint_name, deployment=deployment_name, input=kwargs.get("input"), inputs=inputs,
            outputs=kwargs.get("outputs"), params_override=kwargs.get("params_override"),
            job_name=kwargs.get("job_name"), experiment_name=kwargs.get("experiment_name"),
            backend=self._client.backend,
        )
        with self._store() as store:
            job = service.invoke(store, req)
            for notice in job.get("notices") or []:
                log.warning("note: %s", notice)
            service.run_detached(job["name"], store)
            return entities.batch_job(store.get_job(job["name"]))

    @sdk_errors
    def list_jobs(self, endpoint_name: str, **kwargs: Any) -> list[BatchJob]:
        """The endpoint's jobs, newest first."""
        with self._store() as store:
            ep = store.get_endpoint(endpoint_name)
            return [entities.batch_job(rec) for rec in store.list_jobs(endpoint=ep["name"])]
