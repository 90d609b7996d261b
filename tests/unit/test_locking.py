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

    def pip(args: list[str], log: object, exe: object = None) -> None:
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
def test_resolution_leaves_no_temporary_folder(fake_pip: list[list[str]], temp_root: Path, python: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locking, "interpreter", lambda minor: None)  # no Python 3.8 on this host: cross resolution
    lock = locking.resolve(["six==1.16.0"], python=python, host_python="3.11.7", refresh=True)
    assert lock.packages == []
    cross = python.startswith("3.8")
    assert ("--target" in fake_pip[0]) == cross  # another Python than the host's: a --target is needed
    if cross:
        target = Path(fake_pip[0][fake_pip[0].index("--target") + 1])
        assert target.is_relative_to(temp_root)  # pip was given a temporary folder...
    assert list(temp_root.iterdir()) == []  # ...and it is gone


def make_wheel(folder: Path, name: str, version: str, requires: list[str] = ()) -> Path:  # type: ignore[assignment]
    """A minimal pure-Python wheel of `name` whose metadata requires `requires`."""
    import base64
    import hashlib
    import zipfile

    module = name.replace("-", "_")
    dist = f"{module}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n"
                                                                                 for r in requires)
    files = {
        f"{module}/__init__.py": b"",
        f"{dist}/METADATA": meta.encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: bepbuild-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}\n"
        for n, d in files.items()) + f"{dist}/RECORD,,\n"
    files[f"{dist}/RECORD"] = record.encode()
    path = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for n, d in files.items():
            z.writestr(n, d)
    return path


def test_a_lock_for_another_python_follows_that_pythons_markers(tmp_path: Path, oldest_python: str) -> None:
    # pip's --python-version picks wheels for the target but reads markers as the running Python does:
    # `python_version < "3.9"` dependencies of a 3.8 environment were left out of its lock.
    links = tmp_path / "links"
    links.mkdir()
    make_wheel(links, "probe-top", "1.0", ['probe-old-only; python_version < "3.9"', 'probe-new-only; '
                                           'python_version >= "3.9"'])
    make_wheel(links, "probe-old-only", "1.0")
    make_wheel(links, "probe-new-only", "1.0")
    options = ["--no-index", f"--find-links {links}"]
    old = locking.resolve(["probe-top"], python="3.8.18", options=options, refresh=True)
    assert sorted(p.name for p in old.packages) == ["probe-old-only", "probe-top"]
    assert old.python == "3.8.18"
    new = locking.resolve(["probe-top"], python="3.11.7", options=options, host_python="3.11.7", refresh=True)
    assert sorted(p.name for p in new.packages) == ["probe-new-only", "probe-top"]


def test_a_cross_resolved_lock_is_not_reused_once_the_targets_python_is_there(
        fake_pip: list[list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locking, "interpreter", lambda minor: None)
    assert locking.cross_resolved("3.8.5")
    locking.resolve(["six"], python="3.8.5", host_python="3.11.7")
    locking.resolve(["six"], python="3.8.5", host_python="3.11.7")
    assert len(fake_pip) == 1 and "--python-version" in fake_pip[0]
    monkeypatch.setattr(locking, "interpreter", lambda minor: Path("/opt/py38/bin/python3.8"))
    assert not locking.cross_resolved("3.8.5")
    locking.resolve(["six"], python="3.8.5", host_python="3.11.7")
    assert len(fake_pip) == 2 and "--python-version" not in fake_pip[1]
