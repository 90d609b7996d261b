"""`bepbuild data ...`: data assets (local folders/files or http(s) URLs, referenced in place)."""

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

app = new_app("Data assets: named, versioned references to input folders or files.")

NameOpt = Annotated[str, typer.Option("--name", "-n", help="Data asset name.")]
VersionOpt = Annotated[str | None, typer.Option("--version", "-v", help="Version.")]


@app.command("create")
@guarded
def create(
    name: Annotated[str | None, typer.Option("--name", "-n")] = None,
    path: Annotated[str | None, typer.Option("--path", "-p", help="Local folder/file or http(s) URL.")] = None,
    type_: Annotated[str, typer.Option("--type", "-t", help="uri_folder or uri_file.")] = "uri_folder",
    version: VersionOpt = None,
    description: Annotated[str | None, typer.Option("--description", "-d")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="data.yml")] = None,
    set_: SetOpt = None,
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """Register a data asset, usable as --input azureml:NAME@latest."""
    version = checked_version(version)
    if file is not None:
        loaded = specs.load_data(file, sets=set_ or [], name=name)
        spec = loaded.spec
        name, type_ = spec.name, spec.type
        path = str(loaded.paths.get("path", spec.path))
        version = version if version is not None else spec.version
        description = description or spec.description
    if not name:
        raise SpecError("required (or give --file)", field="--name")
    if not path:
        raise SpecError("required (or give --file)", field="--path")
    doc = registry.register_data(store(), name=name, path=path, type=type_, version=version, description=description)
    emit(doc, output, query, "data")



add_read_and_delete(app, "data", "data asset", ' The data itself is not touched.')
add_archive_and_restore(app, "data", "data asset")
add_update(app, "data", "data asset")
refuse(app, "share", 'there are no registries locally')
refuse(app, "import", 'imports from databases and external storage need Azure; register a local folder or an '
       'http(s) URL with bepbuild data create')
refuse(app, "mount", 'data assets are read in place: give the folder (or azureml:NAME@latest) to --input')
refuse(app, "list-materialization-status", 'there are no data imports locally')
