"""Writes its own outputs (Azure's custom-outputs-parquet driver, output_action: summary_only).

Each input CSV is scored with the pickled scikit-learn model and written, with a `prediction`
column added, to `<AZUREML_BI_OUTPUT_PATH>/<input stem>.parquet`. run() returns the mini-batch:
with summary_only the return value only counts the files that succeeded (one item per file).
Input file stems must be unique across the job: the workers share the output folder.
"""

import glob
import os
import pickle
from pathlib import Path

import pandas as pd


def init():
    global model, output_path

    output_path = os.environ["AZUREML_BI_OUTPUT_PATH"]
    # AZUREML_MODEL_DIR holds the registered folder: model/model.pkl.
    model_file = glob.glob(os.environ["AZUREML_MODEL_DIR"] + "/*/*.pkl")[-1]
    with open(model_file, "rb") as file:
        model = pickle.load(file)


def run(mini_batch):
    for file_path in mini_batch:
        data = pd.read_csv(file_path)
        data["prediction"] = model.predict(data)
        output_file_path = os.path.join(output_path, Path(file_path).stem + ".parquet")
        data.to_parquet(output_file_path)

    return mini_batch
