"""`batch_endpoints.invoke(...)` arguments -> the InvokeRequest the CLI's invoke builds.

Inputs and outputs (`input=Input(...)`, `inputs={...}`, `outputs={...}`) go through the CLI's
`invoke_spec.resolve` (one data input, literal inputs refused); `params_override` entries become the
CLI's `--set` keys, checked against the same table of per-job keys (`service.JOB_SET_KEYS`). An
output given as `output_dataset.datastore_id` + `output_dataset.path` is Azure's datastore output:
`azureml://datastores/<name>/paths/<path>`, which lands in BEPBUILD_HOME/datastores/<name>/<path>.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import SpecError
from ..jobs import invoke_spec, service
from .entities import WORKSPACE_ID

# Azure's datastore URI, which invoke's output path takes (`--output-path azureml://datastores/...`).
DATASTORE_PREFIX = "azureml://datastores/"
# Keys of params_override handled here rather than passed on as `--set` keys.
OUTPUT_KEYS = ("output_dataset.datastore_id", "output_dataset.path")
PER_JOB = sorted({*service.JOB_SET_KEYS, "job_name", *OUTPUT_KEYS})


def flatten(params_override: Iterable[Mapping[str, Any]] | None) -> list[tuple[str, Any]]:
    """[{"a.b": 1}, {"c": {"d": 2}}] -> [("a.b", 1), ("c.d", 2)], in order."""
    out: list[tuple[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out.append((prefix, value))

    for entry in params_override or []:
        if not isinstance(entry, Mapping):
            raise SpecError(f"each entry must be a dict such as {{'mini_batch_size': 20}}, got {entry!r}",
                            field="params_override")
        walk("", entry)
    return out


def datastore_name(value: Any) -> str:
    """The datastore an `output_dataset.datastore_id` names: a resource id, `azureml:` id or plain name."""
    text = str(value).strip()
    text = text[len("azureml:"):] if text.startswith("azureml:") else text
    if "/datastores/" in text:
        text = text.rsplit("/datastores/", 1)[1]
    name = text.strip("/")
    if not name or "/" in name:
        raise SpecError(f"{value!r} names no datastore", field="params_override: output_dataset.datastore_id")
    return name


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)


def overrides(params_override: Iterable[Mapping[str, Any]] | None) -> tuple[list[str], str | None]:
    """(the CLI's `--set` assignments, the output path) of a params_override list."""
    sets: list[str] = []
    datastore: str | None = None
    path: str | None = None
    for key, value in flatten(params_override):
        if key not in PER_JOB:
            raise SpecError(f"{key} cannot be changed per job; one of {', '.join(PER_JOB)}",
                            field="params_override")
        if key == "output_dataset.datastore_id":
            datastore = datastore_name(value)
        elif key == "output_dataset.path":
            path = str(value)
        else:
            sets.append(f"{key}={_scalar(value)}")
    if datastore is None:
        return sets, path  # a plain output_dataset.path is a local folder, as the CLI's --set takes it
    return sets, f"{DATASTORE_PREFIX}{datastore}/paths/{(path or '').strip('/')}"


def asset_path(path: str) -> str:
    """A data asset's resource id (`Input(path=ml_client.data.get(...).id)`, as Azure's notebooks
    pass it) as the CLI's `azureml:NAME:VERSION`; any other path unchanged."""
    body = path[len("azureml:"):] if path.startswith("azureml:") else path
    prefix = f"{WORKSPACE_ID}/data/"
    if body.lower().startswith(prefix.lower()):
        name, sep, version = body[len(prefix):].partition("/versions/")
        if name and sep and version and "/" not in name + version:
            return f"azureml:{name}:{version}"
    return path


def _io(value: Any) -> dict[str, Any]:
    """An Input or Output entity (or a dict) as the CLI's {type, path} entry."""
    if isinstance(value, Mapping):
        return dict(value)
    entry = {"type": getattr(value, "type", None) or "uri_folder", "path": getattr(value, "path", None)}
    if entry["path"] is None and getattr(value, "default", None) is not None:
        entry["value"] = value.default  # a literal input: refused by invoke_spec with its reason
    if entry["path"] is not None:
        entry["path"] = asset_path(str(entry["path"]))
    return entry


def request(endpoint: str, *, deployment: str | None, input: Any, inputs: Mapping[str, Any] | None,
            outputs: Mapping[str, Any] | None, params_override: Iterable[Mapping[str, Any]] | None,
            job_name: str | None, experiment_name: str | None, backend: str) -> service.InvokeRequest:
    """The InvokeRequest of an SDK invoke; SpecError (one line) for what the CLI would refuse."""
    sets, output_path = overrides(params_override)
    given_inputs = {"input": _io(input)} if input is not None else \
        {str(k): _io(v) for k, v in (inputs or {}).items()}
    given_outputs = {str(k): _io(v) for k, v in (outputs or {}).items()} or None
    if output_path is not None and given_outputs:
        raise SpecError("give the output once: outputs=, or output_dataset in params_override", field="outputs")
    io = invoke_spec.resolve(invoke_spec.InvokeIO(None, None, output_path),
                             inputs=json.dumps(given_inputs) if given_inputs else None,
                             outputs=json.dumps(given_outputs) if given_outputs else None)
    return service.InvokeRequest(endpoint=endpoint, input=io.input or "", deployment=deployment,
                                 input_type=io.input_type, output_path=io.output_path, sets=sets, job_name=job_name,
                                 backend=backend, experiment_name=experiment_name)

