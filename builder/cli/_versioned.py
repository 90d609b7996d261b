"""show / list / delete for versioned assets (model, environment, data): one definition for all three."""

# No `from __future__ import annotations` here: typer must see these locally built option types.

from typing import Annotated

import typer

from ..errors import SpecError
from ._common import OutputOpt, QueryOpt, YesOpt, confirm, emit, guarded, note, store
from ._lazy import module


def checked_version(version: str | None) -> str | None:
    """A `--version` flag's value, held to the rule of versions in files (it names a registry folder)."""
    if version is None:
        return None
    try:
        return module("bepbuild.specs.common").check_asset_version(version)
    except ValueError as e:
        raise SpecError(str(e), field="--version") from None


def list_versions(kind: str, name: str | None, include_archived: bool, archived_only: bool,
                  max_results: int | None) -> list[dict]:
    """What `list` shows of registered assets of `kind`: the latest version of each, or every version of one."""
    which = "only" if archived_only else "include" if include_archived else "exclude"
    found = store().list_assets(kind, name, archived=which)
    return found[:max_results] if max_results else found


def add_read_and_delete(app: typer.Typer, kind: str, noun: str, after_delete: str = "", *,
                        with_list: bool = True) -> None:
    """Register `show`, `list` (unless the resource defines its own) and `delete` for registered assets of `kind`."""
    name_opt = Annotated[str, typer.Option("--name", "-n", help=f"{noun.capitalize()} name.")]
    version_opt = Annotated[str | None, typer.Option("--version", "-v", help="Version.")]

    @app.command("show")
    @guarded
    def show(
        name: name_opt,
        version: version_opt = None,
        label: Annotated[str | None, typer.Option("--label", "-l", help="Label, e.g. latest.")] = None,
        output: OutputOpt = "json",
        query: QueryOpt = None,
    ) -> None:
        emit(store().get_version(kind, name, version, label), output, query, kind)

    show.__doc__ = f"Show one version of a {noun} (default: --label latest)."

    def list_(
        name: Annotated[str | None, typer.Option("--name", "-n", help=f"List the versions of this {noun}.")] = None,
        include_archived: Annotated[bool, typer.Option("--include-archived", help="Archived ones too.")] = False,
        archived_only: Annotated[bool, typer.Option("--archived-only", help="Only archived ones.")] = False,
        max_results: Annotated[int | None, typer.Option("--max-results", "-r")] = None,
        output: OutputOpt = "json",
        query: QueryOpt = None,
    ) -> None:
        emit(list_versions(kind, name, include_archived, archived_only, max_results), output, query, kind)

    list_.__doc__ = f"List {noun}s (latest version of each), or every version of one."
    if with_list:
        app.command("list")(guarded(list_))

    @app.command("delete")
    @guarded
    def delete(name: name_opt, version: version_opt = None, yes: YesOpt = False) -> None:
        s = store()
        s.list_assets(kind, name)
        what = f"{noun} {name}" + (f" version {version}" if version else " (all versions)")
        confirm(yes, f"Delete {what}?")
        gone = s.delete_version(kind, name, version)
        note(f"deleted {len(gone)} version(s) of {noun} {name}")

    delete.__doc__ = f"Delete one version of a {noun}, or all of them.{after_delete}"


def add_update(app: typer.Typer, kind: str, noun: str) -> None:
    """Register `update --set description=... --set tags.K=V` (what may change on a version)."""
    from ._common import SetOpt

    @app.command("update")
    @guarded
    def update(
        name: Annotated[str, typer.Option("--name", "-n", help=f"{noun.capitalize()} name.")],
        version: Annotated[str | None, typer.Option("--version", "-v", help="Version (default: latest).")] = None,
        label: Annotated[str | None, typer.Option("--label", "-l", help="Label, e.g. latest.")] = None,
        set_: SetOpt = None,
        output: OutputOpt = "json",
        query: QueryOpt = None,
    ) -> None:
        from ..updates import update_asset

        emit(update_asset(store(), kind, name, version, label, set_ or []), output, query, kind)

    update.__doc__ = f"Change the description, tags or stage of a {noun} version (its files never change)."


def add_archive_and_restore(app: typer.Typer, kind: str, noun: str) -> None:
    """Register `archive` and `restore`: an archived version is hidden from lists and from `latest`,
    and still usable by its number (as in Azure)."""
    for verb, archived in (("archive", True), ("restore", False)):
        app.command(verb)(guarded(_archive_command(kind, noun, verb, archived)))


def _archive_command(kind: str, noun: str, verb: str, archived: bool):  # noqa: ANN202 - a typer command
    name_opt = Annotated[str, typer.Option("--name", "-n", help=f"{noun.capitalize()} name.")]
    version_opt = Annotated[str | None, typer.Option("--version", "-v", help="Version (default: every version).")]

    def command(name: name_opt, version: version_opt = None) -> None:
        changed = store().set_archived(kind, name, version, archived)
        note(f"{verb}d {len(changed)} version(s) of {noun} {name}")

    command.__doc__ = f"{verb.capitalize()} one version of a {noun}, or all of them."
    return command
