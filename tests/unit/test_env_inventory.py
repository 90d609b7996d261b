"""`environment list --images` and `environment prune` with the engine faked: what is counted, what is
removed, and what never is (another tool's images, images a job may still run, recent ones)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from typer.testing import CliRunner

from bepbuild import env_inventory, images
from bepbuild.cli import app
from bepbuild.store import Store

OLD = int(time.time()) - 86400
ENV_LABELS = {"org.opencontainers.image.vendor": "bepbuild", "io.bepbuild.kind": "environment",
              "io.bepbuild.python": "3.8.18", "io.bepbuild.strategy": "pip", "io.bepbuild.package-count": "2",
              "io.bepbuild.base-image": "local/debian-py:3.8", "io.bepbuild.base-image-id": "sha256:base"}


def image(image_id: str, tags: list[str], labels: dict[str, str], size: int = 1000, created: int = OLD) -> dict:
    return {"Id": image_id, "RepoTags": tags, "Labels": labels, "Size": size, "Created": created}


def deployment_image(image_id: str, tags: list[str], env_tag: str, env_id: str) -> dict:
    return image(image_id, tags, {"org.opencontainers.image.vendor": "bepbuild", "io.bepbuild.kind": "deployment",
                                  "io.bepbuild.deployment": "d", "io.bepbuild.environment-image": env_tag,
                                  "io.bepbuild.environment-image-id": env_id})


class FakeEngine:
    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows
        self.removed: list[str] = []
        self.containers: set[str] = set()

    def list_labelled(self, *labels: str, dangling: bool | None = None) -> list[dict]:
        def ok(row: dict) -> bool:
            if any(row["Labels"].get(k) != v for k, v in (lb.split("=", 1) for lb in labels)):
                return False
            return dangling is None or dangling == (not row["RepoTags"])
        return [r for r in self.rows if ok(r) and r["Id"] not in self.removed]

    def inspect(self, ref: str) -> dict[str, Any] | None:
        if ref == "sha256:base":
            return {"Id": ref, "Size": 400}
        row = next((r for r in self.rows if ref == r["Id"] or ref in r["RepoTags"]), None)
        return None if row is None else {**row, "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"}}

    def remove_image(self, tag: str) -> None:
        self.removed.append(tag)

    def remove_unused(self, image_id: str) -> bool:
        self.removed.append(image_id)
        return True


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    rows = [
        image("sha256:e-used", ["bepbuild/env:used"], ENV_LABELS),
        image("sha256:e-built-from", ["bepbuild/env:builtfrom"], ENV_LABELS),
        image("sha256:e-unused", ["bepbuild/env:unused"], ENV_LABELS, size=5000),
        image("sha256:e-new", ["bepbuild/env:new"], ENV_LABELS, created=int(time.time())),
        image("sha256:e-other-tag", ["bepbuild/env:othertag", "team/base:1"], ENV_LABELS),
        image("sha256:e-theirs", ["team/env:1"], ENV_LABELS),  # our labels under someone else's name only
        image("sha256:e-running", ["bepbuild/env:running"], ENV_LABELS),
        deployment_image("sha256:d-live", ["bepbuild/other-home/d:1"], "bepbuild/env:builtfrom", "sha256:e-built-from"),
        deployment_image("sha256:d-dangling", [], "bepbuild/env:unused", "sha256:e-unused"),
        deployment_image("sha256:d-held", [], "bepbuild/env:unused", "sha256:e-unused"),
        image("sha256:stage", [], {"org.opencontainers.image.vendor": "bepbuild",
                                   "io.bepbuild.stage": "environment-install"}, size=300),
        image("sha256:not-ours", [], {"io.bepbuild.deployment": "d"}),  # no bepbuild vendor label
        image("sha256:plain", [], {}),
    ]
    fake = FakeEngine(rows)
    fake.containers = {"sha256:e-running"}
    for name in ("list_labelled", "inspect", "remove_image", "remove_unused"):
        monkeypatch.setattr(images, name, getattr(fake, name))
    monkeypatch.setattr(images, "used_by_container", lambda image_id: image_id in fake.containers)
    return fake


def home_with(deployments: dict[str, dict], jobs: dict[str, dict]) -> None:
    store = Store.open()
    try:
        store.put_endpoint("ep", {"name": "ep"})
        for name, doc in deployments.items():
            store.put_deployment("ep", name, doc)
        for name, doc in jobs.items():
            store.add_job(name, {"endpoint": "ep", "deployment": "a", **doc})
    finally:
        store.close()


def test_prune_removes_only_what_nobody_uses(engine: FakeEngine) -> None:
    home_with({"a": {"image": "bepbuild/ep/a:1", "image_id": "sha256:d-a", "environment_image": "bepbuild/env:used",
                     "environment_image_id": "sha256:e-used"}},
              {"running": {"backend": "docker", "status": "Failed", "image": "bepbuild/ep/a:0",
                           "image_id": "sha256:d-held"}})
    r = CliRunner().invoke(app, ["environment", "prune", "--yes"])
    assert r.exit_code == 0, r.stderr
    # the dangling deployment image and the legacy stage go; then the environment image only they named
    assert "sha256:d-dangling" in engine.removed and "sha256:stage" in engine.removed
    assert "bepbuild/env:othertag" in engine.removed  # only our own tag is taken off
    assert "team/base:1" not in engine.removed and "sha256:e-other-tag" not in engine.removed
    for never in ("sha256:d-held", "sha256:not-ours", "sha256:plain", "bepbuild/env:used", "bepbuild/env:builtfrom",
                  "bepbuild/env:new", "team/env:1", "bepbuild/env:running"):
        assert never not in engine.removed, never
    # d-held (a Failed job may be resumed) still names e-unused: it stays too
    assert "bepbuild/env:unused" not in engine.removed
    assert r.stderr.startswith("removed 1 environment image(s) and 2 dangling deployment image(s)")


def test_prune_after_the_job_completed_and_with_no_minimum_age(engine: FakeEngine) -> None:
    home_with({}, {"done": {"backend": "docker", "status": "Completed", "image_id": "sha256:d-held"}})
    r = CliRunner().invoke(app, ["environment", "prune", "--yes", "--min-age", "0", "-o", "json"])
    assert r.exit_code == 0, r.stderr
    assert {"sha256:d-held", "sha256:d-dangling", "bepbuild/env:unused", "bepbuild/env:new"} <= set(engine.removed)
    assert "bepbuild/env:builtfrom" not in engine.removed  # another home's deployment image was built from it


def test_dry_run_removes_nothing_and_prune_asks(engine: FakeEngine) -> None:
    home_with({}, {})
    r = CliRunner().invoke(app, ["environment", "prune", "--dry-run"])
    assert r.exit_code == 0 and engine.removed == [] and r.stderr.startswith("would remove")
    r = CliRunner().invoke(app, ["environment", "prune"])
    assert r.exit_code == 2 and "--yes" in r.stderr and engine.removed == []
    r = CliRunner().invoke(app, ["environment", "prune", "--yes", "--min-age", "-1"])
    assert r.exit_code == 2 and "--min-age" in r.stderr


def test_list_images_counts_deployments_here_and_images_everywhere(engine: FakeEngine) -> None:
    home_with({"a": {"image": "x:1", "environment_image": "bepbuild/env:unused"},
               "b": {"image": "x:2", "environment_image": "bepbuild/env:unused"}}, {})
    rows = {r["image"]: r for r in env_inventory.list_images(Store.open())}
    assert "team/env:1" in rows  # listed (it is an environment image), never pruned under that name
    unused = rows["bepbuild/env:unused"]
    assert (unused["deployments"], unused["images"], unused["size"], unused["environment_size"]) == (2, 2, 5000, 4600)
    assert unused["python"] == "3.8.18" and unused["packages"] == 2
    r = CliRunner().invoke(app, ["environment", "list", "--images", "-o", "table"])
    assert r.exit_code == 0 and "bepbuild/env:unused" in r.stdout and "5.0 kB" in r.stdout


def test_an_archived_job_that_can_be_resumed_still_holds_its_image(engine: FakeEngine) -> None:
    # `job archive` hides a job from lists; `job resume` still takes it: its image must stay.
    home_with({}, {"archived": {"backend": "docker", "status": "Failed", "image_id": "sha256:d-held",
                                "archived": True}})
    r = CliRunner().invoke(app, ["environment", "prune", "--yes", "--min-age", "0"])
    assert r.exit_code == 0, r.stderr
    assert "sha256:d-held" not in engine.removed and "sha256:d-dangling" in engine.removed
