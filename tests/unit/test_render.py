"""Rendering build contexts: golden Dockerfiles, byte-for-byte determinism, the content hash, and
user strings that must not be able to inject Dockerfile instructions. No engine needed.

The expected Dockerfiles are checked in under ``tests/unit/golden/``: the deployment's as
``Dockerfile.<strategy>[.legacy]``, the environment image's as ``Dockerfile.env.<strategy>[.legacy]``.
When a template change is intended, regenerate them and review the diff:

    BEPBUILD_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_render.py
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

import pytest

from bepbuild import config, env_images, locking
from bepbuild.environments import BaseInfo, EnvPlan
from bepbuild.errors import SpecError, UserError
from bepbuild.hashing import FIXED_MTIME
from bepbuild.render import Rendered, RenderInput, dockerfile, render
from bepbuild.specs import load_deployment

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("BEPBUILD_UPDATE_GOLDEN", "") not in ("", "0")
STRATEGIES = ("pip", "conda", "image")
FAKE_ID = "sha256:" + "0" * 64
ENV_TAG = "bepbuild/env:0123456789abcdef"  # what a pip or conda deployment starts FROM
WHEELS = {
    "six-1.16.0-py2.py3-none-any.whl": b"fake six wheel\n",
    "tinydep-0.1.0-py3-none-any.whl": b"fake tinydep wheel\n",
}


def fake_lock() -> locking.Lock:
    """A lock of two packages whose wheels exist in this test's wheelhouse."""
    house = locking.wheelhouse()
    house.mkdir(parents=True, exist_ok=True)
    packages = []
    for filename, data in WHEELS.items():
        (house / filename).write_bytes(data)
        name, version = filename.split("-")[:2]
        packages.append(locking.Locked(name, version, filename, hashlib.sha256(data).hexdigest()))
    return locking.Lock(key="0" * 32, python="3.11.2", requirements=["six==1.16.0", "tinydep"], packages=packages)


def fake_plan(strategy: str) -> EnvPlan:
    if strategy == "pip":
        return EnvPlan(strategy="pip", requirements=["six==1.16.0", "tinydep"], python_pin="3.11")
    if strategy == "conda":
        return EnvPlan(strategy="conda", python_pin="3.11", conda_file={
            "name": "tiny", "channels": ["conda-forge"], "dependencies": ["python=3.11", "pip", {"pip": ["six"]}]})
    return EnvPlan(strategy=strategy)


def fake_base(strategy: str) -> BaseInfo:
    conda = "/opt/conda/bin/mamba" if strategy == "conda" else None
    return BaseInfo(image="local/debian-py:bookworm", image_id=FAKE_ID, python="3.11.2", conda=conda)


@pytest.fixture
def sources(tmp_path: Path) -> tuple[Path, Path]:
    """A small code folder and model folder."""
    code = tmp_path / "src" / "code"
    (code / "lib").mkdir(parents=True)
    (code / "score.py").write_text("def init():\n    pass\n\n\ndef run(batch):\n    return batch\n")
    (code / "lib" / "helper.py").write_text("X = 1\n")
    (code / "tool.sh").write_text("#!/bin/sh\necho hi\n")
    (code / "tool.sh").chmod(0o750)
    model = tmp_path / "src" / "tiny-model"
    (model / "sub").mkdir(parents=True)
    (model / "weights.bin").write_bytes(bytes(range(256)))
    (model / "sub" / "config.json").write_text('{"k": 1}\n')
    return code, model


def make_input(strategy: str, code: Path, model: Path, *, scoring_script: str = "score.py",
               base_image: str | None = None) -> RenderInput:
    base = fake_base(strategy)
    env_image = ENV_TAG if strategy in ("pip", "conda") else None
    return RenderInput(
        endpoint="tiny-ep", deployment="tiny-dpl", code_dir=code, scoring_script=scoring_script, model_path=model,
        plan=fake_plan(strategy), base=base,
        base_image=base_image if base_image is not None else env_image or "local/debian-py:bookworm",
        lock=fake_lock() if strategy == "pip" else None, conda=base.conda, env_image=env_image,
    )


def env_context(strategy: str, **changes: object) -> env_images.EnvContext:
    """The environment image's context of a pip or conda environment (fields of the base changed by `changes`)."""
    base = fake_base(strategy)
    for k, v in changes.items():
        setattr(base, k, v)
    ctx = env_images.prepare(fake_plan(strategy), base, fake_lock() if strategy == "pip" else None)
    assert ctx is not None
    return ctx


def snapshot(root: Path) -> dict[str, tuple[str, int, int, bytes]]:
    """Every entry under `root` (the root too): kind, mode, mtime and, for files, the bytes."""
    out: dict[str, tuple[str, int, int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in [".", *dirnames, *filenames]:
            p = Path(dirpath) / n if n != "." else Path(dirpath)
            st = p.lstat()
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else "other"
            out[p.relative_to(root).as_posix()] = (kind, stat.S_IMODE(st.st_mode), int(st.st_mtime),
                                                   p.read_bytes() if kind == "file" else b"")
    return out


# --- golden Dockerfiles ----------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["buildkit", "legacy"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_golden_dockerfile(strategy: str, legacy: bool, sources: tuple[Path, Path]) -> None:
    text = dockerfile(make_input(strategy, *sources), legacy=legacy)
    check_golden(text, f"Dockerfile.{strategy}{'.legacy' if legacy else ''}")


@pytest.mark.parametrize("legacy", [False, True], ids=["buildkit", "legacy"])
@pytest.mark.parametrize("strategy", ["pip", "conda"])
def test_golden_environment_dockerfile(strategy: str, legacy: bool) -> None:
    base = fake_base(strategy)
    text = env_images.dockerfile(fake_plan(strategy), base.image, base.conda, legacy=legacy)
    check_golden(text, f"Dockerfile.env.{strategy}{'.legacy' if legacy else ''}")
    name = "Dockerfile.legacy" if legacy else "Dockerfile"
    assert env_context(strategy).files[name] == text.encode()


def check_golden(text: str, name: str) -> None:
    golden = GOLDEN / name
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.is_file(), f"no golden file {golden.name}: run with BEPBUILD_UPDATE_GOLDEN=1"
    assert text == golden.read_text(), f"{golden.name} differs: if intended, run with BEPBUILD_UPDATE_GOLDEN=1"


def instructions(text: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments and blank lines dropped."""
    out: list[str] = []
    current = ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        out.append(current + line)
        current = ""
    assert not current, "dangling line continuation"
    return out


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_what_matters_in_every_dockerfile(strategy: str, sources: tuple[Path, Path]) -> None:
    for legacy in (False, True):
        ins = instructions(dockerfile(make_input(strategy, *sources), legacy=legacy))
        assert ins[-1] == 'ENTRYPOINT ["python3", "-m", "bepbuild_runtime"]'
        assert "USER 10001:10001" in ins
        # one stage, FROM the environment's own image (or the base used as it is)
        froms = [i for i in ins if i.startswith("FROM ")]
        assert froms == [f"FROM {ENV_TAG if strategy != 'image' else 'local/debian-py:bookworm'}"]
        # only the deployment's own layers: runtime, model, code last (a code change rebuilds one layer)
        assert [i.split()[1] for i in ins if i.startswith(("COPY ", "RUN ", "ADD "))] == ["runtime/", "model/",
                                                                                          "code/"]
        assert not any("wheels" in i or "--mount" in i or "requirements.lock" in i for i in ins)


@pytest.mark.parametrize("strategy", ["pip", "conda"])
def test_what_matters_in_every_environment_dockerfile(strategy: str) -> None:
    base = fake_base(strategy)
    for legacy in (False, True):
        ins = instructions(env_images.dockerfile(fake_plan(strategy), base.image, base.conda, legacy=legacy))
        final = ins[max(i for i, x in enumerate(ins) if x.startswith("FROM ")):]
        assert final[0] == "FROM local/debian-py:bookworm"
        assert final[-1] == "ENV PATH=/opt/bepbuild/venv/bin:$PATH"
        mounts = [i for i in ins if "--mount" in i]
        if legacy:
            assert mounts == [], "the legacy builder rejects RUN --mount"
        elif strategy == "pip":
            assert mounts and all("type=bind,source=wheels" in i and "--no-index" in i for i in mounts)
        else:
            assert mounts and all("type=secret,id=ca" in i for i in mounts)
        # wheels are never copied into the image's own stage (the legacy builder's throwaway stage only)
        assert not any("wheels" in i for i in final if i.startswith("COPY "))
        if legacy and strategy == "pip":
            stage = ins[:ins.index(final[0])]
            assert stage[0] == "FROM local/debian-py:bookworm AS install" and "COPY wheels /wheels" in stage
            assert any("io.bepbuild.stage=environment-install" in i for i in stage if i.startswith("LABEL "))


# --- determinism and the content hash ----------------------------------------------------------------


def test_two_renders_are_byte_identical(tmp_path: Path, sources: tuple[Path, Path]) -> None:
    inp = make_input("pip", *sources)
    a = render(inp, tmp_path / "a")
    b = render(inp, tmp_path / "b")
    assert a.content_hash == b.content_hash
    assert a.files == b.files
    snap_a, snap_b = snapshot(a.context), snapshot(b.context)
    assert snap_a == snap_b
    # files we write have normalized modes and mtimes
    for rel, (kind, mode, mtime, _) in snap_a.items():
        assert mtime == FIXED_MTIME, rel
        # model files keep the registry's read-only modes; the rest is writable by its owner
        expected = 0o755 if kind == "dir" or rel == "code/tool.sh" else 0o444 if rel.startswith("model/") else 0o644
        assert mode == expected, rel
    # no wheel and no lock: they are the environment image's
    assert not any(r.startswith(("wheels", "env")) for r in snap_a)


def test_render_again_into_the_same_folder_is_stable_and_prunes(tmp_path: Path, sources: tuple[Path, Path]) -> None:
    inp = make_input("pip", *sources)
    first = render(inp, tmp_path / "ctx")
    (tmp_path / "ctx" / "code" / "stale.py").write_text("left over\n")
    (tmp_path / "ctx" / "old-dir").mkdir()
    (tmp_path / "ctx" / "old-dir" / "x").write_text("x")
    # a context of an earlier bepbuild: its wheels/ (links into the wheelhouse) and its lock go
    (tmp_path / "ctx" / "wheels").mkdir()
    os.link(locking.wheelhouse() / next(iter(WHEELS)), tmp_path / "ctx" / "wheels" / next(iter(WHEELS)))
    (tmp_path / "ctx" / "env").mkdir()
    (tmp_path / "ctx" / "env" / "requirements.lock").write_text("six==1.16.0\n")
    second = render(inp, tmp_path / "ctx")
    assert second.content_hash == first.content_hash
    assert snapshot(tmp_path / "ctx") == snapshot(render(inp, tmp_path / "fresh").context)


def hash_of(tmp_path: Path, inp: RenderInput, name: str) -> Rendered:
    return render(inp, tmp_path / name)


def test_changing_only_the_scoring_code_changes_the_hash(tmp_path: Path, sources: tuple[Path, Path]) -> None:
    code, model = sources
    before = hash_of(tmp_path, make_input("pip", code, model), "before")
    (code / "score.py").write_text((code / "score.py").read_text() + "# a comment\n")
    after = hash_of(tmp_path, make_input("pip", code, model), "after")
    assert after.content_hash != before.content_hash
    assert (before.context / "Dockerfile").read_bytes() == (after.context / "Dockerfile").read_bytes()
    # the executable bit is part of the hash too
    (code / "score.py").chmod(0o755)
    assert hash_of(tmp_path, make_input("pip", code, model), "exec").content_hash != after.content_hash


def test_model_lock_and_base_changes_change_the_hash(tmp_path: Path, sources: tuple[Path, Path]) -> None:
    code, model = sources
    base = hash_of(tmp_path, make_input("pip", code, model), "base").content_hash
    (model / "sub" / "config.json").write_text('{"k": 2}\n')
    assert hash_of(tmp_path, make_input("pip", code, model), "model").content_hash != base
    (model / "sub" / "config.json").write_text('{"k": 1}\n')
    assert hash_of(tmp_path, make_input("pip", code, model), "again").content_hash == base
    inp = make_input("pip", code, model)
    inp.base = BaseInfo(inp.base.image, "sha256:" + "1" * 64, inp.base.python, None)
    assert hash_of(tmp_path, inp, "other-base").content_hash != base
    inp = make_input("pip", code, model)
    assert inp.lock is not None
    inp.lock.packages = inp.lock.packages[:1]
    assert hash_of(tmp_path, inp, "other-lock").content_hash != base


def test_the_environment_image_follows_its_base_and_lock() -> None:
    ctx = env_context("pip")
    assert ctx.tag == f"bepbuild/env:{ctx.content_hash[:16]}" and env_context("pip").tag == ctx.tag
    assert sorted(ctx.files) == ["Dockerfile", "Dockerfile.legacy", "bepbuild.env.json", "env/requirements.lock"]
    assert ctx.files["env/requirements.lock"] == fake_lock().text().encode()
    assert env_context("pip", image_id="sha256:" + "1" * 64).tag != ctx.tag  # another base image
    assert env_context("pip", image="local/renamed:x").tag != ctx.tag  # the name FROM gives
    other = env_images.prepare(fake_plan("pip"), fake_base("pip"),
                               locking.Lock("0" * 32, "3.11.2", ["six"], fake_lock().packages[:1]))
    assert other is not None and other.tag != ctx.tag  # another lock
    assert env_context("conda").tag not in (ctx.tag, None)
    assert env_images.prepare(fake_plan("image"), fake_base("image"), None) is None  # the image is the environment
    labels = ctx.labels()
    assert labels["io.bepbuild.kind"] == "environment" and labels["io.bepbuild.content-hash"] == ctx.content_hash
    assert labels["io.bepbuild.packages"] == "six==1.16.0 tinydep==0.1.0" and labels["io.bepbuild.python"] == "3.11.2"
    assert int(labels["io.bepbuild.wheels-bytes"]) == sum(len(d) for d in WHEELS.values())


def test_the_deployment_hash_follows_its_environment_image(tmp_path: Path, sources: tuple[Path, Path]) -> None:
    inp = make_input("pip", *sources)
    first = render(inp, tmp_path / "a")
    inp.env_image = inp.base_image = "bepbuild/env:fedcba9876543210"
    second = render(inp, tmp_path / "b")
    assert second.content_hash != first.content_hash
    assert "FROM bepbuild/env:fedcba9876543210\n" in (second.context / "Dockerfile").read_text()


# --- user strings in the Dockerfile --------------------------------------------------------------------


def docker_unquote(word: str) -> str:
    """What Docker makes of one double-quoted word: only \\\\, \\" and \\$ are escapes inside."""
    assert word.startswith('"') and word.endswith('"'), word
    return re.sub(r'\\([\\"$])', r"\1", word[1:-1])


def env_value(text: str, name: str) -> str:
    (ins,) = [i for i in instructions(text) if i.startswith("ENV ") and f"{name}=" in i]
    m = re.search(rf'{name}=("(?:[^"\\]|\\.)*")', ins)
    assert m, ins
    return docker_unquote(m.group(1))


@pytest.mark.parametrize("script", ['a"; RUN rm -rf /', "$HOME/x.py", "${PATH}.py", "back\\slash.py",
                                    "it's & <ok>.py", "sub dir/score me.py", "ünïcode.py"])
def test_scoring_script_names_are_quoted_exactly(script: str, sources: tuple[Path, Path]) -> None:
    benign = dockerfile(make_input("pip", *sources))
    text = dockerfile(make_input("pip", *sources, scoring_script=script))
    # the same instructions as for a plain name: nothing was injected
    assert [i.split()[0] for i in instructions(text)] == [i.split()[0] for i in instructions(benign)]
    assert len(text.splitlines()) == len(benign.splitlines())
    assert env_value(text, "BEPBUILD_SCORING_SCRIPT") == script


@pytest.mark.parametrize("script", ["score.py\nRUN rm -rf /", "score.py\rRUN x", "a\x00b.py", "tab\there.py"])
def test_scoring_script_with_a_line_break_is_refused_at_render(script: str, tmp_path: Path,
                                                                sources: tuple[Path, Path]) -> None:
    with pytest.raises(UserError, match="control character"):
        render(make_input("pip", *sources, scoring_script=script), tmp_path / "ctx")


def test_scoring_script_with_a_line_break_is_refused_in_the_spec(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "model.bin").write_bytes(b"m")
    (tmp_path / "deployment.yml").write_text(
        "name: tiny-dpl\nendpoint_name: tiny-ep\ntype: model\n"
        "model:\n  path: model.bin\n"
        "code_configuration:\n  code: code\n  scoring_script: \"score.py\\nRUN rm -rf /\"\n"
        "environment:\n  image: local/debian-py:bookworm\n"
    )
    with pytest.raises(SpecError) as info:
        load_deployment(tmp_path / "deployment.yml", skip_script_validation=True)
    assert "scoring_script" in str(info.value) and "control characters" in str(info.value)
    assert "deployment.yml:8" in str(info.value)


@pytest.mark.parametrize("image", ["local/debian-py:bookworm\nRUN rm -rf /", "img:1 AS x", "img;rm", "", "-x"])
def test_bad_base_image_references_are_refused(image: str, sources: tuple[Path, Path]) -> None:
    for legacy in (False, True):
        with pytest.raises(UserError, match="image reference"):
            dockerfile(make_input("pip", *sources, base_image=image), legacy=legacy)


def test_digest_image_references_are_accepted(sources: tuple[Path, Path]) -> None:
    ref = "127.0.0.1:5000/team/base:1.0@sha256:" + "a" * 64
    assert f"FROM {ref}\n" in dockerfile(make_input("image", *sources, base_image=ref))


def test_bad_conda_executable_is_refused() -> None:
    with pytest.raises(UserError, match="executable path"):
        env_images.dockerfile(fake_plan("conda"), "local/debian-py:bookworm", "/opt/conda/bin/mamba; curl x")


@pytest.mark.parametrize("image", ["local/debian-py:bookworm\nRUN rm -rf /", "img:1 AS x", ""])
def test_bad_base_image_references_are_refused_in_the_environment_dockerfile(image: str) -> None:
    for legacy in (False, True):
        with pytest.raises(UserError, match="image reference"):
            env_images.dockerfile(fake_plan("pip"), image, None, legacy=legacy)


# --- what goes into the context -------------------------------------------------------------------------


def test_context_layout(tmp_path: Path, sources: tuple[Path, Path]) -> None:
    r = render(make_input("pip", *sources), tmp_path / "ctx")
    assert "Dockerfile" in r.files and "Dockerfile.legacy" in r.files and "bepbuild.lock.json" in r.files
    manifest = json.loads((r.context / "bepbuild.lock.json").read_text())
    assert manifest["environment_image"] == ENV_TAG and manifest["lock_sha256"] == fake_lock().digest
    assert {"code/score.py", "code/lib/helper.py", "code/tool.sh"} <= set(r.files)
    assert {"model/tiny-model/weights.bin", "model/tiny-model/sub/config.json"} <= set(r.files)
    assert "runtime/bepbuild_runtime/__main__.py" in r.files
    lock = env_context("pip").files["env/requirements.lock"].decode()
    assert "six==1.16.0 --hash=sha256:" in lock and "tinydep==0.1.0 --hash=sha256:" in lock
    assert str(tmp_path) not in "".join((r.context / f).read_text() for f in ("Dockerfile", "bepbuild.lock.json"))


def test_single_file_model_keeps_its_name(tmp_path: Path, sources: tuple[Path, Path]) -> None:
    code, _ = sources
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    r = render(make_input("image", code, model), tmp_path / "ctx")
    assert "model/model.pt" in r.files


def test_pycache_is_left_out(tmp_path: Path, sources: tuple[Path, Path]) -> None:
    code, model = sources
    before = render(make_input("image", code, model), tmp_path / "a").content_hash
    (code / "__pycache__").mkdir()
    (code / "__pycache__" / "score.cpython-311.pyc").write_bytes(b"\0")
    (code / "lib" / "helper.pyc").write_bytes(b"\0")
    after = render(make_input("image", code, model), tmp_path / "b")
    assert after.content_hash == before
    assert not any("pycache" in f or f.endswith(".pyc") for f in after.files)


@pytest.mark.parametrize("where", ["code", "model"])
@pytest.mark.parametrize("kind", ["file", "dir"])
def test_symlinks_are_refused(where: str, kind: str, tmp_path: Path, sources: tuple[Path, Path]) -> None:
    code, model = sources
    folder = code if where == "code" else model
    target = tmp_path / "outside"
    target.mkdir()
    (target / "secret.txt").write_text("not for the image\n")
    link = folder / "link"
    link.symlink_to(target / "secret.txt" if kind == "file" else target)
    with pytest.raises(UserError, match="symbolic link"):
        render(make_input("pip", code, model), tmp_path / "ctx")


def test_a_symlinked_model_path_is_refused(tmp_path: Path, sources: tuple[Path, Path]) -> None:
    code, model = sources
    link = tmp_path / "model-link"
    link.symlink_to(model)
    with pytest.raises(UserError, match="symbolic link"):
        render(make_input("pip", code, link), tmp_path / "ctx")


def test_registered_model_files_are_linked_not_copied_and_user_code_is_copied(
    tmp_path: Path, sources: tuple[Path, Path]
) -> None:
    """A registered model never changes, so the context links its files (no copy, nothing re-read);
    the user's own code folder is copied: normalizing modes and times must not touch the user's files."""
    from bepbuild import registry
    from bepbuild.store import Store

    code, model = sources
    registered = Path(registry.register_model(Store.open(), name="tiny-model", path=model)["path"])
    inp = make_input("pip", code, registered)
    ctx = config.home() / "contexts" / "endpoints" / "tiny-ep" / "tiny-dpl"  # bepbuild's own: links allowed
    first = render(inp, ctx)
    weights = ctx / "model" / model.name / "weights.bin"
    assert weights.stat().st_ino == (registered / "weights.bin").stat().st_ino
    assert (ctx / "code" / "score.py").stat().st_ino != (code / "score.py").stat().st_ino
    assert render(inp, ctx).content_hash == first.content_hash
    assert render(make_input("pip", code, model), tmp_path / "other").content_hash == first.content_hash
    assert weights.read_bytes() == bytes(range(256))


def test_temporary_environment_contexts_a_killed_build_left_are_swept(tmp_path: Path) -> None:
    root = tmp_path / "environments"
    (root / "old-1234" / "wheels").mkdir(parents=True)
    wheel = tmp_path / "wheelhouse-copy.whl"
    wheel.write_bytes(b"wheel")
    os.link(wheel, root / "old-1234" / "wheels" / "w.whl")
    (root / "building-5678").mkdir()
    two_days = os.stat(root).st_mtime - 2 * 86400
    os.utime(root / "old-1234", (two_days, two_days))
    env_images.sweep_stale(root)
    assert sorted(p.name for p in root.iterdir()) == ["building-5678"]
    assert wheel.read_bytes() == b"wheel"  # a link was removed, never what it points to
