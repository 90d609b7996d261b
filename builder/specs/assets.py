"""Model, environment, data and compute asset YAMLs."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .common import Int, PositiveInt, Spec, StrDict, Version, check_asset_name

MODEL_TYPES = ("custom_model", "mlflow_model", "triton_model")


class ModelSpec(Spec):
    schema_: str | None = Field(default=None, alias="$schema")
    name: str | None = None
    version: Version | None = None
    description: str | None = None
    tags: StrDict = Field(default_factory=dict)
    properties: StrDict = Field(default_factory=dict)
    path: str
    type: Literal["custom_model", "mlflow_model", "triton_model"] = "custom_model"
    flavors: dict[str, Any] | None = None
    stage: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return None if v is None else check_asset_name(v)


class BuildContext(Spec):
    path: str
    dockerfile_path: str = "Dockerfile"


class EnvironmentSpec(Spec):
    schema_: str | None = Field(default=None, alias="$schema")
    name: str | None = None
    version: Version | None = None
    description: str | None = None
    tags: StrDict = Field(default_factory=dict)
    image: str | None = None
    conda_file: str | dict[str, Any] | None = None
    build: BuildContext | None = None
    os_type: Literal["linux", "windows"] = "linux"
    inference_config: dict[str, Any] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return None if v is None else check_asset_name(v)

    @model_validator(mode="after")
    def _one_source(self) -> EnvironmentSpec:
        if self.image and self.build:
            raise ValueError("give either image or build, not both")
        if not self.image and not self.build:
            raise ValueError("one of image or build is required")
        if self.conda_file is not None and not self.image:
            raise ValueError("conda_file needs image (conda is layered on an image)")
        if self.os_type == "windows":
            raise ValueError("os_type windows is not supported: bepbuild builds Linux images")
        return self


class DataSpec(Spec):
    schema_: str | None = Field(default=None, alias="$schema")
    name: str
    version: Version | None = None
    description: str | None = None
    tags: StrDict = Field(default_factory=dict)
    type: Literal["uri_folder", "uri_file"] = "uri_folder"
    path: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_asset_name(v)


# A registry repository images are pushed to: HOST[:PORT]/REPO[/...] (lower case, as Docker wants it).
_REGISTRY = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)+")
_DOCKER_HOST = re.compile(r"(unix|tcp|ssh|npipe)://\S+")
_CONSTRAINT = re.compile(r"[A-Za-z0-9_.-]+(\.[A-Za-z0-9_.-]+)*\s*(==|!=)\s*\S+")
SWARM_ONLY = ("shared_path", "registry", "docker_host", "constraints")


class ComputeSpec(Spec):
    """A compute: `amlcompute`, a resource profile for instances on this machine's engine, or
    `swarm`, a Docker Swarm cluster whose nodes all mount `shared_path` (docs/cluster.md)."""

    schema_: str | None = Field(default=None, alias="$schema")
    name: str
    type: Literal["amlcompute", "swarm"] = "amlcompute"
    description: str | None = None
    tags: StrDict = Field(default_factory=dict)
    size: str | None = None
    min_instances: Int = Field(default=0, ge=0)
    max_instances: PositiveInt = 1
    idle_time_before_scale_down: int | None = None
    tier: str | None = None
    location: str | None = None
    # Local limits per instance (container): CPUs, memory ("4g"), GPUs.
    cpus: float | None = Field(default=None, gt=0)
    memory: str | None = None
    gpus: Int = Field(default=0, ge=0)
    # swarm: the folder every node and the invoking machine mount at this same path; the registry
    # images are pushed to (none: a one-node swarm runs the local image); the manager to talk to
    # (none: this machine's engine); placement constraints of the tasks (node.labels.gpu==true).
    shared_path: str | None = None
    registry: str | None = None
    docker_host: str | None = None
    constraints: list[str] = Field(default_factory=list)

    @field_validator("shared_path")
    @classmethod
    def _shared_path(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(f"must be an absolute path (the same on every node), got {v!r}")
        return v.rstrip("/") or "/" if v is not None else v

    @field_validator("registry")
    @classmethod
    def _registry(cls, v: str | None) -> str | None:
        if v is not None and not _REGISTRY.fullmatch(v):
            raise ValueError(f"must be HOST[:PORT]/REPO (lower case), e.g. registry.example.com:5000/bepbuild, "
                             f"got {v!r}")
        return v

    @field_validator("docker_host")
    @classmethod
    def _docker_host(cls, v: str | None) -> str | None:
        if v is not None and not _DOCKER_HOST.fullmatch(v):
            raise ValueError(f"must be a Docker host URL (tcp://HOST:2376, ssh://USER@HOST, unix:///PATH), got {v!r}")
        return v

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, v: list[str]) -> list[str]:
        for c in v:
            if not _CONSTRAINT.fullmatch(c.strip()):
                raise ValueError(f"must be a Swarm placement constraint such as node.labels.gpu==true, got {c!r}")
        return [c.strip() for c in v]

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_asset_name(v)

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | None) -> str | None:
        if v is None:
            return v
        import re

        if not re.fullmatch(r"\d+(\.\d+)?[bkmgBKMG]?", v):
            raise ValueError(f"must be a size such as 512m or 4g, got {v!r}")
        return v.lower()

    @model_validator(mode="after")
    def _range(self) -> ComputeSpec:
        if self.min_instances > self.max_instances:
            raise ValueError(
                f"min_instances ({self.min_instances}) is larger than max_instances ({self.max_instances})"
            )
        if self.type == "swarm" and not self.shared_path:
            raise ValueError("a swarm compute needs shared_path: a folder mounted at the same path on every node "
                             "and on this machine")
        if self.type != "swarm":
            given = [k for k in SWARM_ONLY if getattr(self, k)]
            if given:
                raise ValueError(f"{', '.join(given)}: only for type swarm")
        return self
