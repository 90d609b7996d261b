"""Scoring script of the mnist-torch-dpl batch deployment (Azure ML batch endpoint contract).

init(): loads the state_dict found by globbing $AZUREML_MODEL_DIR/*/*.pt (the registered model
folder sits one level below AZUREML_MODEL_DIR) into MnistClassifier, from the sibling module.
run(mini_batch): scores a list of PNG paths and returns a DataFrame with columns
file (basename), class (int 0..9), probability (float, softmax of the predicted class).
A file that cannot be read as an image is reported on stderr and left out of the result,
so it counts as a failed item while the rest of the mini-batch succeeds.
"""

import glob
import os
import sys

import numpy as np
import pandas as pd
import torch
from mnist_classifier import MnistClassifier
from PIL import Image

IMAGE_SIZE = 28

model = None
device = None


def init():
    global model, device

    model_dir = os.environ["AZUREML_MODEL_DIR"]
    candidates = sorted(glob.glob(os.path.join(model_dir, "*", "*.pt")))
    if not candidates:
        raise FileNotFoundError(f"no */*.pt model file under AZUREML_MODEL_DIR={model_dir}")
    model_path = candidates[-1]

    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    model = MnistClassifier()
    model.load_state_dict(torch.load(model_path, map_location=device, weights_only=True))
    model.to(device)
    model.eval()
    print(f"Loaded model from {model_path} on {device}")


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

    batch = torch.from_numpy(np.stack(arrays)).unsqueeze(1).to(device)  # (N, 1, 28, 28)
    with torch.no_grad():
        probabilities = torch.softmax(model(batch), dim=1)
        top_prob, top_class = probabilities.max(dim=1)

    return pd.DataFrame(
        {
            "file": files,
            "class": top_class.cpu().numpy().astype(int),
            "probability": top_prob.cpu().numpy().astype(float),
        }
    )
