"""`bepbuild batch-deployment ...` (alias `deployment`)."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import endpoints
from ._common import NoWaitOpt, OutputOpt, QueryOpt, YesOpt, confirm, emit, guarded, new_app, note, store

app = new_app("Batch deployments: a model, scoring code and environment built into one image.")

NameOpt = Annotated[str, typer.Option("--name", "-n", help="Deployment name.")]
EndpointOpt = Annotated[str, typer.Option("--endpoint-name", "-e", help="Endpoint name.")]


@app.command("show")
@guarded
def show(name: NameOpt, endpoint_name: EndpointOpt, output: OutputOpt = "json", query: QueryOpt = None) -> None:
    """Show a deployment: settings, model, environment, image."""
    emit(store().get_deployment(endpoint_name, name), output, query)


@app.command("list")
@guarded
def list_(endpoint_name: EndpointOpt, output: OutputOpt = "json", query: QueryOpt = None) -> None:
    """List the deployments of an endpoint."""
    emit(store().list_deployments(endpoint_name), output, query)


@app.command("delete")
@guarded
def delete(name: NameOpt, endpoint_name: EndpointOpt, yes: YesOpt = False, no_wait: NoWaitOpt = False) -> None:
    """Delete a deployment (its image stays until pruned)."""
    s = store()
    s.get_deployment(endpoint_name, name)
    confirm(yes, f"Delete deployment {name} of endpoint {endpoint_name}?")
    endpoints.delete_deployment(s, endpoint_name, name)
    note(f"deleted deployment {name}")
