"""`bepbuild environment ...`: registered, versioned environments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import registry
from ..specs import load_environment
from ._common import OutputOpt, QueryOpt, SetOpt, YesOpt, confirm, emit, guarded, new_app, note, store

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
    emit(registry.register_environment(store(), loaded, loaded.spec), output, query)


@app.command("show")
@guarded
def show(
    name: NameOpt,
    version: VersionOpt = None,
    label: Annotated[str | None, typer.Option("--label", "-l")] = None,
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """Show one version (default: latest)."""
    emit(store().get_version("environment", name, version, label), output, query)


@app.command("list")
@guarded
def list_(
    name: Annotated[str | None, typer.Option("--name", "-n")] = None, output: OutputOpt = "json", query: QueryOpt = None
) -> None:
    """List environments, or every version of one."""
    emit(store().list_assets("environment", name), output, query)


@app.command("delete")
@guarded
def delete(name: NameOpt, version: VersionOpt = None, yes: YesOpt = False) -> None:
    """Delete one version, or all versions."""
    store().list_assets("environment", name)
    confirm(yes, f"Delete environment {name}?")
    gone = store().delete_version("environment", name, version)
    note(f"deleted {len(gone)} version(s) of environment {name}")
