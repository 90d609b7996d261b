"""`bepbuild batch-deployment ...` (alias `deployment`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import NoWaitOpt, OutputOpt, QueryOpt, SetOpt, YesOpt, confirm, emit, guarded, new_app, note, store
from ._lazy import module
from .build import (
    BackendOpt,
    BaseImageOpt,
    ForceOpt,
    QuietOpt,
    RelockOpt,
    SkipOpt,
    StrictOpt,
    TemplatesOpt,
    options,
    run_create,
)
from .testing import deployment_test

endpoints = module("bepbuild.endpoints")

app = new_app("Batch deployments: a model, scoring code and environment built into one image.")

NameOpt = Annotated[str, typer.Option("--name", "-n", help="Deployment name.")]
EndpointOpt = Annotated[str, typer.Option("--endpoint-name", "-e", help="Endpoint name.")]


@app.command("show")
@guarded
def show(name: NameOpt, endpoint_name: EndpointOpt, output: OutputOpt = "json", query: QueryOpt = None) -> None:
    """Show a deployment: settings, model, environment, image."""
    emit(store().get_deployment(endpoint_name, name), output, query, "deployment")


@app.command("list")
@guarded
def list_(endpoint_name: EndpointOpt, output: OutputOpt = "json", query: QueryOpt = None) -> None:
    """List the deployments of an endpoint."""
    emit(store().list_deployments(endpoint_name), output, query, "deployment")


@app.command("list-jobs")
@guarded
def list_jobs(name: NameOpt, endpoint_name: EndpointOpt, output: OutputOpt = "json", query: QueryOpt = None) -> None:
    """List the jobs of a deployment, newest first."""
    s = store()
    dep = s.get_deployment(endpoint_name, name)
    emit(s.list_jobs(endpoint=dep.get("endpoint_name") or endpoint_name, deployment=dep.get("name") or name),
         output, query, "job")


@app.command("delete")
@guarded
def delete(name: NameOpt, endpoint_name: EndpointOpt, yes: YesOpt = False, no_wait: NoWaitOpt = False) -> None:
    """Delete a deployment (its image stays until pruned)."""
    s = store()
    s.get_deployment(endpoint_name, name)
    confirm(yes, f"Delete deployment {name} of endpoint {endpoint_name}?")
    endpoints.delete_deployment(s, endpoint_name, name)
    note(f"deleted deployment {name}")


@app.command("create")
@guarded
def create(
    file: Annotated[Path, typer.Option("--file", "-f", help="deployment.yml")],
    endpoint_name: Annotated[str | None, typer.Option("--endpoint-name", "-e", help="Overrides the file's.")] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Overrides the file's.")] = None,
    set_default: Annotated[bool, typer.Option("--set-default", help="Make it the endpoint's default.")] = False,
    set_: SetOpt = None,
    base_image: BaseImageOpt = None,
    strict: StrictOpt = False,
    relock: RelockOpt = False,
    force: ForceOpt = False,
    builder: BackendOpt = "auto",
    skip_script_validation: SkipOpt = False,
    templates: TemplatesOpt = None,
    quiet: QuietOpt = False,
    no_wait: NoWaitOpt = False,
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """Build the deployment's image (or reuse it when nothing changed) and register the deployment.

    The endpoint must exist, as in az (`bepbuild deploy FILE` creates a missing one).
    """
    opts = options(base_image, strict, relock, force, builder, skip_script_validation, templates)
    doc = run_create(file, endpoint_name=endpoint_name, name=name, sets=set_ or [], set_default=set_default,
                     create_endpoint=False, opts=opts, quiet=quiet)
    emit(doc, output, query, "deployment")


@app.command("update")
@guarded
def update(
    file: Annotated[Path, typer.Option("--file", "-f", help="deployment.yml")],
    endpoint_name: Annotated[str | None, typer.Option("--endpoint-name", "-e")] = None,
    name: Annotated[str | None, typer.Option("--name", "-n")] = None,
    set_: SetOpt = None,
    base_image: BaseImageOpt = None,
    relock: RelockOpt = False,
    quiet: QuietOpt = False,
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """Update an existing deployment from its file (rebuilds only what changed)."""
    from ..specs import load_deployment

    spec = load_deployment(file, sets=set_ or [], name=name, endpoint_name=endpoint_name,
                           skip_script_validation=True).spec
    store().get_deployment(spec.endpoint_name, spec.name)
    opts = options(base_image, False, relock, False, "auto", False, None)
    doc = run_create(file, endpoint_name=endpoint_name, name=name, sets=set_ or [], set_default=False,
                     create_endpoint=False, opts=opts, quiet=quiet)
    emit(doc, output, query, "deployment")


app.command("test")(deployment_test)
