"""Azure's append_row formatting and success counting of one run() return (bepbuild_runtime.output)."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from bepbuild_runtime import output


def test_list_is_one_str_line_per_element() -> None:
    got = output.format_append_row(["a.png 3", 7, ("a", 1, 0.5), [1, 2]], 4)
    assert got.text == "a.png 3\n7\n('a', 1, 0.5)\n[1, 2]\n"
    assert got.succeeded == 4
    assert got.warning is None


def test_tuple_is_taken_like_a_list() -> None:
    got = output.format_append_row(("x", "y"), 3)
    assert got.text == "x\ny\n"
    assert got.succeeded == 2  # one item of three failed


def test_generator_is_materialized() -> None:
    def gen():
        yield "first"
        yield "second"

    got = output.format_append_row(gen(), 2)
    assert (got.text, got.succeeded) == ("first\nsecond\n", 2)


def test_dataframe_is_space_separated_without_header_or_index_and_quotes_spaces() -> None:
    df = pd.DataFrame({"file": ["a b.png", "c.png"], "class": [3, 7], "probability": [0.5, 0.25]},
                      index=[10, 11])
    got = output.format_append_row(df, 2)
    assert got.text == '"a b.png" 3 0.5\nc.png 7 0.25\n'
    assert got.succeeded == 2
    # Read back the way the Azure examples do.
    back = pd.read_csv(io.StringIO(got.text), header=None, names=["file", "class", "probability"], sep=" ")
    assert back["file"].tolist() == ["a b.png", "c.png"]
    assert back["class"].tolist() == [3, 7]


def test_more_rows_than_inputs_are_all_written_but_capped_in_the_count() -> None:
    got = output.format_append_row(["s1", "s2", "s3", "s4", "s5"], 2)
    assert got.text.count("\n") == 5
    assert got.succeeded == 2
    assert got.warning is not None and "5 items" in got.warning and "input count 2" in got.warning


def test_empty_and_none_mean_all_items_failed_without_error() -> None:
    for empty in ([], None, pd.DataFrame({"a": []})):
        got = output.format_append_row(empty, 3)
        assert got.text is None
        assert got.succeeded == 0


@pytest.mark.parametrize("bad", ["a string", {"a": 1}, 42, pd.Series([1, 2])])
def test_other_types_raise_azure_message(bad: object) -> None:
    with pytest.raises(TypeError, match="The type of return value is not a list or dataframe"):
        output.format_append_row(bad, 2)


def test_summary_only_counts_without_text() -> None:
    got = output.count_summary(["/in/a.csv", "/in/b.csv"], 3)
    assert got.text is None and got.succeeded == 2
    assert output.count_summary(pd.DataFrame({"a": range(5)}), 3).succeeded == 3
    assert output.count_summary(None, 3).succeeded == 0
    with pytest.raises(TypeError, match="not a list or dataframe"):
        output.count_summary(42, 1)


def test_human_sizes() -> None:
    from bepbuild.output import human_size

    assert [human_size(n) for n in (0, 999, 1000, 146_512_000, 3_200_000_000, 2 * 10**12)] == [
        "0 B", "999 B", "1.0 kB", "146.5 MB", "3.2 GB", "2.0 TB"]


def test_the_line_a_build_ends_with() -> None:
    from bepbuild.cli.build import summary_line

    doc = {"image": "bepbuild/ep/d:1", "built": True, "seconds": 2.04,
           "build_summary": {"environment_image": "bepbuild/env:ab", "environment_built": False,
                             "environment_seconds": 0.01, "layers_built": 1, "size": 1_180_000_000}}
    assert summary_line(doc) == ("image bepbuild/ep/d:1 built in 2.0 s: environment bepbuild/env:ab reused, "
                                 "1 layer built, 1.2 GB")
    doc["build_summary"] |= {"environment_built": True, "environment_seconds": 41.26, "layers_built": 3}
    assert "environment bepbuild/env:ab built (41.3 s), 3 layers built" in summary_line(doc)
    doc |= {"built": False, "seconds": 0.5}
    doc["build_summary"] |= {"environment_image": None, "layers_built": 0}
    assert summary_line(doc) == ("image bepbuild/ep/d:1 up to date, not rebuilt (0.5 s): no environment image "
                                 "(the environment is its image as it is), 0 layers built, 1.2 GB")
