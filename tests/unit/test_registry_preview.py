"""`registry.preview`: what `bepbuild test` builds a deployment from without registering anything."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from bepbuild import config, registry
from bepbuild.errors import ConflictError
from bepbuild.hashing import tree_sha256
from bepbuild.specs import EnvironmentSpec, Loaded
from bepbuild.specs.conda import CondaFile
from bepbuild.store import Store


def _state(home: Path) -> tuple[str, list[str]]:
    """The registry database's dump and every path under the assets folder."""
    s = Store.open()
    dump = "\n".join(s.conn.iterdump())
    s.close()
    assets = config.assets_dir()
    files = sorted(str(p.relative_to(assets)) for p in assets.rglob("*")) if assets.exists() else []
    return hashlib.sha256(dump.encode()).hexdigest(), files


@pytest.fixture
def model(tmp_path: Path) -> Path:
    folder = tmp_path / "src" / "model"
    folder.mkdir(parents=True)
    (folder / "weights.txt").write_text("0.5\n")
    os.chmod(folder / "weights.txt", 0o664)
    return folder


def _conda_env(name: str, packages: list[str]) -> tuple[Loaded[EnvironmentSpec], EnvironmentSpec]:
    conda = {"name": "x", "dependencies": ["python=3.11", "pip", {"pip": packages}]}
    spec = EnvironmentSpec(name=name, image="local/debian-py:bookworm", conda_file=conda)
    return Loaded(spec, None, "", conda=CondaFile.model_validate(conda)), spec


def test_a_new_model_is_frozen_in_the_scratch_folder_and_nothing_is_registered(bepbuild_home: Path, model: Path,
                                                                               tmp_path: Path) -> None:
    s = Store.open()
    registry.register_model(s, name="mm", path=model)  # version 1, other content below
    (model / "weights.txt").write_text("0.7\n")
    before = _state(bepbuild_home)
    scratch = tmp_path / "scratch"
    with registry.preview(scratch):
        rec = registry.register_model(s, name="mm", path=model, reuse_same_content=True)
    assert _state(bepbuild_home) == before
    assert rec["version"] == "2" and rec["unregistered"] is True
    copy = Path(rec["path"])
    assert scratch in copy.parents and copy.name == "model"
    assert (copy / "weights.txt").read_text() == "0.7\n"
    # frozen as the registry freezes it: what a later deploy registers hashes (and builds) the same
    assert rec["sha256"] == tree_sha256(copy)
    assert (copy / "weights.txt").stat().st_mode & 0o222 == 0
    real = registry.register_model(s, name="mm", path=model, reuse_same_content=True)
    assert real["version"] == "2" and real["sha256"] == rec["sha256"]


def test_an_identical_registered_model_or_environment_is_returned_as_it_is(bepbuild_home: Path, model: Path,
                                                                          tmp_path: Path) -> None:
    s = Store.open()
    first = registry.register_model(s, name="mm", path=model)
    loaded, spec = _conda_env("ee", ["pandas"])
    env = registry.register_environment(s, loaded, spec, reuse_same_content=True)
    before = _state(bepbuild_home)
    with registry.preview(tmp_path / "scratch"):
        assert registry.register_model(s, name="mm", path=model, reuse_same_content=True) == first
        assert registry.register_environment(s, loaded, spec, reuse_same_content=True) == env
        other_loaded, other = _conda_env("ee", ["numpy"])
        new = registry.register_environment(s, other_loaded, other, reuse_same_content=True)
    assert new["version"] == "2" and new["unregistered"] and new["conda_file"]["dependencies"][2] == {"pip": ["numpy"]}
    assert _state(bepbuild_home) == before
    assert not (tmp_path / "scratch").exists() or not any((tmp_path / "scratch").iterdir())


def test_an_explicit_version_with_other_content_conflicts_as_deploy_would(bepbuild_home: Path, model: Path,
                                                                         tmp_path: Path) -> None:
    s = Store.open()
    registry.register_model(s, name="mm", path=model, version="3")
    (model / "weights.txt").write_text("changed\n")
    with registry.preview(tmp_path / "scratch"), pytest.raises(ConflictError):
        registry.register_model(s, name="mm", path=model, version="3")


def test_outside_the_block_registration_is_back(bepbuild_home: Path, model: Path, tmp_path: Path) -> None:
    s = Store.open()
    with registry.preview(tmp_path / "scratch"):
        pass
    rec = registry.register_model(s, name="mm", path=model)
    assert "unregistered" not in rec and config.assets_dir() in Path(rec["path"]).parents
