"""az verbs that have no local meaning: each answers with one line saying why, and exit code 2.

Registered as commands (not left to typer's "No such command" box) so that a script written for
Azure stops at the first such line with a reason instead of a usage screen.
"""

from __future__ import annotations

import typer

from ..errors import UserError
from ._common import guarded


def refuse(app: typer.Typer, verb: str, why: str) -> None:
    """Register `verb` on `app` as a command that takes anything and fails with `why`."""

    @guarded
    def command(ctx: typer.Context) -> None:
        group = ctx.parent.info_name if ctx.parent is not None else ""
        raise UserError(f"bepbuild {group} {ctx.info_name}: {why}")

    command.__doc__ = f"Not available locally: {why}"
    app.command(verb, context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
                hidden=False)(command)
