"""`bepbuild doctor [--fix] [--compute NAME]`: check the machine (docker CLI, engine, BuildKit, base image, pip,
disk), or a swarm compute (doctor_compute.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import OutputOpt, QueryOpt, emit, guarded, note
from ._lazy import module

checks = module("bepbuild.doctor")


@guarded
def doctor(
    fix: Annotated[bool, typer.Option("--fix", help="Run the engine set-up (scripts/engine.sh) when a check fails.")]
    = False,
    compute: Annotated[str | None, typer.Option(
        "--compute", help="Check a swarm compute instead: manager, nodes, registry, the shared path on every node.")]
    = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Check that this machine can build and run deployments; exit 1 when a check fails."""
    if compute is not None:
        from .. import doctor_compute
        from ._common import store

        results = doctor_compute.run_checks(store(), compute)
        emit([r.as_dict() for r in results], output, query)
        if checks.failed(results):
            raise typer.Exit(1)
        return
    results = checks.run_checks()
    if fix and checks.failed(results):
        note("doctor: fixing: running the engine set-up")
        if not checks.fix(note):
            note("doctor: the set-up did not finish; see above")
        results = checks.run_checks()
    elif fix:
        note("doctor: nothing to fix")
    emit([r.as_dict() for r in results], output, query)
    if checks.failed(results):
        raise typer.Exit(1)
