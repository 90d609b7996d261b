"""The docker backend against a fake engine: what a job's containers are called and may remove, the
image a job is pinned to, the one line when that image is gone, and which images a redeploy keeps.

The real engine's side of the same (a redeploy and a resume, two jobs with a long common prefix)
is in tests/docker/test_job_safety_docker.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker.errors
import pytest
from test_jobs_process import ENDPOINT, Cli, make_inputs, register

from bepbuild import deploy, images, naming
from bepbuild.errors import JobError
from bepbuild.jobs import backends, service
from bepbuild.store import Store


class FakeContainer:
    def __init__(self, engine: FakeEngine, name: str, labels: dict[str, str], image: str = "") -> None:
        self.engine, self.name, self.labels, self.image = engine, name, labels, image
        self.id = f"id-{name}"
        self.status = "created"
        self.attrs: dict[str, Any] = {"State": {"ExitCode": 0}}

    def remove(self, force: bool = False) -> None:
        self.engine.removed.append(self.name)
        self.engine.containers_by_name.pop(self.name, None)

    def start(self) -> None:
        self.status = "running"

    def reload(self) -> None:
        pass

    def logs(self, **kwargs: Any) -> bytes:
        return b""

    def stop(self, timeout: int = 10) -> None:
        self.status = "exited"

    def kill(self) -> None:
        self.status = "exited"


class FakeContainers:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def get(self, name: str) -> FakeContainer:
        if name not in self.engine.containers_by_name:
            raise docker.errors.NotFound(f"no container {name}")
        return self.engine.containers_by_name[name]

    def _make(self, image: str, name: str, labels: dict[str, str]) -> FakeContainer:
        self.engine.started_images.append(image)
        if image not in self.engine.image_ids.values() and image not in self.engine.image_ids:
            raise docker.errors.ImageNotFound(f"No such image: {image}")
        if name in self.engine.containers_by_name:
            raise docker.errors.APIError(f"Conflict. The container name {name!r} is already in use")
        c = self.engine.containers_by_name[name] = FakeContainer(self.engine, name, labels, image)
        return c

    def create(self, image: str, name: str = "", labels: dict[str, str] | None = None, **kwargs: Any) -> FakeContainer:
        return self._make(image, name, labels or {})

    def run(self, image: str, name: str = "", labels: dict[str, str] | None = None, **kwargs: Any) -> FakeContainer:
        c = self._make(image, name, labels or {})
        c.start()
        return c

    def list(self, all: bool = False, filters: dict[str, str] | None = None) -> list[FakeContainer]:
        out = list(self.engine.containers_by_name.values())
        label = (filters or {}).get("label")
        if isinstance(label, str):
            key, _, value = label.partition("=")
            out = [c for c in out if c.labels.get(key) == value]
        elif isinstance(label, list):
            for item in label:
                key, _, value = item.partition("=")
                out = [c for c in out if c.labels.get(key) == value]
        if (filters or {}).get("ancestor"):
            out = [c for c in out if c.image == filters["ancestor"]]
        return out


class FakeAPI:
    api_version = "1.41"

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def inspect_image(self, ref: str) -> dict[str, Any]:
        if ref in self.engine.image_ids:
            return {"Id": self.engine.image_ids[ref]}
        if ref in self.engine.image_ids.values():
            return {"Id": ref}
        raise docker.errors.ImageNotFound(f"No such image: {ref}")

    def remove_image(self, ref: str) -> None:
        self.engine.removed_images.append(ref)
        self.engine.image_ids.pop(ref, None)


class FakeEngine:
    """Just enough of docker.DockerClient for the docker backend and image housekeeping."""

    def __init__(self) -> None:
        self.image_ids: dict[str, str] = {}  # tag -> id
        self.containers_by_name: dict[str, FakeContainer] = {}
        self.removed: list[str] = []
        self.removed_images: list[str] = []
        self.started_images: list[str] = []
        self.containers = FakeContainers(self)
        self.api = FakeAPI(self)


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    fake = FakeEngine()
    monkeypatch.setattr(images, "engine", lambda: fake)
    return fake


def deployed_image() -> str:
    store = Store.open()
    try:
        return str(store.get_deployment(ENDPOINT, "jobs-dpl")["image"])
    finally:
        store.close()


def invoke_docker(tmp_path: Path, name: str) -> dict[str, Any]:
    make_inputs(tmp_path / "in", 3)
    store = Store.open()
    try:
        return service.invoke(store, service.InvokeRequest(endpoint=ENDPOINT, input=str(tmp_path / "in"),
                                                           job_name=name, backend="docker"))
    finally:
        store.close()


def run(name: str) -> dict[str, Any]:
    store = Store.open()
    try:
        return service.run_attached(store, name)
    finally:
        store.close()


def test_a_container_of_that_name_that_is_not_the_job_s_is_never_removed(engine: FakeEngine, tmp_path: Path) -> None:
    """Whatever a job's container is called, a container of that name that does not carry the job's
    labels belongs to someone else: starting the job must fail in one line and leave it alone."""
    register()
    engine.image_ids[deployed_image()] = "sha256:" + "a" * 64
    job = invoke_docker(tmp_path, "x" * 36 + "-second")
    plan = backends.InstancePlan(job=job["name"], job_dir=Path(job["job_dir"]), input_root=tmp_path / "in",
                                 output_dir=tmp_path / "out", image="sha256:" + "a" * 64, code_dir=tmp_path,
                                 model_dir=tmp_path, scoring_script="score.py")

    class Clash(dict):  # every name is taken by another job's container (its first 36 characters are ours)
        def __missing__(self, name: str) -> FakeContainer:
            self[name] = FakeContainer(engine, name, {"io.bepbuild.job": "x" * 36 + "-first"})
            return self[name]

        def __contains__(self, name: object) -> bool:
            return True

    engine.containers_by_name = Clash()
    backend = backends.DockerBackend()
    with pytest.raises(JobError) as e:
        backend.start(plan, "instance-0")
    assert engine.removed == []
    assert "not this job's" in str(e.value), e.value


def test_a_leftover_container_of_the_same_job_is_replaced(engine: FakeEngine, tmp_path: Path) -> None:
    register()
    engine.image_ids[deployed_image()] = "sha256:" + "b" * 64
    job = invoke_docker(tmp_path, "leftover")
    plan = backends.InstancePlan(job=job["name"], job_dir=Path(job["job_dir"]), input_root=tmp_path / "in",
                                 output_dir=tmp_path / "out", image="sha256:" + "b" * 64, code_dir=tmp_path,
                                 model_dir=tmp_path, scoring_script="score.py")
    from bepbuild import naming

    name = naming.container_name(job["name"], Path(job["job_dir"]), "instance-0")
    engine.containers_by_name[name] = FakeContainer(engine, name, backends.job_labels(plan))
    backends.DockerBackend().start(plan, "instance-0")
    assert engine.removed == [name]
    assert engine.containers_by_name[name].labels == {**backends.job_labels(plan), "io.bepbuild.instance": "instance-0"}


def test_a_job_runs_the_image_it_was_invoked_with_or_says_it_is_gone(engine: FakeEngine, tmp_path: Path) -> None:
    register()
    tag = deployed_image()
    engine.image_ids[tag] = "sha256:" + "1" * 64
    job = invoke_docker(tmp_path, "pinned")
    assert job["image_id"] == "sha256:" + "1" * 64
    # a redeploy moved the tag and removed the image the job was invoked with
    engine.image_ids[tag] = "sha256:" + "2" * 64
    res = Cli()("job", "resume", "--name", "pinned", code=1)
    line = res.stderr.strip()
    assert f"image {tag} (sha256:111111111111) of job pinned is gone" in line, line
    assert "Docker engine failed" not in line
    assert engine.started_images == []
    # the image comes back: the job runs that image, not what the tag names now
    engine.image_ids["kept"] = "sha256:" + "1" * 64
    engine.containers.run = engine.containers.create = _record_then_fail(engine)  # type: ignore[method-assign]
    with pytest.raises(JobError, match="is gone"):
        run("pinned")
    assert engine.started_images == ["sha256:" + "1" * 64]


def _record_then_fail(engine: FakeEngine) -> Any:
    def create(image: str, **kwargs: Any) -> Any:
        engine.started_images.append(image)
        raise docker.errors.ImageNotFound(f"No such image: {image}")

    return create


def test_an_image_gone_at_start_fails_the_job_with_that_line(engine: FakeEngine, tmp_path: Path) -> None:
    """Not "the Docker engine failed": the engine answered; the image is what is missing."""
    register()
    engine.image_ids[deployed_image()] = "sha256:" + "3" * 64
    invoke_docker(tmp_path, "gone-at-start")
    engine.image_ids.clear()
    engine.containers.run = engine.containers.create = _record_then_fail(engine)  # type: ignore[method-assign]
    with pytest.raises(JobError) as e:
        run("gone-at-start")
    assert "is gone" in str(e.value) and "Docker engine failed" not in str(e.value), e.value
    store = Store.open()
    try:
        job = store.get_job("gone-at-start")
    finally:
        store.close()
    assert job["status"] == "Failed" and "is gone" in job["error"], job


def test_a_redeploy_keeps_images_that_jobs_may_still_run(engine: FakeEngine, tmp_path: Path) -> None:
    register()
    old = deployed_image()
    engine.image_ids[old] = "sha256:" + "4" * 64
    invoke_docker(tmp_path, "holds-old")  # Queued: it may run (or resume) later
    new = old.rsplit(":", 1)[0] + ":newer"
    engine.image_ids[new] = "sha256:" + "5" * 64
    store = Store.open()
    try:
        store.put_deployment(ENDPOINT, "jobs-dpl", store.get_deployment(ENDPOINT, "jobs-dpl") | {"image": new})
        assert deploy.prune_images(store, [old], keep=new) == ([], [old])
        assert old in engine.image_ids and engine.removed_images == []
        for status in ("Failed", "Canceled"):  # both can be resumed
            store.update_job("holds-old", status=status)
            assert deploy.prune_images(store, [old], keep=new) == ([], [old]), status
        store.update_job("holds-old", status="Completed")
        assert deploy.prune_images(store, [old], keep=new) == ([old], [])
        assert engine.removed_images == [old]
        # another deployment's image, the one kept, and a gone one: never removed
        assert deploy.prune_images(store, [new, "bepbuild/x/y:gone"], keep=new) == ([], [])
    finally:
        store.close()


def test_homes_sharing_an_engine_never_remove_each_others_tags(engine: FakeEngine, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Two homes deploying one content tag one image each their own way; a redeploy in one removes
    only its own tag (the engine keeps the image while another is left)."""
    mine = naming.image_tag("ep", "dpl", "f" * 64)
    monkeypatch.setenv("BEPBUILD_HOME", str(tmp_path / "other-home"))
    theirs = naming.image_tag("ep", "dpl", "f" * 64)
    assert mine != theirs and mine.rsplit(":", 1)[0] == theirs.rsplit(":", 1)[0]
    assert naming.is_own_image_tag(theirs) and not naming.is_own_image_tag(mine)
    assert naming.image_tag("ep", "dpl", "f" * 64) == theirs  # made once per home
    legacy = "bepbuild/ep/dpl:" + "f" * 16  # as an earlier bepbuild tagged it, perhaps for both homes
    for tag in (mine, theirs, legacy):
        engine.image_ids[tag] = "sha256:" + "6" * 64
    store = Store.open()
    try:
        assert deploy.prune_images(store, [mine, legacy], keep="bepbuild/ep/dpl:new") == ([], [])
        assert engine.removed_images == []
        assert deploy.prune_images(store, [theirs], keep="bepbuild/ep/dpl:new") == ([theirs], [])
    finally:
        store.close()
