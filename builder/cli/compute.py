"""`bepbuild compute ...`: where a deployment's instances run: resource profiles for this machine's engine
(`amlcompute`) and Docker Swarm clusters (`swarm`, docs/cluster.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import OutputOpt, QueryOpt, SetOpt, YesOpt, confirm, emit, guarded, new_app, note, store
from ._lazy import module
from ._refused import refuse

specs = module("bepbuild.specs")

app = new_app("Computes: how many instances a deployment may use and what each instance gets.")

NameOpt = Annotated[str, typer.Option("--name", "-n", help="Compute name.")]


@app.command("create")
@guarded
def create(
    name: Annotated[str | None, typer.Option("--name", "-n")] = None,
    type_: Annotated[str, typer.Option("--type", "-t", help="amlcompute (this machine's engine) or swarm (a Docker "
                                                                 "Swarm cluster).")] = "amlcompute",
    min_instances: Annotated[int | None, typer.Option("--min-instances")] = None,
    max_instances: Annotated[int | None, typer.Option("--max-instances")] = None,
    size: Annotated[str | None, typer.Option("--size", help="Accepted and recorded (VM size on Azure).")] = None,
    cpus: Annotated[float | None, typer.Option("--cpus", help="CPUs per instance (docker --cpus).")] = None,
    memory: Annotated[str | None, typer.Option("--memory", help="Memory per instance, e.g. 4g.")] = None,
    gpus: Annotated[int | None, typer.Option("--gpus", help="GPUs per instance.")] = None,
    shared_path: Annotated[str | None, typer.Option(
        "--shared-path", help="swarm: a folder mounted at this same path on every node and here (job folders, "
                              "inputs, outputs).")] = None,
    registry: Annotated[str | None, typer.Option(
        "--registry", help="swarm: HOST[:PORT]/REPO images are pushed to and run from by digest (none: a one-node "
                           "swarm runs the local image).")] = None,
    docker_host: Annotated[str | None, typer.Option(
        "--docker-host", help="swarm: the manager, e.g. tcp://manager:2376 or ssh://user@manager (default: this "
                              "machine's engine).")] = None,
    constraint: Annotated[list[str] | None, typer.Option(
        "--constraint", help="swarm: a placement constraint of the instances, e.g. node.labels.gpu==true "
                             "(repeatable).")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="compute.yml")] = None,
    set_: SetOpt = None,
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """Create (or replace) a compute profile."""
    flags = {
        "type": type_,
        "min_instances": min_instances,
        "max_instances": max_instances,
        "size": size,
        "cpus": cpus,
        "memory": memory,
        "gpus": gpus,
        "shared_path": shared_path,
        "registry": registry,
        "docker_host": docker_host,
        "constraints": constraint or None,
    }
    if file is not None:
        sets = list(set_ or []) + [f"{k}={v}" for k, v in flags.items()
                                   if v is not None and k not in ("type", "constraints")]
        spec = specs.load_compute(file, sets=sets, name=name).spec
        if constraint:
            doc = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
            doc["constraints"] = [*spec.constraints, *constraint]
            spec = specs.loader.validate(specs.ComputeSpec, specs.loader.Located(doc, {}, str(file)))
    else:
        data = {"name": name, **{k: v for k, v in flags.items() if v is not None}}
        from ..specs.overrides import apply

        located = specs.loader.Located(apply(data, list(set_ or [])), {}, "compute create")
        spec = specs.loader.validate(specs.ComputeSpec, located)
    s = store()
    s.put_compute(spec.name, spec.model_dump(mode="json", by_alias=True, exclude_none=True))
    emit(s.get_compute(spec.name), output, query, "compute")


@app.command("show")
@guarded
def show(name: NameOpt, output: OutputOpt = "json", query: QueryOpt = None) -> None:
    """Show a compute profile."""
    emit(store().get_compute(name), output, query, "compute")


@app.command("list")
@guarded
def list_(output: OutputOpt = "json", query: QueryOpt = None) -> None:
    """List compute profiles."""
    emit(store().list_computes(), output, query, "compute")


@app.command("delete")
@guarded
def delete(name: NameOpt, yes: YesOpt = False) -> None:
    """Delete a compute profile."""
    store().get_compute(name)
    confirm(yes, f"Delete compute {name}?")
    store().delete_compute(name)
    note(f"deleted compute {name}")


@app.command("update")
@guarded
def update(
    name: NameOpt,
    max_instances: Annotated[int | None, typer.Option("--max-instances")] = None,
    min_instances: Annotated[int | None, typer.Option("--min-instances")] = None,
    set_: SetOpt = None,
    output: OutputOpt = "json",
    query: QueryOpt = None,
) -> None:
    """Change a compute profile (max/min instances, cpus, memory, gpus, description, tags)."""
    from ..updates import update_compute

    sets = list(set_ or []) + [f"{k}={v}" for k, v in (("max_instances", max_instances),
                                                        ("min_instances", min_instances)) if v is not None]
    emit(update_compute(store(), name, sets), output, query, "compute")


_NO_NODES = ("a local compute is a resource profile for containers on this engine: it has no nodes or VMs (a swarm "
             "compute's nodes: bepbuild doctor --compute NAME)")
for _verb in ("list-nodes", "list-sizes", "list-usage", "start", "stop", "restart", "connect-ssh", "enable-sso"):
    refuse(app, _verb, _NO_NODES)
refuse(app, "attach", "only local compute profiles exist: create one with bepbuild compute create")
refuse(app, "detach", "only local compute profiles exist: remove one with bepbuild compute delete")
