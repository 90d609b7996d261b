"""Which builder and which Dockerfile a deployment's build gets, with the engine and the builders faked."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bepbuild import context_dir, deploy, images


class FakeEngine:
    """Just enough of the SDK client for `images.build` around a faked builder."""

    def __init__(self) -> None:
        self.images = SimpleNamespace(list=lambda **_: [])


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every build as (backend, dockerfile); the image exists once a builder has run."""
    done: list[tuple[str, str]] = []
    monkeypatch.setattr(images, "engine", FakeEngine)
    monkeypatch.setattr(images, "inspect", lambda tag: {"Id": "sha256:" + "1" * 64, "Size": 1} if done else None)
    monkeypatch.setattr(images, "_remove_orphans", lambda ids: None)

    def buildkit(context_dir: Path, dockerfile: str, *args: Any) -> None:
        done.append(("buildkit", dockerfile))

    def sdk(context_dir: Path, dockerfile: str, *args: Any) -> None:
        done.append(("sdk", dockerfile))

    monkeypatch.setattr(images, "_build_buildkit", buildkit)
    monkeypatch.setattr(images, "_build_sdk", sdk)
    monkeypatch.setattr(deploy, "image_labels", lambda p, env=None: {})
    return done


def rendered(tmp_path: Path, *names: str) -> SimpleNamespace:
    """A `deploy.Prepared` stand-in whose context holds the Dockerfiles `names`."""
    context = tmp_path / "context"
    (context / "code").mkdir(parents=True)
    files = [*names, "code/score.py"]
    for name in files:
        (context / name).write_text("FROM scratch\n")
    return SimpleNamespace(plan=SimpleNamespace(strategy="pip"), tag="bepbuild/ep-dpl:0123456789ab", render_input=None,
                           rendered=SimpleNamespace(context=context, stamps=context_dir.stamps(context, files)))


@pytest.mark.parametrize(("asked", "buildkit_works", "expected"), [
    ("auto", False, ("sdk", "Dockerfile.legacy")),  # the fallback takes the Dockerfile without RUN --mount
    ("auto", True, ("buildkit", "Dockerfile")),
    ("sdk", True, ("sdk", "Dockerfile.legacy")),
    ("buildkit", False, ("buildkit", "Dockerfile")),
])
def test_the_dockerfile_follows_the_builder_that_was_picked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, builds: list[tuple[str, str]], asked: str,
    buildkit_works: bool, expected: tuple[str, str],
) -> None:
    monkeypatch.setattr(images, "_buildkit_works", lambda cli: buildkit_works)
    p = rendered(tmp_path, "Dockerfile", "Dockerfile.legacy")
    result = deploy.build_image(p, deploy.DeployOptions(backend=asked), lambda line: None)  # type: ignore[arg-type]
    assert result.built is True
    assert builds == [expected]


def test_a_context_without_a_legacy_dockerfile_builds_its_dockerfile_on_either_builder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, builds: list[tuple[str, str]],
) -> None:
    monkeypatch.setattr(images, "_buildkit_works", lambda cli: False)
    context = rendered(tmp_path, "Dockerfile").rendered.context
    images.build(context, "bepbuild/test:plain")
    assert builds == [("sdk", "Dockerfile")]
    assert images.dockerfile_for("buildkit", context) == "Dockerfile"
