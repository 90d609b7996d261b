"""deploy: deployment.yml -> registered model/env -> install plan + lock -> context -> image -> store."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__, config, endpoints, environments, images, locking, naming, registry
from .errors import BuildError, NotFoundError, SpecError, UserError
from .hashing import tree_sha256
from .render import MLFLOW_DRIVER, Rendered, RenderInput, render
from .specs import BatchDeployment, EnvironmentSpec, InlineModel, Loaded, load_deployment, load_endpoint
from .specs.conda import CondaFile
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


def _model_environment(store: Store, model: dict[str, Any]) -> tuple[dict[str, Any], environments.ModelEnvironment]:
    """Register the environment an MLflow model asks for (a new version only when it changes)."""
    wanted = environments.mlflow_environment(Path(model["path"]))
    env_spec = EnvironmentSpec(name=f"{model['name']}-env", image=environments.MLFLOW_BASE_IMAGE,
                               conda_file=wanted.conda_file,
                               description=f"built from {wanted.source} of MLflow model {model['name']}")
    holder: Loaded[Any] = Loaded(env_spec, None, "", conda=CondaFile.model_validate(wanted.conda_file))
    return registry.register_environment(store, holder, env_spec, reuse_same_content=True), wanted


def _is_generated(loaded: Loaded[BatchDeployment], model: dict[str, Any]) -> bool:
    """True when the deployment scores with the generated MLflow driver (no scoring script given)."""
    if loaded.spec.code_configuration is not None:
        return False
    if model.get("type") != "mlflow_model":
        raise SpecError(f"required unless the model is an MLflow model ({model['name']}:{model['version']} is a "
                        f"{model.get('type') or 'custom_model'})", source=loaded.source, field="code_configuration")
    registry.check_mlflow_model(Path(model["path"]))
    return True


def _lock(plan: environments.EnvPlan, base: environments.BaseInfo, opts: DeployOptions, log: Log,
          wanted: environments.ModelEnvironment | None, notices: list[str]) -> locking.Lock:
    """Resolve the plan; for a model's own environment, turn a failure into one line with a way out."""

    def resolve() -> locking.Lock:
        return locking.resolve(plan.requirements, python=base.python or "", options=plan.pip_options,
                               refresh=opts.relock, log=log)

    if wanted is None:
        return resolve()
    try:
        return resolve()
    except BuildError as e:
        skinny = next((r for r in wanted.fallbacks if locking_name(r) in e.message), None)
        if skinny is None:
            raise _model_env_error(wanted, base, e) from e
    # No mlflow-skinny of the pinned version (it started with mlflow 1.x): mlflow itself, as asked.
    original = wanted.fallbacks[skinny]
    notices[:] = [n for n in notices if skinny not in n]
    notices.append(f"{skinny} is not available: installing {original} as the model asks")
    plan.requirements = [original if r == skinny else r for r in plan.requirements]
    try:
        return resolve()
    except BuildError as e:
        raise _model_env_error(wanted, base, e) from e


def locking_name(requirement: str) -> str:
    """The part of a requirement pip repeats in its errors (`mlflow-skinny==1.2`)."""
    return requirement.split(";")[0].strip()


def _model_env_error(wanted: environments.ModelEnvironment, base: environments.BaseInfo, e: BuildError) -> UserError:
    why = e.message.removeprefix("pip install failed: ").removeprefix("ERROR: ")
    saved = ""
    if wanted.python and wanted.python.split(".")[:2] != (base.python or "").split(".")[:2]:
        saved = f", the model was saved with Python {wanted.python}"
    return UserError(
        f"the MLflow model's {wanted.source} cannot be installed on Python {base.python} of {base.image}{saved}: "
        f"{why}; override its pins with --set environment.conda_file=FILE (a conda file, relative to the deployment "
        "file) or give the deployment an environment"
    )


def prepare(
    store: Store, loaded: Loaded[BatchDeployment], opts: DeployOptions, log: Log, context: Path | None = None
) -> Prepared:
    """Resolve assets, plan the environment, lock it and render the context (no build yet)."""
    spec = loaded.spec
    model = _resolve_model(store, loaded)
    generated = _is_generated(loaded, model)
    wanted: environments.ModelEnvironment | None = None
    if generated and spec.environment is None:
        env, wanted = _model_environment(store, model)
    else:
        env = _resolve_environment(store, loaded, model)
    from_image = map_base_image(env.get("image"), opts.base_image)
    if env.get("build"):
        from_image = _build_environment_image(env, opts, log)
    base = environments.probe_base(from_image)
    plan = environments.plan(env, base, strict=opts.strict)
    notices = list(plan.notices) + (wanted.notices if wanted else [])
    lock = None
    if plan.strategy == "pip":
        lock = _lock(plan, base, opts, log, wanted, notices)
    if generated:
        code_dir, script = None, MLFLOW_DRIVER
    else:
        code_dir = loaded.paths["code"]
        script = loaded.paths["scoring_script"].relative_to(code_dir).as_posix()
    inp = RenderInput(
        endpoint=spec.endpoint_name, deployment=spec.name, code_dir=code_dir, scoring_script=script,
        model_path=Path(model["path"]), plan=plan, base=base, base_image=from_image, lock=lock, conda=base.conda,
        template_dir=opts.template_dir,
    )
    context = context or naming.context_dir(spec.endpoint_name, spec.name)
    rendered = render(inp, context)
    tag = f"{naming.image_repo(spec.endpoint_name, spec.name)}:{rendered.short_hash}"
    return Prepared(loaded, model, env, plan, rendered, tag, notices, generated)


def _build_environment_image(env: dict[str, Any], opts: DeployOptions, log: Log) -> str:
    build = env["build"]
    tag = f"{naming.environment_image_repo(env['name'])}:{build['sha256'][:16]}"
    images.build(Path(env["path"]), tag, network="host", backend=opts.backend, dockerfile=build["dockerfile_path"],
                 on_line=log, force=opts.force)
    return tag


def image_labels(p: Prepared) -> dict[str, str]:
    spec = p.loaded.spec
    return {
        "org.opencontainers.image.title": f"{spec.endpoint_name}/{spec.name}",
        "org.opencontainers.image.description": spec.description or f"bepbuild batch deployment {spec.name}",
        "org.opencontainers.image.version": p.rendered.short_hash,
        "org.opencontainers.image.vendor": "bepbuild",
        "io.bepbuild.endpoint": spec.endpoint_name,
        "io.bepbuild.deployment": spec.name,
        "io.bepbuild.content-hash": p.rendered.content_hash,
        "io.bepbuild.lock-sha256": p.plan and _lock_digest(p),
        "io.bepbuild.model": f"{p.model['name']}:{p.model['version']}",
        "io.bepbuild.model-sha256": p.model.get("sha256", ""),
        "io.bepbuild.environment": f"{p.environment['name']}:{p.environment['version']}",
        "io.bepbuild.strategy": p.plan.strategy,
        "io.bepbuild.version": __version__,
    }


def _lock_digest(p: Prepared) -> str:
    lock = p.rendered.context / "env" / "requirements.lock"
    if lock.exists():
        import hashlib

        return hashlib.sha256(lock.read_bytes()).hexdigest()
    return ""


def build_image(p: Prepared, opts: DeployOptions, log: Log) -> images.BuildResult:
    secrets = {}
    network = "none"
    if p.plan.strategy == "conda":
        network = "host"
        ca = config.ca_bundle()
        if ca:
            secrets["ca"] = ca
    # No Dockerfile named here: images.build picks the one of the backend it resolves `auto` to.
    return images.build(p.rendered.context, p.tag, labels=image_labels(p), network=network, secrets=secrets,
                        backend=opts.backend, on_line=log, force=opts.force,
                        log_path=config.home() / "logs" / "builds" / f"{p.tag.replace('/', '_').replace(':', '_')}.log")


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
    p = prepare(store, loaded, opts, log)
    result = build_image(p, opts, log)
    doc = deployment_doc(p, result)
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
    return doc


def prune_images(store: Store, earlier: Iterable[str], keep: str) -> tuple[list[str], list[str]]:
    """Remove earlier images of a deployment that nothing refers to any more: (removed, kept).

    Only tags this deployment used are considered (never other tags of its repository: another
    bepbuild home on the engine may use them). A tag is kept while a job of this home may still run
    it (`pinning.held_images`: every docker job not Completed, since any other can be resumed) or a
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
        if not tag or tag == keep or tag in in_use:
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


def deployment_doc(p: Prepared, result: images.BuildResult) -> dict[str, Any]:
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
    body["built"] = result.built
    body["build_seconds"] = round(result.seconds, 3)
    body["lock_sha256"] = _lock_digest(p)
    body["strategy"] = p.plan.strategy
    body["model_folder"] = Path(p.model["path"]).name
    # What the process backend copies into each job (jobs/pinning.snapshot): the rendered code,
    # checked against this hash, since a later build or a failed deploy renders over the context.
    body["context"] = str(p.rendered.context)
    body["code_sha256"] = tree_sha256(p.rendered.context / "code")
    body["provisioning_state"] = "Succeeded"
    return body


