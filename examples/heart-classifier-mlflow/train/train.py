"""Train the heart-classifier-mlflow example model and write its sample data (offline, a few seconds).

The data is scikit-learn's bundled Wisconsin breast cancer data set (569 tumours, 30 numeric
features, target 0 = malignant, 1 = benign): a real public tabular data set that ships with
scikit-learn, so nothing is downloaded. Azure's example uses the UCI heart disease data, which is
not bundled anywhere installable; the folder keeps Azure's name so the walkthrough reads the same.

Writes, relative to the example folder:
  model/                  an MLflow model (python_function + sklearn flavors, ColSpec signature)
  data/unlabeled-N.csv    the held-out rows without the target, in 4 files (50, 50, 50, 21 rows)
  sample-labels.csv       file,row,label,prediction for every held-out row (prediction: this model,
                          called in-process here, right after training)

Run from anywhere: python examples/heart-classifier-mlflow/train/train.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow.sklearn
import pandas as pd
from mlflow.models import infer_signature
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

EXAMPLE = Path(__file__).resolve().parents[1]
FILE_SIZES = (50, 50, 50, 21)  # like Azure's sample: a few full files and a short last one


def main() -> None:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(X_train, y_train)
    print(f"train accuracy {model.score(X_train, y_train):.4f}, held-out accuracy {model.score(X_test, y_test):.4f}")

    model_dir = EXAMPLE / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    # cloudpickle, as Azure's example model (model.pkl); mlflow's default is now skops, which needs
    # the skops package at load time.
    mlflow.sklearn.save_model(
        model, str(model_dir), signature=infer_signature(X_train, y_train), serialization_format="cloudpickle"
    )

    data_dir = EXAMPLE / "data"
    data_dir.mkdir(exist_ok=True)
    for old in data_dir.glob("*.csv"):
        old.unlink()
    assert sum(FILE_SIZES) == len(X_test)
    predictions = model.predict(X_test)
    labels = []
    start = 0
    for i, size in enumerate(FILE_SIZES):
        name = f"unlabeled-{i}.csv"
        part = X_test.iloc[start:start + size]
        part.to_csv(data_dir / name, index=False)
        for row in range(size):
            labels.append({"file": name, "row": row, "label": int(y_test.iloc[start + row]),
                           "prediction": int(predictions[start + row])})
        start += size
    pd.DataFrame(labels).to_csv(EXAMPLE / "sample-labels.csv", index=False)
    print(f"wrote {model_dir.relative_to(EXAMPLE)}/, {len(FILE_SIZES)} files in data/, sample-labels.csv")


if __name__ == "__main__":
    main()
