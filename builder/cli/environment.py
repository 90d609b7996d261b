"""`bepbuild environment ...`: registered, versioned environments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UserError
from ..output import human_size
from ._common import OutputOpt, QueryOpt, SetOpt, YesOpt, confirm, emit, guarded, new_app, note, store
from ._lazy import module
from ._refused import refuse
from ._versioned import add_archive_and_restore, add_read_and_delete, add_update, checked_version, list_versions

env_inventory = module("bepbuild.env_inventory")
registry = module("bepbuild.registry")
specs = module("bepbuild.specs")

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
    loaded = specs.load_environment(file, sets=sets, name=name)
    if version is not None:
        loaded.spec.version = version
    emit(registry.register_environment(store(), loaded, loaded.spec), output, query, "environment")



@app.command("list")
@guarded
def list_(
    name: Annotated[str | None, typer.Option("--name", "-n", help="List the versions of this environment.")] = None,
    include_archived: Annotated[bool, typer.Option("--include-archived", help="Archived ones too.")] = False,
    archived_only: Annotated[bool, typer.Option("--archived-only", help="Only archived ones.")] = False,
    max_results: Annotated[int | None, typer.Option("--max-results", "-r")] = None,
    images: Annotated[bool, typer.Option(
        "--images", help="The built environment images instead: size, packages, how many deployments use each.")
    ] = False,
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """List environments (latest version of each), or every version of one; --images: the built environment images."""
    if images:
        rows = env_inventory.list_images(store())
        emit([r | {"size": human_size(r["size"]), "environment_size": human_size(r["environment_size"])}
              if output == "table" else r for r in rows], output, query, "environment-image")
        return
    emit(list_versions("environment", name, include_archived, archived_only, max_results), output, query,
         "environment")


@app.command("prune")
@guarded
def prune(
    min_age: Annotated[float | None, typer.Option(
        "--min-age", help="Minutes: younger images are kept (a deploy running now may be about to use one); "
        "default 10.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")] = False,
    yes: YesOpt = False,
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """Remove the environment images no deployment uses, and dangling deployment images bepbuild made.

    Only images bepbuild labelled are considered; an image a job may still run, or a container uses, stays.
    """
    if min_age is None:
        min_age = env_inventory.DEFAULT_MIN_AGE / 60
    if min_age < 0:
        raise UserError(f"must be 0 or more minutes, got {min_age:g}", field="--min-age")
    if not dry_run:
        confirm(yes, "Remove the environment images no deployment uses and dangling deployment images?")
    result = env_inventory.prune(store(), min_age=min_age * 60, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    note(f"{verb} {len(result['environment_images'])} environment image(s) and {len(result['deployment_images'])} "
         f"dangling deployment image(s) ({human_size(result['bytes'])}); kept {len(result['kept'])}")
    emit(result, output, query)


add_read_and_delete(app, "environment", "environment", with_list=False)
add_archive_and_restore(app, "environment", "environment")
add_update(app, "environment", "environment")
refuse(app, "share", 'there are no registries locally: deployments that name the environment share its image')
