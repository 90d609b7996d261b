"""Azure's REST invoke of a batch endpoint: the request body turned into an InvokeRequest.

    POST <scoring_uri>
    Authorization: Bearer <token>
    azureml-model-deployment: <deployment>        (optional: the endpoint's default otherwise)
    {"properties": {"InputData": {"<name>": {"JobInputType": "UriFolder", "Uri": "<folder>"}},
                    "OutputData": {"<name>": {"JobOutputType": "UriFolder", "Uri": "<folder>"}}}}

Model deployments take one data input and one output; their names are ignored, as Azure does. A
`UriFile` output's Uri names the output file: its folder is the output path and its name the
output_file_name. Every refusal is a UserError naming the field, one line, as the CLI prints it.
"""

from __future__ import annotations

from typing import Any

from ..errors import UserError
from ..jobs.service import InvokeRequest

DEPLOYMENT_HEADER = "azureml-model-deployment"
INPUT_TYPES = {"urifolder": "uri_folder", "urifile": "uri_file"}


def _key(doc: dict[str, Any], name: str) -> Any:
    """doc[name], matching the key's case loosely (Azure's clients send both InputData and inputData)."""
    if name in doc:
        return doc[name]
    for k, v in doc.items():
        if isinstance(k, str) and k.lower() == name.lower():
            return v
    return None


def _one(doc: Any, where: str, what: str) -> dict[str, Any]:
    if not isinstance(doc, dict) or not doc:
        raise UserError(f"request body: {where}: give one {what} as {{\"<name>\": {{...}}}}")
    if len(doc) != 1:
        raise UserError(f"request body: {where}: model deployments take exactly one {what}, got {len(doc)}")
    name, value = next(iter(doc.items()))
    if not isinstance(value, dict):
        raise UserError(f"request body: {where}.{name}: must be an object")
    return value


def _kind(value: Any, where: str) -> str:
    norm = str(value or "").replace("_", "").lower()
    if norm not in INPUT_TYPES:
        raise UserError(f"request body: {where}: Unsupported input type {value!r}: model deployments take "
                        "UriFolder or UriFile")
    return INPUT_TYPES[norm]


def parse(endpoint: str, body: Any, deployment: str | None, backend: str) -> InvokeRequest:
    """The InvokeRequest of a REST invoke (UserError for a body Azure would refuse)."""
    if not isinstance(body, dict):
        raise UserError("request body: must be a JSON object with \"properties\"")
    props = _key(body, "properties")
    if not isinstance(props, dict):
        raise UserError("request body: properties: required, an object with InputData")
    inp = _one(_key(props, "InputData"), "properties.InputData", "input")
    uri = _key(inp, "Uri")
    if not isinstance(uri, str) or not uri.strip():
        raise UserError("request body: properties.InputData: Uri is required (a folder, file, URL or azureml: data)")
    input_type = _kind(_key(inp, "JobInputType"), "properties.InputData.JobInputType")
    req = InvokeRequest(endpoint=endpoint, input=uri, deployment=deployment or None, input_type=input_type,
                        backend=backend)
    outputs = _key(props, "OutputData")
    if outputs:
        out = _one(outputs, "properties.OutputData", "output")
        out_uri = _key(out, "Uri")
        if not isinstance(out_uri, str) or not out_uri.strip():
            raise UserError("request body: properties.OutputData: Uri is required")
        kind = str(_key(out, "JobOutputType") or "UriFolder").replace("_", "").lower()
        if kind == "urifile":
            folder, _, file_name = out_uri.rstrip("/").rpartition("/")
            if not folder or not file_name:
                raise UserError(f"request body: properties.OutputData.Uri: {out_uri!r} names no file")
            req.output_path = folder
            req.sets = [f"output_file_name={file_name}"]
        elif kind == "urifolder":
            req.output_path = out_uri
        else:
            raise UserError(f"request body: properties.OutputData.JobOutputType: {_key(out, 'JobOutputType')!r}: "
                            "UriFolder or UriFile")
    return req
