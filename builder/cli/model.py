"""`bepbuild model ...`: registered, versioned models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import SpecError
from ._common import OutputOpt, QueryOpt, SetOpt, emit, guarded, new_app, store
from ._lazy import module
from ._refused import refuse
from ._versioned import add_archive_and_restore, add_read_and_delete, add_update, checked_version

registry = module("bepbuild.registry")
specs = module("bepbuild.specs")

app = new_app("Models: versioned copies of a model file or folder.")

NameOpt = Annotated[str, typer.Option("--name", "-n", help="Model name.")]
VersionOpt = Annotated[str | None, typer.Option("--version", "-v", help="Version (default: the next number).")]
LabelOpt = Annotated[str | None, typer.Option("--label", "-l", help="Label, e.g. latest.")]


@app.command("create")
@guarded
def create(
    name: Annotated[str | None, typer.Option("--name", "-n", help="Model name.")] = None,
    path: Annotated[Path | None, typer.Option("--path", "-p", help="Model file or folder.")] = None,
    type_: Annotated[str, typer.Option("--type", help="custom_model, mlflow_model or triton_model.")] = "custom_model",
    version: VersionOpt = None,
    description: Annotated[str | None, typer.Option("--description", "-d")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="model.yml")] = None,
    set_: SetOpt = None,
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """Register a model: the file or folder is copied into the registry as a new version."""
    tags: dict[str, str] = {}
    version = checked_version(version)
    if file is not None:
        loaded = specs.load_model(file, sets=set_ or [], name=name)
        spec = loaded.spec
        assert spec.name
        name, src, type_ = spec.name, loaded.paths["path"], spec.type
        version = version if version is not None else spec.version
        description = description or spec.description
        tags = spec.tags
    else:
        if not name:
            raise SpecError("required (or give --file)", field="--name")
        if path is None:
            raise SpecError("required (or give --file)", field="--path")
        if type_ not in ("custom_model", "mlflow_model", "triton_model"):
            raise SpecError(f"must be custom_model, mlflow_model or triton_model, got {type_!r}", field="--type")
        src = path.resolve()
    doc = registry.register_model(
        store(), name=name, path=src, type=type_, version=version, description=description, tags=tags
    )
    emit(doc, output, query, "model")



@app.command("download")
@guarded
def download(
    name: NameOpt,
    version: Annotated[str | None, typer.Option("--version", "-v", help="Version (default: --label latest).")] = None,
    label: LabelOpt = None,
    download_path: Annotated[Path, typer.Option("--download-path", "-p", help="Folder to download into.")] = Path("."),
) -> None:
    """Copy a registered model to DOWNLOAD_PATH/NAME/ (never overwriting)."""
    typer.echo(str(registry.download_model(store(), name, version, label, download_path)))


add_read_and_delete(app, "model", "model")
add_archive_and_restore(app, "model", "model")
add_update(app, "model", "model")
refuse(app, "share", 'there are no registries locally: a model is shared by copying it (bepbuild model '
       "download) or by pushing the deployment's image")
refuse(app, "package", "model packages are for online endpoints; a batch deployment's image is its package "
       '(bepbuild build, bepbuild push)')
