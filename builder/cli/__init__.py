"""The `bepbuild` command line: verbs only; the work is done by the modules they call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from .. import __version__
from . import base, build, compute, data, deployment, doctor, endpoint, environment, job, model, serve, testing
from ._common import state
from .validate import validate

_HELP = "Run Azure ML style batch endpoints on your own Docker engine."

_version_help = "Print the version."


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bepbuild {__version__}")
        raise typer.Exit()


def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help=_version_help)
    ] = False,
) -> None:
    state.debug = debug


# name -> (sub-app, help of an alias); name -> (command, help of an alias)
_GROUPS: dict[str, tuple[typer.Typer, str | None]] = {
    "batch-endpoint": (endpoint.app, None),
    "endpoint": (endpoint.app, "Alias of batch-endpoint."),
    "batch-deployment": (deployment.app, None),
    "deployment": (deployment.app, "Alias of batch-deployment."),
    "model": (model.app, None),
    "environment": (environment.app, None),
    "data": (data.app, None),
    "compute": (compute.app, None),
    "job": (job.app, None),
    "base": (base.app, None),
}
_COMMANDS: dict[str, tuple[Callable[..., Any], str | None]] = {
    "validate": (validate, None),
    "deploy": (build.deploy, None),
    "build": (build.build, None),
    "render": (build.render, None),
    "push": (build.push, None),
    "test": (testing.test, None),
    "doctor": (doctor.doctor, None),
    "serve": (serve.serve, None),
    "dashboard": (serve.serve, "Alias of serve."),
}


def make_app(only: str | None = None) -> typer.Typer:
    """The command line; with `only`, just that group or command (typer turns every function's
    signature into click options on each call: ~0.35 s for all of them, a few ms for one)."""
    made = typer.Typer(help=_HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
    made.callback()(_root)
    for name, (sub, alias) in _GROUPS.items():
        if only in (None, name):
            made.add_typer(sub, name=name, **({"help": alias} if alias else {}))
    for name, (fn, alias) in _COMMANDS.items():
        if only in (None, name):
            made.command(name, **({"help": alias} if alias else {}))(fn)
    return made


app = make_app()


def _command_of(args: list[str]) -> str | None:
    """The group or command `args` name, when it is one (the root's own options come first)."""
    for arg in args:
        if not arg.startswith("-"):
            return arg if arg in _GROUPS or arg in _COMMANDS else None
        if arg in ("--help", "--version"):
            return None
    return None


def main() -> None:
    import sys

    from . import _azure_args

    args, _dropped = _azure_args.strip(sys.argv[1:])  # workspace options of az: nothing to select locally
    make_app(_command_of(args))(args=args, prog_name="bepbuild")
