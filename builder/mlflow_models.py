"""MLflow models: everything bepbuild does differently for them, in one place.

- `check_model`: an MLflow model is a folder with an MLmodel file and the python_function flavor
  (registering one, and deploying one without a scoring script);
- `is_generated`: a deployment without a scoring script is scored by the runtime's generated driver
  (`MLFLOW_DRIVER`, copied into the image's code folder by `render`);
- `environment` / `register_environment`: the environment of an MLflow model deployed without one,
  read from the model's own files (`mlflow` -> `mlflow-skinny` of the same version, the driver's
  needs added, wheels only, the Python the model was saved with pinned, so that `base_images` gives
  it that Python), registered as `<model>-env`;
- `lock`: the mlflow-skinny -> mlflow fallback and the one error line when the model's pins cannot
  install;
- `conda_only_environment`: a deployment that gives only `environment.conda_file` (Azure's way to
  override the model's pins) gets the MLflow base image under it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from packaging.utils import canonicalize_name

from bepbuild_runtime import mlflow_driver

from .environments import BaseInfo, EnvPlan, conda_to_pip, parse_requirement, pip_name
from .errors import BuildError, SpecError, UserError
from .specs.conda import CondaFile

if TYPE_CHECKING:
    from .locking import Lock
    from .specs import BatchDeployment, Loaded
    from .store import Store

# The scoring script of an MLflow deployment without one: the runtime's generated driver, copied into
# the code folder (so the code layer stays last and both backends find it as they find any script).
MLFLOW_DRIVER = Path(mlflow_driver.__file__).name
# Azure's own MLflow base image is not public; every Azure ML base image maps to the local base image
# (or to the base of the Python the model asks for), and this name says what the environment is on.
MLFLOW_BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"


def driver_path() -> Path:
    """The generated driver's file (the runtime's own)."""
    return Path(mlflow_driver.__file__).resolve()


def conda_only_environment(data: dict[str, Any]) -> dict[str, Any]:
    """A deployment document without a scoring script whose environment is a conda file alone
    (`--set environment.conda_file=FILE` overrides an MLflow model's pins, as in Azure): the image is
    then the MLflow base one. Other documents are returned as they are."""
    env = data.get("environment")
    if (data.get("code_configuration") is None and isinstance(env, dict) and env.get("conda_file")
            and not env.get("image") and not env.get("build")):
        return {**data, "environment": {**env, "image": MLFLOW_BASE_IMAGE}}
    return data


def check_model(path: Path) -> dict[str, Any]:
    """An MLflow model folder must have an MLmodel file with the python_function flavor."""
    mlmodel = path / "MLmodel"
    if not path.is_dir() or not mlmodel.is_file():
        raise UserError(f"{path}: an mlflow_model must be a folder with an MLmodel file")
    try:
        doc = yaml.safe_load(mlmodel.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{mlmodel}: not a valid MLmodel file: {e}") from e
    flavors = (doc or {}).get("flavors") or {}
    if "python_function" not in flavors:
        raise UserError(
            f"{mlmodel}: only MLflow models with the python_function flavor can be deployed "
            f"without a scoring script (flavors: {', '.join(sorted(flavors)) or 'none'})"
        )
    return doc


def is_generated(loaded: Loaded[BatchDeployment], model: dict[str, Any]) -> bool:
    """True when the deployment scores with the generated MLflow driver (no scoring script given)."""
    if loaded.spec.code_configuration is not None:
        return False
    if model.get("type") != "mlflow_model":
        raise SpecError(f"required unless the model is an MLflow model ({model['name']}:{model['version']} is a "
                        f"{model.get('type') or 'custom_model'})", source=loaded.source, field="code_configuration")
    check_model(Path(model["path"]))
    return True



# The generated driver reads CSV (pandas), parquet (pyarrow) and images (pillow); mlflow itself loads
# the model. Added when the model's own requirements do not name them.
DRIVER_NEEDS = ("pandas", "pyarrow", "pillow")
# Old pins without a wheel for the base image's Python would otherwise be built from source on the
# host (minutes, then usually a compiler error): refused at once, with a clear line, instead.
MLFLOW_PIP_OPTIONS = ("--only-binary=:all:",)


@dataclass
class ModelEnvironment:
    """The environment an MLflow model asks for, as a conda document for `plan`."""

    conda_file: dict[str, Any]
    source: str  # the model file it came from: requirements.txt, conda.yaml or python_env.yaml
    python: str | None  # the Python the model was saved with
    notices: list[str] = field(default_factory=list)
    fallbacks: dict[str, str] = field(default_factory=dict)  # mlflow-skinny==X -> mlflow==X


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UserError(f"{path}: cannot read it: {e}") from e
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected a mapping")
    return doc


def read_requirements(path: Path, _seen: frozenset[Path] = frozenset()) -> list[str]:
    """A pip requirements file's lines: comments and blanks dropped, `-r` files inlined."""
    if path in _seen:
        raise UserError(f"{path}: includes itself")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read it: {e}") from e
    out: list[str] = []
    for raw in text.replace("\\\n", " ").splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ", "-r", "--requirement=")):
            name = re.sub(r"^(-r|--requirement)[= ]?", "", line).strip()
            out += read_requirements(path.parent / name, _seen | {path})
        elif line.startswith(("-c", "--constraint")):
            raise UserError(f"{path}: constraint files ({line}) are not supported; give the deployment an environment")
        else:
            out.append(line)
    return out


def _python_of(model_dir: Path, mlmodel: dict[str, Any]) -> str | None:
    env_file = model_dir / "python_env.yaml"
    if env_file.is_file():
        python = _read_yaml(env_file).get("python")
        if python:
            return str(python)
    conda_file = model_dir / "conda.yaml"
    if conda_file.is_file():
        pin = CondaFile.model_validate(_read_yaml(conda_file)).python_pin()
        if pin:
            return pin
    pyfunc = (mlmodel.get("flavors") or {}).get("python_function") or {}
    return str(pyfunc["python_version"]) if pyfunc.get("python_version") else None


def _model_requirements(model_dir: Path) -> tuple[list[str], str]:
    """The model's pip requirements and the file they come from (requirements.txt first)."""
    if (model_dir / "requirements.txt").is_file():
        return read_requirements(model_dir / "requirements.txt"), "requirements.txt"
    if (model_dir / "conda.yaml").is_file():
        conda = CondaFile.model_validate(_read_yaml(model_dir / "conda.yaml"))
        reqs = [r for r in (conda_to_pip(s) for s in conda.conda_packages()) if r]
        return reqs + [r.strip() for r in conda.pip_packages()], "conda.yaml"
    if (model_dir / "python_env.yaml").is_file():
        deps = _read_yaml(model_dir / "python_env.yaml").get("dependencies") or []
        reqs: list[str] = []
        for dep in map(str, deps):
            if dep.startswith(("-r", "--requirement")):
                name = re.sub(r"^(-r|--requirement)[= ]?", "", dep).strip()
                reqs += read_requirements(model_dir / name)
            else:
                reqs.append(dep)
        return reqs, "python_env.yaml"
    raise UserError(
        f"{model_dir}: the MLflow model has no requirements.txt, conda.yaml or python_env.yaml to build its "
        "environment from; give the deployment an environment"
    )


def _as_mlflow_skinny(requirement: str) -> str | None:
    """``mlflow<spec>`` (any spelling) as ``mlflow-skinny<spec>``, the rest of the line kept as written;
    None for other projects, and for mlflow with extras or from a URL (only mlflow itself has those)."""
    parsed = parse_requirement(requirement)
    if parsed is None or canonicalize_name(parsed.name) != "mlflow" or parsed.extras or parsed.url:
        return None
    line = requirement.strip()
    return "mlflow-skinny" + line[len(parsed.name):]


def mlflow_environment(model_dir: Path) -> ModelEnvironment:
    """The environment of an MLflow model deployed without one, from the model's own files.

    Azure builds it from the model's conda.yaml / requirements.txt; here requirements.txt is
    preferred (it is what `pip` installs), then conda.yaml, then python_env.yaml. `mlflow` becomes
    `mlflow-skinny` of the same version: the pyfunc loader without the tracking server, UI and
    plotting stack (about 40 fewer packages); the driver's own needs are added when missing.
    """
    mlmodel = _read_yaml(model_dir / "MLmodel") if (model_dir / "MLmodel").is_file() else {}
    reqs, source = _model_requirements(model_dir)
    python = _python_of(model_dir, mlmodel)
    notices: list[str] = []
    fallbacks: dict[str, str] = {}
    mapped: list[str] = []
    for req in reqs:
        skinny = _as_mlflow_skinny(req)
        if skinny is not None:
            fallbacks[skinny] = req
            notices.append(f"the MLflow model asks for {req}: installing {skinny} instead (the same pyfunc "
                           "loader without the tracking server and UI; give an environment to get mlflow itself)")
            req = skinny
        mapped.append(req)
    names = {pip_name(r) for r in mapped}
    added = []
    if not names & {"mlflow", "mlflow-skinny"}:
        added.append("mlflow-skinny")
    added += [n for n in DRIVER_NEEDS if n not in names]
    if added:
        notices.append(f"added for the generated scoring driver: {', '.join(added)}")
    deps: list[Any] = [f"python={python}"] if python else []
    deps += ["pip", {"pip": [*MLFLOW_PIP_OPTIONS, *mapped, *added]}]
    conda_doc = {"name": "mlflow-env", "channels": ["conda-forge"], "dependencies": deps}
    return ModelEnvironment(conda_doc, source, python, notices, fallbacks)


def register_environment(store: Store, model: dict[str, Any]) -> tuple[dict[str, Any], ModelEnvironment]:
    """Register the environment an MLflow model asks for (a new version only when it changes)."""
    from . import registry
    from .specs import EnvironmentSpec, Loaded

    wanted = mlflow_environment(Path(model["path"]))
    env_spec = EnvironmentSpec(name=f"{model['name']}-env", image=MLFLOW_BASE_IMAGE, conda_file=wanted.conda_file,
                               description=f"built from {wanted.source} of MLflow model {model['name']}")
    holder: Loaded[Any] = Loaded(env_spec, None, "", conda=CondaFile.model_validate(wanted.conda_file))
    return registry.register_environment(store, holder, env_spec, reuse_same_content=True), wanted


def lock(resolve: Callable[[], Lock], plan: EnvPlan, base: BaseInfo, wanted: ModelEnvironment,
         notices: list[str]) -> Lock:
    """Resolve a model's own environment (`resolve` locks `plan.requirements`): when mlflow-skinny has no
    release of the pinned version (it started with mlflow 1.x), mlflow itself as the model asks; a
    failure is one line with the way out."""
    try:
        return resolve()
    except BuildError as e:
        skinny = next((r for r in wanted.fallbacks if locking_name(r) in e.message), None)
        if skinny is None:
            raise _model_env_error(wanted, base, e) from e
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


def _model_env_error(wanted: ModelEnvironment, base: BaseInfo, e: BuildError) -> UserError:
    why = e.message.removeprefix("pip install failed: ").removeprefix("ERROR: ")
    saved = ""
    if wanted.python and wanted.python.split(".")[:2] != (base.python or "").split(".")[:2]:
        saved = f", the model was saved with Python {wanted.python}"
    return UserError(
        f"the MLflow model's {wanted.source} cannot be installed on Python {base.python} of {base.image}{saved}: "
        f"{why}; override its pins with --set environment.conda_file=FILE (a conda file, relative to the deployment "
        "file) or give the deployment an environment"
    )
