"""Load spec files: YAML -> overrides -> pydantic -> file checks, paths relative to the YAML's folder."""

from __future__ import annotations

import ast
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from ..errors import SpecError
from ..hashing import walk_files
from . import overrides as _overrides
from .assets import ComputeSpec, DataSpec, EnvironmentSpec, ModelSpec
from .conda import CondaFile
from .deployment import BatchDeployment, InlineModel, SpecWarning
from .endpoint import BatchEndpoint
from .loader import Located, display_name, load_yaml, validate

T = TypeVar("T", bound=BaseModel)


@dataclass
class Loaded(Generic[T]):
    """A validated spec, where it came from, and its local paths resolved to absolute ones."""

    spec: T
    file: Path | None
    source: str
    paths: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    conda: CondaFile | None = None

    @property
    def base_dir(self) -> Path:
        return self.file.parent if self.file else Path.cwd()


def _load(
    model: type[T], path: str | Path, sets: Iterable[str], forced: dict[str, Any], what: str
) -> tuple[T, Located, list[str]]:
    doc = load_yaml(path, what=what)
    data = _overrides.apply(doc.data, list(sets))
    for key, value in forced.items():
        if value is not None:
            data[key] = value
    doc = Located(data, doc.lines, doc.source)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SpecWarning)
        spec = validate(model, doc)
    notes = [f"{doc.source}: {w.message}" for w in caught if issubclass(w.category, SpecWarning)]
    return spec, doc, notes


def _must_exist(base: Path, rel: str, doc: Located, loc: tuple[str, ...], *, folder: bool | None) -> Path:
    p = (base / rel).resolve()
    field_name = ".".join(loc)
    if not p.exists():
        raise SpecError(f"path not found: {rel}", source=doc.where(loc), field=field_name)
    if folder is True and not p.is_dir():
        raise SpecError(f"must be a folder: {rel}", source=doc.where(loc), field=field_name)
    if folder is False and not p.is_file():
        raise SpecError(f"must be a file: {rel}", source=doc.where(loc), field=field_name)
    return p


def _regular_only(path: Path, doc: Located, loc: tuple[str, ...], what: str) -> None:
    # The image gets a copy of the folder: it must not depend on what a link points to, and reading a
    # named pipe or a device could block or never end. Refused here, before anything is registered.
    try:
        walk_files(path)
    except ValueError as e:
        raise SpecError(f"{e}; the {what} folder may hold only regular files and folders",
                        source=doc.where(loc), field=".".join(loc)) from None


def load_endpoint(path: str | Path, *, sets: Iterable[str] = (), name: str | None = None) -> Loaded[BatchEndpoint]:
    """An endpoint YAML; `name` (the CLI's --name) wins over the file's."""
    spec, doc, notes = _load(BatchEndpoint, path, sets, {"name": name}, "endpoint file")
    return Loaded(spec, Path(path).resolve(), doc.source, warnings=notes)


def load_model(path: str | Path, *, sets: Iterable[str] = (), name: str | None = None) -> Loaded[ModelSpec]:
    spec, doc, notes = _load(ModelSpec, path, sets, {"name": name}, "model file")
    base = Path(path).resolve().parent
    loaded = Loaded(spec, Path(path).resolve(), doc.source, warnings=notes)
    loaded.paths["path"] = _must_exist(base, spec.path, doc, ("path",), folder=None)
    if spec.name is None:
        raise SpecError("required", source=doc.source, field="name")
    return loaded


def load_environment(
    path: str | Path, *, sets: Iterable[str] = (), name: str | None = None
) -> Loaded[EnvironmentSpec]:
    spec, doc, notes = _load(EnvironmentSpec, path, sets, {"name": name}, "environment file")
    loaded = Loaded(spec, Path(path).resolve(), doc.source, warnings=notes)
    _check_environment(spec, Path(path).resolve().parent, doc, (), loaded)
    if spec.name is None:
        raise SpecError("required", source=doc.source, field="name")
    return loaded


def load_data(path: str | Path, *, sets: Iterable[str] = (), name: str | None = None) -> Loaded[DataSpec]:
    spec, doc, notes = _load(DataSpec, path, sets, {"name": name}, "data file")
    loaded = Loaded(spec, Path(path).resolve(), doc.source, warnings=notes)
    if "://" not in spec.path:
        folder = spec.type == "uri_folder"
        loaded.paths["path"] = _must_exist(Path(path).resolve().parent, spec.path, doc, ("path",), folder=folder)
    return loaded


def load_compute(path: str | Path, *, sets: Iterable[str] = (), name: str | None = None) -> Loaded[ComputeSpec]:
    spec, doc, notes = _load(ComputeSpec, path, sets, {"name": name}, "compute file")
    return Loaded(spec, Path(path).resolve(), doc.source, warnings=notes)


def load_conda(path: str | Path) -> CondaFile:
    """A conda environment file."""
    return validate(CondaFile, load_yaml(path, what="conda file"))


def load_deployment(
    path: str | Path,
    *,
    sets: Iterable[str] = (),
    name: str | None = None,
    endpoint_name: str | None = None,
    skip_script_validation: bool = False,
) -> Loaded[BatchDeployment]:
    """A deployment YAML with every local path checked and the scoring script parsed."""
    spec, doc, notes = _load(
        BatchDeployment, path, sets, {"name": name, "endpoint_name": endpoint_name}, "deployment file"
    )
    base = Path(path).resolve().parent
    loaded = Loaded(spec, Path(path).resolve(), doc.source, warnings=notes)
    if spec.model is None:
        raise SpecError("required", source=doc.source, field="model")
    if isinstance(spec.model, InlineModel):
        loaded.paths["model.path"] = _must_exist(base, spec.model.path, doc, ("model", "path"), folder=None)
        _regular_only(loaded.paths["model.path"], doc, ("model", "path"), "model")
    is_mlflow = isinstance(spec.model, InlineModel) and spec.model.type == "mlflow_model"
    cc = spec.code_configuration
    if cc is not None:
        if cc.code.startswith("azureml:"):
            raise SpecError(
                "code assets are not supported; give a local folder",
                source=doc.where(("code_configuration", "code")),
                field="code_configuration.code",
            )
        code = _must_exist(base, cc.code, doc, ("code_configuration", "code"), folder=True)
        script = _must_exist(code, cc.scoring_script, doc, ("code_configuration", "scoring_script"), folder=False)
        if code not in script.parents:
            raise SpecError(
                "must be inside the code folder",
                source=doc.where(("code_configuration", "scoring_script")),
                field="code_configuration.scoring_script",
            )
        _regular_only(code, doc, ("code_configuration", "code"), "code")
        loaded.paths["code"] = code
        loaded.paths["scoring_script"] = script
        if not skip_script_validation:
            check_script_syntax(spec.name, script)
    elif isinstance(spec.model, InlineModel) and not is_mlflow:
        raise SpecError(
            "required unless the model is an MLflow model", source=doc.source, field="code_configuration"
        )
    if isinstance(spec.environment, EnvironmentSpec):
        _check_environment(spec.environment, base, doc, ("environment",), loaded)
    elif spec.environment is None and isinstance(spec.model, InlineModel) and not is_mlflow:
        raise SpecError("required unless the model is an MLflow model", source=doc.source, field="environment")
    elif spec.environment is None and is_mlflow and cc is not None:
        raise SpecError(
            "required when a scoring script is given for an MLflow model", source=doc.source, field="environment"
        )
    return loaded


def _check_environment(
    env: EnvironmentSpec, base: Path, doc: Located, loc: tuple[str, ...], loaded: Loaded[Any]
) -> None:
    prefix = ".".join(loc) + "." if loc else ""
    if isinstance(env.conda_file, str):
        conda_path = _must_exist(base, env.conda_file, doc, loc + ("conda_file",), folder=False)
        loaded.paths[prefix + "conda_file"] = conda_path
        loaded.conda = load_conda(conda_path)
    elif isinstance(env.conda_file, dict):
        loaded.conda = validate(CondaFile, Located(env.conda_file, {}, doc.where(loc + ("conda_file",))))
    if env.build is not None:
        ctx = _must_exist(base, env.build.path, doc, loc + ("build", "path"), folder=True)
        _must_exist(ctx, env.build.dockerfile_path, doc, loc + ("build", "dockerfile_path"), folder=False)
        loaded.paths[prefix + "build.path"] = ctx


def check_script_syntax(deployment: str, script: Path) -> None:
    """Reject a scoring script that does not parse, with az's wording."""
    source = script.read_bytes()
    nul = source.find(b"\0")
    if nul >= 0:  # the parser reports these without a line (or as a ValueError, by Python version)
        line = source.count(b"\n", 0, nul) + 1
        raise SpecError(
            f"Failed to submit deployment {deployment}: scoring script {display_name(script)} contains a NUL byte "
            f"on line {line} (is it a binary file?) (use --skip-script-validation to skip this check)"
        )
    try:
        ast.parse(source, filename=str(script))
    except SyntaxError as e:
        where = f"Error on line {e.lineno}" if e.lineno is not None else "Error"
        raise SpecError(
            f"Failed to submit deployment {deployment} due to syntax errors in scoring script "
            f"{display_name(script)}. {where}: {e.msg} "
            "(use --skip-script-validation to skip this check)"
        ) from e
    except ValueError as e:
        raise SpecError(f"scoring script {display_name(script)} is not valid Python: {e}") from e




def detect_kind(path: str | Path) -> str:
    """Guess what a YAML file describes, from its $schema or its keys."""
    data = load_yaml(path).data
    schema = str(data.get("$schema", "")).lower()
    for marker, kind in (
        ("batchendpoint", "endpoint"),
        ("batchdeployment", "deployment"),
        ("amlcompute", "compute"),
        ("environment", "environment"),
        ("model", "model"),
        ("data", "data"),
    ):
        if marker in schema:
            return kind
    if "endpoint_name" in data:
        return "deployment"
    if "dependencies" in data or "channels" in data:
        return "conda"
    if "image" in data or "build" in data:
        return "environment"
    if "path" in data:
        return "data" if str(data.get("type", "")).startswith("uri_") else "model"
    if "max_instances" in data or data.get("type") == "amlcompute":
        return "compute"
    return "endpoint"


def load_any(path: str | Path, kind: str | None = None, **kwargs: Any) -> Loaded[Any]:
    """Load a file of the given (or detected) kind."""
    kind = kind or detect_kind(path)
    if kind == "conda":
        conda = load_conda(path)
        return Loaded(conda, Path(path).resolve(), display_name(Path(path)))
    loader = {
        "endpoint": load_endpoint,
        "deployment": load_deployment,
        "model": load_model,
        "environment": load_environment,
        "data": load_data,
        "compute": load_compute,
    }[kind]
    return loader(path, **kwargs)
