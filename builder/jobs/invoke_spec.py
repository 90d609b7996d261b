"""The inputs and outputs of an invoke given as az gives them besides --input/--output-path:
`--file inputs.yml` (`inputs:` and `outputs:` mappings), `--inputs JSON` and `--outputs JSON`.

A model deployment takes exactly one data input (uri_folder or uri_file) and writes one output:
input and output names are free and ignored, literal inputs (string, integer, ...) are refused, as
Azure refuses them for model deployments.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import SpecError

DATA_TYPES = ("uri_folder", "uri_file")


@dataclass
class InvokeIO:
    input: str | None = None
    input_type: str | None = None
    output_path: str | None = None


def _mapping(value: Any, what: str, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise SpecError(f"{what} must map names to {{type, path}}", source=source, field=what)
    return value


def _one(entries: dict[str, Any], what: str, source: str, needed: str) -> dict[str, Any] | None:
    for name, entry in entries.items():
        kind = entry.get("type", "uri_folder")
        if kind not in DATA_TYPES:
            raise SpecError(f"{what}.{name}: type {kind!r}: a model deployment takes only uri_folder or uri_file "
                            "data (literal inputs are for pipeline deployments)", source=source)
        if not isinstance(entry.get(needed), str) or not entry[needed]:
            raise SpecError(f"{what}.{name}: {needed} is required", source=source)
    if len(entries) > 1:
        raise SpecError(f"{what}: a model deployment takes exactly one, got {len(entries)} "
                        f"({', '.join(entries)})", source=source)
    return next(iter(entries.values()), None)


def _json(text: str | None, flag: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"not valid JSON: {e.msg} at character {e.pos}", field=flag) from None


def resolve(io: InvokeIO, *, file: Path | None = None, inputs: str | None = None,
            outputs: str | None = None) -> InvokeIO:
    """Merge --file/--inputs/--outputs into the --input/--output-path form; conflicting givens are errors."""
    given_inputs: dict[str, Any] = {}
    given_outputs: dict[str, Any] = {}
    if file is not None:
        try:
            doc = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except OSError as e:
            raise SpecError(f"cannot read it: {e.strerror}", source=str(file)) from None
        except yaml.YAMLError as e:
            raise SpecError(f"invalid YAML: {str(e).splitlines()[0]}", source=str(file)) from None
        if not isinstance(doc, dict) or set(doc) - {"inputs", "outputs", "$schema"}:
            raise SpecError("expected a mapping with inputs: and outputs:", source=str(file))
        given_inputs.update(_mapping(doc.get("inputs"), "inputs", str(file)))
        given_outputs.update(_mapping(doc.get("outputs"), "outputs", str(file)))
    given_inputs.update(_mapping(_json(inputs, "--inputs"), "inputs", "--inputs"))
    given_outputs.update(_mapping(_json(outputs, "--outputs"), "outputs", "--outputs"))
    out = InvokeIO(io.input, io.input_type, io.output_path)
    entry = _one(given_inputs, "inputs", str(file or "--inputs"), "path")
    if entry is not None:
        if io.input is not None:
            raise SpecError("give the input once: --input, or inputs in --file/--inputs", field="--input")
        out.input, out.input_type = entry["path"], entry.get("type", "uri_folder")
    target = _one(given_outputs, "outputs", str(file or "--outputs"), "path")
    if target is not None:
        if io.output_path is not None:
            raise SpecError("give the output once: --output-path, or outputs in --file/--outputs",
                            field="--output-path")
        out.output_path = target["path"]
    if out.input is None:
        raise SpecError("required: --input, or an input in --file/--inputs", field="--input")
    return out
