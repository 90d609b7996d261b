"""bepbuild.images against the real engine: tiny images FROM the local base, one repository per test."""

from __future__ import annotations

import hashlib
import io
import tarfile
import uuid
from pathlib import Path

import docker
import pytest
from registry import LocalRegistry, free_port

from bepbuild import config, image_push, images
from bepbuild.errors import BuildError, EngineError

pytestmark = pytest.mark.docker


def write_context(root: Path, files: dict[str, str | bytes]) -> Path:
    """Write `files` (relative path -> content) under `root` and return `root`."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def repo_labels(repo: str, **extra: str) -> dict[str, str]:
    """Labels every test image carries: the `test_repo` fixture removes images by them."""
    return {"bepbuild.test.repo": repo, **extra}


def saved_members(tag: str) -> dict[str, bytes]:
    """`docker save` of `tag`: every member of the outer tar and of each layer tar, by name."""
    data = b"".join(images.engine().images.get(tag).save(named=True))
    members: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as outer:
        for member in outer.getmembers():
            if not member.isfile():
                continue
            blob = outer.extractfile(member).read()  # type: ignore[union-attr]
            members[member.name] = blob
            if member.name.endswith("layer.tar"):
                with tarfile.open(fileobj=io.BytesIO(blob)) as layer:
                    for inner in layer.getmembers():
                        if inner.isfile():
                            members[f"{member.name}!/{inner.name}"] = layer.extractfile(inner).read()  # type: ignore[union-attr]
    return members


def file_in_image(members: dict[str, bytes], path: str) -> bytes:
    hits = [blob for name, blob in members.items() if name.endswith(f"!/{path.lstrip('/')}")]
    assert hits, f"{path} not in any layer"
    return hits[-1]


def test_buildkit_bind_mount_secret_and_labels(tmp_path: Path, test_repo: str) -> None:
    wheel_marker = f"WHEEL-{uuid.uuid4().hex}"
    secret_marker = f"SECRET-{uuid.uuid4().hex}"
    secret = tmp_path / "ca.pem"
    secret.write_text(secret_marker + "\n")
    ctx = write_context(tmp_path / "ctx", {
        "Dockerfile": (
            f"FROM {config.base_image()}\n"
            "RUN --mount=type=bind,source=wheels,target=/wheels ls /wheels > /wheels.txt\n"
            "RUN --mount=type=secret,id=ca sha256sum < /run/secrets/ca | cut -d' ' -f1 > /secret.sha\n"
            "COPY app.txt /app/app.txt\n"
        ),
        "wheels/demo-1.0-py3-none-any.whl": wheel_marker,
        "app.txt": "hello\n",
    })
    tag = f"{test_repo}:one"
    lines: list[str] = []
    log = tmp_path / "logs" / "build.log"
    result = images.build(ctx, tag, labels=repo_labels(test_repo, **{"bepbuild.hash": "abc"}),
                          secrets={"ca": secret}, backend="buildkit", on_line=lines.append, log_path=log)

    assert result.built is True and result.tag == tag and result.log_path == log
    assert result.image_id.startswith("sha256:") and result.image_id == images.image_id(tag)
    assert images.image_exists(tag)
    assert images.labels(tag)["bepbuild.hash"] == "abc"
    assert any("RUN --mount=type=secret" in ln for ln in lines)
    assert "--secret id=ca" in log.read_text() and lines[-1] in log.read_text()

    members = saved_members(tag)
    assert file_in_image(members, "wheels.txt").decode().split() == ["demo-1.0-py3-none-any.whl"]
    # The secret was readable during the build, yet neither it nor the bind-mounted wheel is in the image.
    assert file_in_image(members, "secret.sha").decode().strip() == hashlib.sha256(secret.read_bytes()).hexdigest()
    for name, blob in members.items():
        assert secret_marker.encode() not in blob, f"secret content in {name}"
        assert wheel_marker.encode() not in blob, f"bind-mounted wheel in {name}"


@pytest.mark.parametrize("backend", ["buildkit", "sdk"])
def test_rebuild_of_existing_tag_is_skipped(tmp_path: Path, test_repo: str, backend: str) -> None:
    ctx = write_context(tmp_path, {"Dockerfile": f"FROM {config.base_image()}\nCOPY a.txt /a.txt\n", "a.txt": "1"})
    tag = f"{test_repo}:same"
    first = images.build(ctx, tag, labels=repo_labels(test_repo), backend=backend)
    (ctx / "a.txt").write_text("2")  # the tag says "built": a changed context is not even looked at
    lines: list[str] = []
    again = images.build(ctx, tag, labels=repo_labels(test_repo), backend=backend, on_line=lines.append)
    assert first.built is True
    assert again.built is False and again.image_id == first.image_id and again.log_path is None
    assert lines == []


@pytest.mark.parametrize("backend", ["buildkit", "sdk"])
def test_layers_built_and_size_are_reported(tmp_path: Path, test_repo: str, backend: str) -> None:
    marker = uuid.uuid4().hex
    dockerfile = f"FROM {config.base_image()}\nRUN echo {marker} > /m\nENV X=1\nCOPY a.txt /a.txt\n"
    ctx = write_context(tmp_path, {"Dockerfile": dockerfile, "a.txt": "1"})
    first = images.build(ctx, f"{test_repo}:one", labels=repo_labels(test_repo), backend=backend)
    assert first.layers_built == 2  # RUN and COPY (ENV makes no layer)
    assert first.size == images.engine().api.inspect_image(first.tag)["Size"]
    (ctx / "a.txt").write_text("2")
    second = images.build(ctx, f"{test_repo}:two", labels=repo_labels(test_repo), backend=backend)
    assert second.layers_built == 1  # the RUN came from the cache
    again = images.build(ctx, f"{test_repo}:two", labels=repo_labels(test_repo), backend=backend)
    assert (again.built, again.layers_built, again.size) == (False, 0, second.size)


def test_the_legacy_builder_leaves_no_throwaway_stage_behind(tmp_path: Path, test_repo: str) -> None:
    marker = uuid.uuid4().hex
    ctx = write_context(tmp_path, {"Dockerfile": (
        f"FROM {config.base_image()} AS stage\nLABEL bepbuild.test.repo={test_repo}\n"
        f"RUN echo {marker} > /secret\n"
        f"FROM {config.base_image()}\nCOPY --from=stage /secret /copied\n")})
    client = images.engine()
    before = {i.id for i in client.images.list(all=True)}
    built = images.build(ctx, f"{test_repo}:staged", labels=repo_labels(test_repo), backend="sdk")
    left = [i for i in client.images.list(all=True) if i.id not in before and i.id != built.image_id]
    # the image's own steps are its parents and stay; nothing of the stage (its RUN) does
    assert not [i.id for i in left if any(marker in (h.get("CreatedBy") or "") for h in i.history())]
    assert not client.images.list(filters={"dangling": True, "label": f"bepbuild.test.repo={test_repo}"})


def containers_mentioning(marker: str) -> list[str]:
    found = []
    for c in images.engine().containers.list(all=True):
        if marker in " ".join(c.attrs["Config"].get("Cmd") or []):
            found.append(c.id)
    return found


@pytest.mark.parametrize("backend", ["buildkit", "sdk"])
def test_failing_run_gives_one_line_build_error(tmp_path: Path, test_repo: str, backend: str) -> None:
    marker = f"fail-{uuid.uuid4().hex[:8]}"
    ctx = write_context(tmp_path / "ctx", {
        "Dockerfile": f"FROM {config.base_image()}\nRUN echo ok-{marker}\nRUN echo {marker} >&2; exit 7\n",
    })
    before = {c.id for c in images.engine().containers.list(all=True)}
    images_before = {i.id for i in images.engine().images.list(all=True)}
    log = tmp_path / "build.log"
    with pytest.raises(BuildError) as info:
        images.build(ctx, f"{test_repo}:bad", labels=repo_labels(test_repo), backend=backend, log_path=log)

    message = str(info.value)
    assert "\n" not in message
    assert "[3/" in message and f"RUN echo {marker}" in message
    assert "7" in message and str(log) in message
    assert marker in log.read_text()
    assert 0 < len(info.value.tail) <= images.TAIL_LINES  # type: ignore[attr-defined]
    assert not images.image_exists(f"{test_repo}:bad")
    # Other sessions may use the engine too: look for new containers that ran the failing step.
    new = {c.id for c in images.engine().containers.list(all=True)} - before
    assert not set(containers_mentioning(marker)) & new
    # Nor step images (the legacy builder keeps the good steps' images, dangling, after a failure).
    new_images = [i for i in images.engine().images.list(all=True) if i.id not in images_before]
    assert not [i.id for i in new_images if marker in " ".join(i.attrs["ContainerConfig"].get("Cmd") or [])]


def test_failing_build_without_log_path_points_to_a_tail_file(tmp_path: Path, test_repo: str) -> None:
    ctx = write_context(tmp_path, {"Dockerfile": f"FROM {config.base_image()}\nCOPY missing.txt /x\n"})
    with pytest.raises(BuildError) as info:
        images.build(ctx, f"{test_repo}:bad", labels=repo_labels(test_repo), backend="buildkit")
    tail_file = info.value.log_path  # type: ignore[attr-defined]
    try:
        assert str(tail_file) in str(info.value) and "missing.txt" in str(info.value)
        assert "missing.txt" in tail_file.read_text()
    finally:
        tail_file.unlink()


def test_sdk_backend_builds_plain_dockerfile(tmp_path: Path, test_repo: str) -> None:
    ctx = write_context(tmp_path / "ctx", {
        "Dockerfile": f"FROM {config.base_image()}\nRUN --mount=type=cache,target=/c true\n",  # BuildKit only
        "Dockerfile.legacy": f"FROM {config.base_image()}\nCOPY a.txt /a.txt\nRUN test -s /a.txt\n",
        "a.txt": "legacy\n",
    })
    lines: list[str] = []
    result = images.build(ctx, f"{test_repo}:sdk", labels=repo_labels(test_repo, k="v"), backend="sdk",
                          on_line=lines.append, log_path=tmp_path / "sdk.log")
    assert result.built is True and images.labels(f"{test_repo}:sdk")["k"] == "v"
    assert any(ln.startswith("Step 2/") and ln.endswith(" : COPY a.txt /a.txt") for ln in lines)
    assert file_in_image(saved_members(f"{test_repo}:sdk"), "a.txt") == b"legacy\n"

    plain = write_context(tmp_path / "plain", {"Dockerfile": f"FROM {config.base_image()}\nLABEL x=1\n"})
    result = images.build(plain, f"{test_repo}:plain", labels=repo_labels(test_repo), backend="sdk")
    assert result.built is True and images.labels(f"{test_repo}:plain")["x"] == "1"


def dangling_of(repo: str) -> list[str]:
    found = images.engine().images.list(filters={"dangling": True, "label": f"bepbuild.test.repo={repo}"})
    return [i.id for i in found]


@pytest.mark.parametrize("backend", ["buildkit", "sdk"])
def test_rebuilds_leave_no_dangling_image_of_the_repo(tmp_path: Path, test_repo: str, backend: str) -> None:
    ctx = write_context(tmp_path, {"Dockerfile": f"FROM {config.base_image()}\nCOPY a.txt /a.txt\n", "a.txt": "1"})
    other = images.build(ctx, f"{test_repo}-other:keep", labels=repo_labels(test_repo), backend=backend)
    v1 = images.build(ctx, f"{test_repo}:v1", labels=repo_labels(test_repo), backend=backend)
    assert v1.image_id == other.image_id  # same content, two repositories
    (ctx / "a.txt").write_text("2")
    v2 = images.build(ctx, f"{test_repo}:v2", labels=repo_labels(test_repo), backend=backend)
    assert v2.image_id != v1.image_id
    assert images.image_id(f"{test_repo}:v1") == v1.image_id  # an older content tag stays
    assert dangling_of(test_repo) == []

    # Moving a tag (force) orphans its old image: that one goes, nothing else does.
    (ctx / "a.txt").write_text("3")
    v3 = images.build(ctx, f"{test_repo}:v2", labels=repo_labels(test_repo), backend=backend, force=True)
    assert v3.built is True and v3.image_id != v2.image_id
    assert dangling_of(test_repo) == []
    with pytest.raises(docker.errors.ImageNotFound):
        images.engine().images.get(v2.image_id)
    assert images.image_id(f"{test_repo}:v1") == v1.image_id
    assert images.image_id(f"{test_repo}-other:keep") == other.image_id
    assert images.image_id(config.base_image()) is not None


def test_rebuild_keeps_an_orphan_that_a_container_uses(tmp_path: Path, test_repo: str) -> None:
    ctx = write_context(tmp_path, {"Dockerfile": f"FROM {config.base_image()}\nCOPY a.txt /a.txt\n", "a.txt": "1"})
    tag = f"{test_repo}:t"
    old = images.build(ctx, tag, labels=repo_labels(test_repo), backend="buildkit")
    container = images.engine().containers.create(tag, ["true"], network_mode="none")
    try:
        (ctx / "a.txt").write_text("2")
        images.build(ctx, tag, labels=repo_labels(test_repo), backend="buildkit", force=True)
        assert images.engine().images.get(old.image_id).tags == []  # dangling, but in use: kept
    finally:
        container.remove(force=True)


def test_push_and_pull_back(tmp_path: Path, test_repo: str, registry: LocalRegistry) -> None:
    ctx = write_context(tmp_path, {"Dockerfile": f"FROM {config.base_image()}\nCOPY a.txt /a.txt\n", "a.txt": "p"})
    tag = f"{test_repo}:abc123"
    built = images.build(ctx, tag, labels=repo_labels(test_repo), backend="buildkit")
    remote = f"{registry.address}/{test_repo}"
    lines: list[str] = []
    pushed = image_push.push(tag, remote, on_line=lines.append)
    assert pushed["image"] == f"{remote}:abc123"
    assert pushed["digest"].startswith("sha256:") and len(pushed["digest"]) == 71
    assert lines
    # The registry is the session's: the base image's layer may be there already (pushed by another test).
    layers = len(images.engine().api.inspect_image(tag)["RootFS"]["Layers"])
    assert pushed["layers_pushed"] >= 1 and pushed["layers_pushed"] + pushed["layers_existing"] == layers
    assert pushed["bytes_pushed"] > 0
    again = image_push.push(tag, remote, repo_tag="latest")
    assert again == {"image": f"{remote}:latest", "digest": pushed["digest"], "layers_pushed": 0,
                     "layers_existing": layers, "bytes_pushed": 0}

    for ref in (tag, f"{remote}:abc123", f"{remote}:latest"):
        images.remove_image(ref)
    assert images.image_id(tag) is None and images.image_id(f"{remote}:abc123") is None
    images.engine().images.pull(remote, tag="abc123")
    assert images.image_id(f"{remote}:abc123") == built.image_id


def test_push_to_a_dead_registry_is_a_build_error(tmp_path: Path, test_repo: str) -> None:
    ctx = write_context(tmp_path, {"Dockerfile": f"FROM {config.base_image()}\nLABEL p=1\n"})
    tag = f"{test_repo}:x"
    images.build(ctx, tag, labels=repo_labels(test_repo), backend="buildkit")
    with pytest.raises(BuildError) as info:
        image_push.push(tag, f"127.0.0.1:{free_port()}/{test_repo}")
    assert "push failed" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(BuildError, match="no such local image"):
        image_push.push(f"{test_repo}:nope", f"127.0.0.1:{free_port()}/{test_repo}")


def test_unknown_and_missing_things(tmp_path: Path, test_repo: str) -> None:
    assert images.image_id(f"{test_repo}:nope") is None and not images.image_exists(f"{test_repo}:nope")
    images.remove_image(f"{test_repo}:nope")  # no error
    with pytest.raises(BuildError, match="unknown build backend"):
        images.build(tmp_path, f"{test_repo}:x", backend="kaniko")
    with pytest.raises(BuildError, match="no Dockerfile"):
        images.build(tmp_path, f"{test_repo}:x", backend="buildkit")


def test_auto_backend_needs_a_buildkit_capable_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    assert images.pick_backend("auto") == "buildkit"  # the Debian 20.10 client at /usr/bin/docker
    monkeypatch.setenv("BEPBUILD_DOCKER", "/nonexistent/docker")
    assert images.pick_backend("auto") == "sdk"
    if Path("/usr/local/bin/docker").exists():  # the newer client without buildx that PATH finds first
        monkeypatch.setenv("BEPBUILD_DOCKER", "/usr/local/bin/docker")
        assert images.pick_backend("auto") == "sdk"


def test_unreachable_engine_is_an_engine_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(images, "_client", None)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    with pytest.raises(EngineError, match="make engine"):
        images.image_exists("anything:1")
    monkeypatch.setattr(images, "_client", None)  # don't keep a client for the dead socket
