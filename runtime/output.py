"""What one run() return becomes: Azure's append_row text and the success count.

Azure (PRS TaskProcessor) accepts a list or a pandas DataFrame. A list is written one line per
element with `str(element)`; a DataFrame with `df.to_csv(header=None, index=None, sep=" ")`, so
column names vanish and pandas quotes fields containing a space. Successes are
`min(len(result), len(mini_batch))`: more rows than inputs are all written but capped in the
count (with a warning), fewer rows mean the missing items failed.

Choices where Azure is loose, documented here:
- a tuple is taken like a list (the v2 parallel-job doc allows it);
- a generator is materialized with list() (a `yield`-ing run() would crash PRS on len());
- None counts as an empty result: every item failed, but the attempt is not an exception;
- with summary_only the content is ignored, so any sized object (e.g. the mini_batch list
  itself, a numpy array) is counted by len().
"""

from __future__ import annotations

import csv
import io
import sys
import types
from typing import Any

TYPE_ERROR = "The type of return value is not a list or dataframe"


class Outcome:
    """The formatted rows (append_row; None when there are none) and the counts of one run().

    A DataFrame's rows may be kept as column lists of str, int, float and bool (values nothing can
    change any more) and joined into text when `text` is first read: the worker reads it when it
    records the mini-batch, a few at a time with the caches warm, not between two run() calls.
    """

    __slots__ = ("_text", "_columns", "succeeded", "warning")

    def __init__(self, text: str | None, succeeded: int, warning: str | None = None,
                 columns: list[list[Any]] | None = None) -> None:
        self._text, self._columns = text, columns
        self.succeeded, self.warning = succeeded, warning

    @property
    def text(self) -> str | None:
        if self._columns is not None:
            self._text, self._columns = _render(self._columns), None
        return self._text

    def __repr__(self) -> str:
        return f"Outcome({self.text!r}, {self.succeeded!r}, {self.warning!r})"


def _is_dataframe(value: Any) -> bool:
    # A DataFrame can only exist if the user imported pandas: never import it ourselves.
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(value, pd.DataFrame)


def _normalize(result: Any) -> Any:
    if result is None:
        return []
    if isinstance(result, types.GeneratorType):
        return list(result)
    return result


def _count(rows: int, inputs: int) -> tuple[int, str | None]:
    if rows > inputs:
        return inputs, (f"run() returned {rows} items, which is more than input count {inputs}; "
                        f"succeeded is capped at {inputs}")
    return rows, None


def format_append_row(result: Any, inputs: int) -> Outcome:
    """Azure's append_row text for one run() result over a mini-batch of `inputs` items.

    Raises TypeError when the result is not a list, tuple, generator or DataFrame.
    """
    result = _normalize(result)
    if isinstance(result, (list, tuple)):
        text = "".join(f"{element}\n" for element in result) or None
        succeeded, warning = _count(len(result), inputs)
        return Outcome(text, succeeded, warning)
    if _is_dataframe(result):
        succeeded, warning = _count(len(result), inputs)
        if not len(result):
            return Outcome(None, succeeded, warning)
        columns = _column_lists(result) if result.shape[1] else None
        if columns is not None and _settled(columns):
            return Outcome(None, succeeded, warning, columns)  # joined when recorded
        text = _render(columns) if columns is not None else frame_text(result)
        return Outcome(text, succeeded, warning)
    raise TypeError(f"{TYPE_ERROR}: run() returned {type(result).__name__}")


def frame_text(df: Any) -> str:
    """`df.to_csv(header=None, index=None, sep=" ", lineterminator="\\n")`, byte for byte, faster.

    pandas' to_csv costs ~0.2 ms on a 10-row frame, as much as a small model's run(). For the
    column types scoring scripts return (numpy floats, ints, bools, objects, pandas strings) this
    converts each column the way pandas' own `get_values_for_csv` does (floats: numpy's
    `astype(str)`; everything else: the objects themselves; missing values: the empty string) and
    writes the rows with the same `csv.writer` settings. Any other column type (dates, categories,
    nullable extension types, ...) goes through pandas' to_csv.
    """
    columns = _column_lists(df) if df.shape[1] else None
    if columns is None:
        return df.to_csv(header=None, index=None, sep=" ", lineterminator="\n")
    return _render(columns)


def _render(columns: list[list[Any]]) -> str:
    """The rows of `columns` as csv.writer writes them (space-separated, minimal quoting)."""
    text = _plain_text(columns)
    if text is not None:
        return text
    rows = zip(*columns)  # noqa: B905 - equal lengths; strict= needs Python 3.10 (images may be older)
    buf = io.StringIO()
    csv.writer(buf, delimiter=" ", quotechar='"', quoting=csv.QUOTE_MINIMAL, doublequote=True, escapechar=None,
               lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _plain_text(columns: list[list[Any]]) -> str | None:
    """The rows joined by hand when csv.writer would quote nothing (a third of its cost); None when
    a field is empty, holds a space, a quote or a line break, or is neither a str nor a number
    (csv.writer decides those).

    Numbers need no check: str() of an int, a bool or a float never holds one of those.
    """
    texts = []
    for column in columns:
        if all(type(v) is str and v for v in column):
            joined = "".join(column)
            if " " in joined or '"' in joined or "\n" in joined or "\r" in joined:
                return None
            texts.append(column)
        elif all(type(v) in _NUMBERS for v in column):
            texts.append(list(map(str, column)))
        else:
            return None
    return "\n".join(map(" ".join, zip(*texts))) + "\n"  # noqa: B905 - equal lengths


_NUMBERS = frozenset((int, float, bool))
_SETTLED = _NUMBERS | {str}  # values whose text nothing can change any more


def _settled(columns: list[list[Any]]) -> bool:
    """Whether every value is a str, int, float or bool: nothing the scoring code still holds can
    change the text they make, so it may be made later."""
    settled = _SETTLED
    return all(type(v) in settled for column in columns for v in column)


def _column_lists(df: Any) -> list[list[Any]] | None:
    """Each column as a list of what csv.writer is to write (missing values: ""), None for a column
    type only pandas' to_csv formats.

    Right after a model's run() the caches are cold and every numpy or pandas call costs 5-40 us,
    so this takes each block of columns at once (`_mgr.blocks`, a column of floats as one
    `tolist()`) and checks the values in Python, where most frames need no numpy call at all. A
    frame whose internals differ (other pandas versions) goes through the columns one by one.
    """
    try:
        blocks = df._mgr.blocks
        parts = [(blk.mgr_locs.as_array.tolist(), blk.values) for blk in blocks]
    except AttributeError:
        arrays = df._iter_column_arrays() if hasattr(df, "_iter_column_arrays") else (c.array for _, c in df.items())
        parts = [([i], values) for i, values in enumerate(arrays)]
    columns: list[Any] = [None] * df.shape[1]
    for locs, values in parts:
        lists = _block_lists(values, len(locs))
        if lists is None:
            return None
        for loc, values_list in zip(locs, lists):  # noqa: B905 - one list per location
            columns[loc] = values_list
    return columns


def _block_lists(values: Any, width: int) -> list[list[Any]] | None:
    """The columns of one block (a 2-D numpy array of `width` rows, or a 1-D array of one column)."""
    pd, np = sys.modules["pandas"], sys.modules["numpy"]
    dtype = values.dtype
    if isinstance(dtype, np.dtype):
        if values.ndim == 1:
            values = values.reshape(1, -1)
        elif values.shape[0] != width:
            return None
        kind = dtype.kind
        if kind in "iub":
            return values.tolist()  # ints and bools are never missing
        if kind == "f" and dtype.itemsize == 8:
            # str() of a Python float is numpy's astype(str) of a float64 (shortest round trip, the
            # same switch to exponents), which is what pandas writes.
            return [[v if v == v else "" for v in column] for column in values.tolist()]
        if kind == "O":
            lists = values.tolist()
            if all(type(v) is str for column in lists for v in column):
                return lists
            return [_numpy_column(np.asarray(column, dtype=object), pd, np) for column in values]
        if kind == "f":
            return [_numpy_column(column, pd, np) for column in values]
        return None
    if isinstance(dtype, pd.StringDtype) and width == 1:
        return [_string_list(values)]
    return None


def _numpy_column(values: Any, pd: Any, np: Any) -> list[Any]:
    """A float or object column the way pandas' `get_values_for_csv` converts it."""
    if values.dtype.kind == "f":
        mask = np.isnan(values)
        values = values.astype(str).astype(object)
    else:
        mask = pd.isna(values)
        values = values.copy()
    if mask.any():
        values[mask] = ""
    return values.tolist()


def _string_list(values: Any) -> list[Any]:
    """A pandas string column; its missing values (None, NA or NaN, by storage) become ""."""
    stored = getattr(values, "_ndarray", None)  # python storage: str or the missing value
    if stored is None:
        arrow = getattr(values, "_pa_array", None)  # pyarrow storage: None when missing
        stored = arrow.to_pylist() if hasattr(arrow, "to_pylist") else None
    else:
        stored = stored.tolist()
    if stored is None:
        return values.to_numpy(dtype=object, na_value="").tolist()
    return [v if isinstance(v, str) else "" for v in stored]


def count_summary(result: Any, inputs: int) -> Outcome:
    """summary_only: only count the result (its content is the script's own business)."""
    result = _normalize(result)
    try:
        rows = len(result)
    except TypeError:
        raise TypeError(f"{TYPE_ERROR}: run() returned {type(result).__name__}, which has no len()") from None
    succeeded, warning = _count(rows, inputs)
    return Outcome(None, succeeded, warning)
