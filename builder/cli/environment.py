"""`bepbuild environment ...`: registered, versioned environments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import registry
from ..specs import load_environment
from ._common import OutputOpt, QueryOpt, SetOpt, emit, guarded, new_app, store
from ._refused import refuse
from ._versioned import add_archive_and_restore, add_read_and_delete, add_update, checked_version

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
    version = checked_version(version)
    # The flag's value is set after the check, so a value YAML would read as another type stays a string.
    sets = list(set_ or [])
    loaded = load_environment(file, sets=sets, name=name)
    if version is not None:
        loaded.spec.version = version
    emit(registry.register_environment(store(), loaded, loaded.spec), output, query, "environment")



add_read_and_delete(app, "environment", "environment")
add_archive_and_restore(app, "environment", "environment")
add_update(app, "environment", "environment")
refuse(app, "share", 'there are no registries locally: deployments that name the environment share its image')
