"""Batch deployment YAML: `type: model` with `settings:`, and the legacy flat layout."""

from __future__ import annotations

import warnings
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from bepbuild_runtime import layout
from bepbuild_runtime.settings import DEFAULTS

from ..errors import SpecError
from .assets import EnvironmentSpec
from .common import (
    Int,
    NonNegativeInt,
    PositiveInt,
    Spec,
    StrDict,
    Version,
    check_asset_name,
    check_endpoint_name,
    parse_ref,
)

# Keys that the legacy layout (no `type`) keeps at the top level and `type: model` puts in settings.
FLAT_SETTINGS = (
    "max_concurrency_per_instance",
    "mini_batch_size",
    "output_action",
    "output_file_name",
    "retry_settings",
    "error_threshold",
    "logging_level",
    "environment_variables",
)

DEFAULT_OUTPUT_FILE = DEFAULTS.output_file_name


class SpecWarning(UserWarning):
    """A spec is accepted, but something in it deserves the user's attention."""


class InlineModel(Spec):
    name: str | None = None
    version: Version | None = None
    description: str | None = None
    tags: StrDict = Field(default_factory=dict)
    path: str
    type: Literal["custom_model", "mlflow_model", "triton_model"] = "custom_model"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return None if v is None else check_asset_name(v)


class CodeConfiguration(Spec):
    code: str
    scoring_script: str

    @field_validator("scoring_script")
    @classmethod
    def _script(cls, v: str) -> str:
        # The name lands in an ENV line of the image's Dockerfile, where a line break would end
        # the instruction and start another one.
        bad = next((c for c in v if ord(c) < 0x20 or ord(c) == 0x7F), None)
        if bad is not None:
            raise ValueError(f"must not contain control characters (here {bad!r}), got {v!r}")
        return v


# Defaults are the runtime's (bepbuild_runtime.settings): the one definition of each setting.
class RetrySettings(Spec):
    max_retries: NonNegativeInt = DEFAULTS.max_retries
    timeout: PositiveInt = int(DEFAULTS.timeout)


class Resources(Spec):
    instance_count: PositiveInt = 1
    instance_type: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    shm_size: str | None = None
    docker_args: str | None = None


class Settings(Spec):
    max_concurrency_per_instance: PositiveInt = DEFAULTS.max_concurrency_per_instance
    mini_batch_size: PositiveInt = DEFAULTS.mini_batch_size
    output_action: Literal["append_row", "summary_only"] = DEFAULTS.output_action  # type: ignore[assignment]
    output_file_name: str | None = None
    retry_settings: RetrySettings = Field(default_factory=RetrySettings)
    error_threshold: Int = Field(default=DEFAULTS.error_threshold, ge=-1)
    logging_level: Literal["warning", "info", "debug"] = DEFAULTS.logging_level  # type: ignore[assignment]
    environment_variables: StrDict = Field(default_factory=dict)
    instance_count: PositiveInt | None = None  # SDK only: copied into resources.instance_count

    @field_validator("logging_level", "output_action", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        # REST spells these AppendRow/SummaryOnly and INFO; YAML uses snake_case.
        if isinstance(v, str):
            return {"appendrow": "append_row", "summaryonly": "summary_only"}.get(v.lower(), v.lower())
        return v

    @field_validator("output_file_name", mode="before")
    @classmethod
    def _file_name_chars(cls, v: Any) -> Any:
        # Checked before whitespace is stripped: a line break or NUL is refused wherever it is.
        if isinstance(v, str):
            bad = next((c for c in v if ord(c) < 0x20 or ord(c) == 0x7F), None)
            if bad is not None:
                raise ValueError(f"must be a plain file name without control characters (here {bad!r}), got {v!r}")
        return v

    @field_validator("output_file_name")
    @classmethod
    def _file_name(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v or "/" in v or "\\" in v or v in (".", ".."):
            raise ValueError(f"must be a plain file name, got {v!r}")
        size = len(v.encode("utf-8", "surrogateescape"))
        if size > layout.MAX_OUTPUT_FILE_NAME:  # the merge writes .<name>.merging-<token> beside it first
            raise ValueError(f"must be at most {layout.MAX_OUTPUT_FILE_NAME} bytes (room for the merge's temporary "
                             f"file name beside it), got {size}")
        return v

    @model_validator(mode="after")
    def _output(self) -> Settings:
        if self.output_action == "summary_only":
            if self.output_file_name is not None:
                raise ValueError(
                    "When output_action is set to summary_only, the output_file_name need not to be specified."
                )
        elif self.output_file_name is None:
            self.output_file_name = DEFAULT_OUTPUT_FILE
        return self


class BatchDeployment(Spec):
    schema_: str | None = Field(default=None, alias="$schema")
    name: str
    endpoint_name: str
    description: str | None = None
    tags: StrDict = Field(default_factory=dict)
    properties: StrDict = Field(default_factory=dict)
    type: Literal["model"] = "model"
    model: str | InlineModel | None = None
    code_configuration: CodeConfiguration | None = None
    environment: str | EnvironmentSpec | None = None
    compute: str | None = None
    resources: Resources = Field(default_factory=Resources)
    settings: Settings = Field(default_factory=Settings)

    @model_validator(mode="before")
    @classmethod
    def _layout(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("type") == "pipeline":
            raise ValueError("pipeline deployments (type: pipeline) are not supported; use type: model")
        flat = [k for k in FLAT_SETTINGS if k in data]
        if flat and data.get("type") is not None:
            raise ValueError(
                f"{flat[0]} belongs under settings: when type is given (the flat layout is the legacy one)"
            )
        if flat:
            settings = dict(data.get("settings") or {}) if isinstance(data.get("settings"), dict) else {}
            if settings:
                warnings.warn(
                    "the file mixes the legacy flat layout and settings:; settings: wins where both are given",
                    SpecWarning,
                    stacklevel=2,
                )
            for key in flat:
                settings.setdefault(key, data.pop(key))
            data["settings"] = settings
        from ..mlflow_models import conda_only_environment  # (imports the specs: not at module level)

        data = conda_only_environment(data)
        if "instance_count" in data:
            if "resources" in data:
                raise ValueError("Can't set instance_count when resources is provided.")
            data["resources"] = {"instance_count": data.pop("instance_count")}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_endpoint_name(v, "deployment")

    @field_validator("endpoint_name")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        # The SDK lowercases endpoint_name in deployments.
        return check_endpoint_name(v.lower())

    @field_validator("model", "environment")
    @classmethod
    def _ref(cls, v: Any) -> Any:
        # A string is a registered-asset reference; refuse registry URIs and plain strings here,
        # not later when the deployment is built.
        if isinstance(v, str):
            try:
                parse_ref(v)
            except SpecError as e:
                raise ValueError(e.message) from None
        return v

    @field_validator("compute")
    @classmethod
    def _compute(cls, v: str | None) -> str | None:
        if v is None:
            return v
        name = v[len("azureml:"):] if v.startswith("azureml:") else v
        return check_asset_name(name)

    @model_validator(mode="after")
    def _settings_instance_count(self) -> BatchDeployment:
        if self.settings.instance_count is not None:
            if "instance_count" in self.resources.model_fields_set:
                raise ValueError("Can't set settings.instance_count when resources.instance_count is given.")
            self.resources.instance_count = self.settings.instance_count
            self.settings.instance_count = None
        return self
