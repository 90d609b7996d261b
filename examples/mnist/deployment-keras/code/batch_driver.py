"""Scoring script of the mnist-keras-dpl batch deployment (Azure ML batch endpoint contract).

init(): loads the Keras model from $AZUREML_MODEL_DIR/model (the registered model folder is named
`model`). Keras 3 loads single files, so the first *.keras (or *.h5) file in that folder is used.
run(mini_batch): scores a list of PNG paths and returns a DataFrame with columns
file (basename), class (int 0..9), probability (float, softmax of the predicted class).
A file that cannot be read as an image is reported on stderr and left out of the result,
so it counts as a failed item while the rest of the mini-batch succeeds.
"""

import glob
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402
from tensorflow import keras  # noqa: E402

IMAGE_SIZE = 28

model = None


def init():
    global model

    model_path = os.path.join(os.environ["AZUREML_MODEL_DIR"], "model")
    if os.path.isdir(model_path):
        candidates = sorted(glob.glob(os.path.join(model_path, "*.keras"))) or sorted(
            glob.glob(os.path.join(model_path, "*.h5"))
        )
        if not candidates:
            raise FileNotFoundError(f"no *.keras or *.h5 model file in {model_path}")
        model_path = candidates[0]

    model = keras.models.load_model(model_path, compile=False)
    print(f"Loaded model from {model_path}")


def read_image(path: str) -> np.ndarray:
    """A PNG (any mode, any size) -> float32 array (28, 28) in 0..1."""
    with Image.open(path) as img:
        img = img.convert("L")
        if img.size != (IMAGE_SIZE, IMAGE_SIZE):
            img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.float32) / 255.0


def run(mini_batch: list[str]) -> pd.DataFrame:
    print(f"Executing run method over batch of {len(mini_batch)} files.")

    files, arrays = [], []
    for path in mini_batch:
        try:
            arrays.append(read_image(path))
        except Exception as exc:  # unreadable input: leave it out, it counts as a failed item
            print(f"Skipping {path}: {exc}", file=sys.stderr)
            continue
        files.append(os.path.basename(path))

    if not arrays:
        return pd.DataFrame({"file": [], "class": [], "probability": []})

    batch = np.stack(arrays)[..., None]  # (N, 28, 28, 1)
    probabilities = np.asarray(model.predict_on_batch(batch))

    return pd.DataFrame(
        {
            "file": files,
            "class": probabilities.argmax(axis=1).astype(int),
            "probability": probabilities.max(axis=1).astype(float),
        }
    )
