"""Unit tests of the MNIST examples in examples/mnist/ (no Docker: the scoring scripts run in-process).

Each scoring script is loaded from its code folder (so its sibling modules import), with
AZUREML_MODEL_DIR laid out as the image lays it out: <tmp>/model -> the deployment's model folder.
The scoring tests need torch / tensorflow in the test environment: they are marked `examples` and run
with `make test-examples` (a venv with examples/mnist/train/requirements.txt); `make test` covers the
same scripts inside their real images (tests/docker/test_seed_flow.py).
"""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "examples" / "mnist"
SAMPLE_DIR = EXAMPLE_DIR / "sample"
MINI_BATCH_SIZE = 10  # as in both deployment.yml files


def sample_labels() -> dict[str, int]:
    with open(SAMPLE_DIR.parent / "sample-labels.csv", newline="") as fh:
        return {row["file"]: int(row["label"]) for row in csv.DictReader(fh)}


def sample_files() -> list[str]:
    return sorted(str(p) for p in SAMPLE_DIR.glob("*.png"))


def load_scoring_script(deployment: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Import <deployment>/code/batch_driver.py as a fresh module; lay out the model dir as the image does."""
    deployment_dir = EXAMPLE_DIR / deployment
    model_root = tmp_path / "azureml-models"
    model_root.mkdir()
    (model_root / "model").symlink_to(deployment_dir / "model", target_is_directory=True)
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(model_root))

    code_dir = deployment_dir / "code"
    monkeypatch.syspath_prepend(str(code_dir))
    # Forget sibling modules of an earlier load, so this code folder's own ones are imported.
    for path in code_dir.glob("*.py"):
        monkeypatch.delitem(sys.modules, path.stem, raising=False)

    module_name = f"_mnist_{deployment.replace('-', '_')}_batch_driver"
    spec = importlib.util.spec_from_file_location(module_name, code_dir / "batch_driver.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, module_name, module)
    spec.loader.exec_module(module)
    return module


def score_sample(driver):
    import pandas as pd

    driver.init()
    files = sample_files()
    parts = []
    for start in range(0, len(files), MINI_BATCH_SIZE):
        mini_batch = files[start : start + MINI_BATCH_SIZE]
        result = driver.run(mini_batch)
        assert isinstance(result, pd.DataFrame)
        assert list(result.columns) == ["file", "class", "probability"]
        assert len(result) == len(mini_batch)
        parts.append(result)
    return pd.concat(parts, ignore_index=True)


def check_predictions(predictions) -> None:
    labels = sample_labels()
    files = sample_files()
    assert len(predictions) == len(files) == len(labels)
    assert list(predictions["file"]) == [Path(f).name for f in files]
    assert set(predictions["file"]) == set(labels)
    assert predictions["class"].between(0, 9).all()
    assert all(float(c).is_integer() for c in predictions["class"])
    assert predictions["probability"].between(0.0, 1.0).all()
    correct = sum(int(row["class"]) == labels[row["file"]] for _, row in predictions.iterrows())
    accuracy = correct / len(predictions)
    assert accuracy >= 0.9, f"accuracy {accuracy:.3f} on the sample"


def test_sample_folder_is_complete():
    labels = sample_labels()
    assert len(labels) >= 50
    assert {Path(f).name for f in sample_files()} == set(labels)
    assert set(labels.values()) == set(range(10))


def test_sample_pngs_are_28x28_grayscale():
    Image = pytest.importorskip("PIL.Image")
    for path in sample_files():
        with Image.open(path) as img:
            assert img.size == (28, 28)
            assert img.mode == "L"


@pytest.mark.parametrize("deployment", ["deployment-torch", "deployment-keras"])
def test_deployment_yaml_mirrors_the_seed(deployment):
    spec = yaml.safe_load((EXAMPLE_DIR / deployment / "deployment.yml").read_text())
    assert spec["endpoint_name"] == "mnist-batch"
    assert spec["type"] == "model"
    assert spec["model"]["path"] == "model"
    assert spec["code_configuration"] == {"code": "code", "scoring_script": "batch_driver.py"}
    assert spec["environment"]["image"] == "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"
    assert spec["environment"]["conda_file"] == "environment/conda.yaml"
    assert spec["compute"] == "azureml:batch-cluster"
    assert spec["resources"] == {"instance_count": 1}
    settings = spec["settings"]
    assert settings["mini_batch_size"] == MINI_BATCH_SIZE
    assert settings["max_concurrency_per_instance"] == 2
    assert settings["output_action"] == "append_row"
    assert settings["output_file_name"] == "predictions.csv"
    assert (EXAMPLE_DIR / deployment / "model").is_dir()
    assert (EXAMPLE_DIR / deployment / "code" / "batch_driver.py").is_file()

    conda = yaml.safe_load((EXAMPLE_DIR / deployment / spec["environment"]["conda_file"]).read_text())
    deps = conda["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert "azureml-core" in pip  # bepbuild drops it with a notice
    assert not any(p.startswith(("torchvision", "pytorch-lightning")) for p in pip)


def test_endpoint_yaml():
    spec = yaml.safe_load((EXAMPLE_DIR / "endpoint.yml").read_text())
    assert spec["name"] == "mnist-batch"


@pytest.mark.parametrize("deployment", ["deployment-torch", "deployment-keras"])
def test_models_are_small(deployment):
    files = [p for p in (EXAMPLE_DIR / deployment / "model").rglob("*") if p.is_file()]
    assert files
    assert sum(p.stat().st_size for p in files) < 2 * 1024 * 1024


@pytest.mark.examples
def test_torch_scoring_script(monkeypatch, tmp_path):
    driver = load_scoring_script("deployment-torch", monkeypatch, tmp_path)
    check_predictions(score_sample(driver))


@pytest.mark.examples
def test_keras_scoring_script(monkeypatch, tmp_path):
    driver = load_scoring_script("deployment-keras", monkeypatch, tmp_path)
    check_predictions(score_sample(driver))


@pytest.mark.examples
@pytest.mark.parametrize(
    "deployment, framework", [("deployment-torch", "torch"), ("deployment-keras", "tensorflow")]
)
def test_unreadable_file_is_left_out(deployment, framework, monkeypatch, tmp_path):
    driver = load_scoring_script(deployment, monkeypatch, tmp_path)
    driver.init()
    bad = tmp_path / "not-an-image.png"
    bad.write_text("this is not a PNG")
    good = sample_files()[:3]
    result = driver.run([good[0], str(bad), *good[1:]])
    assert list(result["file"]) == [Path(p).name for p in good]
