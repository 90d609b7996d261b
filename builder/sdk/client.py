"""`bepbuild.MLClient`: the azure-ai-ml v2 client for batch endpoints, on the local registry and engine.

Code written for Azure runs with the client line changed (`MLClient()` or `MLClient.from_config()`);
credentials, subscription, resource group, workspace and registry are accepted and ignored: there is
one local registry (BEPBUILD_HOME). The entities are the SDK's own classes.
"""

from __future__ import annotations

from typing import Any

from azure.ai.ml.entities import (
    AmlCompute,
    BatchDeployment,
    BatchEndpoint,
    Data,
    Environment,
    Model,
)
from azure.core.polling import LROPoller

from . import entities
from .assets import DataOperations, EnvironmentOperations, ModelOperations
from .batch_deployments import BatchDeploymentOperations
from .batch_endpoints import BatchEndpointOperations
from .compute import ComputeOperations, DatastoreOperations
from .errors import invalid
from .jobs import JobOperations

BACKENDS = ("docker", "process")


class MLClient:
    """The operations of azure.ai.ml.MLClient that batch endpoints use, run locally.

    `backend` (not an Azure argument): where invoked jobs run, `docker` (containers of the
    deployment's image, the default) or `process` (local processes running the deployed code, as
    `invoke --backend process`).
    """

    def __init__(self, credential: Any = None, subscription_id: str | None = None,
                 resource_group_name: str | None = None, workspace_name: str | None = None,
                 registry_name: str | None = None, *, backend: str = "docker", **kwargs: Any) -> None:
        if backend not in BACKENDS:
            raise invalid(f"backend must be docker or process, got {backend!r}")
        self.backend = backend
        # Accepted so that Azure code runs unchanged; nothing to select locally.
        self.subscription_id = subscription_id or entities.SUBSCRIPTION
        self.resource_group_name = resource_group_name or entities.RESOURCE_GROUP
        self.workspace_name = workspace_name or entities.WORKSPACE
        self.batch_endpoints = BatchEndpointOperations(self)
        self.batch_deployments = BatchDeploymentOperations(self)
        self.jobs = JobOperations(self)
        self.models = ModelOperations(self)
        self.environments = EnvironmentOperations(self)
        self.data = DataOperations(self)
        self.compute = ComputeOperations(self)
        self.datastores = DatastoreOperations(self)

    @classmethod
    def from_config(cls, credential: Any = None, *, path: Any = None, file_name: str | None = None,
                    **kwargs: Any) -> MLClient:
        """As MLClient(): no config.json is read (there is one local workspace)."""
        return cls(credential, **kwargs)

    def begin_create_or_update(self, entity: Any, **kwargs: Any) -> LROPoller[Any]:
        """Create or update a BatchEndpoint, a batch deployment or an AmlCompute (by the entity's type)."""
        if isinstance(entity, BatchEndpoint):
            return self.batch_endpoints.begin_create_or_update(entity, **kwargs)
        if isinstance(entity, BatchDeployment):
            return self.batch_deployments.begin_create_or_update(entity, **kwargs)
        if isinstance(entity, AmlCompute):
            return self.compute.begin_create_or_update(entity, **kwargs)
        raise invalid(f"begin_create_or_update takes a BatchEndpoint, ModelBatchDeployment, BatchDeployment or "
                      f"AmlCompute here, got {type(entity).__name__}")

    def create_or_update(self, entity: Any, **kwargs: Any) -> Any:
        """Create or update a Model, Environment or Data asset (by the entity's type)."""
        if isinstance(entity, Model):
            return self.models.create_or_update(entity, **kwargs)
        if isinstance(entity, Environment):
            return self.environments.create_or_update(entity, **kwargs)
        if isinstance(entity, Data):
            return self.data.create_or_update(entity, **kwargs)
        raise invalid(f"create_or_update takes a Model, Environment or Data here, got {type(entity).__name__}")

    def __repr__(self) -> str:
        return f"MLClient(backend={self.backend!r}) on the local bepbuild registry"
