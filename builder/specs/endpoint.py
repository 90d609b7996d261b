"""Batch endpoint YAML (batchEndpoint.schema.json)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .common import Spec, StrDict, check_endpoint_name

# Keys the service fills in; `show -o yaml` prints them, so feeding that back must work.
READ_ONLY_KEYS = ("id", "provisioning_state", "scoring_uri", "openapi_uri", "location", "properties", "identity")


class EndpointDefaults(Spec):
    deployment_name: str | None = None


class BatchEndpoint(Spec):
    schema_: str | None = Field(default=None, alias="$schema")
    name: str
    description: str | None = None
    tags: StrDict = Field(default_factory=dict)
    auth_mode: Literal["aad_token"] = "aad_token"
    defaults: EndpointDefaults = Field(default_factory=EndpointDefaults)

    @model_validator(mode="before")
    @classmethod
    def _drop_read_only(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in READ_ONLY_KEYS}
        return data

    @field_validator("auth_mode", mode="before")
    @classmethod
    def _auth_mode(cls, v: Any) -> Any:
        if isinstance(v, str) and v in ("key", "aml_token"):
            raise ValueError(f"{v!r} is not valid for batch endpoints; only aad_token is")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_endpoint_name(v)
