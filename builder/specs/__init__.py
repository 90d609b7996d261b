"""Pydantic v2 models of the Azure ML batch YAML files, and their loading."""

from .assets import ComputeSpec, DataSpec, EnvironmentSpec, ModelSpec
from .common import AssetRef, parse_ref
from .conda import CondaFile
from .deployment import BatchDeployment, InlineModel, Settings
from .endpoint import BatchEndpoint
from .files import (
    Loaded,
    detect_kind,
    load_any,
    load_compute,
    load_conda,
    load_data,
    load_deployment,
    load_endpoint,
    load_environment,
    load_model,
)

__all__ = [
    "AssetRef",
    "BatchDeployment",
    "BatchEndpoint",
    "ComputeSpec",
    "CondaFile",
    "DataSpec",
    "EnvironmentSpec",
    "InlineModel",
    "Loaded",
    "ModelSpec",
    "Settings",
    "detect_kind",
    "load_any",
    "load_compute",
    "load_conda",
    "load_data",
    "load_deployment",
    "load_endpoint",
    "load_environment",
    "load_model",
    "parse_ref",
]
