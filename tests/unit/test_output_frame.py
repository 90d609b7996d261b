"""output.frame_text is pandas' to_csv(header=None, index=None, sep=" "), byte for byte, for every column type."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bepbuild_runtime import output

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # float32 of huge floats


def to_csv(df: pd.DataFrame) -> str:
    return df.to_csv(header=None, index=None, sep=" ", lineterminator="\n")


def frames() -> list[pd.DataFrame]:
    rng = np.random.default_rng(7)
    out = []
    for n in (1, 3, 10):
        out += [
            pd.DataFrame({"file": [f"a {i}.png" if i % 2 else f'q"{i}' for i in range(n)],
                          "class": rng.integers(0, 10, n), "probability": rng.random(n)}),
            pd.DataFrame({"f32": rng.random(n).astype(np.float32), "f16": rng.random(n).astype(np.float16),
                          "u8": rng.integers(0, 255, n).astype(np.uint8), "b": rng.random(n) > 0.5,
                          "i8": rng.integers(-5, 5, n).astype(np.int8)}),
            pd.DataFrame({"o": pd.array([None, 1.5, "x y", np.nan, pd.NA, [1, 2], (3,), 7, True, 1e-5][:n],
                                        dtype=object),
                          "big": [1e16, -0.0, np.inf, -np.inf, 5e-324, 1e300, 0.1, 1 / 3, 123456789.125, 2.5][:n]}),
            pd.DataFrame({"s": pd.array((["a", None, "b c"] * 4)[:n], dtype="string"), "f": [np.nan] * n,
                          "e": [""] * n}),
            pd.DataFrame({"s": pd.Series((["a", None, "b\nc", "d,e", "'"] * 2)[:n], dtype="str")}),
            pd.DataFrame({"d": pd.date_range("2020-01-01", periods=n), "c": pd.Categorical(["a"] * n)}),
            pd.DataFrame({"tz": pd.date_range("2020-01-01", periods=n, tz="UTC"),
                          "td": pd.to_timedelta(range(n), "s")}),
            pd.DataFrame({"only": [""] * n}),
            pd.DataFrame({"i": pd.array(([1, None, 3] * 4)[:n], dtype="Int64"),
                          "fl": pd.array(([1.5, None] * 5)[:n], dtype="Float64")}),
            pd.DataFrame({"cx": np.arange(n) + 1j}),
            pd.DataFrame(np.arange(2 * n).reshape(n, 2), columns=["dup", "dup"]),
            pd.DataFrame({"x": np.arange(n)}, index=[f"r{i}" for i in range(n)]),
            # columns of one type apart from each other: one block, its rows put back in place
            pd.DataFrame({"a": rng.random(n), "s": [f"s{i}" for i in range(n)], "b": [np.nan] + [0.5] * (n - 1),
                          "i": np.arange(n), "o": np.array(["x"] * n, dtype=object), "c": rng.random(n) * 1e20,
                          "o2": np.array([None] + ["y z"] * (n - 1), dtype=object), "j": np.arange(n) * 3}),
            pd.DataFrame({"l": pd.Series([[1, 2]] * n), "t": pd.Series([(3, "a b")] * n), "k": [7] * n}),
            pd.DataFrame({"plain": [f"x{i}.png" for i in range(n)]}),
            pd.DataFrame({"cr": ["a\rb"] * n, "tab": ["a\tb"] * n, "u": ["\u2028é"] * n, "n": [1.5] * n}),
        ]
        for storage in ("python", "pyarrow"):
            for na in (pd.NA, np.nan):
                dtype = pd.StringDtype(storage=storage, na_value=na)
                out.append(pd.DataFrame({"s": pd.array((["a", None, "b c", 'q"'] * 3)[:n], dtype=dtype),
                                         "t": pd.array([f"t {i}" for i in range(n)], dtype=dtype)}))
    return out


@pytest.mark.parametrize("df", frames(), ids=lambda df: ",".join(str(t) for t in df.dtypes))
def test_same_text_as_pandas(df: pd.DataFrame) -> None:
    assert output.frame_text(df) == to_csv(df)


def test_no_columns_falls_back_to_pandas() -> None:
    df = pd.DataFrame(index=range(3))
    assert output.frame_text(df) == to_csv(df)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=8), st.floats(allow_nan=True, allow_infinity=True),
                          st.integers(-(2**63), 2**63 - 1), st.one_of(st.none(), st.text(max_size=4), st.floats())),
                min_size=1, max_size=12))
def test_random_rows_match_pandas(rows: list[tuple[str, float, int, object]]) -> None:
    df = pd.DataFrame(rows, columns=["file", "score", "n", "mixed"])
    df["f32"] = df["score"].astype(np.float32)
    assert output.frame_text(df) == to_csv(df)


def test_format_append_row_uses_it() -> None:
    df = pd.DataFrame({"file": ["a b.png", "c.png"], "class": [1, 2], "p": [0.5, 0.25]})
    got = output.format_append_row(df, 2)
    assert got.text == '"a b.png" 1 0.5\nc.png 2 0.25\n'
    assert got.succeeded == 2


@pytest.mark.parametrize("df", frames(), ids=lambda df: ",".join(str(t) for t in df.dtypes))
def test_format_append_row_gives_the_same_text(df: pd.DataFrame) -> None:
    assert output.format_append_row(df, len(df)).text == (to_csv(df) if len(df) else None)


def test_rows_kept_for_later_are_what_run_returned_whatever_the_script_changes_after() -> None:
    # The rows of a DataFrame of plain values are joined when the worker records the mini-batch,
    # after the next run() may have changed the frame (a script reusing one frame): never its text.
    df = pd.DataFrame({"file": ["a.png", "b.png"], "class": [1, 2], "p": [0.5, 0.25]})
    kept = output.format_append_row(df, 2)
    objects = pd.DataFrame({"o": [[1, 2], [3]]})  # mutable values: joined at once
    now = output.format_append_row(objects, 2)
    df.loc[0, "file"] = "changed.png"
    df.loc[:, "p"] = 0.0
    df["class"] = [7, 7]
    objects["o"].iloc[0].append(9)
    assert kept.text == "a.png 1 0.5\nb.png 2 0.25\n"
    assert now.text == '"[1, 2]"\n[3]\n'
