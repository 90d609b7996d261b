"""The scoring script bepbuild uses for an MLflow model deployed without one (Azure's "no-code" path).

Azure ML generates a driver for such deployments and does not publish it; this one follows what
its documentation says the driver does (how-to-mlflow-batch):

- `init()` loads `mlflow.pyfunc.load_model()` from the one folder under `AZUREML_MODEL_DIR`.
- `run(mini_batch)` reads each file on its own and calls `predict()` once per file:
  `.csv`, `.parquet`, `.pqt` become a pandas DataFrame; when the model has a column (ColSpec)
  signature, CSV cells are parsed with the signature's types and a cell that does not parse
  fails its file ("invalid literal for int() ..."). Images (`.png .jpg .jpeg .tiff .bmp .gif`)
  become a numpy array: cast and reshaped to the TensorSpec when the model has one, `uint8`
  otherwise. Any other extension fails its file with Azure's message
  ("File type 'avro' is not supported").
- Output: comma-separated rows without a header, as Azure's driver writes them and as its
  notebooks read them back (`pd.read_csv(path, names=["row", "prediction", "file"])`):
  tabular files give `row,prediction,file` per input row (`row` = the row's 0-based position in
  its file, `file` = the file's base name); an image gives one `prediction,file` row, since
  Azure's `row` column exists for tabular data only. A prediction with several values (several
  output columns, a probability vector) is one JSON cell, quoted.

Counting: the runtime counts `min(len(result), len(mini_batch))` successes, one per list item.
So `run()` returns ONE item per successfully scored file (that file's rows joined by newlines)
and nothing for a failed file, which then counts as one failed item, exactly as Azure counts
files. A failed file is logged on the `azureml` logger (the worker's stderr log) and is not
retried: only an exception out of `run()` retries a mini-batch, and this driver raises none for
a bad file.

Stdlib only at import time: mlflow, pandas, numpy and PIL are imported inside init()/run(), from
the deployment's environment.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from typing import Any

TABULAR = {".csv": "csv", ".parquet": "parquet", ".pqt": "parquet"}
IMAGES = frozenset({".png", ".jpg", ".jpeg", ".tiff", ".bmp", ".gif"})
BOOL_WORDS = {"true": True, "t": True, "yes": True, "1": True, "false": False, "f": False, "no": False, "0": False}

logger = logging.getLogger("azureml")

_model: Any = None
_schema: Any = None  # the model's input schema, or None


class UnsupportedFileType(ValueError):
    """A file whose extension the generated driver does not read."""


def model_folder(root: str) -> str:
    """The one model folder under AZUREML_MODEL_DIR (the registered MLflow model's folder)."""
    try:
        entries = sorted(e for e in os.listdir(root) if not e.startswith("."))
    except OSError as exc:
        raise RuntimeError(f"cannot list the model folder {root}: {exc}") from exc
    folders = [e for e in entries if os.path.isdir(os.path.join(root, e))]
    if len(folders) != 1:
        raise RuntimeError(f"expected one MLflow model folder under {root}, found {folders or 'none'}")
    return os.path.join(root, folders[0])


def init() -> None:
    global _model, _schema
    import mlflow.pyfunc

    root = os.environ.get("AZUREML_MODEL_DIR")
    if not root:
        raise RuntimeError("AZUREML_MODEL_DIR is not set")
    path = model_folder(root)
    _model = mlflow.pyfunc.load_model(path)
    _schema = _model.metadata.get_input_schema()
    logger.info("loaded the MLflow model in %s (input signature: %s)", path, describe(_schema))


def describe(schema: Any) -> str:
    """A short description of an input schema for the log."""
    if schema is None:
        return "none: no types enforced"
    if schema.is_tensor_spec():
        return "TensorSpec " + ", ".join(f"{s.type}{tuple(s.shape or ())}" for s in schema.inputs)
    return f"ColSpec of {len(schema.inputs)} column(s)"


def run(mini_batch: list[str]) -> list[str]:
    if _model is None:
        raise RuntimeError("init() was not called")
    results = []
    for path in mini_batch:
        try:
            results.append(score_file(path))
        except Exception as exc:  # a bad file fails alone; the rest of the mini-batch goes on
            reason = str(exc) if isinstance(exc, UnsupportedFileType) else f"{type(exc).__name__}: {exc}"
            logger.error("Error processing input file: '%s'. %s", path, reason)
    return results


def score_file(path: str) -> str:
    """The output rows of one file, joined by newlines (no trailing one)."""
    ext = os.path.splitext(path)[1].lower()
    name = os.path.basename(path)
    if ext in TABULAR:
        frame = read_table(path, TABULAR[ext])
        if len(frame) == 0:
            raise ValueError("the file has no rows")
        cells = prediction_cells(_model.predict(frame), len(frame))
        rows: list[list[Any]] = [[i, cell, name] for i, cell in enumerate(cells)]
    elif ext in IMAGES:
        cells = prediction_cells(_model.predict(read_image(path)), None)
        rows = [[cells[0] if len(cells) == 1 else json.dumps([_from_cell(c) for c in cells]), name]]
    else:
        raise UnsupportedFileType(f"File type '{ext.lstrip('.')}' is not supported")
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().rstrip("\n")


def _column_schema() -> Any:
    """The input schema when it names columns (ColSpec), else None."""
    if _schema is None or _schema.is_tensor_spec() or not _schema.has_input_names():
        return None
    return _schema


def read_table(path: str, kind: str) -> Any:
    """A CSV or parquet file as a DataFrame; with a ColSpec signature, cells cast to its types."""
    import pandas as pd

    schema = _column_schema()
    if kind == "csv":
        # With a signature, every cell is read as text and parsed with the signature's type below,
        # so "1.5" in an integer column fails instead of silently becoming a float column.
        frame = pd.read_csv(path, dtype=object) if schema is not None else pd.read_csv(path)
    else:
        frame = pd.read_parquet(path)
    if schema is not None:
        frame = enforce_types(frame, schema)
    return frame


def enforce_types(frame: Any, schema: Any) -> Any:
    """Cast the signature's columns to its types; a value that does not parse raises ValueError."""
    from mlflow.types import DataType

    frame = frame.copy()
    for spec in schema.inputs:
        name = spec.name
        if name not in frame.columns:
            if getattr(spec, "required", True):
                raise ValueError(f"column '{name}' of the model's signature is missing")
            continue
        if not isinstance(spec.type, DataType):  # array / object / map types: left to mlflow
            continue
        frame[name] = _cast(frame[name], spec.type)
    return frame


def _cast(series: Any, dtype: Any) -> Any:
    import pandas as pd

    kind = dtype.name
    if kind in ("integer", "long", "float", "double"):
        return series.astype(dtype.to_numpy())
    if kind == "boolean":
        if series.dtype == bool:
            return series
        return series.map(_parse_bool).astype(bool)
    if kind == "datetime":
        return pd.to_datetime(series)
    if kind == "string" and series.dtype != object:
        return series.astype(str).astype(object)
    return series


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word not in BOOL_WORDS:
        raise ValueError(f"invalid literal for boolean: {value!r}")
    return BOOL_WORDS[word]


def read_image(path: str) -> Any:
    """An image file as a numpy array: the TensorSpec's dtype and shape, or uint8 as read."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        if img.mode in ("P", "PA"):  # palette (GIF): the colours, not the palette indexes
            img = img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
        array = np.asarray(img)
    if _schema is None or not _schema.is_tensor_spec():
        return array.astype(np.uint8)
    spec = _schema.inputs[0]
    array = array.astype(spec.type)
    shape = tuple(spec.shape or ())
    if not shape:
        return array
    if sum(1 for d in shape if d == -1) <= 1:
        return array.reshape(shape)
    while array.ndim < len(shape):  # several free dimensions: add the leading (batch) ones
        array = array[np.newaxis]
    return array


def prediction_cells(prediction: Any, rows: int | None) -> list[Any]:
    """One output cell per input row: a scalar as text, several values as one JSON list/object."""
    import numpy as np
    import pandas as pd

    if isinstance(prediction, dict):
        prediction = pd.DataFrame(prediction)
    if isinstance(prediction, pd.DataFrame):
        if prediction.shape[1] == 1:
            values = [_cell(v) for v in prediction.iloc[:, 0].tolist()]
        else:
            values = [_cell({str(k): v for k, v in rec.items()}) for rec in prediction.to_dict(orient="records")]
    elif isinstance(prediction, pd.Series):
        values = [_cell(v) for v in prediction.tolist()]
    else:
        array = prediction if isinstance(prediction, np.ndarray) else np.asarray(prediction, dtype=object)
        if array.ndim == 0:
            values = [_cell(array.item())]
        else:
            values = [_cell(v) for v in array.tolist()]
    if rows is not None and len(values) != rows:
        raise ValueError(f"predict() returned {len(values)} predictions for {rows} rows")
    return values


def _cell(value: Any) -> Any:
    """A prediction as one CSV cell: a scalar as itself, several values as JSON."""
    value = _plain(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return value


def _from_cell(cell: Any) -> Any:
    """A cell back as a value (a JSON cell as its list/object), to nest it in a JSON list."""
    if isinstance(cell, str) and cell[:1] in "[{":
        try:
            return json.loads(cell)
        except ValueError:
            return cell
    return cell


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as plain Python values (so that str() prints 7, not np.int64(7))."""
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
