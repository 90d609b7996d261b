"""`bepbuild batch-endpoint ...` (alias `endpoint`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import (
    NoWaitOpt,
    OutputOpt,
    QueryOpt,
    SetOpt,
    YesOpt,
    confirm,
    emit,
    guarded,
    new_app,
    note,
    store,
)
from ._lazy import module
from .invoke import invoke

endpoints = module("bepbuild.endpoints")

app = new_app("Batch endpoints: a name and a default deployment that invoke routes to.")

NameOpt = Annotated[str, typer.Option("--name", "-n", help="Endpoint name.")]


@app.command("create")
@guarded
def create(
    file: Annotated[Path | None, typer.Option("--file", "-f", help="endpoint.yml")] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Endpoint name (overrides the file's).")] = None,
    set_: SetOpt = None,
    no_wait: NoWaitOpt = False,
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """Create an endpoint (an existing one of the same name is overwritten, as in az)."""
    emit(endpoints.create(store(), file, name=name, sets=set_ or []), output, query, "endpoint")


@app.command("show")
@guarded
def show(name: NameOpt, output: OutputOpt = "json", query: QueryOpt = None) -> None:
    """Show an endpoint (with its scoring_uri while `bepbuild serve` runs)."""
    emit(_with_scoring_uri(store().get_endpoint(name)), output, query, "endpoint")


@app.command("list")
@guarded
def list_(output: OutputOpt = "json", query: QueryOpt = None) -> None:
    """List endpoints."""
    emit([_with_scoring_uri(ep) for ep in store().list_endpoints()], output, query, "endpoint")


def _with_scoring_uri(ep: dict[str, Any]) -> dict[str, Any]:
    """Azure's scoring_uri (POST it to start a job) where the running server listens; none without one."""
    from ..web.state import scoring_uri

    uri = scoring_uri(ep["name"])
    return {**ep, "scoring_uri": uri} if uri else ep


@app.command("update")
@guarded
def update(
    name: NameOpt,
    set_: SetOpt = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="endpoint.yml with new values")] = None,
    add: Annotated[list[str] | None, typer.Option("--add", help="Not available: use --set.")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="Not available: use --set.")] = None,
    force_string: Annotated[bool, typer.Option("--force-string", help="Accepted: values are kept as given.")] = False,
    no_wait: NoWaitOpt = False,
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """Update an endpoint, e.g. --set defaults.deployment_name=NAME."""
    if add or remove:
        from ..errors import UserError

        flag = "--add" if add else "--remove"
        raise UserError(f"{flag} is not available locally: change fields with --set KEY=VALUE")
    emit(endpoints.update(store(), name, sets=set_ or [], file=file), output, query, "endpoint")


@app.command("delete")
@guarded
def delete(name: NameOpt, yes: YesOpt = False, no_wait: NoWaitOpt = False) -> None:
    """Delete an endpoint and its deployments. Its jobs are kept."""
    s = store()
    s.get_endpoint(name)
    confirm(yes, f"Delete endpoint {name} and all its deployments?")
    gone = endpoints.delete(s, name)
    note(f"deleted endpoint {name}" + (f" and {len(gone)} deployment(s)" if gone else ""))


@app.command("list-jobs")
@guarded
def list_jobs(name: NameOpt, output: OutputOpt = "json", query: QueryOpt = None) -> None:
    """List the jobs of an endpoint, newest first."""
    emit(store().list_jobs(endpoint=name), output, query, "job")


app.command("invoke")(invoke)
