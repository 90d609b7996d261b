"""The runtime keeps to its minimum Python (layout.MIN_PYTHON): the static check, and imports under
that Python itself. tests/unit/test_runtime.py runs every runtime test under it as well."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bepbuild_runtime import layout

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "scripts" / "check_runtime_python.py"
RUNTIME = REPO / "runtime"


def check(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECK), *map(str, paths)], capture_output=True, text=True,
                          timeout=120)


def test_the_minimum_is_azures_oldest() -> None:
    assert layout.MIN_PYTHON == (3, 8)


def test_the_runtime_passes_the_static_check() -> None:
    result = check()
    assert result.returncode == 0, result.stdout + result.stderr


NEWER = {
    "module-level alias": "from typing import Any\nMiniBatch = dict[str, Any]\n",
    "cast": "from typing import cast\ndef f(x):\n    return cast(list[str], x)\n",
    "abc alias": "from collections.abc import Iterable\nNames = Iterable[str]\n",
    "dotted abc": "import collections.abc\nNames = collections.abc.Iterable[str]\n",
    "union alias": "MaybeInt = int | None\n",
    "isinstance union": "def f(x):\n    return isinstance(x, int | str)\n",
    "evaluated annotation": "def f(x: list[str]) -> None:\n    pass\n",  # no __future__ import here
    "removeprefix": "def f(s):\n    return s.removeprefix('x')\n",
    "functools.cache": "import functools\n@functools.cache\ndef f():\n    return 1\n",
    "zip strict": "def f(a, b):\n    return list(zip(a, b, strict=True))\n",
    "match": "def f(x):\n    match x:\n        case 1:\n            return 1\n",
    "parenthesized with": "def f(a, b):\n    with (open(a) as x, open(b) as y):\n        return x, y\n",
}


@pytest.mark.parametrize("source", NEWER.values(), ids=NEWER.keys())
def test_the_check_finds_what_the_minimum_python_lacks(tmp_path: Path, source: str) -> None:
    (tmp_path / "m.py").write_text(source)
    result = check(tmp_path / "m.py")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the runtime must run on Python 3.8" in result.stderr


def test_the_check_passes_what_the_minimum_python_runs(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(textwrap.dedent("""\
        from __future__ import annotations

        import os
        from collections.abc import Iterable
        from typing import Any, Dict, Optional, Union

        MiniBatch = Dict[str, Any]
        FLAGS = os.O_WRONLY | os.O_CREAT


        def f(items: Iterable[str], x: dict[str, int] | None = None) -> list[str] | None:
            y: tuple[int, ...] = (1,)
            if (n := len(y)) > 1:
                return None
            return [s for s in items if isinstance(s, (int, str))] * n


        def g(x: Optional[Union[int, str]]) -> "list[int]":
            return [len(str(x))]
        """))
    result = check(tmp_path / "m.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_runtime_module_imports_on_the_minimum_python(oldest_python: str, tmp_path: Path) -> None:
    (tmp_path / "bepbuild_runtime").symlink_to(RUNTIME)
    modules = sorted(p.stem for p in RUNTIME.glob("*.py") if p.stem != "__init__")
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module('bepbuild_runtime.' + m)\n"
    result = subprocess.run([oldest_python, "-c", code, *modules], capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "__main__" in modules and "mlflow_driver" in modules  # the entry point and the MLflow driver too
