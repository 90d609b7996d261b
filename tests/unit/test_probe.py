"""`python -m bepbuild_runtime.probe` (what `bepbuild test` runs in a deployment's container) as a real
subprocess, under the host's Python and under the runtime's minimum (layout.MIN_PYTHON)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bepbuild_runtime import layout, probe

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"
PYTHON = sys.executable  # set per test by `probe_python`


@pytest.fixture(autouse=True, params=["host", "oldest"])
def probe_python(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    python = sys.executable if request.param == "host" else request.getfixturevalue("oldest_python")
    monkeypatch.setattr(sys.modules[__name__], "PYTHON", python)
    return python


ROWS = """
import os

def init():
    print("init ran")

def run(mini_batch):
    return [f"{os.path.basename(p)} {len(open(p).read())}" for p in mini_batch]
"""


def probe_run(tmp_path: Path, script: str, files: list[str], *, extra_paths: tuple[Path, ...] = (),
              **request: Any) -> tuple[int, dict[str, Any] | None, str]:
    """Run the probe on `files` (each holding its own name) with `script` as score.py: (exit, result, stderr)."""
    for name in ("in", "code", "out", "result", "pkg"):
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
    for name in files:
        (tmp_path / "in" / name).write_text(name)
    (tmp_path / "code" / "score.py").write_text(textwrap.dedent(script))
    if not (tmp_path / "pkg" / "bepbuild_runtime").exists():
        (tmp_path / "pkg" / "bepbuild_runtime").symlink_to(RUNTIME)
    req = {"items": files, "input_dir": str(tmp_path / "in"), "code_dir": str(tmp_path / "code"),
           "scoring_script": "score.py", "settings": {"mini_batch_size": 2}, "checks": False, **request}
    (tmp_path / "request.json").write_text(json.dumps(req))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, (tmp_path / "pkg", *extra_paths))),
           layout.ENV_OUTPUT_PATH: str(tmp_path / "out")}
    proc = subprocess.run([PYTHON, "-m", "bepbuild_runtime.probe", "--request", str(tmp_path / "request.json"),
                           "--result-dir", str(tmp_path / "result")], env=env, capture_output=True, text=True,
                          timeout=300)
    result_file = tmp_path / "result" / layout.PROBE_RESULT
    result = json.loads(result_file.read_text()) if result_file.exists() else None
    return proc.returncode, result, proc.stderr


def test_rows_as_the_job_writes_them_in_mini_batches(tmp_path: Path) -> None:
    code, result, _ = probe_run(tmp_path, ROWS, ["a.txt", "bb.txt", "ccc.txt"])
    assert code == 0 and result is not None and result["ok"]
    scoring = result["scoring"]
    assert [r["items"] for r in scoring["runs"]] == [2, 1]
    assert "".join(r["rows"] for r in scoring["runs"]) == "a.txt 5\nbb.txt 6\nccc.txt 7\n"
    assert scoring["items"] == {"given": 3, "succeeded": 3, "failed": 0}
    assert scoring["import"]["error"] is None and scoring["init"]["error"] is None
    assert all(r["seconds"] >= 0 and r["status"] == layout.STATUS_DONE for r in scoring["runs"])
    assert result["scoring_max_rss"] > 0


def test_fewer_items_returned_than_given_fail_as_azure_counts(tmp_path: Path) -> None:
    script = "def run(mini_batch):\n    return mini_batch[:1]\n"
    code, result, _ = probe_run(tmp_path, script, ["a", "b", "c"], settings={"mini_batch_size": 3})
    assert code == 1 and result is not None and not result["ok"]
    assert result["scoring"]["items"] == {"given": 3, "succeeded": 1, "failed": 2}
    assert result["scoring"]["init"] is None  # no init(): nothing to run


HOST_ONLY = pytest.mark.parametrize("probe_python", ["host"], indirect=True)


@HOST_ONLY  # pandas is in the host's Python only
def test_a_dataframe_is_written_as_azure_does(tmp_path: Path) -> None:
    script = """
    import os
    import pandas as pd

    def run(mini_batch):
        return pd.DataFrame({"file": [os.path.basename(p) for p in mini_batch], "score": [0.5] * len(mini_batch)})
    """
    code, result, _ = probe_run(tmp_path, script, ["x y.png"])
    assert code == 0 and result is not None
    assert result["scoring"]["runs"][0]["rows"] == '"x y.png" 0.5\n'


def test_import_failure_is_reported_with_its_traceback_and_nothing_runs(tmp_path: Path) -> None:
    script = "import not_installed_anywhere\n\ndef run(mini_batch):\n    return mini_batch\n"
    code, result, _ = probe_run(tmp_path, script, ["a"])
    assert code == 1 and result is not None
    error = result["scoring"]["import"]["error"]
    assert "Traceback" in error and "ModuleNotFoundError" in error and "not_installed_anywhere" in error
    assert result["scoring"]["runs"] == [] and result["scoring"]["items"]["failed"] == 1


def test_init_failure_and_run_exceptions_keep_their_tracebacks(tmp_path: Path) -> None:
    code, result, _ = probe_run(tmp_path, "def init():\n    raise SystemExit(3)\n\ndef run(b):\n    return b\n", ["a"])
    assert code == 1 and result is not None and "SystemExit: 3" in result["scoring"]["init"]["error"]
    script = ("def run(mini_batch):\n    if 'bad' in mini_batch[0]:\n        raise ValueError('no')\n"
              "    return mini_batch\n")
    code, result, _ = probe_run(tmp_path / "2", script, ["bad", "good"], settings={"mini_batch_size": 1})
    assert code == 1 and result is not None
    runs = result["scoring"]["runs"]
    assert runs[0]["status"] == layout.STATUS_EXCEPTION and "ValueError: no" in runs[0]["error"]
    assert runs[1]["status"] == layout.STATUS_DONE and runs[1]["succeeded"] == 1
    assert result["scoring"]["items"] == {"given": 2, "succeeded": 1, "failed": 1}


def test_summary_only_counts_and_the_script_writes_its_own_files(tmp_path: Path) -> None:
    script = """
    import os

    def run(mini_batch):
        with open(os.path.join(os.environ["AZUREML_BI_OUTPUT_PATH"], "part.txt"), "a") as f:
            f.write("x")
        return mini_batch
    """
    code, result, _ = probe_run(tmp_path, script, ["a", "b"], settings={"output_action": "summary_only"})
    assert code == 0 and result is not None
    assert [r["rows"] for r in result["scoring"]["runs"]] == [None]
    assert (tmp_path / "out" / "part.txt").read_text() == "x"


def test_run_slower_than_the_timeout_fails_as_a_job_would(tmp_path: Path) -> None:
    script = "import time\n\ndef run(mini_batch):\n    time.sleep(1.2)\n    return mini_batch\n"
    code, result, _ = probe_run(tmp_path, script, ["a"], settings={"retry_settings": {"timeout": 1}})
    assert code == 1 and result is not None
    run = result["scoring"]["runs"][0]
    assert run["status"] == layout.STATUS_TIMEOUT and run["rows"] is None and "timeout" in run["error"]


def test_environment_checks_name_lock_differences_and_python(tmp_path: Path) -> None:
    version = subprocess.run([PYTHON, "-c", "import pip; print(pip.__version__)"], capture_output=True,
                             text=True).stdout.strip()
    lock = "# a lock\npip==0.0.1 --hash=sha256:00\nnot-a-real-package==1.0 --hash=sha256:00\n"
    minor = subprocess.run([PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True,
                           text=True).stdout.strip()
    code, result, _ = probe_run(tmp_path, ROWS, ["a"], checks=True, lock=lock, python_pin="2.7")
    assert code == 1 and result is not None
    env = result["environment"]
    assert env["lock"]["missing"] == ["not-a-real-package==1.0"]
    assert env["lock"]["different"] == [f"pip: 0.0.1 locked, {version} installed"]
    assert env["lock"]["source"] == "deployment" and not env["lock"]["ok"]
    assert env["python"] == {"version": env["python"]["version"], "pin": "2.7", "ok": False}
    assert env["python"]["version"].startswith(minor)
    assert env["imports"]["checked"] >= 1 and env["imports"]["ok"]  # pip imports
    assert env["pip_check"]["skipped"] is None


def test_imports_that_fail_or_kill_the_interpreter_are_named(tmp_path: Path) -> None:
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "fine.py").write_text("X = 1\n")
    (mods / "broken.py").write_text("raise OSError('libfoo.so.1: cannot open shared object file')\n")
    (mods / "deadly.py").write_text("import os\nos._exit(9)\n")
    (mods / "after.py").write_text("Y = 2\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "bepbuild_runtime").symlink_to(RUNTIME)
    code = ("import json, sys; from bepbuild_runtime import probe; "
            "print(json.dumps(probe.check_imports([['d1', 'fine'], ['d2', 'broken'], ['d3', 'deadly'], "
            "['d4', 'after'], ['d5', 'broken']])))")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'pkg'}{os.pathsep}{mods}"}
    out = subprocess.run([PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    report = json.loads(out.stdout)
    failed = {f["distribution"]: f["error"] for f in report["failed"]}
    assert set(failed) == {"d2", "d3", "d5"}, report
    assert "OSError: libfoo.so.1" in failed["d2"] and "Traceback" in failed["d2"]
    assert "exit code 9" in failed["d3"]
    assert report["checked"] == 5 and not report["ok"]


# -- pure functions (host Python only once) -----------------------------------------------------------------


@HOST_ONLY
def test_lock_comparison_ignores_the_venv_tools_and_spelling() -> None:
    pins = probe.read_lock("# c\nPyYAML==6.0 --hash=sha256:1\nzope.interface==7 --hash=sha256:2\n")
    assert pins == {"pyyaml": "6.0", "zope-interface": "7"}
    dists = {"pyyaml": SimpleNamespace(version="6.0"), "zope-interface": SimpleNamespace(version="7"),
             "pip": SimpleNamespace(version="24"), "setuptools": SimpleNamespace(version="70"),
             "six": SimpleNamespace(version="1.16")}
    assert probe.compare_lock(pins, dists) == {"missing": [], "extra": ["six==1.16"], "different": [], "ok": False}
    del dists["six"]
    assert probe.compare_lock(pins, dists)["ok"]


@HOST_ONLY
def test_import_names_from_top_level_or_record() -> None:
    class Dist:
        def __init__(self, top: str | None, files: list[str]) -> None:
            self.top, self.files = top, [Path(f) for f in files]

        def read_text(self, name: str) -> str | None:
            return self.top if name == "top_level.txt" else None

    assert probe.import_names(Dist("PIL\n_private\ntests\n", [])) == ["PIL"]
    record = ["numpy/__init__.py", "numpy-2.0.dist-info/RECORD", "_cffi_backend.cpython-311-x86_64-linux-gnu.so",
              "six.py", "../../bin/tool", "numpy.libs/libgfortran.so", "typing_extensions.py"]
    assert probe.import_names(Dist(None, record)) == ["numpy", "six", "typing_extensions"]


@HOST_ONLY
def test_python_pin_matches_by_its_own_precision() -> None:
    have = probe.check_python(None)["version"]
    major, minor = have.split(".")[:2]
    assert probe.check_python(f"{major}.{minor}")["ok"]
    assert probe.check_python(f"{major}.{minor}.*")["ok"]
    assert probe.check_python(have)["ok"]
    assert not probe.check_python(f"{major}.{int(minor) + 1}")["ok"]
