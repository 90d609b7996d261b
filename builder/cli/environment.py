"""`bepbuild environment ...`: registered, versioned environments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import registry
from ..specs import load_environment
from ._common import OutputOpt, QueryOpt, SetOpt, emit, guarded, new_app, store
from ._versioned import add_archive_and_restore, add_read_and_delete

app = new_app("Environments: a base image plus a conda file, or a Docker build context.")

NameOpt = Annotated[str, typer.Option("--name", "-n", help="Environment name.")]
VersionOpt = Annotated[str | None, typer.Option("--version", "-v", help="Version.")]


@app.command("create")
@guarded
def create(
    file: Annotated[Path, typer.Option("--file", "-f", help="environment.yml")],
    name: Annotated[str | None, typer.Option("--name", "-n", help="Name (overrides the file's).")] = None,
    version: VersionOpt = None,
    set_: SetOpt = None,
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """Register an environment from its YAML file."""
    sets = list(set_ or []) + ([f"version={version}"] if version else [])
    loaded = load_environment(file, sets=sets, name=name)
    emit(registry.register_environment(store(), loaded, loaded.spec), output, query, "environment")



add_read_and_delete(app, "environment", "environment")
add_archive_and_restore(app, "environment", "environment")
