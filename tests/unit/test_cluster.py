"""Swarm computes without a swarm: the compute's checks, what a task is given, what a job records, and
where its image comes from (fakes of the manager's API; the real swarm is tests/docker/test_swarm.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_jobs_process import Cli

from bepbuild import naming
from bepbuild.errors import UserError
from bepbuild.jobs import cluster, records, swarm
from bepbuild.jobs.backends import InstancePlan
from bepbuild.store import Store
from bepbuild_runtime import layout


def test_swarm_compute_options_are_checked_in_one_line(tmp_path: Path) -> None:
    cli = Cli()
    made = cli.json("compute", "create", "-n", "cluster", "--type", "swarm", "--shared-path", str(tmp_path),
                    "--registry", "127.0.0.1:5000/bepbuild", "--docker-host", "tcp://127.0.0.1:2376",
                    "--constraint", "node.labels.gpu==true", "--max-instances", "4")
    assert made["type"] == "swarm" and made["constraints"] == ["node.labels.gpu==true"]
    for args, field in ((["--type", "swarm"], "shared_path"), (["--type", "swarm", "--shared-path", "rel"], "absolute"),
                        (["--registry", "127.0.0.1:5000/x"], "only for type swarm"),
                        (["--type", "swarm", "--shared-path", "/s", "--registry", "Upper:5000/X"], "HOST[:PORT]/REPO"),
                        (["--type", "swarm", "--shared-path", "/s", "--docker-host", "manager"], "Docker host URL"),
                        (["--type", "swarm", "--shared-path", "/s", "--constraint", "gpu"], "placement constraint")):
        res = cli("compute", "create", "-n", "bad", *args, code=2)
        assert field in res.stderr, (args, res.stderr)


def test_service_and_network_names_are_short_and_unique_per_job_folder(tmp_path: Path) -> None:
    long = "j" * 255
    a = naming.service_name(long, tmp_path / "a" / long, "instance-12")
    b = naming.service_name(long, tmp_path / "b" / long, "instance-12")
    assert a != b and len(a) <= 63 and len(b) <= 63
    assert naming.job_network(long, tmp_path / "a" / long) != naming.job_network(long, tmp_path / "b" / long)
    with pytest.raises(ValueError):
        naming.service_name("j", tmp_path, "an-instance-name-too-long")


def _plan(tmp_path: Path, **kw: Any) -> InstancePlan:
    return InstancePlan(job="j1", job_dir=tmp_path / "job", input_root=tmp_path / "in", output_dir=tmp_path / "out",
                        image="127.0.0.1:5000/r@sha256:" + "0" * 64, code_dir=tmp_path, model_dir=tmp_path,
                        scoring_script="score.py", user="10001:10001", **kw)


def test_a_task_is_isolated_as_far_as_swarm_allows(tmp_path: Path) -> None:
    spec = swarm.task_template(_plan(tmp_path, cpus=2.0, memory="1g", gpus=2), "instance-0", "net-id",
                               ["node.labels.gpu==true"])
    c = spec["ContainerSpec"]
    assert c["User"] == "10001:10001" and c["ReadOnly"] is True and c["CapabilityDrop"] == ["ALL"]
    env = dict(e.split("=", 1) for e in c["Env"])
    assert env[layout.ENV_NO_NEW_PRIVILEGES] == "1" and env[layout.ENV_INSTANCE] == "instance-0"
    assert env[layout.ENV_CPUS] == "2" and layout.ENV_GPUS not in env  # GPUs: those Swarm gives the task
    mounts = {m["Target"]: m for m in c["Mounts"]}
    assert mounts[layout.CONTAINER_INPUT_DIR]["ReadOnly"] is True
    assert mounts[layout.CONTAINER_JOB_DIR]["ReadOnly"] is False and mounts["/tmp"]["Type"] == "tmpfs"
    assert c["Labels"] == {"io.bepbuild.job": "j1", "io.bepbuild.job-dir": str(tmp_path / "job"),
                           "io.bepbuild.instance": "instance-0"}
    assert spec["Resources"]["Limits"] == {"Pids": 4096, "NanoCPUs": 2_000_000_000, "MemoryBytes": 1 << 30}
    assert spec["Resources"]["Reservations"] == {
        "GenericResources": [{"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 2}}]}
    assert spec["RestartPolicy"] == {"Condition": "none"}
    assert spec["Networks"] == [{"Target": "net-id"}]
    assert spec["Placement"] == {"Constraints": ["node.labels.gpu==true"]}


class FakeManager:
    def __init__(self, nodes: list[str]) -> None:
        self._nodes = nodes

    def nodes(self) -> list[dict[str, Any]]:
        return [{"ID": n} for n in self._nodes]

    def info(self) -> dict[str, Any]:
        return {"Swarm": {"NodeID": "here"}}


class FakeEngine:
    api = FakeManager(["here"])


@pytest.mark.parametrize("nodes", [["here", "there"], ["there"]])
def test_without_a_registry_only_a_one_node_swarm_on_this_engine_runs_the_local_image(
    nodes: list[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bepbuild import images

    monkeypatch.setattr(swarm, "connect", lambda host: FakeManager(nodes))
    monkeypatch.setattr(images, "engine", lambda: FakeEngine())
    res = {"kind": "swarm", "compute": "cluster", "shared_path": "/s"}
    with pytest.raises(UserError, match="give it a registry"):
        cluster.image_ref("bepbuild/e/d:abc", "sha256:1", res)
    monkeypatch.setattr(swarm, "connect", lambda host: FakeManager(["here"]))
    assert cluster.image_ref("bepbuild/e/d:abc", "sha256:1", res) == "sha256:1"


def test_a_job_submitted_from_another_machine_is_found_on_the_shared_path(tmp_path: Path) -> None:
    """Another machine with its own registry sees the shared path: the job is registered there when looked up."""
    shared = tmp_path / "shared"
    Cli()("compute", "create", "-n", "cluster", "--type", "swarm", "--shared-path", str(shared), "-o", "none")
    folder = naming.shared_jobs_dir(shared) / "elsewhere"
    folder.mkdir(parents=True)
    doc = {"name": "elsewhere", "job_dir": str(folder), "status": "Completed", "backend": "swarm",
           "endpoint": "e", "deployment": "d"}
    (folder / layout.JOB_FILE).write_text(json.dumps(doc))
    impostor = naming.shared_jobs_dir(shared) / "impostor"
    impostor.mkdir()
    (impostor / layout.JOB_FILE).write_text(json.dumps({**doc, "name": "impostor", "job_dir": "/etc"}))
    store = Store.open()
    try:
        assert records.lookup(store, "elsewhere")["status"] == "Completed"
        assert store.get_job("elsewhere")["job_dir"] == str(folder)
        with pytest.raises(Exception, match="not found"):
            records.lookup(store, "impostor")  # its job.json names another folder: not adopted
    finally:
        store.close()
    assert Cli().json("job", "show", "--name", "elsewhere")["status"] == "Completed"
