"""Model, environment, data and compute asset YAMLs."""

from __future__ import annotations

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


class ComputeSpec(Spec):
    """A local resource profile standing in for an AmlCompute cluster."""

    schema_: str | None = Field(default=None, alias="$schema")
    name: str
    type: Literal["amlcompute"] = "amlcompute"
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
        return self
