"""Train the custom-outputs-parquet example model and write its sample data (offline, about a second).

The data is scikit-learn's bundled Wisconsin breast cancer data set (569 tumours, 30 numeric
features, target 0 = malignant, 1 = benign), as in examples/heart-classifier-mlflow: a real public
tabular data set that ships with scikit-learn. Azure's example scores the UCI heart disease data
with a pickled scikit-learn pipeline; this is the same kind of model on the bundled data.

Writes, relative to the example folder:
  model/model.pkl         the fitted pipeline (StandardScaler + LogisticRegression), plain pickle
  data/unlabeled-N.csv    the held-out rows without the target, in 4 files (50, 50, 50, 21 rows)
  sample-labels.csv       file,row,label,prediction for every held-out row (prediction: this model,
                          called in-process here, right after training)

Run from anywhere: python examples/custom-outputs-parquet/train/train.py
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pandas as pd
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

EXAMPLE = Path(__file__).resolve().parents[1]
FILE_SIZES = (50, 50, 50, 21)


def main() -> None:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(X_train, y_train)
    print(f"train accuracy {model.score(X_train, y_train):.4f}, held-out accuracy {model.score(X_test, y_test):.4f}")

    (EXAMPLE / "model").mkdir(exist_ok=True)
    with open(EXAMPLE / "model" / "model.pkl", "wb") as fh:
        pickle.dump(model, fh, protocol=5)

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
        X_test.iloc[start:start + size].to_csv(data_dir / name, index=False)
        labels += [{"file": name, "row": row, "label": int(y_test.iloc[start + row]),
                    "prediction": int(predictions[start + row])} for row in range(size)]
        start += size
    pd.DataFrame(labels).to_csv(EXAMPLE / "sample-labels.csv", index=False)
    print(f"wrote model/model.pkl, {len(FILE_SIZES)} files in data/, sample-labels.csv")


if __name__ == "__main__":
    main()
