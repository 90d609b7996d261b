"""Host-side resolution (`bepbuild.locking`) with pip faked: what it asks pip and what it leaves behind."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from bepbuild import locking


@pytest.fixture
def fake_pip(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Replace pip: `install --dry-run --report FILE` writes an empty report; every call is recorded."""
    calls: list[list[str]] = []

    def pip(args: list[str], log: object) -> None:
        calls.append(list(args))
        if "--report" in args:
            Path(args[args.index("--report") + 1]).write_text(json.dumps({"install": []}))

    monkeypatch.setattr(locking, "_pip", pip)
    return calls


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every `tempfile` folder of this test goes here, so that leftovers can be seen."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


@pytest.mark.parametrize("python", ["3.8.5", "3.11.2"])
def test_resolution_leaves_no_temporary_folder(fake_pip: list[list[str]], temp_root: Path, python: str) -> None:
    lock = locking.resolve(["six==1.16.0"], python=python, host_python="3.11.7", refresh=True)
    assert lock.packages == []
    cross = python.startswith("3.8")
    assert ("--target" in fake_pip[0]) == cross  # another Python than the host's: a --target is needed
    if cross:
        target = Path(fake_pip[0][fake_pip[0].index("--target") + 1])
        assert target.is_relative_to(temp_root)  # pip was given a temporary folder...
    assert list(temp_root.iterdir()) == []  # ...and it is gone
