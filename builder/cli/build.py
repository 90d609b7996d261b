"""`bepbuild deploy | build | render | push`: images for deployments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import UserError
from ..output import human_size
from ._common import OutputOpt, QueryOpt, SetOpt, emit, guarded, note, store
from ._lazy import module
from ._progress import build_status

deploying = module("bepbuild.deploy")
image_push = module("bepbuild.image_push")
context_dir = module("bepbuild.context_dir")
specs = module("bepbuild.specs")

BaseImageOpt = Annotated[
    str | None, typer.Option("--base-image", help="Local image to use instead of the environment's (Azure) image.")
]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Treat a Python version mismatch as an error.")]
RelockOpt = Annotated[bool, typer.Option("--relock", help="Resolve the environment again instead of reusing its lock.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Build even when an image with the content tag exists.")]
BackendOpt = Annotated[str, typer.Option("--builder", help="auto, buildkit or sdk (legacy builder).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No build progress.")]
SkipOpt = Annotated[bool, typer.Option("--skip-script-validation", help="Do not parse the scoring script.")]
TemplatesOpt = Annotated[
    Path | None, typer.Option("--templates", help="Folder of Jinja2 templates overriding bepbuild's (Dockerfile.j2).")
]


def options(base_image: str | None, strict: bool, relock: bool, force: bool, builder: str,
            skip: bool, templates: Path | None) -> deploying.DeployOptions:
    if builder not in ("auto", "buildkit", "sdk"):
        raise UserError(f"--builder must be auto, buildkit or sdk, got {builder!r}")
    return deploying.DeployOptions(base_image=base_image, strict=strict, relock=relock, force=force,
                                   backend=builder, skip_script_validation=skip, template_dir=templates)


def run_create(file: Path, *, endpoint_name: str | None, name: str | None, sets: list[str], set_default: bool,
               create_endpoint: bool, opts: deploying.DeployOptions, quiet: bool, register: bool = True
               ) -> dict[str, Any]:
    with build_status(quiet, f"deploying {file}") as log:
        doc = deploying.create(store(), file, endpoint_name=endpoint_name, name=name, sets=sets,
                               set_default=set_default, create_endpoint=create_endpoint, opts=opts, log=log,
                               register=register)
    for n in doc.get("notices") or []:
        note(n if n.startswith("warning: ") else f"note: {n}")
    if not quiet:
        note(summary_line(doc))
    return doc


def summary_line(doc: dict[str, Any]) -> str:
    """The one line a build ends with: the image, its environment (reused or built), layers built, size."""
    s = doc.get("build_summary") or {}
    took = f"{doc['seconds']:.1f} s"
    state = f"built in {took}" if doc.get("built") else f"up to date, not rebuilt ({took})"
    env = s.get("environment_image")
    if env is None:
        parts = ["no environment image (the environment is its image as it is)"]
    elif s.get("environment_built"):
        parts = [f"environment {env} built ({s.get('environment_seconds', 0):.1f} s)"]
    else:
        parts = [f"environment {env} reused"]
    parts.append(f"{s.get('layers_built', 0)} layer{'' if s.get('layers_built') == 1 else 's'} built")
    if s.get("size") is not None:
        parts.append(human_size(int(s["size"])))
    return f"image {doc['image']} {state}: {', '.join(parts)}"


@guarded
def deploy(
    file: Annotated[Path, typer.Argument(help="deployment.yml")],
    endpoint_name: Annotated[str | None, typer.Option("--endpoint-name", "-e")] = None,
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
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """Build and register a deployment; creates its endpoint (from a sibling endpoint.yml) when missing."""
    opts = options(base_image, strict, relock, force, builder, skip_script_validation, templates)
    doc = run_create(file, endpoint_name=endpoint_name, name=None, sets=set_ or [], set_default=set_default,
                     create_endpoint=True, opts=opts, quiet=quiet)
    emit(doc, output, query)


@guarded
def build(
    file: Annotated[Path, typer.Argument(help="deployment.yml")],
    set_: SetOpt = None,
    base_image: BaseImageOpt = None,
    strict: StrictOpt = False,
    relock: RelockOpt = False,
    force: ForceOpt = False,
    builder: BackendOpt = "auto",
    skip_script_validation: SkipOpt = False,
    templates: TemplatesOpt = None,
    quiet: QuietOpt = False,
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """Build a deployment's image without registering the deployment."""
    opts = options(base_image, strict, relock, force, builder, skip_script_validation, templates)
    doc = run_create(file, endpoint_name=None, name=None, sets=set_ or [], set_default=False, create_endpoint=False,
                     opts=opts, quiet=quiet, register=False)
    emit({k: doc[k] for k in ("name", "endpoint_name", "image", "image_id", "built", "seconds")}, output, query)


@guarded
def render(
    file: Annotated[Path, typer.Argument(help="deployment.yml")],
    output_dir: Annotated[Path, typer.Option("--output-dir", "--out", help="Folder to write the build context to.")],
    set_: SetOpt = None,
    base_image: BaseImageOpt = None,
    strict: StrictOpt = False,
    relock: RelockOpt = False,
    skip_script_validation: SkipOpt = False,
    templates: TemplatesOpt = None,
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """Write a deployment's build context (Dockerfile, lock, runtime, model, code) to a folder."""
    opts = options(base_image, strict, relock, False, "auto", skip_script_validation, templates)
    loaded = specs.load_deployment(file, sets=set_ or [], skip_script_validation=skip_script_validation)
    # Before anything is registered: the folder must be new, empty or an earlier context of this deployment.
    context_dir.check_destination(output_dir.absolute(), loaded.spec.endpoint_name, loaded.spec.name,
                                  what="--output-dir")
    p = deploying.prepare(store(), loaded, opts, lambda line: None, context=output_dir.resolve())
    for n in p.notices:
        note(n if n.startswith("warning: ") else f"note: {n}")
    emit({"context": str(output_dir), "content_hash": p.rendered.content_hash, "tag": p.tag,
          "files": len(p.rendered.files), "environment_image": p.env.tag if p.env else None}, output, query)


@guarded
def push(
    endpoint_name: Annotated[str, typer.Option("--endpoint-name", "-e")],
    name: Annotated[str, typer.Option("--name", "-n", help="Deployment name.")],
    registry: Annotated[str, typer.Option("--registry", help="HOST[:PORT]/REPO to push to.")],
    tag: Annotated[str | None, typer.Option("--tag", help="Tag to push as (default: the content tag).")] = None,
    quiet: QuietOpt = False,
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """Push a deployment's image to a registry; prints the digest and what was uploaded.

    Layers the registry has already (those of the deployment's environment image, pushed with another
    deployment of the same environment) are not uploaded again.
    """
    dep = store().get_deployment(endpoint_name, name)
    with build_status(quiet, f"pushing {dep['image']}") as log:
        result = image_push.push(dep["image"], registry, repo_tag=tag, on_line=log)
    if not quiet:
        note(f"pushed {result['image']}: {result['layers_pushed']} layer(s) uploaded "
             f"({human_size(result['bytes_pushed'])}), {result['layers_existing']} already in the registry")
    emit(result, output, query)
