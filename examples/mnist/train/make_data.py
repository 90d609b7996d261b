"""Offline MNIST-style data for the bepbuild MNIST examples.

scikit-learn ships `load_digits()`: 1,797 real handwritten digits (8x8, values 0..16), no download
needed. This module renders each one as a 28x28 8-bit grayscale image (white digit on black, like
MNIST): scale 0..16 -> 0..255, then upsample with PIL (bilinear). The arrays returned are read back
from the rendered images, so training sees exactly what the scoring scripts read from the PNGs.

Run it alone to (re)write the sample input folder:

    python examples/mnist/train/make_data.py

It writes `examples/mnist/sample/{0..99}.png` (the first 100 images of the held-out test split) and
`examples/mnist/sample-labels.csv` (columns file,label).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0
TEST_SIZE = 0.3
SAMPLE_COUNT = 100
IMAGE_SIZE = 28

EXAMPLE_DIR = Path(__file__).resolve().parent.parent
SAMPLE_DIR = EXAMPLE_DIR / "sample"


def render(digit_8x8: np.ndarray) -> Image.Image:
    """One 8x8 digit (0..16) -> a 28x28 'L' (8-bit grayscale) PIL image."""
    small = np.clip(np.rint(digit_8x8.astype(np.float64) * 255.0 / 16.0), 0, 255).astype(np.uint8)
    return Image.fromarray(small).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test); x are uint8 arrays of shape (N, 28, 28), y int64 (N,).

    The split is stratified and fixed (random_state=SEED), so it is the same on every run.
    """
    digits = load_digits()
    images = np.stack([np.asarray(render(d)) for d in digits.images])
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_SIZE, random_state=SEED, stratify=labels
    )
    return x_train, y_train, x_test, y_test


def write_sample(x_test: np.ndarray, y_test: np.ndarray, out_dir: Path = SAMPLE_DIR) -> None:
    """Write the first SAMPLE_COUNT test images as <i>.png plus sample-labels.csv (file,label)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        old.unlink()
    rows = []
    for i in range(min(SAMPLE_COUNT, len(x_test))):
        name = f"{i}.png"
        Image.fromarray(x_test[i]).save(out_dir / name, optimize=True)
        rows.append((name, int(y_test[i])))
    with open(out_dir.parent / "sample-labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["file", "label"])
        writer.writerows(rows)


def main() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x_train, y_train, x_test, y_test = load_split()
    write_sample(x_test, y_test)
    print(
        f"train {x_train.shape}, test {x_test.shape}; wrote {min(SAMPLE_COUNT, len(x_test))} PNGs "
        f"and sample-labels.csv to {SAMPLE_DIR.relative_to(EXAMPLE_DIR.parent.parent)}"
    )
    return x_train, y_train, x_test, y_test


if __name__ == "__main__":
    main()
