"""`bepbuild test` on the host side, without an engine: refusals, the report and its verdict, owners of leftovers."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bepbuild.cli import app
from bepbuild.errors import BuildError
from bepbuild.jobs import isolation
from bepbuild.testing import container, pytest_image, report, run
from bepbuild.testing.target import Target


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("args, message", [
    ((), "give a deployment file, or --endpoint-name with --name NAME or --all"),
    (("--endpoint-name", "e"), "give a deployment file, or --endpoint-name with --name NAME or --all"),
    (("-e", "e", "--all", "--name", "x"), "give a deployment file, or --endpoint-name with --name NAME or --all"),
    (("dep.yml", "--all", "-e", "e"), "give a deployment file, or --name / --all with --endpoint-name, not both"),
])
def test_what_to_test_is_one_of_a_file_a_name_or_all(args: tuple[str, ...], message: str) -> None:
    res = cli("test", *args, "--input", ".")
    assert res.exit_code == 2 and res.output.strip().splitlines() == [f"error: {message}"]


@pytest.mark.parametrize("args, message", [
    ((), "give --input SAMPLE (files to score), --pytest PATH (your tests), or both"),
    (("--input", ".", "--limit", "0"), "--limit must be at least 1, got 0"),
    (("--input", ".", "--mini-batch-size", "0"), "--mini-batch-size must be at least 1, got 0"),
    (("--input", ".", "--junit-xml", "r.xml"), "--junit-xml needs --pytest"),
    (("--pytest", "no-such-tests"), "--pytest no-such-tests: no such file or folder"),
])
def test_a_bad_request_is_refused_before_anything_is_built(args: tuple[str, ...], message: str,
                                                          bepbuild_home: Path) -> None:
    res = cli("batch-deployment", "test", "-e", "e", "-n", "d", *args)
    assert res.exit_code == 2 and res.output.strip().splitlines() == [f"error: {message}"]
    assert not (bepbuild_home / "scratch").exists()


def test_a_junit_report_path_that_is_a_folder_or_a_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "link.xml").symlink_to(tmp_path / "elsewhere.xml")
    for bad in (tmp_path, tmp_path / "link.xml"):
        with pytest.raises(Exception, match="is a folder or a link"):
            run.check(run.Request(pytest=[tmp_path / "tests"], junit_xml=bad))
    with pytest.raises(Exception, match="does not exist"):
        run.check(run.Request(pytest=[tmp_path / "tests"], junit_xml=tmp_path / "no" / "r.xml"))


def test_each_deployment_of_all_gets_its_own_junit_file() -> None:
    assert run.junit_path(Path("out/report.xml"), "Blue") == Path("out/report.blue.xml")
    assert run.junit_path(Path("report"), "green") == Path("report.green.xml")
    assert run.junit_path(None, "x") is None


def test_test_folders_are_mounted_under_their_own_names(tmp_path: Path) -> None:
    for name in ("a/tests", "b/tests", "c"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "c" / "test_x.py").write_text("")
    got = run._pytest_folders([tmp_path / "a/tests", tmp_path / "b/tests", tmp_path / "c" / "test_x.py"])
    assert [name for name, _ in got] == ["tests", "tests-1", "c"]


def _target() -> Target:
    return Target("ep", "dep", "bepbuild/ep/dep:abc", "sha256:1", {"mini_batch_size": 2}, isolation.Limits(memory="1g"),
                  "score.py")


def _report(scoring: dict[str, Any] | None = None, environment: dict[str, Any] | None = None,
            log: str = "") -> dict[str, Any]:
    result = {"python": "3.11.2", "scoring": scoring, "environment": environment} if scoring is not None else None
    ran = container.Ran(0 if result else 1, False, log, 123_000_000, 1.5, "1g")
    return report.finish(report.assemble(_target(), "in", result, ran, []))


def _scoring(*runs: tuple[int, int], error: str | None = None) -> dict[str, Any]:
    given = sum(n for n, _ in runs)
    ok = sum(s for _, s in runs)
    return {"scoring_script": "/opt/bepbuild/code/score.py", "output_action": "append_row",
            "import": {"seconds": 0.5, "error": None}, "init": {"seconds": 0.25, "error": error},
            "runs": [{"mini_batch": i, "items": n, "succeeded": s, "failed": n - s, "status": "RUN_DONE",
                      "rows": "r\n" * s, "warning": None, "error": None, "seconds": 0.1}
                     for i, (n, s) in enumerate(runs)],
            "items": {"given": given, "succeeded": ok, "failed": given - ok}}


def test_the_verdict_passes_only_when_every_item_succeeded() -> None:
    good = _report(_scoring((2, 2), (1, 1)))
    assert good["ok"] and good["verdict"] == "PASS ep/dep: 3/3 items succeeded" and good["rows"] == "r\nr\nr\n"
    short = _report(_scoring((2, 2), (2, 1)))
    assert not short["ok"]
    assert short["verdict"].startswith("FAIL ep/dep: 3/4 items succeeded (1 problem: mini-batch 1: run() returned "
                                       "1 items for 2 inputs: 1 failed")
    text = report.text(short)
    assert text.splitlines()[-1] == short["verdict"]
    assert "peak memory 123.0 MB of 1g" in text and "run 0.20 s (2 mini-batches: 0.10, 0.10)" in text
    assert report.row(short) == {"deployment": "dep", "image": "bepbuild/ep/dep:abc", "env_check": "skipped",
                                 "init_s": 0.25, "run_s": 0.2, "items_ok": "3/4", "ok": False}


def test_tracebacks_are_printed_in_full_and_environment_problems_fail_the_test() -> None:
    tb = "Traceback (most recent call last):\n  File \"score.py\", line 3, in init\nRuntimeError: no model\n"
    failed = _report(_scoring(error=tb), log="printed by init\n")
    text = report.text(failed)
    assert "-- init() failed:\n" + tb.rstrip() in text and "printed by init" in text
    assert failed["problems"] == ["init() failed: RuntimeError: no model"]
    env = {"python": {"version": "3.11.2", "pin": "3.10", "ok": False},
           "pip_check": {"ok": False, "skipped": None, "output": "a 1 requires b, which is not installed."},
           "lock": {"ok": False, "source": "image", "missing": ["b==2"], "extra": [], "different": [], "packages": 2},
           "imports": {"checked": 1, "ok": False, "failed": [{"distribution": "c", "module": "c", "error": tb}]}}
    bad = _report(_scoring((1, 1)), env)
    assert bad["problems"] == ["Python 3.11.2 is not the conda file's python=3.10",
                               "pip check: a 1 requires b, which is not installed.",
                               "lock: b==2: in the lock, not installed",
                               "import c (of c) failed: RuntimeError: no model"]
    assert report.env_check(bad) == "failed" and bad["verdict"].startswith("FAIL ep/dep: 1/1 items succeeded (4 ")


def test_no_result_from_an_old_image_says_to_deploy_again() -> None:
    old = _report(None, log="/opt/bepbuild/venv/bin/python3: No module named bepbuild_runtime.probe\n")
    assert old["problems"] == ["image bepbuild/ep/dep:abc was built by an earlier bepbuild (its runtime cannot test "
                               "it): deploy dep again"]


def test_an_owner_names_a_live_process_and_never_a_later_one() -> None:
    me = container.owner()
    assert not container.owner_gone(me)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    who = container.owner(child.pid)
    assert not container.owner_gone(who)
    child.kill()
    child.wait()
    assert container.owner_gone(who)
    host, boot, pid, start = me.rsplit(":", 3)
    assert container.owner_gone(f"{host}:{boot}:{pid}:{int(start) + 1}")  # the pid, reused later
    assert container.owner_gone(f"{host}:another-boot:{pid}:{start}")
    assert not container.owner_gone(f"another-host:{boot}:{pid}:{int(start) + 1}")  # cannot tell: kept
    assert not container.owner_gone("garbage")


def test_scratch_folders_of_dead_owners_are_swept_and_live_ones_kept(bepbuild_home: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(container.images, "engine", lambda: (_ for _ in ()).throw(container.EngineError("none")))
    mine = container.new_scratch()
    dead = container.new_scratch()
    host, boot, pid, start = container.owner().rsplit(":", 3)
    (dead / container.OWNER_FILE).write_text(f"{host}:{boot}:{pid}:{int(start) + 1}\n")
    (dead / "result").mkdir()
    os.chmod(dead / "result", 0o500)
    assert container.sweep() == 1
    assert mine.is_dir() and not dead.exists()


def test_a_wheel_member_leading_out_is_refused(tmp_path: Path) -> None:
    wheel = tmp_path / "evil-1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("evil/__init__.py", "")
        z.writestr("../escape.py", "")
    with pytest.raises(BuildError, match="unsafe member"):
        pytest_image._unpack(wheel, tmp_path / "out")
    assert not (tmp_path / "escape.py").exists()
