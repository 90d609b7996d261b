"""Turn an environment into an install plan: which strategy, which packages, which notices.

Strategies (DESIGN.md "Environments: hermetic by default"):
- ``pip``: the conda file's pip section (plus conda packages that have a PyPI twin), resolved on
  the host and installed offline from a wheelhouse; the default when the base image has no conda.
- ``conda``: the base image has conda/mamba, so `conda env create` runs in the build as Azure does.
- ``image``: an image without a conda file: its own Python is used as is.
- ``build``: the environment is a Docker build context, built first and used as the base.

The pip and conda strategies become an environment image of their own (`env_images`), shared by every
deployment of the same lock; the base image they start from has the Python the conda file pins
(`base_images`).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from bepbuild_runtime.layout import MIN_PYTHON

from . import config
from .errors import EngineError, SpecError
from .specs.conda import CondaFile, split_conda_spec

# Packages only the Azure service needs (data mounting, run history); nothing uses them locally.
# Canonical names (PEP 503): requirements are compared through `pip_name`.
PROBE_LABEL = "io.bepbuild.probe"  # the base-image probe's throw-away container
STALE_PROBE_SECONDS = 600.0  # a probe container not running and this old was left by a process that died

AZURE_ONLY = {"azureml-core", "azureml-dataset-runtime", "azureml-defaults"}

# Conda names whose PyPI twin has another name.
CONDA_TO_PYPI = {
    "pytorch": "torch",
    "pytorch-cpu": "torch",
    "py-xgboost": "xgboost",
    "py-opencv": "opencv-python-headless",
    "pytorch-lightning": "pytorch-lightning",
    "tensorflow-cpu": "tensorflow-cpu",
    "matplotlib-base": "matplotlib",
}
# Conda packages the base image's system already provides (or that only steer conda itself).
CONDA_SYSTEM = {
    "pip", "setuptools", "wheel", "ca-certificates", "certifi", "openssl", "libffi", "ncurses", "readline",
    "sqlite", "tk", "xz", "zlib", "ld_impl_linux-64", "_libgcc_mutex", "_openmp_mutex", "libgcc-ng",
    "libstdcxx-ng", "libgomp", "cpuonly", "tzdata", "bzip2", "libuuid", "libnsl", "libzlib",
}
# Conda-only packages with no installable PyPI twin.
CONDA_ONLY = {"cudatoolkit", "cudnn", "mkl", "mkl-service", "mkl_fft", "mkl_random", "openmpi", "nccl", "blas",
              "libblas", "liblapack", "intel-openmp", "magma-cuda", "pytorch-cuda", "cuda-toolkit"}

_EGG = re.compile(r"#(?:[^#\s]*&)?egg=([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass
class BaseInfo:
    """What a base image offers: its id, Python version and whether it has conda."""

    image: str
    image_id: str
    python: str | None
    conda: str | None  # path of conda/mamba/micromamba, if any


@dataclass
class EnvPlan:
    strategy: str  # pip | conda | image | build
    requirements: list[str] = field(default_factory=list)
    pip_options: list[str] = field(default_factory=list)
    conda_file: dict[str, Any] | None = None
    notices: list[str] = field(default_factory=list)
    python_pin: str | None = None


def probe_base(image: str) -> BaseInfo:
    """Inspect a base image once (cached by image id): Python version and conda."""
    from . import images

    client = images.engine()
    try:
        img = client.images.get(image)
    except Exception as e:
        raise EngineError(
            f"base image {image!r} is not available locally ({type(e).__name__}); run `make engine` to create "
            "the default one, pull it, or choose another with --base-image / BEPBUILD_BASE_IMAGE"
        ) from e
    cache = config.home() / "cache" / f"base-{img.id.replace(':', '-')}.json"
    if cache.exists():
        return BaseInfo(**json.loads(cache.read_text()))
    script = (
        "p=$(command -v python3 || command -v python); "
        "[ -n \"$p\" ] && \"$p\" -c 'import platform; print(platform.python_version())' || echo none; "
        "command -v mamba || command -v micromamba || command -v conda || echo none"
    )
    remove_stale_probes(client)
    out = client.containers.run(
        img.id, ["sh", "-c", script], remove=True, network_mode="none", entrypoint=[], user="0",
        labels={PROBE_LABEL: "base-image"},
    ).decode().split()
    python = None if not out or out[0] == "none" else out[0]
    conda = None if len(out) < 2 or out[1] == "none" else out[1]
    info = BaseInfo(image=image, image_id=img.id, python=python, conda=conda)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(info.__dict__))
    return info


def remove_stale_probes(client: Any) -> list[str]:
    """Remove probe containers a bepbuild process left when it (or the engine) died between creating
    and removing one: labelled PROBE_LABEL, not running, created over STALE_PROBE_SECONDS ago (a probe
    another process runs now is younger). Returns their ids; the engine's errors are not the deploy's."""
    removed = []
    try:
        found = client.containers.list(all=True, filters={"label": PROBE_LABEL,
                                                         "status": ["created", "exited", "dead"]})
    except Exception:  # noqa: BLE001 - clean-up only: the probe itself reports engine trouble
        return removed
    now = time.time()
    for container in found:
        try:
            created = datetime.strptime(str(container.attrs.get("Created", ""))[:19], "%Y-%m-%dT%H:%M:%S")
        except ValueError:
            continue
        if now - created.replace(tzinfo=timezone.utc).timestamp() < STALE_PROBE_SECONDS:
            continue
        try:
            container.remove(force=True)
            removed.append(container.id)
        except Exception:  # noqa: BLE001 - gone meanwhile, or the engine is busy: the next probe tries again
            continue
    return removed


def parse_requirement(requirement: str) -> Requirement | None:
    """A pip requirement line as PEP 508 reads it (per-line options such as ``--hash`` dropped); None
    for option lines, paths and bare URLs."""
    line = requirement.strip()
    if not line or line.startswith("-"):
        return None
    for text in (line, line.split(" -", 1)[0]):
        try:
            return Requirement(text)
        except InvalidRequirement:
            continue
    return None


def pip_name(requirement: str) -> str | None:
    """The canonical (PEP 503) project name a requirement line installs: ``AzureML_Core==1.5``,
    ``azureml.core`` and ``azureml-core[x] ; python_version>"3"`` all give ``azureml-core``. A VCS or
    archive URL gives its ``#egg=`` name; None when there is no name (options, paths)."""
    parsed = parse_requirement(requirement)
    if parsed is not None:
        return canonicalize_name(parsed.name)
    egg = None if requirement.lstrip().startswith("-") else _EGG.search(requirement)
    return canonicalize_name(egg.group(1)) if egg else None


def conda_to_pip(spec: str) -> str | None:
    """A conda dependency as a pip requirement; None when the base system provides it."""
    name, rest = split_conda_spec(spec)
    if name in CONDA_SYSTEM or name == "python":
        return None
    if name in CONDA_ONLY or name.startswith(("cuda-", "libcu", "libnv")):
        raise SpecError(
            f"conda package {name!r} has no PyPI twin: use a base image with conda, or remove it from the conda file"
        )
    pypi = CONDA_TO_PYPI.get(name, name)
    rest = rest.strip()
    if not rest:
        return pypi
    if rest[0] in "<>!~" or rest.startswith("=="):
        return pypi + rest
    # conda's `=1.2` / ` 1.2` / `=1.2=build`: `1.2` alone means 1.2.* in conda.
    version = rest.lstrip("= ").split("=")[0].split(" ")[0]
    if version.endswith("*"):
        return f"{pypi}=={version}"
    return f"{pypi}=={version}" if version.count(".") >= 2 else f"{pypi}=={version}.*"


def _check_python(pin: str | None, base: BaseInfo, strict: bool, notices: list[str]) -> None:
    if not pin or not base.python:
        return
    want = pin.split(".")[:2]
    have = base.python.split(".")[:2]
    if want != have[: len(want)]:
        msg = (
            f"the conda file pins python={pin} but the base image {base.image} has Python {base.python}; "
            f"packages are resolved for Python {base.python}"
        )
        if strict:
            raise SpecError(msg + " (--strict)")
        notices.append("warning: " + msg)


def _minor(version: str | None) -> tuple[int, int] | None:
    m = re.match(r"\s*(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def _check_runtime_python(base: BaseInfo, conda: CondaFile | None = None) -> None:
    """Refuse an environment whose Python is older than the runtime's minimum (layout.MIN_PYTHON).

    The runtime runs on the base image's Python, except under the conda strategy with a conda file
    that lists python: conda installs that one (an exact pin is checked; a bare or ranged python is
    conda's newest that fits).
    """
    need = ".".join(map(str, MIN_PYTHON))
    if conda is not None and any(split_conda_spec(s)[0] == "python" for s in conda.conda_packages()):
        pin = conda.python_pin()
        if (_minor(pin) or MIN_PYTHON) < MIN_PYTHON:
            raise SpecError(f"the conda file pins python={pin}; bepbuild's runtime needs Python {need} or newer")
        return
    if (_minor(base.python) or MIN_PYTHON) < MIN_PYTHON:
        raise SpecError(f"base image {base.image} has Python {base.python}; bepbuild's runtime needs Python {need} "
                        "or newer: choose another base image (--base-image)")


def requested_python(env: dict[str, Any]) -> str | None:
    """The Python an environment record's conda file pins (``python=3.8.5`` -> ``3.8.5``), if it pins one."""
    conda_doc = env.get("conda_file")
    if not conda_doc or env.get("build"):
        return None
    return CondaFile.model_validate(conda_doc).python_pin()


def plan(env: dict[str, Any], base: BaseInfo, *, strict: bool = False) -> EnvPlan:
    """The install plan for a registered environment record on a given base image."""
    conda_doc = env.get("conda_file")
    conda = CondaFile.model_validate(conda_doc) if conda_doc and not env.get("build") else None
    _check_runtime_python(base, conda if base.conda else None)
    if env.get("build"):
        return EnvPlan(strategy="build")
    if conda is None:
        return EnvPlan(strategy="image")
    notices: list[str] = []
    pin = conda.python_pin()
    _check_python(pin, base, strict, notices)
    dropped: list[str] = []
    pip_reqs: list[str] = []
    options: list[str] = []
    for req in conda.pip_packages():
        if req.lstrip().startswith("-"):
            options.append(req.strip())
            continue
        if pip_name(req) in AZURE_ONLY:
            dropped.append(req)
            continue
        pip_reqs.append(req.strip())
    if base.conda:
        cleaned = conda.model_dump(mode="json", exclude_none=True)
        deps = []
        for d in cleaned.get("dependencies", []):
            if isinstance(d, dict) and "pip" in d:
                d = {"pip": [r for r in d["pip"] if pip_name(r) not in AZURE_ONLY]}
            deps.append(d)
        cleaned["dependencies"] = deps
        if dropped:
            notices.append(f"dropped Azure-only packages (not needed locally): {', '.join(dropped)}")
        return EnvPlan(strategy="conda", conda_file=cleaned, notices=notices, python_pin=pin)
    conda_reqs = []
    for spec in conda.conda_packages():
        mapped = conda_to_pip(spec)
        if mapped:
            conda_reqs.append(mapped)
    if dropped:
        notices.append(f"dropped Azure-only packages (not needed locally): {', '.join(dropped)}")
    if not base.python:
        raise SpecError(f"base image {base.image} has no python3; choose a base image with Python 3")
    return EnvPlan(
        strategy="pip", requirements=conda_reqs + pip_reqs, pip_options=options, notices=notices, python_pin=pin
    )
