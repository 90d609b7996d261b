"""`bepbuild doctor`: the verdicts, the output, the exit code and --fix, with the checks replaced."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import namedtuple
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bepbuild import doctor
from bepbuild.cli import app
from bepbuild.doctor import FAIL, OK, WARN, Check

REPO = Path(__file__).resolve().parents[2]


def fake_checks(monkeypatch: pytest.MonkeyPatch, **statuses: str) -> dict[str, int]:
    """Replace every check by one that returns the given status (default ok); counts the calls."""
    calls: dict[str, int] = {}
    for name, attr, _ in doctor.CHECKS:
        status = statuses.get(attr.removeprefix("check_"), OK)

        def check(name: str = name, attr: str = attr, status: str = status) -> Check:
            calls[attr] = calls.get(attr, 0) + 1
            return Check(name, status, f"{name} is {status}", "" if status == OK else f"do something about {name}")

        monkeypatch.setattr(doctor, attr, check)
    return calls


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["doctor", *args])
    assert "Traceback" not in result.stderr
    return result.exit_code, result.stdout, result.stderr


def test_all_ok_is_exit_0_and_a_table(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_checks(monkeypatch)
    code, out, _ = run()
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["Name", "Status", "Detail"]
    for name in ("docker CLI", "engine", "BuildKit", "base image", "pip settings", "disk"):
        assert any(line.startswith(name) and " ok " in line for line in lines), name


def test_json_output_has_every_check_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_checks(monkeypatch, disk=WARN)
    code, out, _ = run("-o", "json")
    assert code == 0, "a warning is not a failure"
    doc = json.loads(out)
    assert [c["name"] for c in doc] == [name for name, _, _ in doctor.CHECKS]
    assert set(doc[0]) == {"name", "status", "detail", "fix"}
    disk = doc[-1]
    assert disk["status"] == "warn" and disk["fix"] == "do something about disk"


def test_a_failing_check_is_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_checks(monkeypatch, pip=FAIL)
    code, out, _ = run("-o", "json")
    assert code == 1
    assert [c["name"] for c in json.loads(out) if c["status"] == "fail"] == ["pip settings"]


def test_no_engine_skips_the_checks_that_need_it(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_checks(monkeypatch, engine=FAIL)
    code, out, _ = run("-o", "json")
    assert code == 1
    doc = {c["name"]: c for c in json.loads(out)}
    for name in ("BuildKit", "base image"):
        assert doc[name]["status"] == "fail" and "no engine" in doc[name]["detail"]
    assert "check_buildkit" not in calls and "check_base_image" not in calls
    assert calls["check_pip"] == 1 and calls["check_disk"] == 1


def test_a_crashing_check_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_checks(monkeypatch)

    def boom() -> Check:
        raise RuntimeError("kaputt")

    monkeypatch.setattr(doctor, "check_pip", boom)
    results = {r.name: r for r in doctor.run_checks()}
    assert results["pip settings"].status == FAIL and "kaputt" in results["pip settings"].detail


def test_fix_runs_the_setup_then_checks_again(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_checks(monkeypatch, base_image=FAIL)
    fixed: list[bool] = []

    def fix(log) -> bool:  # noqa: ANN001
        log("engine: ready")
        fixed.append(True)
        fake_checks(monkeypatch)  # the base image exists now
        return True

    monkeypatch.setattr(doctor, "fix", fix)
    code, out, err = run("--fix", "-o", "json")
    assert fixed == [True]
    assert code == 0
    assert all(c["status"] == "ok" for c in json.loads(out))
    assert "engine: ready" in err


def test_fix_that_does_not_help_is_still_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_checks(monkeypatch, engine=FAIL)
    monkeypatch.setattr(doctor, "fix", lambda log: False)
    code, _, err = run("--fix", "-o", "none")
    assert code == 1
    assert "did not finish" in err


def test_fix_with_nothing_to_fix_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_checks(monkeypatch, disk=WARN)
    monkeypatch.setattr(doctor, "fix", lambda log: pytest.fail("fix ran"))
    code, _, err = run("--fix", "-o", "none")
    assert code == 0 and "nothing to fix" in err


# --- the checks themselves, without an engine ----------------------------------------------------------


def test_missing_docker_cli_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BEPBUILD_DOCKER", str(tmp_path / "no-docker"))
    c = doctor.check_docker_cli()
    assert c.status == FAIL and "no-docker" in c.detail and "BEPBUILD_DOCKER" in c.fix


def test_unreachable_engine_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    c = doctor.check_engine()
    assert c.status == FAIL and "make engine" in c.fix


Usage = namedtuple("Usage", "total used free")


@pytest.mark.parametrize(("free_gb", "status"), [(1.5, WARN), (4.9, WARN), (5.1, OK), (500, OK)])
def test_disk(free_gb: float, status: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BEPBUILD_HOME", str(tmp_path / "not" / "yet" / "there"))
    seen: list[Path] = []

    def usage(path: Path) -> Usage:
        seen.append(Path(path))
        return Usage(1000e9, 0, free_gb * 1e9)

    monkeypatch.setattr(shutil, "disk_usage", usage)
    c = doctor.check_disk()
    assert c.status == status
    assert f"{free_gb:.1f} GB free" in c.detail
    assert seen == [tmp_path], "measured on the nearest existing folder"


def pip_says(monkeypatch: pytest.MonkeyPatch, stdout: str, returncode: int = 0) -> None:
    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert cmd[1:4] == ["-m", "pip", "config"]
        return subprocess.CompletedProcess(cmd, returncode, stdout, "ERROR: no pip" if returncode else "")

    monkeypatch.setattr(doctor, "_run", fake_run)


def test_pip_settings_summary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("cert\n")
    monkeypatch.setenv("PIP_CERT", str(ca))
    pip_says(monkeypatch, f"global.cert='{ca}'\nglobal.extra-index-url='file:///a file:///b'\n"
                          ":env:.find-links='/opt/wheels'\nglobal.index-url='https://pypi.example/simple'\n")
    c = doctor.check_pip()
    assert c.status == OK
    assert c.detail == f"index https://pypi.example/simple; 2 extra indexes; 1 find-links; CA {ca}"


def test_pip_cert_that_is_missing_warns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pip_says(monkeypatch, f"global.cert='{tmp_path}/gone.pem'\n")
    c = doctor.check_pip()
    assert c.status == WARN and "gone.pem is missing" in c.detail


def test_no_ca_bundle_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    pip_says(monkeypatch, "")
    monkeypatch.setattr(doctor.config, "ca_bundle", lambda: None)
    c = doctor.check_pip()
    assert c.status == WARN and "no CA bundle" in c.detail and "PIP_CERT" in c.fix


def test_pip_that_does_not_run_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    pip_says(monkeypatch, "", returncode=1)
    c = doctor.check_pip()
    assert c.status == FAIL and "no pip" in c.detail


# --- --fix finds the set-up script ---------------------------------------------------------------------


def test_engine_script_is_found_in_this_checkout() -> None:
    assert doctor.engine_script() == REPO / "scripts" / "engine.sh"


def test_fix_without_a_checkout_says_make_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "engine_script", lambda: None)
    lines: list[str] = []
    assert doctor.fix(lines.append) is False
    assert len(lines) == 1 and "make engine" in lines[0]


@pytest.mark.parametrize("exit_code", [0, 1])
def test_fix_runs_the_script_with_our_settings(exit_code: int, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    script = tmp_path / "scripts" / "engine.sh"
    script.parent.mkdir()
    script.write_text(f'echo "base=$BEPBUILD_BASE_IMAGE docker=$BEPBUILD_DOCKER cwd=$(pwd)"\nexit {exit_code}\n')
    monkeypatch.setattr(doctor, "engine_script", lambda: script)
    monkeypatch.setenv("BEPBUILD_BASE_IMAGE", "local/other:1")
    monkeypatch.setenv("BEPBUILD_DOCKER", "/usr/bin/docker")
    lines: list[str] = []
    assert doctor.fix(lines.append) is (exit_code == 0)
    assert lines[0] == f"$ bash {script}"
    assert lines[1] == f"base=local/other:1 docker=/usr/bin/docker cwd={os.path.realpath(tmp_path)}"
