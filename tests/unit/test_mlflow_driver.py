"""The generated MLflow scoring driver (bepbuild_runtime.mlflow_driver), in-process.

Small MLflow models are saved in each test (pyfunc models whose predict() reports what it was
given, so that the test sees the types the driver enforced) and the committed example model of
examples/heart-classifier-mlflow is scored on its sample data. mlflow-skinny and scikit-learn are
in the `test` extra (they install in about 15 s); parquet reading needs pyarrow, which the test
venv does not have: parquet files are covered inside the real image (tests/docker/test_mlflow.py).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

# Not importorskip: mlflow-skinny is in the test extra, so a venv without it must fail loudly.
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec

from bepbuild_runtime import mlflow_driver, output

HEART = Path(__file__).resolve().parents[2] / "examples" / "heart-classifier-mlflow"


class Describe(mlflow.pyfunc.PythonModel):
    """Tabular: one prediction per row naming the Python type of each cell, e.g. `int:7|str:007`."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> list[str]:
        return ["|".join(f"{type(v).__name__}:{v}" for v in row) for row in model_input.itertuples(index=False)]


class ImageStats(mlflow.pyfunc.PythonModel):
    """Images: [dtype, shape..., sum] of the array it was given."""

    def predict(self, context: Any, model_input: np.ndarray, params: Any = None) -> np.ndarray:
        return np.array([[str(model_input.dtype), *model_input.shape, int(model_input.sum())]], dtype=object)


class TwoOutputs(mlflow.pyfunc.PythonModel):
    """Tabular: two values per row (like predict_proba)."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        return np.column_stack([np.zeros(len(model_input)), np.ones(len(model_input))])


def save(tmp_path: Path, model: Any, signature: ModelSignature | None = None) -> Path:
    """Save `model` as AZUREML_MODEL_DIR/<folder> is laid out in an image; returns AZUREML_MODEL_DIR."""
    root = tmp_path / "azureml-models"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "An input example was not provided"
        mlflow.pyfunc.save_model(str(root / "model"), python_model=model, signature=signature,
                                 pip_requirements=["mlflow-skinny"])
    return root


@pytest.fixture
def driver(monkeypatch: pytest.MonkeyPatch):
    """The driver module with its globals restored afterwards; `load(root)` runs init() on a model."""

    def load(root: Path):
        monkeypatch.setenv("AZUREML_MODEL_DIR", str(root))
        mlflow_driver.init()
        return mlflow_driver

    monkeypatch.setattr(mlflow_driver, "_model", None)
    monkeypatch.setattr(mlflow_driver, "_schema", None)
    return load


def lines(result: list[str]) -> list[list[str]]:
    """The CSV rows of run()'s items, as the runtime writes them (one str(item) per line)."""
    return list(csv.reader(io.StringIO("".join(f"{item}\n" for item in result))))


MIXED = ModelSignature(inputs=Schema([
    ColSpec("long", "id"), ColSpec("double", "x"), ColSpec("string", "code"), ColSpec("boolean", "flag"),
]))


def test_driver_imports_nothing_but_the_stdlib() -> None:
    code = ("import sys, bepbuild_runtime.mlflow_driver; "
            "print(sorted(m for m in ('mlflow', 'pandas', 'numpy', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_csv_cells_get_the_signature_types(tmp_path: Path, driver) -> None:
    d = driver(save(tmp_path, Describe(), MIXED))
    src = tmp_path / "in.csv"
    # pandas alone would read `code` as integers (007 -> 7) and `flag` as text.
    src.write_text("id,x,code,flag\n1,2,007,true\n3,4.5,42,False\n")
    result = d.run([str(src)])
    assert len(result) == 1
    assert lines(result) == [
        ["0", "int:1|float:2.0|str:007|bool:True", "in.csv"],
        ["1", "int:3|float:4.5|str:42|bool:False", "in.csv"],
    ]


def test_csv_without_signature_is_read_as_pandas_infers(tmp_path: Path, driver) -> None:
    d = driver(save(tmp_path, Describe()))
    src = tmp_path / "plain.csv"
    src.write_text("id,code\n1,007\n")
    assert lines(d.run([str(src)])) == [["0", "int:1|int:7", "plain.csv"]]


def test_a_cell_that_does_not_parse_fails_its_file_only(tmp_path: Path, driver,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    d = driver(save(tmp_path, Describe(), MIXED))
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("id,x,code,flag\n1,2,a,true\n")
    bad.write_text("id,x,code,flag\n1.5,2,a,true\n")
    with caplog.at_level(logging.ERROR, logger="azureml"):
        result = d.run([str(bad), str(good)])
    assert [row[2] for row in lines(result)] == ["good.csv"]
    assert f"Error processing input file: '{bad}'. ValueError: invalid literal for int() with base 10: '1.5'" \
        in caplog.text
    # The runtime counts one success (good.csv) and one failed item (bad.csv), as Azure counts files.
    outcome = output.format_append_row(result, 2)
    assert outcome.succeeded == 1 and outcome.text == "0,int:1|float:2.0|str:a|bool:True,good.csv\n"


@pytest.mark.parametrize(("content", "reason"), [
    ("id,x,code,flag\n1,2,a,maybe\n", "invalid literal for boolean: 'maybe'"),
    ("id,x,code\n1,2,a\n", "column 'flag' of the model's signature is missing"),
    ("id,x,code,flag\n", "the file has no rows"),
    ("", "No columns to parse from file"),
])
def test_other_bad_files_fail_with_their_reason(tmp_path: Path, driver, caplog: pytest.LogCaptureFixture,
                                                content: str, reason: str) -> None:
    d = driver(save(tmp_path, Describe(), MIXED))
    src = tmp_path / "x.csv"
    src.write_text(content)
    with caplog.at_level(logging.ERROR, logger="azureml"):
        assert d.run([str(src)]) == []
    assert reason in caplog.text


@pytest.mark.parametrize("name", ["data.avro", "data.json", "README"])
def test_unsupported_extension_fails_the_file_with_azures_message(tmp_path: Path, driver,
                                                                  caplog: pytest.LogCaptureFixture,
                                                                  name: str) -> None:
    d = driver(save(tmp_path, Describe()))
    src = tmp_path / name
    src.write_text("whatever\n")
    with caplog.at_level(logging.ERROR, logger="azureml"):
        assert d.run([str(src)]) == []
    ext = name.rpartition(".")[2] if "." in name else ""
    assert f"Error processing input file: '{src}'. File type '{ext}' is not supported" in caplog.text


def test_output_lines_row_prediction_file(tmp_path: Path, driver) -> None:
    """Azure's format: comma-separated, no header, row = position in the file; fields quoted as CSV."""
    d = driver(save(tmp_path, TwoOutputs()))
    a, b = tmp_path / "a.csv", tmp_path / "b, with comma.csv"
    a.write_text("v\n1\n2\n3\n")
    b.write_text("v\n9\n")
    result = d.run([str(a), str(b)])
    assert result[0] == "0,\"[0.0, 1.0]\",a.csv\n1,\"[0.0, 1.0]\",a.csv\n2,\"[0.0, 1.0]\",a.csv"
    assert result[1] == "0,\"[0.0, 1.0]\",\"b, with comma.csv\""
    frame = pd.read_csv(io.StringIO("\n".join(result) + "\n"), names=["row", "prediction", "file"])
    assert frame["row"].tolist() == [0, 1, 2, 0] and json.loads(frame["prediction"][0]) == [0.0, 1.0]


def test_heart_example_model_scores_every_row(tmp_path: Path, driver) -> None:
    """The committed example model through the driver: the training script's own predictions."""
    root = tmp_path / "azureml-models"
    shutil.copytree(HEART / "model", root / "model")  # mlflow refuses a model folder that is a link
    d = driver(root)
    files = sorted(str(p) for p in (HEART / "data").glob("*.csv"))
    result = d.run(files[:2]) + d.run(files[2:])  # mini_batch_size 2, as in deployment-simple
    assert len(result) == len(files)
    got = pd.read_csv(io.StringIO("\n".join(result) + "\n"), names=["row", "prediction", "file"])
    want = pd.read_csv(HEART / "sample-labels.csv")
    merged = want.merge(got, on=["file", "row"], suffixes=("", "_driver"))
    assert len(got) == len(want) == len(merged) == 171
    assert (merged["prediction_driver"] == merged["prediction"]).all()
    assert (merged["prediction_driver"] == merged["label"]).mean() > 0.9


def _png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(array).save(path)


def test_image_with_tensor_spec_is_cast_and_reshaped(tmp_path: Path, driver) -> None:
    sig = ModelSignature(inputs=Schema([TensorSpec(np.dtype("float32"), (-1, 8, 8))]))
    d = driver(save(tmp_path, ImageStats(), sig))
    img = tmp_path / "digit.png"
    _png(img, np.full((8, 8), 3, dtype=np.uint8))
    # One row per image and no row column: `prediction,file`.
    assert lines(d.run([str(img)])) == [['["float32", 1, 8, 8, 192]', "digit.png"]]


def test_image_without_signature_is_uint8_as_read(tmp_path: Path, driver) -> None:
    d = driver(save(tmp_path, ImageStats()))
    img = tmp_path / "rgb.jpeg"
    from PIL import Image

    Image.new("RGB", (4, 2), (10, 20, 30)).save(img, quality=100)
    (row,) = lines(d.run([str(img)]))
    assert json.loads(row[0])[:4] == ["uint8", 2, 4, 3] and row[1] == "rgb.jpeg"


def test_init_needs_exactly_one_model_folder(tmp_path: Path, driver) -> None:
    root = save(tmp_path, Describe())
    (root / "other").mkdir()
    with pytest.raises(RuntimeError, match="expected one MLflow model folder"):
        driver(root)


def test_run_before_init_raises(driver) -> None:
    with pytest.raises(RuntimeError, match="init"):
        mlflow_driver.run(["x.csv"])
