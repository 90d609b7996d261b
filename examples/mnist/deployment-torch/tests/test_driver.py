"""Tests of batch_driver.py, run inside the deployment's own image by

    bepbuild test examples/mnist/deployment-torch/deployment.yml --pytest examples/mnist/deployment-torch/tests

There the scoring code is importable, AZUREML_MODEL_DIR holds the registered model as in a job, and
torch, PIL and pandas are the environment's own versions. Nothing here needs the network.
"""

import os

import batch_driver
import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module", autouse=True)
def loaded_model():
    batch_driver.init()


def _digit_png(path, fill):
    """A 28x28 grayscale PNG: a white bar on black, or a uniform image."""
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[4:24, 12:16] = fill
    Image.fromarray(pixels).save(path)
    return str(path)


def test_model_comes_from_azureml_model_dir():
    assert batch_driver.model is not None
    assert os.listdir(os.environ["AZUREML_MODEL_DIR"])


def test_run_returns_one_row_per_readable_image(tmp_path):
    files = [_digit_png(tmp_path / f"{i}.png", 255) for i in range(3)]
    result = batch_driver.run(files)
    assert list(result.columns) == ["file", "class", "probability"]
    assert list(result["file"]) == ["0.png", "1.png", "2.png"]
    assert result["class"].between(0, 9).all()
    assert result["probability"].between(0, 1).all()


def test_images_of_another_size_are_resized(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (56, 56), color=0).save(path)
    assert len(batch_driver.run([str(path)])) == 1


def test_an_unreadable_file_is_left_out_so_it_counts_as_failed(tmp_path):
    good = _digit_png(tmp_path / "good.png", 255)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    result = batch_driver.run([good, str(bad)])
    assert list(result["file"]) == ["good.png"]
