"""Rendering never deletes what is not an earlier context of the same deployment, never follows links
out of the context, and never changes a registered model's files through the hard links it makes.
No engine needed (the base image probe is faked for the CLI round trip)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from test_render import make_input, snapshot
from typer.testing import CliRunner

from bepbuild import config, environments, registry
from bepbuild.cli import app
from bepbuild.context_dir import CONTEXT_MARKER
from bepbuild.environments import BaseInfo
from bepbuild.errors import UserError
from bepbuild.hashing import FIXED_MTIME, tree_sha256
from bepbuild.render import render
from bepbuild.store import Store


@pytest.fixture
def sources(tmp_path: Path) -> tuple[Path, Path]:
    code = tmp_path / "src" / "code"
    code.mkdir(parents=True)
    (code / "score.py").write_text("def init():\n    pass\n\n\ndef run(batch):\n    return batch\n")
    model = tmp_path / "src" / "tiny-model"
    model.mkdir()
    (model / "weights.bin").write_bytes(bytes(range(256)))
    (model / "run.sh").write_text("#!/bin/sh\n")
    (model / "run.sh").chmod(0o755)
    return code, model


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project folder: everything in it must survive."""
    p = tmp_path / "project"
    (p / ".git").mkdir(parents=True)
    (p / ".git" / "config").write_text("[core]\n")
    (p / "thesis.tex").write_text("years of work\n")
    (p / "data").mkdir()
    (p / "data" / "rows.csv").write_text("a,b\n1,2\n")
    return p


# -- only an earlier context of the same deployment is ever pruned ----------------------------------------


def test_a_non_empty_folder_without_the_marker_is_refused(project: Path, sources: tuple[Path, Path]) -> None:
    before = snapshot(project)
    with pytest.raises(UserError) as info:
        render(make_input("image", *sources), project)
    assert "not a build context" in info.value.line() and "\n" not in info.value.line()
    assert snapshot(project) == before


def test_a_context_of_another_deployment_is_refused(tmp_path: Path, sources: tuple[Path, Path]) -> None:
    ctx = tmp_path / "ctx"
    render(make_input("image", *sources), ctx)
    other = make_input("image", *sources)
    other.deployment = "other-dpl"
    before = snapshot(ctx)
    with pytest.raises(UserError, match="tiny-ep/tiny-dpl"):
        render(other, ctx)
    assert snapshot(ctx) == before


def test_an_empty_or_missing_folder_becomes_a_marked_context(tmp_path: Path, sources: tuple[Path, Path]) -> None:
    (tmp_path / "empty").mkdir()
    for ctx in (tmp_path / "empty", tmp_path / "missing" / "deeper"):
        r = render(make_input("image", *sources), ctx)
        marker = ctx / CONTEXT_MARKER
        assert marker.is_file() and not marker.is_symlink()
        assert CONTEXT_MARKER not in r.files
        # again into the same folder: allowed, stale files pruned, the hash unchanged
        (ctx / "code" / "stale.py").write_text("x")
        assert render(make_input("image", *sources), ctx).content_hash == r.content_hash
        assert not (ctx / "code" / "stale.py").exists() and marker.is_file()


def test_a_marker_that_is_a_link_does_not_count(tmp_path: Path, project: Path, sources: tuple[Path, Path]) -> None:
    ctx = tmp_path / "ctx"
    render(make_input("image", *sources), ctx)
    (project / CONTEXT_MARKER).symlink_to(ctx / CONTEXT_MARKER)
    before = snapshot(project)
    with pytest.raises(UserError, match="not a build context"):
        render(make_input("image", *sources), project)
    assert snapshot(project) == before


def test_links_planted_in_a_context_are_never_followed(tmp_path: Path, project: Path,
                                                       sources: tuple[Path, Path]) -> None:
    ctx = tmp_path / "ctx"
    render(make_input("pip", *sources), ctx)
    before = snapshot(project)
    # a folder the context writes into, the wheels folder of earlier contexts it removes, and a stray
    # file: all links out
    os.rename(ctx / "code", tmp_path / "old-code")
    (ctx / "code").symlink_to(project)
    (ctx / "wheels").symlink_to(project / "data")
    (ctx / "stray").symlink_to(project / "thesis.tex")
    render(make_input("image", *sources), ctx)
    assert snapshot(project) == before
    assert not (ctx / "code").is_symlink() and (ctx / "code" / "score.py").is_file()
    assert not (ctx / "stray").exists() and not (ctx / "wheels").is_symlink() and not (ctx / "wheels").exists()


def test_cli_render_into_a_project_folder_is_one_line_and_touches_nothing(
    tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(environments, "probe_base", lambda image: BaseInfo(image, "sha256:" + "0" * 64, "3.11.2", None))
    (project / "code").mkdir()
    (project / "code" / "score.py").write_text("def init():\n    pass\n\n\ndef run(b):\n    return b\n")
    (project / "model.bin").write_bytes(b"m")
    (project / "deployment.yml").write_text(
        "name: tiny-dpl\nendpoint_name: tiny-ep\ntype: model\nmodel:\n  path: model.bin\n"
        "code_configuration:\n  code: code\n  scoring_script: score.py\n"
        "environment:\n  image: local/debian-py:bookworm\n"
    )
    before = snapshot(project)
    r = CliRunner().invoke(app, ["render", str(project / "deployment.yml"), "--output-dir", str(project)])
    assert r.exit_code == 2, (r.stdout, r.stderr, r.exception)
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("error: ") and "--output-dir" in r.stderr
    assert snapshot(project) == before
    assert not (config.assets_dir() / "models").exists()  # refused before anything was registered
    out = tmp_path / "out"
    for _ in range(2):
        r = CliRunner().invoke(app, ["render", str(project / "deployment.yml"), "--output-dir", str(out)])
        assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    assert (out / "Dockerfile").is_file() and (out / CONTEXT_MARKER).is_file()
    # the inline model was registered once, and rendering twice left its registered file as registered
    (model,) = Store.open().list_assets("model")
    registered = Path(model["path"])
    assert model["version"] == "1" and tree_sha256(registered) == model["sha256"]
    st = registered.stat()
    assert (stat.S_IMODE(st.st_mode), int(st.st_mtime)) == (0o444, FIXED_MTIME)
    # out is the user's folder: it holds a copy, never a link to the registered file
    assert (out / "model" / "model.bin").stat().st_ino != st.st_ino
    assert (out / "model" / "model.bin").read_bytes() == registered.read_bytes()


# -- registered models are never changed by a render -----------------------------------------------------------


def _stat(p: Path) -> tuple[int, int, int, int, bytes]:
    st = p.stat()
    return st.st_ino, stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_size, p.read_bytes()


def test_render_never_changes_a_registered_model(tmp_path: Path, sources: tuple[Path, Path]) -> None:
    code, model = sources
    doc = registry.register_model(Store.open(), name="tiny-model", path=model)
    reg = Path(doc["path"])
    files = sorted(p for p in reg.rglob("*") if p.is_file())
    before = {p: _stat(p) for p in files}
    own = config.home() / "contexts" / "endpoints" / "ep" / "dpl"
    for ctx in (own, own, tmp_path / "out"):
        render(make_input("image", code, reg), ctx)
        assert {p: _stat(p) for p in files} == before
    assert tree_sha256(reg) == doc["sha256"]
    # a context of bepbuild's own links the registered files (no copy of large models)
    linked = own / "model" / reg.name / "weights.bin"
    assert linked.stat().st_ino == (reg / "weights.bin").stat().st_ino


def test_a_context_in_a_users_folder_holds_copies_of_registered_files(tmp_path: Path,
                                                                      sources: tuple[Path, Path]) -> None:
    """`render --output-dir` outside BEPBUILD_HOME: a user (root writes read-only files) who edits a
    model file there must not change the registered one through a hard link."""
    code, model = sources
    doc = registry.register_model(Store.open(), name="tiny-model", path=model)
    reg = Path(doc["path"])
    out = tmp_path / "out"
    first = render(make_input("image", code, reg), out)
    placed = out / "model" / reg.name / "weights.bin"
    assert placed.stat().st_ino != (reg / "weights.bin").stat().st_ino and placed.stat().st_nlink == 1
    # a context an earlier bepbuild rendered there with links: the next render replaces them with copies
    placed.unlink()
    os.link(reg / "weights.bin", placed)
    assert render(make_input("image", code, reg), out).content_hash == first.content_hash
    assert placed.stat().st_ino != (reg / "weights.bin").stat().st_ino
    os.chmod(placed, 0o644)
    placed.write_bytes(b"edited by the user")
    assert tree_sha256(reg) == doc["sha256"]


def test_files_registered_before_normalization_are_copied_not_changed(tmp_path: Path,
                                                                      sources: tuple[Path, Path]) -> None:
    # a registry file with another mode and time (registered by an earlier bepbuild): the context
    # gets a normalized copy; the registered file keeps its metadata
    code, model = sources
    reg = config.assets_dir() / "models" / "old" / "1" / model.name
    reg.mkdir(parents=True)
    (reg / "weights.bin").write_bytes(b"old weights")
    os.chmod(reg / "weights.bin", 0o664)
    os.utime(reg / "weights.bin", (1_500_000_000, 1_500_000_000))
    before = _stat(reg / "weights.bin")
    r1 = render(make_input("image", code, reg), tmp_path / "ctx")
    assert _stat(reg / "weights.bin") == before
    copied = tmp_path / "ctx" / "model" / model.name / "weights.bin"
    assert copied.stat().st_ino != before[0]
    assert int(copied.stat().st_mtime) == FIXED_MTIME
    # a context that was rendered by the earlier bepbuild (a link whose metadata is not normal)
    copied.unlink()
    os.link(reg / "weights.bin", copied)
    r2 = render(make_input("image", code, reg), tmp_path / "ctx")
    assert _stat(reg / "weights.bin") == before and r2.content_hash == r1.content_hash
    assert copied.stat().st_ino != before[0]


def test_context_file_modes_are_the_same_linked_or_copied(tmp_path: Path, sources: tuple[Path, Path]) -> None:
    code, model = sources
    doc = registry.register_model(Store.open(), name="tiny-model", path=model)
    linked = render(make_input("image", code, Path(doc["path"])), config.home() / "contexts" / "endpoints" / "e" / "d")
    copied = render(make_input("image", code, model), tmp_path / "copied")
    assert linked.content_hash == copied.content_hash
    assert snapshot(linked.context) == snapshot(copied.context)


def test_only_contexts_named_before_markers_may_lack_one(sources: tuple[Path, Path]) -> None:
    old = config.home() / "contexts" / "tiny-ep-tiny-dpl"  # how contexts were named before markers
    (old / "code").mkdir(parents=True)
    (old / "code" / "stale.py").write_text("x")
    render(make_input("image", *sources), old)
    assert (old / CONTEXT_MARKER).is_file() and not (old / "code" / "stale.py").exists()
    deeper = config.home() / "contexts" / "endpoints" / "tiny-ep" / "tiny-dpl"
    deeper.mkdir(parents=True)
    (deeper / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not a build context"):
        render(make_input("image", *sources), deeper)
    assert (deeper / "notes.txt").read_text() == "x"


def test_files_named_like_temporary_files_are_kept(tmp_path: Path, sources: tuple[Path, Path]) -> None:
    code, model = sources
    (code / ".helper.py.tmp").write_text("mine\n")
    (code / "helper.py").write_text("X = 1\n")
    r = render(make_input("image", code, model), tmp_path / "ctx")
    assert "code/.helper.py.tmp" in r.files
    assert (tmp_path / "ctx" / "code" / ".helper.py.tmp").read_text() == "mine\n"
    assert (tmp_path / "ctx" / "code" / "helper.py").read_text() == "X = 1\n"
