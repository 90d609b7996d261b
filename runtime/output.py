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

import sys
import types
from dataclasses import dataclass
from typing import Any

TYPE_ERROR = "The type of return value is not a list or dataframe"


@dataclass(frozen=True)
class Outcome:
    """The formatted rows (append_row; None when there are none) and the counts of one run()."""

    text: str | None
    succeeded: int
    warning: str | None = None


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
        text = result.to_csv(header=None, index=None, sep=" ", lineterminator="\n") if len(result) else None
        succeeded, warning = _count(len(result), inputs)
        return Outcome(text, succeeded, warning)
    raise TypeError(f"{TYPE_ERROR}: run() returned {type(result).__name__}")


def count_summary(result: Any, inputs: int) -> Outcome:
    """summary_only: only count the result (its content is the script's own business)."""
    result = _normalize(result)
    try:
        rows = len(result)
    except TypeError:
        raise TypeError(f"{TYPE_ERROR}: run() returned {type(result).__name__}, which has no len()") from None
    succeeded, warning = _count(rows, inputs)
    return Outcome(None, succeeded, warning)
