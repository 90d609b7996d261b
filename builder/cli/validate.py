"""`bepbuild validate FILE`: the normalized spec, every default filled in."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..kinds import KINDS
from ._common import OutputOpt, QueryOpt, SetOpt, emit, guarded, warn


@guarded
def validate(
    file: Annotated[Path, typer.Argument(help="endpoint, deployment, model, environment, data, compute or conda YAML")],
    kind: Annotated[
        str | None, typer.Option("--kind", "-k", help=f"One of {', '.join(KINDS)} (default: detected).")
    ] = None,
    set_: SetOpt = None,
    skip_script_validation: Annotated[bool, typer.Option("--skip-script-validation")] = False,
    output: OutputOpt = "yaml",
    query: QueryOpt = None,
) -> None:
    """Check a YAML file and print it normalized, with every default filled in."""
    if kind is not None and kind not in KINDS:
        from ..errors import SpecError

        raise SpecError(f"must be one of {', '.join(KINDS)}, got {kind!r}", field="--kind")
    kwargs: dict[str, object] = {}
    if (kind or "") != "conda":
        kwargs["sets"] = set_ or []
    from ..specs import detect_kind

    kind = kind or detect_kind(file)
    if kind == "deployment":
        kwargs["skip_script_validation"] = skip_script_validation
    if kind == "conda":
        kwargs = {}
    from ..specs import load_any

    loaded = load_any(file, kind, **kwargs)
    for w in loaded.warnings:
        warn(w)
    emit(loaded.spec.model_dump(mode="json", by_alias=True, exclude_none=True), output, query)
