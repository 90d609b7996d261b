"""Train the mlflow-py38 example model under Python 3.8 and write its sample data (offline, a few seconds).

Azure's MLflow examples were saved with Python 3.8 and pin packages that have no wheels for newer
Pythons (scikit-learn 1.1.2 stops at 3.10). This model is made the same way, so that deploying it with
no environment needs the Python it was saved with. Run it with a Python 3.8 venv (pyenv's 3.8 here):

    ~/.pyenv/versions/3.8.18/bin/python -m venv /tmp/venv38
    /tmp/venv38/bin/pip install -r examples/mlflow-py38/train/requirements.txt
    /tmp/venv38/bin/python examples/mlflow-py38/train/train.py

The data is scikit-learn's bundled Wisconsin breast cancer data set (nothing is downloaded). Writes,
relative to the example folder: model/ (an MLflow model, python_function + sklearn flavors),
data/unlabeled-N.csv (held-out rows without the target) and sample-labels.csv (file,row,label,prediction,
the predictions made here, in-process, right after training).
"""

import shutil
import sys
from pathlib import Path

import mlflow.sklearn
import pandas as pd
from mlflow.models import infer_signature
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split

EXAMPLE = Path(__file__).resolve().parents[1]
FILE_SIZES = (20, 13)


def main() -> None:
    assert sys.version_info[:2] == (3, 8), "train with Python 3.8: the model records the Python it was saved with"
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=sum(FILE_SIZES), stratify=y, random_state=0)
    model = RandomForestClassifier(n_estimators=20, max_depth=4, random_state=0).fit(X_train, y_train)
    print(f"train accuracy {model.score(X_train, y_train):.4f}, held-out accuracy {model.score(X_test, y_test):.4f}")

    model_dir = EXAMPLE / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    mlflow.sklearn.save_model(model, str(model_dir), signature=infer_signature(X_train, y_train),
                              serialization_format="cloudpickle")

    data_dir = EXAMPLE / "data"
    data_dir.mkdir(exist_ok=True)
    for old in data_dir.glob("*.csv"):
        old.unlink()
    predictions = model.predict(X_test)
    labels, start = [], 0
    for i, size in enumerate(FILE_SIZES):
        name = f"unlabeled-{i}.csv"
        X_test.iloc[start:start + size].to_csv(data_dir / name, index=False)
        for row in range(size):
            labels.append({"file": name, "row": row, "label": int(y_test.iloc[start + row]),
                           "prediction": int(predictions[start + row])})
        start += size
    pd.DataFrame(labels).to_csv(EXAMPLE / "sample-labels.csv", index=False)
    print(f"wrote {model_dir.relative_to(EXAMPLE)}/, {len(FILE_SIZES)} files in data/, sample-labels.csv")


if __name__ == "__main__":
    main()
