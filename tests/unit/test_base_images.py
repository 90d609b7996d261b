"""Base images by Python version (no engine: the engine's answers are faked): which base an environment
gets, the configured family, the local base's name, what is copied of a host installation, and the one
line when this host has no such Python."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bepbuild import base_images, config, deploy, environments, host_python, images
from bepbuild.cli import app
from bepbuild.environments import BaseInfo
from bepbuild.errors import UserError

DEFAULT = "local/debian-py:bookworm"


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The default base has Python 3.11; images exist once pulled or built; calls are recorded."""
    have: set[str] = {DEFAULT}
    calls: dict[str, list[str]] = {"pull": [], "build": []}
    monkeypatch.setattr(environments, "probe_base", lambda image: BaseInfo(image, "sha256:" + "0" * 64, "3.11.2",
                                                                           None))
    monkeypatch.setattr(images, "image_id", lambda tag: f"sha256:{tag}" if tag in have else None)

    def pull(ref: str) -> str:
        calls["pull"].append(ref)
        have.add(ref)
        return f"sha256:{ref}"

    def build_local(minor: str, **_: object) -> None:
        calls["build"].append(minor)
        have.add(base_images.local_name(minor))

    monkeypatch.setattr(images, "pull", pull)
    monkeypatch.setattr(base_images, "build_local", build_local)
    return calls


def test_names_and_versions() -> None:
    assert base_images.local_name("3.8") == "local/debian-py:3.8"
    assert [base_images.minor_of(v) for v in ("3.8.5", "3.8", "3.10.*", "3", None, "")] == [
        "3.8", "3.8", "3.10", None, None, None]


@pytest.mark.parametrize("pin", [None, "3", "3.11", "3.11.9", "3.7", "3.6.15"])
def test_the_default_base_stays_without_a_pin_of_another_python(pin: str | None, engine: dict) -> None:
    # no pin, the default's own Python, or one the runtime cannot run on (the plan says so in one line)
    assert base_images.for_python(pin, DEFAULT, lambda line: None) == DEFAULT
    assert engine == {"pull": [], "build": []}


def test_a_base_with_conda_stays(engine: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(environments, "probe_base", lambda image: BaseInfo(image, "sha256:1", "3.11.2", "/opt/conda"))
    assert base_images.for_python("3.8.5", DEFAULT, lambda line: None) == DEFAULT


def test_another_python_gets_the_local_base_built_once(engine: dict) -> None:
    lines: list[str] = []
    assert base_images.for_python("3.8.5", DEFAULT, lines.append) == "local/debian-py:3.8"
    assert base_images.for_python("3.8", DEFAULT, lines.append) == "local/debian-py:3.8"
    assert engine["build"] == ["3.8"] and len(lines) == 1 and "building local/debian-py:3.8" in lines[0]


def test_a_configured_family_is_pulled(engine: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    (config.home()).mkdir(parents=True, exist_ok=True)
    (config.home() / "config.yaml").write_text('base_image_family: "127.0.0.1:5000/python:{version}-slim"\n')
    assert base_images.for_python("3.9.1", DEFAULT, lambda line: None) == "127.0.0.1:5000/python:3.9-slim"
    assert base_images.for_python("3.9", DEFAULT, lambda line: None) == "127.0.0.1:5000/python:3.9-slim"
    assert engine == {"pull": ["127.0.0.1:5000/python:3.9-slim"], "build": []}
    monkeypatch.setenv("BEPBUILD_BASE_IMAGE_FAMILY", "python:3-slim")
    with pytest.raises(UserError, match=r"has no \{version\}"):
        base_images.for_python("3.9", DEFAULT, lambda line: None)


def env_record(**fields: object) -> dict:
    return {"name": "e", "version": "1", **fields}


@pytest.mark.parametrize(("env", "override", "expected"), [
    (env_record(image="mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest",
                conda_file={"dependencies": ["python=3.8.5", "pip"]}), None, "local/debian-py:3.8"),
    (env_record(image="mcr.microsoft.com/azureml/x:1", conda_file={"dependencies": ["pip"]}), None, DEFAULT),
    (env_record(image="mcr.microsoft.com/azureml/x:1", conda_file={"dependencies": ["python=3.8"]}), "my/base:1",
     "my/base:1"),  # --base-image is used as given
    (env_record(image="python:3.10-slim", conda_file={"dependencies": ["python=3.8"]}), None, "python:3.10-slim"),
])
def test_which_environments_choose_their_python(env: dict, override: str | None, expected: str,
                                                engine: dict) -> None:
    opts = deploy.DeployOptions(base_image=override)
    assert deploy._from_image(env, opts, lambda line: None) == expected


# --- the local base: what is copied, and the one line when there is no such Python -------------------


def fake_installation(root: Path, minor: str = "3.8") -> Path:
    prefix = root / "versions" / f"{minor}.18"
    lib = prefix / "lib" / f"python{minor}"
    for d in ("bin", "include", "share/man", f"lib/python{minor}/test", f"lib/python{minor}/json/__pycache__",
              f"lib/python{minor}/site-packages/pip", f"lib/python{minor}/config-{minor}-x86_64-linux-gnu",
              "lib/pkgconfig"):
        (prefix / d).mkdir(parents=True, exist_ok=True)
    (prefix / "bin" / f"python{minor}").write_text("#!/bin/sh\n")
    (prefix / "bin" / f"python{minor}").chmod(0o700)
    for name in ("python3", "python"):
        (prefix / "bin" / name).symlink_to(f"python{minor}")
    (prefix / "bin" / "pip").write_text(f"#!{prefix}/bin/python{minor}\n")
    (prefix / "bin" / "escape").symlink_to("/etc/passwd")
    (prefix / "lib" / f"libpython{minor}.so.1.0").write_bytes(b"\x7fELF")
    (prefix / "lib" / f"libpython{minor}.so").symlink_to(f"libpython{minor}.so.1.0")
    (lib / "os.py").write_text("# os\n")
    (lib / "os.py").chmod(0o600)
    (lib / "json" / "__init__.py").write_text("")
    (lib / "json" / "__pycache__" / "__init__.cpython-38.pyc").write_bytes(b"\0")
    (lib / "test" / "test_os.py").write_text("")
    (lib / "site-packages" / "README.txt").write_text("site\n")
    (lib / "site-packages" / "pip" / "__init__.py").write_text("")
    (lib / f"config-{minor}-x86_64-linux-gnu" / "Makefile").write_text("")
    (lib / f"config-{minor}-x86_64-linux-gnu" / f"libpython{minor}.a").write_bytes(b"!<arch>")
    return prefix


def test_what_is_copied_of_a_host_installation(tmp_path: Path) -> None:
    prefix = fake_installation(tmp_path / "pyenv")
    dest = tmp_path / "ctx" / "python"
    dest.parent.mkdir()
    base_images.copy_installation(prefix, dest, "3.8")
    found = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*"))
    assert found == ["bin", "bin/python", "bin/python3", "bin/python3.8", "lib", "lib/libpython3.8.so",
                     "lib/libpython3.8.so.1.0", "lib/python3.8", "lib/python3.8/config-3.8-x86_64-linux-gnu",
                     "lib/python3.8/config-3.8-x86_64-linux-gnu/Makefile", "lib/python3.8/json",
                     "lib/python3.8/json/__init__.py", "lib/python3.8/os.py", "lib/python3.8/site-packages",
                     "lib/python3.8/site-packages/README.txt"]
    assert os.readlink(dest / "bin" / "python3") == "python3.8"
    # readable by every user (uid 10001 runs it), executable where the owner's copy is; the host's untouched
    assert stat.S_IMODE((dest / "bin" / "python3.8").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "lib" / "python3.8" / "os.py").stat().st_mode) == 0o644
    assert stat.S_IMODE((prefix / "lib" / "python3.8" / "os.py").stat().st_mode) == 0o600
    assert (dest / "bin" / "python3.8").stat().st_ino != (prefix / "bin" / "python3.8").stat().st_ino


def test_installations_are_found_in_pyenv_newest_patch_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    fake_installation(tmp_path, "3.8")
    newer = tmp_path / "versions" / "3.8.20"
    (newer / "bin").mkdir(parents=True)
    (newer / "bin" / "python3.8").write_text("")
    (newer / "bin" / "python3.8").chmod(0o755)
    (tmp_path / "versions" / "3.9-dev").mkdir()
    (tmp_path / "versions" / "miniconda3-4.7").mkdir()
    assert host_python.installations() == {"3.8": newer}


def test_no_such_python_on_this_host_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    fake_installation(tmp_path, "3.9")
    r = CliRunner().invoke(app, ["base", "build", "--python", "3.14"])
    assert r.exit_code == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: no Python 3.14 on this host")
    assert "pyenv has 3.9" in r.stderr and "pyenv install 3.14" in r.stderr and "base_image_family" in r.stderr


@pytest.mark.parametrize(("version", "message"), [
    ("3.7", "Python 3.7: bepbuild's runtime needs Python 3.8 or newer"),
    ("three", "expected a Python version such as 3.8, got 'three'"),
    ("3.8; rm", "expected a Python version such as 3.8"),
])
def test_bad_python_versions_are_refused(version: str, message: str) -> None:
    r = CliRunner().invoke(app, ["base", "build", "--python", version])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and message in r.stderr and "--python" in r.stderr


def test_an_installation_folder_of_another_python_is_refused(tmp_path: Path) -> None:
    prefix = fake_installation(tmp_path, "3.9")
    r = CliRunner().invoke(app, ["base", "build", "--python", "3.8", "--from", str(prefix)])
    assert r.exit_code == 2 and "is not a Python 3.8 installation (no bin/python3.8)" in r.stderr
