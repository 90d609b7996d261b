"""Registered assets and the user's folders: versions never become paths outside the registry, the
registry never replaces what it did not make, concurrent registrations of one content give one version,
a copy into itself is refused, content hashes do not depend on who asks, and a few spec fields that
would become paths or lines are refused at the edge. No engine needed."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bepbuild import config, registry
from bepbuild.cli import app
from bepbuild.errors import ConflictError, SpecError, UserError
from bepbuild.hashing import tree_sha256
from bepbuild.specs import load_deployment, parse_ref
from bepbuild.specs.deployment import Settings
from bepbuild.store import Store

BAD_VERSIONS = ["../../../x", "..", ".", "", "a/b", "a\\b", "v\n1", "1\x00", "-1", ".hidden"]


def run(*args: str, code: int) -> str:
    """Run the CLI in-process; a failure must be one `error:` line and the given exit code."""
    r = CliRunner().invoke(app, list(args))
    assert r.exit_code == code, (args, r.exit_code, r.stdout, r.stderr, r.exception)
    if code:
        assert "Traceback" not in r.stderr
        assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("error: "), r.stderr
        return r.stderr
    return r.stdout


def tree_state(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def model(tmp_path: Path) -> Path:
    m = tmp_path / "m1"
    m.mkdir()
    (m / "weights.bin").write_bytes(b"weights v1\n")
    return m


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A folder of the user's that a version must never reach."""
    v = tmp_path / "victim"
    v.mkdir()
    (v / "thesis.tex").write_text("years of work\n")
    return v


def registered_versions(kind: str, name: str) -> list[str]:
    s = Store.open()
    try:
        return [r["version"] for r in s.list_assets(kind, name)]
    finally:
        s.close()


# -- item: versions are checked at the edge ----------------------------------------------------------


@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_model_create_version_flag_is_checked(version: str, model: Path, victim: Path) -> None:
    run("model", "create", "--name", "mm", "--path", str(model), code=0)
    before = tree_state(config.assets_dir())
    err = run("model", "create", "--name", "mm", "--path", str(model), "--version", version, code=2)
    assert "--version" in err
    assert tree_state(victim) == {"thesis.tex": b"years of work\n"}
    assert tree_state(config.assets_dir()) == before
    assert registered_versions("model", "mm") == ["1"]


def test_version_pointing_at_a_user_folder_leaves_it_alone(model: Path, victim: Path) -> None:
    run("model", "create", "--name", "mm", "--path", str(model), "--version", str(victim), code=2)
    run("model", "create", "--name", "mm", "--path", str(model), "--version", "../../../../" + str(victim), code=2)
    assert tree_state(victim) == {"thesis.tex": b"years of work\n"}


@pytest.mark.parametrize("version", ["..", "a/b", ""])
def test_environment_and_data_version_flags_are_checked(version: str, tmp_path: Path) -> None:
    env = tmp_path / "env.yml"
    env.write_text("name: e1\nimage: local/debian-py:bookworm\n")
    err = run("environment", "create", "--file", str(env), "--version", version, code=2)
    assert "--version" in err
    err = run("data", "create", "--name", "d1", "--path", str(tmp_path), "--version", version, code=2)
    assert "--version" in err


@pytest.mark.parametrize("version", ["..", "../x", "a/b"])
def test_version_in_model_environment_and_data_yaml_is_checked(version: str, tmp_path: Path, model: Path) -> None:
    (tmp_path / "model.yml").write_text(f"name: mm\npath: {model}\nversion: '{version}'\n")
    (tmp_path / "env.yml").write_text(f"name: e1\nimage: local/debian-py:bookworm\nversion: '{version}'\n")
    (tmp_path / "data.yml").write_text(f"name: d1\npath: {tmp_path}\nversion: '{version}'\n")
    for kind, f in (("model", "model.yml"), ("environment", "env.yml"), ("data", "data.yml")):
        err = run(kind, "create", "--file", str(tmp_path / f), code=2)
        assert f"{f}:3" in err and "version" in err, err
        err = run("validate", str(tmp_path / f), code=2)
        assert "version" in err


def _deployment(tmp_path: Path, model_version: str | None = None, env_version: str | None = None) -> Path:
    (tmp_path / "code").mkdir(exist_ok=True)
    (tmp_path / "code" / "score.py").write_text("def init():\n    pass\n\n\ndef run(b):\n    return b\n")
    (tmp_path / "model.bin").write_bytes(b"m")
    mv = f"\n  version: '{model_version}'" if model_version is not None else ""
    ev = f"\n  version: '{env_version}'" if env_version is not None else ""
    f = tmp_path / "deployment.yml"
    f.write_text(
        "name: tiny-dpl\nendpoint_name: tiny-ep\ntype: model\n"
        f"model:\n  path: model.bin{mv}\n"
        "code_configuration:\n  code: code\n  scoring_script: score.py\n"
        f"environment:\n  image: local/debian-py:bookworm{ev}\n"
    )
    return f


@pytest.mark.parametrize("version", ["..", "../../x", "/x", ""])
def test_inline_versions_in_a_deployment_fail_validate(version: str, tmp_path: Path) -> None:
    f = _deployment(tmp_path, model_version=version)
    with pytest.raises(SpecError, match="version"):
        load_deployment(f)
    err = run("validate", str(f), code=2)
    assert "model.version" in err
    f = _deployment(tmp_path, env_version=version)
    err = run("validate", str(f), code=2)
    assert "environment.version" in err


@pytest.mark.parametrize("ref", ["azureml:m:..", "azureml:m:../x", "azureml:m:a/b", "azureml:m:.x"])
def test_refs_with_bad_versions_are_refused(ref: str) -> None:
    with pytest.raises(SpecError, match="version"):
        parse_ref(ref)


@pytest.mark.parametrize("version", ["1", "2.0.1", "v-beta", "2024_01_15", "A1"])
def test_ordinary_versions_are_accepted(version: str, model: Path) -> None:
    out = run("model", "create", "--name", "mm", "--path", str(model), "--version", version, "-o", "json", code=0)
    assert f'"version": "{version}"' in out


@pytest.mark.parametrize("version", ["..", "", "a/b"])
def test_registry_refuses_bad_versions_whoever_calls_it(version: str, model: Path) -> None:
    s = Store.open()
    with pytest.raises(UserError, match="version"):
        registry.register_model(s, name="mm", path=model, version=version)
    with pytest.raises(UserError, match="version"):
        registry.register_data(s, name="dd", path=str(model), type="uri_folder", version=version)
    assert not (config.assets_dir() / ".staging").exists() or not any((config.assets_dir() / ".staging").iterdir())


# -- item: no path built from names is removed or replaced unless it is inside the registry ------------


def test_owned_path_refuses_what_lies_outside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    assert config.owned_path(root, "a", "b") == (root / "a" / "b").resolve()
    for parts in (("..",), ("a", ".."), ("",), (".",), ("/etc",), ("a/../..",), ("a\x00",)):
        with pytest.raises(UserError):
            config.owned_path(root, *parts)
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(UserError, match="outside"):
        config.owned_path(root, "link", "x")


def test_a_planted_link_in_the_registry_is_never_followed(model: Path, victim: Path) -> None:
    # assets/models/mm is a symlink to the user's folder: registering version 1 must not place or
    # replace anything there.
    (config.assets_dir() / "models").mkdir(parents=True)
    (config.assets_dir() / "models" / "mm").symlink_to(victim)
    with pytest.raises(UserError, match="outside"):
        registry.register_model(Store.open(), name="mm", path=model)
    assert tree_state(victim) == {"thesis.tex": b"years of work\n"}
    assert sorted(p.name for p in victim.iterdir()) == ["thesis.tex"]


def test_existing_version_same_content_is_returned_different_content_conflicts(model: Path, tmp_path: Path) -> None:
    s = Store.open()
    first = registry.register_model(s, name="mm", path=model, version="5")
    files = Path(first["path"]) / "weights.bin"
    st = files.stat()
    again = registry.register_model(s, name="mm", path=model, version="5")
    assert again["path"] == first["path"] and again["sha256"] == first["sha256"]
    assert files.stat().st_ino == st.st_ino and files.read_bytes() == b"weights v1\n"
    other = tmp_path / "m2"
    other.mkdir()
    (other / "weights.bin").write_bytes(b"weights v2\n")
    with pytest.raises(ConflictError, match="already exists with different content"):
        registry.register_model(s, name="mm", path=other, version="5")
    assert files.stat().st_ino == st.st_ino and files.read_bytes() == b"weights v1\n"
    assert registered_versions("model", "mm") == ["5"]
    staging = config.assets_dir() / ".staging"
    assert not staging.exists() or not any(staging.iterdir())


def test_inline_model_with_a_version_deploys_twice(model: Path) -> None:
    # a deployment naming its inline model's version is deployed again: the same version is reused
    s = Store.open()
    a = registry.register_model(s, name="mm", path=model, version="3", reuse_same_content=True)
    b = registry.register_model(s, name="mm", path=model, version="3", reuse_same_content=True)
    assert a["version"] == b["version"] == "3" and a["path"] == b["path"]


def test_a_stale_folder_without_a_record_is_replaced_only_after_the_new_copy_is_in_place(model: Path) -> None:
    stale = config.assets_dir() / "models" / "mm" / "1"
    stale.mkdir(parents=True)
    (stale / "old.bin").write_bytes(b"left by a crash")
    doc = registry.register_model(Store.open(), name="mm", path=model)
    assert doc["version"] == "1"
    assert tree_state(stale) == {"m1/weights.bin": b"weights v1\n"}


# -- item: a model folder that contains the registry ---------------------------------------------------


def _staging_empty() -> bool:
    staging = config.assets_dir() / ".staging"
    return not staging.exists() or not any(staging.iterdir())


@pytest.mark.parametrize("where", ["parent", "home", "staging"])
def test_model_path_containing_the_registry_is_refused(where: str, bepbuild_home: Path, tmp_path: Path) -> None:
    if where == "parent":
        src = bepbuild_home.parent
    elif where == "home":
        src = bepbuild_home
    else:
        src = config.assets_dir() / ".staging" / "x"
        src.mkdir(parents=True)
        (src / "f").write_text("x")
    (bepbuild_home / "registry.db").touch()
    err = run("model", "create", "--name", "self", "--path", str(src), code=2)
    assert len(err) < 400 and ("BEPBUILD_HOME" in err or "staging" in err), err
    staging = config.assets_dir() / ".staging"
    left = [p for p in staging.iterdir() if p.name != "x"] if staging.exists() else []
    assert left == []


def test_environment_build_context_containing_the_registry_is_refused(bepbuild_home: Path) -> None:
    ctx = bepbuild_home.parent
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    (ctx / "env.yml").write_text("name: e1\nbuild:\n  path: .\n")
    err = run("environment", "create", "--file", str(ctx / "env.yml"), code=2)
    assert "BEPBUILD_HOME" in err
    assert _staging_empty()


def test_a_failing_copy_leaves_no_staging(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    def broken(*args: object, **kwargs: object) -> None:
        dest = Path(str(args[1]))
        dest.mkdir(parents=True)
        (dest / "half").write_bytes(b"half")
        raise shutil.Error([(str(model / "weights.bin"), str(dest / "weights.bin"), "No space left on device")] * 500)

    monkeypatch.setattr(shutil, "copytree", broken)
    with pytest.raises(UserError) as info:
        registry.register_model(Store.open(), name="mm", path=model)
    assert len(info.value.line()) < 400
    assert _staging_empty()


# -- item: concurrent registrations of one content ----------------------------------------------------

REGISTER = textwrap.dedent(
    """
    import json, shutil, sys, time
    from pathlib import Path
    from bepbuild import registry

    copytree = shutil.copytree

    def slow_copytree(*args, **kwargs):  # widens the window between the check and the insert
        time.sleep(0.5)
        return copytree(*args, **kwargs)

    shutil.copytree = slow_copytree
    from bepbuild.specs import EnvironmentSpec, Loaded
    from bepbuild.store import Store

    s = Store.open()
    print("ready", flush=True)
    sys.stdin.readline()
    if sys.argv[1] == "model":
        doc = registry.register_model(s, name="shared", path=Path(sys.argv[2]), reuse_same_content=True)
    else:
        env = EnvironmentSpec(name="shared-env", build={"path": sys.argv[2]})
        holder = Loaded(env, None, "", paths={"build.path": Path(sys.argv[2])})
        doc = registry.register_environment(s, holder, env, reuse_same_content=True)
    print(json.dumps(doc["version"]), flush=True)
    """
)


@pytest.mark.parametrize("kind", ["model", "environment"])
def test_concurrent_registrations_of_one_content_give_one_version(kind: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "Dockerfile").write_text("FROM scratch\n")
    for i in range(4):
        (src / f"part{i}.bin").write_bytes(os.urandom(1 << 16))
    Store.open().close()
    procs = [subprocess.Popen([sys.executable, "-c", REGISTER, kind, str(src)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(10)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert {o[0].strip() for o in outs} == {'"1"'}
    assert registered_versions(kind, "shared" if kind == "model" else "shared-env") == ["1"]
    assert _staging_empty()
    folder = config.assets_dir() / ("models/shared" if kind == "model" else "environments/shared-env")
    assert sorted(p.name for p in folder.iterdir()) == ["1"]


# -- item: registered files are normalized and read-only ------------------------------------------------


def test_registered_files_are_read_only_with_fixed_times(model: Path) -> None:
    (model / "run.sh").write_text("#!/bin/sh\n")
    (model / "run.sh").chmod(0o755)
    doc = registry.register_model(Store.open(), name="mm", path=model)
    root = Path(doc["path"])
    weights, script = root / "weights.bin", root / "run.sh"
    assert stat.S_IMODE(weights.stat().st_mode) == 0o444
    assert stat.S_IMODE(script.stat().st_mode) == 0o555
    from bepbuild.hashing import FIXED_MTIME

    assert int(weights.stat().st_mtime) == int(script.stat().st_mtime) == FIXED_MTIME
    assert tree_sha256(root) == doc["sha256"]


# -- item: content hashes do not depend on who asks ------------------------------------------------------


def test_tree_hash_reads_the_mode_bits_not_access(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / "plain.txt").write_text("x")
    (root / "plain.txt").chmod(0o644)
    (root / "tool.sh").write_text("y")
    (root / "tool.sh").chmod(0o755)
    (root / "others.sh").write_text("z")
    (root / "others.sh").chmod(0o601)  # root may execute it, its owner may not
    expected = tree_sha256(root)
    for answer in (True, False):
        monkeypatch.setattr(os, "access", lambda *a, _v=answer, **k: _v)
        assert tree_sha256(root) == expected
    monkeypatch.undo()
    import hashlib

    from bepbuild.hashing import file_sha256

    h = hashlib.sha256()
    for name, x in (("others.sh", "-"), ("plain.txt", "-"), ("tool.sh", "x")):
        h.update(f"{name}\0{x}\0{file_sha256(root / name)}\n".encode())
    assert expected == h.hexdigest()


# -- item: output_file_name is a plain file name ------------------------------------------------------------


@pytest.mark.parametrize("name", ["a\nb.csv", "pred.csv\n", "a\x00b", "a/b.csv", "a\\b.csv", ".", "..", "", "\tx"])
def test_output_file_name_must_be_a_plain_name(name: str) -> None:
    with pytest.raises(ValueError, match="output_file_name"):
        Settings.model_validate({"output_file_name": name})


@pytest.mark.parametrize("name", ["a/b.csv", "..", "a\\b.csv"])
def test_output_file_name_is_checked_in_yaml_and_set(name: str, tmp_path: Path) -> None:
    f = _deployment(tmp_path)
    with pytest.raises(SpecError, match="output_file_name"):
        load_deployment(f, sets=[f"settings.output_file_name={name}"])
    f.write_text(f.read_text() + 'settings:\n  output_file_name: "pred\\nx.csv"\n')
    with pytest.raises(SpecError, match="output_file_name"):
        load_deployment(f)


def test_output_file_name_override_per_job_is_checked() -> None:
    from bepbuild.jobs.service import InvokeRequest, _settings

    dep = {"settings": {"output_file_name": "predictions.csv"}, "resources": {"instance_count": 1}}
    for bad in ("a/b.csv", "..", ".", "a\\b.csv", "/abs.csv"):
        with pytest.raises(SpecError, match="output_file_name"):
            _settings(dep, InvokeRequest(endpoint="e", input="i", sets=[f"output_file_name={bad}"]))
    ok = _settings(dep, InvokeRequest(endpoint="e", input="i", sets=["output_file_name=out.csv"]))
    assert ok["output_file_name"] == "out.csv"


# -- item: a scoring script with a NUL byte -------------------------------------------------------------------


def test_scoring_script_with_a_nul_byte_says_so(tmp_path: Path) -> None:
    f = _deployment(tmp_path)
    (tmp_path / "code" / "score.py").write_bytes(b"def init():\n    pass\n\x00\ndef run(b):\n    return b\n")
    with pytest.raises(SpecError) as info:
        load_deployment(f)
    line = info.value.line()
    assert "None" not in line and "NUL byte" in line and "score.py" in line
    load_deployment(f, skip_script_validation=True)


def test_downloaded_model_files_are_the_users_to_change(model: Path, tmp_path: Path) -> None:
    (model / "sub").mkdir()
    (model / "sub" / "cfg.json").write_text("{}")
    s = Store.open()
    registry.register_model(s, name="mm", path=model)
    got = registry.download_model(s, "mm", "1", None, tmp_path / "dl")
    files = [p for p in got.rglob("*") if p.is_file()]
    assert len(files) == 2 and all(p.stat().st_mode & stat.S_IWUSR for p in files)


# -- a registration killed while copying leaves nothing for ever ---------------------------------------------

DIE_WHILE_COPYING = """
import os, sys
from bepbuild import registry

def die(path):  # the registration is killed while it freezes the copy
    os._exit(137)

registry.stamp = die
from bepbuild.cli import main
sys.argv = ["bepbuild", "model", "create", "--name", "killed", "--path", sys.argv[1]]
main()
"""


def test_staging_folders_of_a_killed_registration_are_swept(model: Path) -> None:
    staging = config.assets_dir() / registry.STAGING
    died = subprocess.run([sys.executable, "-c", DIE_WHILE_COPYING, str(model)], capture_output=True, text=True)
    assert died.returncode == 137, died.stderr
    left = sorted(os.listdir(staging))
    assert len(left) == 2 and left[1] == left[0] + registry.OWNER_SUFFIX, left  # the copy, and who made it
    old = staging / "tmpabc123"  # an earlier bepbuild's, unmarked: swept once a day old
    (old / "m1").mkdir(parents=True)
    os.utime(old, (1_000_000_000, 1_000_000_000))
    fresh = staging / "tmpfresh"  # unmarked and recent: perhaps a copy an earlier bepbuild is making now
    fresh.mkdir()
    mine = registry._new_staging(staging)  # a live registration's (this process)
    s = Store.open()
    try:
        registry.register_model(s, name="mm", path=model)
    finally:
        s.close()
    assert sorted(os.listdir(staging)) == sorted([fresh.name, mine.name, mine.name + registry.OWNER_SUFFIX])
