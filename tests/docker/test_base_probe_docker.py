"""The base-image probe (environments.probe_base) on the real engine: a probe container that a dead
process left behind is removed by the next probe; one that is running, or young, is not touched."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bepbuild import config, environments, images

pytestmark = pytest.mark.docker


def test_a_probe_container_left_by_a_dead_process_goes_with_the_next_probe(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = images.engine()
    base = config.DEFAULT_BASE_IMAGE
    token = uuid.uuid4().hex[:8]
    labels = {environments.PROBE_LABEL: "base-image", "io.bepbuild.test": token}
    # What a process killed between create and start leaves: a Created container with the label.
    left = client.containers.create(base, ["true"], labels=labels, network_mode="none", entrypoint=[])
    running = client.containers.run(base, ["sleep", "60"], labels=labels, network_mode="none", entrypoint=[],
                                    detach=True)
    try:
        young = environments.remove_stale_probes(client)
        assert left.id not in young  # made a moment ago: it may be another process's probe at work
        monkeypatch.setattr(environments, "STALE_PROBE_SECONDS", 0.0)
        monkeypatch.setenv("BEPBUILD_HOME", str(tmp_path))  # no cached probe: it runs
        info = environments.probe_base(base)
        assert info.python and info.python.count(".") == 2
        ours = {c.id for c in client.containers.list(all=True, filters={"label": f"io.bepbuild.test={token}"})}
        assert ours == {running.id}  # the left one removed, the running one kept
        probes = client.containers.list(all=True, filters={"label": environments.PROBE_LABEL})
        assert {c.id for c in probes} == {running.id}  # and the probe removed its own container
    finally:
        running.remove(force=True)
        for c in client.containers.list(all=True, filters={"label": f"io.bepbuild.test={token}"}):
            c.remove(force=True)
