"""Two deploys of one deployment share its context folder: a build sends what its tag names.

Deploy A renders, deploy B renders over the same folder, then A builds: A's build must send A's
content (rendered again under the folder's lock), never B's under A's content hash. No engine: the
build is a fake that reads what it would send.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_render import make_input

from bepbuild import deploy, images
from bepbuild.errors import BuildError
from bepbuild.hashing import tree_sha256
from bepbuild.render import render


def _code(root: Path, text: str) -> Path:
    code = root / "code"
    code.mkdir(parents=True)
    (code / "score.py").write_text(f"def init():\n    pass\n\ndef run(b):\n    return ['{text}']\n")
    return code


def _prepared(inp: Any, context: Path) -> deploy.Prepared:
    rendered = render(inp, context)
    spec = SimpleNamespace(name=inp.deployment, endpoint_name=inp.endpoint)
    return deploy.Prepared(loaded=SimpleNamespace(spec=spec), model={}, environment={}, plan=inp.plan,  # type: ignore
                           rendered=rendered, tag=f"bepbuild/x/y:{rendered.short_hash}", render_input=inp)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The scoring code each fake build sent."""
    got: list[str] = []

    def fake_build(context: Path, tag: str, **_kw: Any) -> SimpleNamespace:
        got.append((context / "code" / "score.py").read_text())
        return SimpleNamespace(tag=tag)

    monkeypatch.setattr(images, "build", fake_build)
    monkeypatch.setattr(deploy, "image_labels", lambda p, env=None: {})
    return got


def test_a_build_sends_its_own_content_after_another_deploy_rendered_over_the_folder(
        tmp_path: Path, sent: list[str]) -> None:
    context = tmp_path / "context"
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(b"w")
    first = _prepared(make_input("image", _code(tmp_path / "a", "A"), model), context)
    second = _prepared(make_input("image", _code(tmp_path / "b", "B"), model), context)
    assert first.tag != second.tag
    deploy.build_image(first, deploy.DeployOptions(), lambda line: None)
    assert "['A']" in sent[-1]
    assert first.code_sha256 == tree_sha256(context / "code")  # the deployment records the code that was sent
    deploy.build_image(second, deploy.DeployOptions(), lambda line: None)
    assert "['B']" in sent[-1]


def test_a_build_whose_sources_changed_since_its_render_is_refused(tmp_path: Path, sent: list[str]) -> None:
    context = tmp_path / "context"
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(b"w")
    code = _code(tmp_path / "a", "A")
    first = _prepared(make_input("image", code, model), context)
    _prepared(make_input("image", _code(tmp_path / "b", "B"), model), context)
    (code / "score.py").write_text("changed while deploying\n")
    with pytest.raises(BuildError, match="changed while it was being deployed"):
        deploy.build_image(first, deploy.DeployOptions(), lambda line: None)
    assert sent == []
