"""deploy: deployment.yml -> registered model/env -> install plan + lock -> context -> image -> store."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from . import (
    __version__,
    base_images,
    config,
    context_dir,
    endpoints,
    env_images,
    environments,
    images,
    locking,
    mlflow_models,
    naming,
    registry,
)
from .errors import BuildError, NotFoundError, SpecError
from .hashing import tree_sha256
from .render import MLFLOW_DRIVER, Rendered, RenderInput, render
from .specs import BatchDeployment, EnvironmentSpec, InlineModel, Loaded, load_deployment, load_endpoint
from .store import Store

Log = Callable[[str], None]


@dataclass
class DeployOptions:
    base_image: str | None = None
    strict: bool = False
    relock: bool = False
    force: bool = False
    backend: str = "auto"
    template_dir: Path | None = None
    skip_script_validation: bool = False


@dataclass
class Prepared:
    """Everything needed to build one deployment's image."""

    loaded: Loaded[BatchDeployment]
    model: dict[str, Any]
    environment: dict[str, Any]
    plan: environments.EnvPlan
    rendered: Rendered
    tag: str
    notices: list[str] = field(default_factory=list)
    generated: bool = False  # scored by the generated MLflow driver (no scoring script given)
    lock: locking.Lock | None = None
    env: env_images.EnvContext | None = None  # the environment image it starts FROM (pip and conda strategies)
    render_input: RenderInput | None = None  # what `rendered` was rendered from (build_image renders it again)
    code_sha256: str | None = None  # of the code the build sent (build_image, under the context's lock)


class BuildSummary(TypedDict):
    """What a deploy built, for the line printed at its end."""

    environment_image: str | None  # None: the base (or the user's built) image is the environment
    environment_built: bool
    environment_seconds: float
    layers_built: int
    size: int | None


def map_base_image(image: str | None, override: str | None) -> str:
    """The local image that stands in for an environment's image.

    `--base-image` wins; Azure ML's base images (mcr.microsoft.com/azureml/...) map to the configured
    local base (BEPBUILD_BASE_IMAGE, or the config file's image_map); other images are used as named.
    """
    if override:
        return override
    mapping = config.image_map()
    if image and image in mapping:
        return mapping[image]
    if not image or image.startswith("mcr.microsoft.com/azureml/"):
        return config.base_image()
    return image


def _resolve_model(store: Store, loaded: Loaded[BatchDeployment]) -> dict[str, Any]:
    spec = loaded.spec
    if isinstance(spec.model, InlineModel):
        name = spec.model.name or naming.inline_model_name(spec.endpoint_name, spec.name)
        return registry.register_model(
            store, name=name, path=loaded.paths["model.path"], type=spec.model.type, version=spec.model.version,
            description=spec.model.description, tags=spec.model.tags, reuse_same_content=True,
        )
    assert isinstance(spec.model, str)
    if not spec.model.startswith("azureml:"):
        raise SpecError(f"{spec.model!r}: expected azureml:<name>:<version>, azureml:<name>@latest or an inline model",
                        source=loaded.source, field="model")
    return registry.resolve(store, "model", spec.model)


def _resolve_environment(store: Store, loaded: Loaded[BatchDeployment], model: dict[str, Any]) -> dict[str, Any]:
    spec = loaded.spec
    if isinstance(spec.environment, EnvironmentSpec):
        if spec.environment.name is None:
            spec.environment.name = naming.inline_environment_name(spec.endpoint_name, spec.name)
        return registry.register_environment(store, loaded, spec.environment, prefix="environment.",
                                             reuse_same_content=True)
    if isinstance(spec.environment, str):
        return registry.resolve(store, "environment", spec.environment)
    if model.get("type") == "mlflow_model":  # a registered MLflow model with a scoring script, as in Azure
        raise SpecError("required when a scoring script is given for an MLflow model", source=loaded.source,
                        field="environment")
    raise SpecError("required unless the model is an MLflow model", source=loaded.source, field="environment")


def _lock(plan: environments.EnvPlan, base: environments.BaseInfo, opts: DeployOptions, log: Log,
          wanted: mlflow_models.ModelEnvironment | None, notices: list[str]) -> locking.Lock:
    """Resolve the plan for the base image's Python; a model's own environment as `mlflow_models.lock` does."""

    def resolve() -> locking.Lock:
        return locking.resolve(plan.requirements, python=base.python or "", options=plan.pip_options,
                               refresh=opts.relock, log=log)

    lock = resolve() if wanted is None else mlflow_models.lock(resolve, plan, base, wanted, notices)
    if plan.requirements and locking.cross_resolved(base.python or ""):
        minor = base_images.minor_of(base.python)
        notices.append(f"warning: no Python {minor} on this host: the lock was resolved for Python {minor} wheels, "
                       "but pip read the requirements' Python markers as this host's Python does; install Python "
                       f"{minor} (pyenv install {minor}) for an exact lock (--relock)")
    return lock


def _from_image(env: dict[str, Any], opts: DeployOptions, log: Log) -> str:
    """The image an environment is built on.

    An environment on Azure's base images (or none) gets the Python its conda file pins, when that is
    not the default base's (`base_images.for_python`); `--base-image`, the config's image_map and
    images named by the environment are used as they are.
    """
    if env.get("build"):
        return _build_environment_image(env, opts, log)
    image = map_base_image(env.get("image"), opts.base_image)
    if opts.base_image or image != config.base_image() or env.get("image") in config.image_map():
        return image
    return base_images.for_python(environments.requested_python(env), image, log)


def prepare(
    store: Store, loaded: Loaded[BatchDeployment], opts: DeployOptions, log: Log, context: Path | None = None
) -> Prepared:
    """Resolve assets, plan the environment, lock it and render the context (no build yet)."""
    spec = loaded.spec
    model = _resolve_model(store, loaded)
    generated = mlflow_models.is_generated(loaded, model)
    wanted: mlflow_models.ModelEnvironment | None = None
    if generated and spec.environment is None:
        env, wanted = mlflow_models.register_environment(store, model)
    else:
        env = _resolve_environment(store, loaded, model)
    from_image = _from_image(env, opts, log)
    base = environments.probe_base(from_image)
    plan = environments.plan(env, base, strict=opts.strict)
    notices = list(plan.notices) + (wanted.notices if wanted else [])
    lock = None
    if plan.strategy == "pip":
        lock = _lock(plan, base, opts, log, wanted, notices)
    env_ctx = env_images.prepare(plan, base, lock, opts.template_dir)
    if generated:
        code_dir, script = None, MLFLOW_DRIVER
    else:
        code_dir = loaded.paths["code"]
        script = loaded.paths["scoring_script"].relative_to(code_dir).as_posix()
    inp = RenderInput(
        endpoint=spec.endpoint_name, deployment=spec.name, code_dir=code_dir, scoring_script=script,
        model_path=Path(model["path"]), plan=plan, base=base, base_image=env_ctx.tag if env_ctx else from_image,
        lock=lock, conda=base.conda, template_dir=opts.template_dir, env_image=env_ctx.tag if env_ctx else None,
    )
    context = context or naming.context_dir(spec.endpoint_name, spec.name)
    rendered = render(inp, context)
    tag = naming.image_tag(spec.endpoint_name, spec.name, rendered.content_hash)
    return Prepared(loaded, model, env, plan, rendered, tag, notices, generated, lock, env_ctx, inp)


def _build_environment_image(env: dict[str, Any], opts: DeployOptions, log: Log) -> str:
    build = env["build"]
    tag = f"{naming.environment_image_repo(env['name'])}:{build['sha256'][:16]}"
    images.build(Path(env["path"]), tag, network="host", backend=opts.backend, dockerfile=build["dockerfile_path"],
                 on_line=log, force=opts.force)
    return tag


def image_labels(p: Prepared, env: env_images.EnvImage | None = None) -> dict[str, str]:
    spec = p.loaded.spec
    of_env = {env_images.ENV_IMAGE_LABEL: env.tag, env_images.ENV_IMAGE_ID_LABEL: env.image_id} if env else {}
    return of_env | {
        "org.opencontainers.image.title": f"{spec.endpoint_name}/{spec.name}",
        "org.opencontainers.image.description": spec.description or f"bepbuild batch deployment {spec.name}",
        "org.opencontainers.image.version": p.rendered.short_hash,
        "org.opencontainers.image.vendor": "bepbuild",
        "io.bepbuild.endpoint": spec.endpoint_name,
        "io.bepbuild.deployment": spec.name,
        "io.bepbuild.content-hash": p.rendered.content_hash,
        env_images.KIND_LABEL: "deployment",
        "io.bepbuild.lock-sha256": _lock_digest(p),
        "io.bepbuild.model": f"{p.model['name']}:{p.model['version']}",
        "io.bepbuild.model-sha256": p.model.get("sha256", ""),
        "io.bepbuild.environment": f"{p.environment['name']}:{p.environment['version']}",
        "io.bepbuild.strategy": p.plan.strategy,
        "io.bepbuild.version": __version__,
    }


def _lock_digest(p: Prepared) -> str:
    return p.lock.digest if p.lock is not None else ""


def build_image(p: Prepared, opts: DeployOptions, log: Log, env: env_images.EnvImage | None = None
                ) -> images.BuildResult:
    """Build the deployment's image: runtime, model and code over its environment image (no network, no secret).

    No Dockerfile named here: images.build picks the one of the backend it resolves `auto` to.
    Built under the context folder's lock, from what `p`'s tag names: another deploy of this
    deployment that rendered into the folder since `prepare` (its own content) is rendered over
    again first, and a context whose sources changed meanwhile is refused rather than tagged.
    """
    context = p.rendered.context
    with context_dir.locked(context):
        if not context_dir.unchanged(context, p.rendered.stamps):
            if p.render_input is None:
                raise BuildError(f"the build context {context} changed since it was rendered: deploy again")
            again = render(p.render_input, context, held=True)
            if again.content_hash != p.rendered.content_hash:
                raise BuildError(f"the code, model or environment of deployment {p.loaded.spec.name} changed while it "
                                 "was being deployed: deploy it again")
            p.rendered = again
        p.code_sha256 = tree_sha256(context / "code")
        return images.build(context, p.tag, labels=image_labels(p, env), network="none",
                            backend=opts.backend, on_line=log, force=opts.force,
                            log_path=config.home() / "logs" / "builds"
                            / f"{p.tag.replace('/', '_').replace(':', '_')}.log")


def build(store: Store, loaded: Loaded[BatchDeployment], opts: DeployOptions, log: Log, context: Path | None = None
          ) -> tuple[Prepared, env_images.EnvImage | None, images.BuildResult]:
    """Prepare a deployment and build (or reuse) its environment image, then its own image.

    What deploy builds, and what `bepbuild test` builds from a file (inside `registry.preview`, into a
    context of its own): the same image, the same tag. Registers no deployment.
    """
    p = prepare(store, loaded, opts, log, context)
    env = env_images.ensure(p.env, backend=opts.backend, force=opts.force, log=log) if p.env else None
    return p, env, build_image(p, opts, log, env)


def ensure_endpoint(store: Store, spec: BatchDeployment, file: Path | None, create: bool,
                    log: Log = lambda line: None) -> None:
    if store.has_endpoint(spec.endpoint_name):
        return
    if not create:
        raise NotFoundError(f"batch endpoint {spec.endpoint_name!r} not found: create it first with "
                            f"`bepbuild batch-endpoint create --name {spec.endpoint_name}` (or use `bepbuild deploy "
                            "FILE`, which creates it from a sibling endpoint.yml)")
    sibling = None
    if file is not None:
        for d in (file.parent, file.parent.parent):
            if (d / "endpoint.yml").is_file():
                sibling = d / "endpoint.yml"
                break
    if sibling is not None and load_endpoint(sibling).spec.name.lower() == spec.endpoint_name.lower():
        endpoints.create(store, sibling, name=spec.endpoint_name)
    else:
        endpoints.create(store, None, name=spec.endpoint_name)
    log(f"note: endpoint {spec.endpoint_name} did not exist: created it")


def create(
    store: Store,
    file: Path,
    *,
    endpoint_name: str | None = None,
    name: str | None = None,
    sets: Iterable[str] = (),
    set_default: bool = False,
    create_endpoint: bool = False,
    opts: DeployOptions | None = None,
    log: Log = lambda line: None,
    register: bool = True,
) -> dict[str, Any]:
    """Build (or reuse) a deployment's image and register the deployment."""
    opts = opts or DeployOptions()
    t0 = time.monotonic()
    loaded = load_deployment(file, sets=sets, name=name, endpoint_name=endpoint_name,
                             skip_script_validation=opts.skip_script_validation)
    spec = loaded.spec
    if register:
        ensure_endpoint(store, spec, file, create_endpoint, log)
    p, env, result = build(store, loaded, opts, log)
    doc = deployment_doc(p, result, env)
    summary = BuildSummary(environment_image=env.tag if env else None, environment_built=bool(env and env.built),
                           environment_seconds=round(env.seconds, 3) if env else 0.0,
                           layers_built=result.layers_built, size=result.size)
    doc["seconds"] = round(time.monotonic() - t0, 3)
    doc["notices"] = loaded.warnings + p.notices
    if register:
        try:
            before = store.get_deployment(spec.endpoint_name, spec.name)
        except NotFoundError:
            before = {}
        # Earlier images of this deployment: the one it used until now, and those kept for jobs.
        earlier = [t for t in dict.fromkeys([before.get("image"), *(before.get("retained_images") or [])])
                   if t and t != result.tag]
        doc["retained_images"] = earlier  # until pruned below: never forgotten if the pruning fails
        store.put_deployment(spec.endpoint_name, spec.name, doc)
        ep = store.get_endpoint(spec.endpoint_name)
        if set_default or not (ep.get("defaults") or {}).get("deployment_name"):
            endpoints.set_default(store, spec.endpoint_name, spec.name)
        _removed, kept = prune_images(store, earlier, keep=result.tag)
        if kept != earlier:
            store.put_deployment(spec.endpoint_name, spec.name, doc | {"retained_images": kept})
        doc = store.get_deployment(spec.endpoint_name, spec.name) | {"built": result.built, "seconds": doc["seconds"]}
    return doc | {"build_summary": summary}


def prune_images(store: Store, earlier: Iterable[str], keep: str) -> tuple[list[str], list[str]]:
    """Remove earlier images of a deployment that nothing refers to any more: (removed, kept).

    Only tags this deployment used and this home made are removed (`naming.is_own_image_tag`: every
    home tags the images it builds with its own id, so another home on the engine that deployed
    the same content keeps its tag, and the engine keeps the image while a tag is left); a tag of
    another form (made by an earlier bepbuild, perhaps shared with another home) is dropped from the
    list, never removed. A tag is kept while a job of this home may still run it
    (`pinning.held_images`: every docker job not Completed, since any other can be resumed) or a
    container uses it; it is dropped from the list once another deployment here uses it (that
    deployment's own redeploy considers it then) or it is gone.
    """
    from .jobs.pinning import held_images

    removed: list[str] = []
    kept: list[str] = []
    try:
        in_use = {d.get("image") for ep in store.list_endpoints() for d in store.list_deployments(ep["name"])}
        held = held_images(store)
    except Exception:  # housekeeping must never fail a deploy
        return removed, [t for t in earlier if t != keep]
    for tag in dict.fromkeys(earlier):
        if not tag or tag == keep or tag in in_use or not naming.is_own_image_tag(tag):
            continue
        try:
            img_id = images.image_id(tag)
            if img_id is None:
                continue
            if tag in held or img_id in held or images.engine().containers.list(all=True,
                                                                                  filters={"ancestor": img_id}):
                kept.append(tag)
                continue
            images.remove_image(tag)
            removed.append(tag)
        except Exception:  # housekeeping must never fail a deploy: try again at the next one
            kept.append(tag)
    return removed, kept


def deployment_doc(p: Prepared, result: images.BuildResult, env: env_images.EnvImage | None = None
                   ) -> dict[str, Any]:
    spec = p.loaded.spec
    body = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["model"] = f"azureml:{p.model['name']}:{p.model['version']}"
    body["environment"] = f"azureml:{p.environment['name']}:{p.environment['version']}"
    body.pop("code_configuration", None)
    if p.generated:
        # The image's code folder holds only the generated MLflow driver (jobs read scoring_script).
        body["code_configuration"] = {"code": None, "scoring_script": MLFLOW_DRIVER, "generated": True}
    else:
        body["code_configuration"] = {
            "code": str(p.loaded.paths["code"]),
            "scoring_script": spec.code_configuration.scoring_script if spec.code_configuration else None,
        }
    body["image"] = result.tag
    body["image_id"] = result.image_id
    body["environment_image"] = env.tag if env else None  # `environment list --images` counts its deployments
    body["environment_image_id"] = env.image_id if env else None
    body["built"] = result.built
    body["build_seconds"] = round(result.seconds, 3)
    body["lock_sha256"] = _lock_digest(p)
    body["strategy"] = p.plan.strategy
    body["model_folder"] = Path(p.model["path"]).name
    # What the process backend copies into each job (jobs/pinning.snapshot): the rendered code,
    # checked against this hash, since a later build or a failed deploy renders over the context.
    body["context"] = str(p.rendered.context)
    body["code_sha256"] = p.code_sha256 or tree_sha256(p.rendered.context / "code")
    body["provisioning_state"] = "Succeeded"
    return body


