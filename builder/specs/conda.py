"""Conda environment files (`conda.yaml`): the parts bepbuild needs to plan an install."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator

from .common import Spec

_CONDA_SPEC = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$")


class PipSection(Spec):
    pip: list[str]


class CondaFile(Spec):
    name: str | None = None
    channels: list[str] = Field(default_factory=list)
    dependencies: list[str | PipSection] = Field(default_factory=list)
    variables: dict[str, str] | None = None
    prefix: str | None = None

    @field_validator("dependencies", mode="before")
    @classmethod
    def _deps(cls, v: Any) -> Any:
        if isinstance(v, list):
            # YAML reads `- 3.8` style entries as numbers; conda treats them as strings.
            return [str(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x for x in v]
        return v

    def conda_packages(self) -> list[str]:
        """Conda (non-pip) dependency specs, e.g. ``python=3.8.5``, ``pip<22.0``."""
        return [d for d in self.dependencies if isinstance(d, str)]

    def pip_packages(self) -> list[str]:
        """Requirements from every ``pip:`` section, in order."""
        out: list[str] = []
        for d in self.dependencies:
            if isinstance(d, PipSection):
                out.extend(d.pip)
        return out

    def python_pin(self) -> str | None:
        """The version in a ``python=X.Y[.Z]`` / ``python==X.Y`` / ``python X.Y`` dependency, if any.

        A range (``python>=3.8``, ``python<4``) is not a pin: the base image's Python may satisfy it.
        """
        for spec in self.conda_packages():
            name, rest = split_conda_spec(spec)
            if name == "python" and rest:
                if rest[0] in "<>!~" or any(c in rest for c in ",|"):
                    return None
                return rest.lstrip("= ").split("=")[0].split(" ")[0] or None
        return None


def split_conda_spec(spec: str) -> tuple[str, str]:
    """``numpy>=1.2`` -> (``numpy``, ``>=1.2``); ``python=3.8.5`` -> (``python``, ``=3.8.5``).

    A channel prefix (``conda-forge::numpy``) is dropped.
    """
    spec = spec.split("::", 1)[-1]
    m = _CONDA_SPEC.match(spec)
    if not m:
        return spec.strip(), ""
    return m.group(1).lower(), m.group(2).strip()
