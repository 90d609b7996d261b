"""The `bepbuild` command line: verbs only; the work is done by the modules they call."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import __version__
from . import base, build, compute, data, deployment, doctor, endpoint, environment, job, model, serve, testing
from ._common import state
from .validate import validate

app = typer.Typer(
    help="Run Azure ML style batch endpoints on your own Docker engine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bepbuild {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    state.debug = debug


app.add_typer(endpoint.app, name="batch-endpoint")
app.add_typer(endpoint.app, name="endpoint", help="Alias of batch-endpoint.")
app.add_typer(deployment.app, name="batch-deployment")
app.add_typer(deployment.app, name="deployment", help="Alias of batch-deployment.")
app.add_typer(model.app, name="model")
app.add_typer(environment.app, name="environment")
app.add_typer(data.app, name="data")
app.add_typer(compute.app, name="compute")
app.add_typer(job.app, name="job")
app.add_typer(base.app, name="base")
app.command("validate")(validate)
app.command("deploy")(build.deploy)
app.command("build")(build.build)
app.command("render")(build.render)
app.command("push")(build.push)
app.command("test")(testing.test)
app.command("doctor")(doctor.doctor)
app.command("serve")(serve.serve)
app.command("dashboard", help="Alias of serve.")(serve.serve)


def main() -> None:
    import sys

    from . import _azure_args

    args, _dropped = _azure_args.strip(sys.argv[1:])  # workspace options of az: nothing to select locally
    app(args=args, prog_name="bepbuild")
