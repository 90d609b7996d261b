"""Custom scoring script over the MLflow model (Azure's heart-classifier-mlflow/deployment-custom driver).

It loads the model with mlflow.pyfunc, casts the input columns to the signature's types, and returns
one DataFrame of the inputs plus `filename` and the prediction (one row per input row: append_row
writes it space-separated, without the header).

Fixed here, unlike Azure's upstream copy:
- run() assigned `model_output_names` without `global`, so Python treated it as a local and the
  first read raised UnboundLocalError (whenever the prediction was not a DataFrame);
- `pred is not pd.DataFrame` compared with the class itself, so it was always true;
- with no signature, `model_input_types` was never set (NameError);
- the concatenated files kept their own row numbers (0.. per file), so `pd.concat([data, pred],
  axis=1)` aligned on a duplicated index: it failed or paired predictions with the wrong rows.
"""

import glob
import logging
import os

import mlflow.pyfunc
import pandas as pd

model = None
model_input_types = None
model_output_names = None


def init():
    global model, model_input_types, model_output_names

    # AZUREML_MODEL_DIR holds one folder: the registered MLflow model.
    model_path = glob.glob(os.environ["AZUREML_MODEL_DIR"] + "/*/")[0]
    model = mlflow.pyfunc.load_model(model_path)

    signature = model.metadata.signature if model.metadata else None
    if signature is None:
        logging.warning("Model doesn't contain a signature. Input data types won't be enforced.")
        return
    if signature.inputs and signature.inputs.has_input_names():
        model_input_types = dict(zip(signature.inputs.input_names(), signature.inputs.pandas_types(), strict=True))
    if signature.outputs:
        if signature.outputs.has_input_names():
            model_output_names = signature.outputs.input_names()
        elif len(signature.outputs.inputs) == 1:
            model_output_names = ["prediction"]


def run(mini_batch):
    print(f"run method start: {__file__}, run({len(mini_batch)} files)")

    data = pd.concat(
        (pd.read_csv(fp).assign(filename=os.path.basename(fp)) for fp in mini_batch),
        ignore_index=True,
    )
    if model_input_types:
        data = data.astype(model_input_types)

    # Predict over the input data, minus the filename column, which is not part of the model.
    pred = model.predict(data.drop("filename", axis=1))

    if not isinstance(pred, pd.DataFrame):
        pred = pd.DataFrame(pred)
        names = model_output_names or [f"pred_col{i}" for i in range(pred.shape[1])]
        if len(names) == pred.shape[1]:
            pred.columns = names
    pred.index = data.index

    return pd.concat([data, pred], axis=1)
