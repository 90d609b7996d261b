"""Install plans (`bepbuild.environments.plan`) for every strategy, with fake base images: no engine."""

from __future__ import annotations

from typing import Any

import pytest

from bepbuild.environments import BaseInfo, conda_to_pip, pip_name, plan
from bepbuild.errors import SpecError

DEBIAN = BaseInfo(image="local/debian-py:bookworm", image_id="sha256:" + "0" * 64, python="3.11.2", conda=None)
CONDA = BaseInfo(image="local/miniconda:py311", image_id="sha256:" + "1" * 64, python="3.11.9",
                 conda="/opt/conda/bin/mamba")
NO_PYTHON = BaseInfo(image="busybox:latest", image_id="sha256:" + "2" * 64, python=None, conda=None)


def env(*deps: Any, image: str = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest") -> dict[str, Any]:
    """A registered environment record as `registry.register_environment` stores it."""
    return {"name": "env", "version": "1", "image": image, "build": None,
            "conda_file": {"name": "test-env", "channels": ["conda-forge"], "dependencies": list(deps)}}


# --- conda -> pip mapping -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("pytorch", "torch"),
        ("pytorch=2.1", "torch==2.1.*"),
        ("pytorch-cpu==2.1.0", "torch==2.1.0"),
        ("numpy=1.21", "numpy==1.21.*"),
        ("numpy=1", "numpy==1.*"),
        ("numpy=1.21.5", "numpy==1.21.5"),
        ("numpy=1.21.*", "numpy==1.21.*"),
        ("numpy 1.21", "numpy==1.21.*"),
        ("numpy>=1.21,<2", "numpy>=1.21,<2"),
        ("numpy==1.21.5", "numpy==1.21.5"),
        # build strings are dropped, in both of conda's spellings
        ("numpy=1.21.5=py311h1234567_0", "numpy==1.21.5"),
        ("numpy 1.21.5 py311h1234567_0", "numpy==1.21.5"),
        ("conda-forge::scikit-learn=1.3", "scikit-learn==1.3.*"),
        ("py-xgboost=1.7.6", "xgboost==1.7.6"),
        ("matplotlib-base", "matplotlib"),
        ("pandas", "pandas"),
    ],
)
def test_conda_to_pip(spec: str, expected: str) -> None:
    assert conda_to_pip(spec) == expected


@pytest.mark.parametrize("spec", ["python=3.11", "pip", "pip<22.0", "setuptools", "openssl=3.0", "ca-certificates",
                                  "libgcc-ng", "cpuonly", "_libgcc_mutex=0.1=main"])
def test_conda_system_packages_are_dropped(spec: str) -> None:
    assert conda_to_pip(spec) is None


@pytest.mark.parametrize("spec", ["cudatoolkit=11.3", "cudnn", "mkl", "pytorch-cuda=12.1", "cuda-nvcc", "libcublas"])
def test_conda_only_packages_are_refused(spec: str) -> None:
    with pytest.raises(SpecError, match="no PyPI twin"):
        conda_to_pip(spec)


@pytest.mark.parametrize(("requirement", "name"), [
    ("azureml-dataset-runtime[fuse]>=1.0", "azureml-dataset-runtime"),
    ('azureml-dataset-runtime[fuse]==1.0 ; python_version>"3"', "azureml-dataset-runtime"),
    ("AzureML_Core==1.50", "azureml-core"),
    ("azureml.core", "azureml-core"),  # PEP 503: runs of -, _ and . are one -
    ("Azureml.._Core~=1.5", "azureml-core"),
    ("azureml-core @ https://example.invalid/azureml_core-1.0-py3-none-any.whl", "azureml-core"),
    ("azureml-core==1.50 --hash=sha256:" + "0" * 64, "azureml-core"),
    ("git+https://example.invalid/azureml.git#egg=AzureML.Core", "azureml-core"),
    ("  six ; python_version>'3'", "six"),
    ("--extra-index-url x", None),
    ("./local/folder", None),
    ("", None),
])
def test_pip_name(requirement: str, name: str | None) -> None:
    assert pip_name(requirement) == name


# --- pip (hermetic) strategy -----------------------------------------------------------------------


def test_pip_strategy_maps_conda_packages_and_keeps_pip_section_in_order() -> None:
    p = plan(env("python=3.11", "pip", "pytorch=2.1", "numpy=1.21=py311_0", "openssl",
                 {"pip": ["pandas>=2", "pillow", "--extra-index-url https://example.invalid/simple"]}), DEBIAN)
    assert p.strategy == "pip"
    assert p.requirements == ["torch==2.1.*", "numpy==1.21.*", "pandas>=2", "pillow"]
    assert p.pip_options == ["--extra-index-url https://example.invalid/simple"]
    assert p.python_pin == "3.11"
    assert p.conda_file is None
    assert p.notices == []


def test_pip_strategy_drops_azure_only_packages_with_a_notice() -> None:
    p = plan(env("python=3.11", {"pip": ["azureml-core==1.50.0", "six==1.16.0",
                                          "azureml-dataset-runtime[fuse]", "azureml-defaults"]}), DEBIAN)
    assert p.requirements == ["six==1.16.0"]
    assert len(p.notices) == 1
    notice = p.notices[0]
    assert "Azure-only" in notice
    for dropped in ("azureml-core==1.50.0", "azureml-dataset-runtime[fuse]", "azureml-defaults"):
        assert dropped in notice
    assert not notice.startswith("warning: ")


AZURE_SPELLINGS = ["azureml.core", "AzureML_Core==1.50", "azureml-dataset-runtime[fuse]==1.0 ; python_version>\"3\"",
                   "AZUREML.DEFAULTS", "azureml_dataset.runtime[fuse]"]


def test_azure_only_packages_are_dropped_however_they_are_spelled() -> None:
    p = plan(env("python=3.11", {"pip": [*AZURE_SPELLINGS, "six==1.16.0", "azureml-mlflow"]}), DEBIAN)
    assert p.requirements == ["six==1.16.0", "azureml-mlflow"]
    assert all(spelling in p.notices[0] for spelling in AZURE_SPELLINGS)
    conda = plan(env("python=3.11", {"pip": [*AZURE_SPELLINGS, "six==1.16.0"]}), CONDA)
    assert conda.conda_file is not None
    assert conda.conda_file["dependencies"] == ["python=3.11", {"pip": ["six==1.16.0"]}]


def test_pip_strategy_refuses_conda_only_package() -> None:
    with pytest.raises(SpecError, match="cudatoolkit"):
        plan(env("python=3.11", "cudatoolkit=11.3", {"pip": ["six"]}), DEBIAN)


def test_pip_strategy_needs_python_in_the_base() -> None:
    with pytest.raises(SpecError, match="no python3"):
        plan(env("python=3.11", {"pip": ["six"]}), NO_PYTHON)


def test_python_pin_mismatch_is_a_warning_naming_both_versions() -> None:
    p = plan(env("python=3.8.5", {"pip": ["six"]}), DEBIAN)
    assert p.strategy == "pip"
    warnings = [n for n in p.notices if n.startswith("warning: ")]
    assert len(warnings) == 1
    assert "3.8.5" in warnings[0] and "3.11.2" in warnings[0]


def test_python_pin_mismatch_is_an_error_under_strict() -> None:
    with pytest.raises(SpecError) as info:
        plan(env("python=3.8.5", {"pip": ["six"]}), DEBIAN, strict=True)
    assert "3.8.5" in str(info.value) and "3.11.2" in str(info.value)
    assert "strict" in str(info.value)


@pytest.mark.parametrize("pin", ["python=3.11", "python=3.11.7", "python==3.11", "python=3", "python 3.11.*"])
def test_matching_python_pins_give_no_warning(pin: str) -> None:
    assert plan(env(pin, {"pip": ["six"]}), DEBIAN, strict=True).notices == []


@pytest.mark.parametrize("pin", ["python>=3.8", "python>=3.9,<3.13", "python<4"])
def test_python_ranges_are_not_exact_pins(pin: str) -> None:
    # A range that the base's Python satisfies must not be reported (nor fail under --strict).
    assert plan(env(pin, {"pip": ["six"]}), DEBIAN, strict=True).notices == []


# --- conda strategy --------------------------------------------------------------------------------


def test_conda_base_keeps_the_conda_file_minus_azure_only_pip_packages() -> None:
    record = env("python=3.11", "pip", "cudatoolkit=11.3",
                 {"pip": ["azureml-core", "torch==2.1.0", "azureml-dataset-runtime[fuse]"]})
    p = plan(record, CONDA)
    assert p.strategy == "conda"
    assert p.requirements == []
    assert p.conda_file == {
        "name": "test-env",
        "channels": ["conda-forge"],
        # conda-only packages are fine here: conda installs them
        "dependencies": ["python=3.11", "pip", "cudatoolkit=11.3", {"pip": ["torch==2.1.0"]}],
    }
    assert any("azureml-core" in n and "azureml-dataset-runtime[fuse]" in n for n in p.notices)
    # the registered record is not changed
    assert record["conda_file"]["dependencies"][-1]["pip"][0] == "azureml-core"


def test_conda_strategy_also_checks_the_python_pin() -> None:
    p = plan(env("python=3.9", {"pip": ["six"]}), CONDA)
    assert p.strategy == "conda"
    assert any(n.startswith("warning: ") and "3.9" in n and "3.11.9" in n for n in p.notices)
    with pytest.raises(SpecError):
        plan(env("python=3.9", {"pip": ["six"]}), CONDA, strict=True)


# --- build and image strategies -------------------------------------------------------------------


def test_build_environment_gives_build_strategy() -> None:
    record = {"name": "env", "version": "1", "image": None, "conda_file": None,
              "build": {"dockerfile_path": "Dockerfile", "sha256": "ab" * 32}}
    p = plan(record, DEBIAN)
    assert p.strategy == "build"
    assert p.requirements == [] and p.conda_file is None


@pytest.mark.parametrize("base", [DEBIAN, CONDA, NO_PYTHON])
def test_image_without_conda_file_gives_image_strategy(base: BaseInfo) -> None:
    record = {"name": "env", "version": "1", "image": "python:3.11-slim", "conda_file": None, "build": None}
    p = plan(record, base)
    assert p.strategy == "image"
    assert p.requirements == [] and p.notices == []


# --- the runtime's minimum Python ------------------------------------------------------------------

OLD_PYTHON = BaseInfo(image="local/old:py37", image_id="sha256:" + "3" * 64, python="3.7.16", conda=None)
OLD_CONDA = BaseInfo(image="local/miniconda:py37", image_id="sha256:" + "4" * 64, python="3.7.16",
                     conda="/opt/conda/bin/conda")


@pytest.mark.parametrize("record", [
    env("python=3.7", {"pip": ["six"]}),  # pip: the base image's Python runs the runtime
    {"name": "env", "version": "1", "image": "local/old:py37", "conda_file": None, "build": None},
    {"name": "env", "version": "1", "image": None, "conda_file": None,
     "build": {"dockerfile_path": "Dockerfile", "sha256": "ab" * 32}},
], ids=["pip", "image", "build"])
def test_a_base_image_older_than_the_runtime_is_refused_in_one_line(record: dict[str, Any]) -> None:
    with pytest.raises(SpecError) as info:
        plan(record, OLD_PYTHON)
    message = str(info.value)
    assert message == ("base image local/old:py37 has Python 3.7.16; bepbuild's runtime needs Python 3.8 or "
                       "newer: choose another base image (--base-image)")


def test_conda_runs_the_runtime_on_the_pinned_python() -> None:
    # The conda environment's Python runs the runtime, whatever the base image's own Python is.
    assert plan(env("python=3.8.5", {"pip": ["six"]}), OLD_CONDA).strategy == "conda"
    assert plan(env("python=3.11", {"pip": ["six"]}), OLD_CONDA).strategy == "conda"
    with pytest.raises(SpecError, match=r"^the conda file pins python=3\.7; bepbuild's runtime needs Python 3\.8 "):
        plan(env("python=3.7", {"pip": ["six"]}), CONDA)
    assert plan(env("python", {"pip": ["six"]}), OLD_CONDA).strategy == "conda"  # conda's newest
    with pytest.raises(SpecError, match="has Python 3.7.16"):  # no python in the file: the base's stays
        plan(env("pip", {"pip": ["six"]}), OLD_CONDA)


@pytest.mark.parametrize("python", ["3.8.5", "3.8", "3.13.0", "4.0"])
def test_the_runtime_minimum_and_newer_pass(python: str) -> None:
    base = BaseInfo(image="img", image_id="sha256:" + "5" * 64, python=python, conda=None)
    assert plan(env({"pip": ["six"]}), base).strategy == "pip"
