"""`bepbuild base build`: local base images with another Python."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import OutputOpt, QueryOpt, emit, guarded, new_app, note
from ._lazy import module
from ._progress import build_status

base_images = module("bepbuild.base_images")

app = new_app("Local base images: the default base plus another Python, for environments that pin one.")


@app.command("build")
@guarded
def build(
    python: Annotated[str, typer.Option("--python", help="Python version X.Y (3.8 or newer).")],
    source: Annotated[Path | None, typer.Option(
        "--from", help="A Python installation folder (default: pyenv's newest X.Y on this host).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Build even when the image is up to date.")] = False,
    builder: Annotated[str, typer.Option("--builder", help="auto, buildkit or sdk (legacy builder).")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No build progress.")] = False,
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """Make local/debian-py:X.Y: the default local base plus this host's Python X.Y (idempotent)."""
    with build_status(quiet, f"base image for Python {python}") as log:
        result = base_images.build_local(python, source=source, force=force, backend=builder, log=log)
    if not quiet:
        state = f"built in {result.seconds:.1f} s" if result.built else "up to date, not rebuilt"
        note(f"base image {result.image} (Python {result.python}) {state}")
    emit({"image": result.image, "image_id": result.image_id, "python": result.python, "built": result.built,
          "seconds": round(result.seconds, 3)}, output, query)
