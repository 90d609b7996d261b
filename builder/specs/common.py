"""Pieces shared by every spec: the strict base model, names, and `azureml:` references."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict

from ..errors import SpecError

NAME_RE = re.compile(r"[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?")
ASSET_NAME_RE = re.compile(r"[a-zA-Z0-9_][-a-zA-Z0-9_.]{0,254}")
# Azure's REST API gives versions no pattern ("case-sensitive string"); here a version names a folder
# of the registry, so it is held to a conservative rule: no separators, no '.'/'..', no control
# characters, not starting with '-' or '.', at most 64 characters.
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class Spec(BaseModel):
    """Base of every YAML spec: unknown keys are errors, `$schema` is accepted."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, str_strip_whitespace=True)


def check_endpoint_name(name: str, what: str = "endpoint") -> str:
    """Azure's endpoint/deployment name rule: 3-32 chars, letter first, alnum last, '-' inside."""
    if not 3 <= len(name) <= 32:
        raise ValueError(
            f"the name for an {what} must be at least 3 and at most 32 characters long "
            f"(inclusive of both limits), got {name!r}"
        )
    if not NAME_RE.fullmatch(name):
        raise ValueError(
            f"the name for an {what} must start with an upper- or lowercase letter and only consist "
            f"of '-'s and alphanumeric characters, got {name!r}"
        )
    return name


def check_asset_name(name: str) -> str:
    """Names of models, environments, data and computes."""
    if not ASSET_NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid name {name!r}: use letters, digits, '-', '_' and '.', starting with a letter or digit"
        )
    return name


def check_asset_version(version: str) -> str:
    """Versions of models, environments and data (each one becomes a folder name in the registry)."""
    if not VERSION_RE.fullmatch(version):
        raise ValueError(
            f"invalid version {version!r}: use up to 64 letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return version


def _to_str(value: Any) -> Any:
    # YAML turns `version: 1` into an int; Azure versions are strings.
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _str_values(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): ("" if v is None else _to_str(v)) for k, v in value.items()}
    return value


Version = Annotated[str, BeforeValidator(_to_str), AfterValidator(check_asset_version)]
# Integers as YAML writes them: `true` or `10.0` is not a count (pydantic's lax mode would take them).
Int = Annotated[int, Strict()]
PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
StrDict = Annotated[dict[str, str], BeforeValidator(_str_values)]


@dataclass(frozen=True)
class AssetRef:
    """A parsed `azureml:` reference to a registered asset."""

    name: str
    version: str | None = None  # None with label
    label: str | None = None  # e.g. "latest"

    def __str__(self) -> str:
        if self.version is not None:
            return f"azureml:{self.name}:{self.version}"
        return f"azureml:{self.name}@{self.label}"


def parse_ref(text: str, *, allow_bare: bool = False) -> AssetRef:
    """Parse `azureml:name:version`, `azureml:name@label` (and `name:version` when allowed).

    A bare `azureml:name` means the latest version, as the az CLI reads it.
    """
    body = text
    if text.startswith("azureml://"):
        raise SpecError(
            f"{text!r}: registry and workspace URIs are not available locally; "
            "register the asset with bepbuild and use azureml:<name>:<version> or azureml:<name>@latest"
        )
    if text.startswith("azureml:"):
        body = text[len("azureml:"):]
    elif not allow_bare:
        raise SpecError(f"{text!r} is not a reference: expected azureml:<name>:<version> or azureml:<name>@latest")
    if "@" in body:
        name, _, label = body.partition("@")
        if not name or not label:
            raise SpecError(f"{text!r}: expected azureml:<name>@<label>")
        return AssetRef(_checked(name, text), label=label)
    if ":" in body:
        name, _, version = body.partition(":")
        if not name or not version or ":" in version:
            raise SpecError(f"{text!r}: expected azureml:<name>:<version>")
        try:
            check_asset_version(version)
        except ValueError as e:
            raise SpecError(f"{text!r}: {e}") from e
        return AssetRef(_checked(name, text), version=version)
    return AssetRef(_checked(body, text), label="latest")


def _checked(name: str, text: str) -> str:
    try:
        return check_asset_name(name)
    except ValueError as e:
        raise SpecError(f"{text!r}: {e}") from e


def is_ref(value: Any) -> bool:
    """True when a field value is an `azureml:` reference rather than an inline object or path."""
    return isinstance(value, str) and value.startswith("azureml:")
