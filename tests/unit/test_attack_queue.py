"""What a scoring container leaves in its writable part of the job folder must not make the host act
outside it.

A container writes `queue/` (its claims, worker folders), `results/`, `logs/user`, `logs/sys/node` and
the attempts logs. The host (perhaps root) gives back the claims of an instance that stopped or died
(`release_instance`, `requeue_instance`, `requeue_worker`) and appends the lost tries to the worker's
logs. These tests plant, as a container can, a worker folder that is a link to a folder of the host,
a claim whose `id` climbs out of the job folder, and log folders that are links, then call what the
host calls: nothing outside the job folder may be removed, moved, written or created.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bepbuild_runtime import layout, queue

OUT_OF_TRIES = 9  # a forged attempt count: the host takes the "out of tries" path at once


def _job(tmp_path: Path, max_retries: int = 3) -> Path:
    job = tmp_path / "job"
    job.mkdir()
    (job / layout.JOB_FILE).write_text(json.dumps({"settings": {"max_retries": max_retries}}))
    queue.write_queue(job, ["a.txt", "b.txt"], 1)
    return job


def _victim(tmp_path: Path) -> Path:
    """A folder of the host that no container can see: its files must survive whatever is planted."""
    victim = tmp_path / "host-folder"
    victim.mkdir()
    (victim / "v.json").write_text("keep")
    (victim / "v.csv").write_text("keep")
    (victim / "w.csv").write_text("keep")
    (victim / ".tmp.notes").write_text("keep")
    (victim / "000000001.json").write_text(json.dumps({"id": "000000001", "items": ["secret"], "attempt": 0}))
    return victim


def _listing(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def _climbing_id(victim: Path, name: str) -> str:
    """An id that, joined onto any folder of the job, lands on `victim/name` (extra '..' stop at /)."""
    return "../" * 40 + str(victim / name).lstrip("/")


def test_a_worker_folder_planted_as_a_link_is_never_followed(tmp_path: Path) -> None:
    job, victim = _job(tmp_path), _victim(tmp_path)
    before = _listing(victim)
    os.symlink(victim, job / layout.RUNNING_DIR / "instance-0.98")  # what a container can plant
    queue.release_instance(job)  # every host run starts with this (runner._run), and a stopped instance
    queue.requeue_instance(job, "instance-0", "instance-0 exited with code 1", 3)  # an instance that died
    assert _listing(victim) == before
    assert sorted(os.listdir(job / layout.PENDING_DIR)) == ["000000000.json", "000000001.json"]


@pytest.mark.parametrize("attempt", [0, OUT_OF_TRIES])
def test_a_claim_whose_id_climbs_out_is_never_used_as_a_path(tmp_path: Path, attempt: int) -> None:
    job, victim = _job(tmp_path), _victim(tmp_path)
    before = _listing(victim)
    forged = job / layout.RUNNING_DIR / "instance-0.99"
    forged.mkdir()
    for i, target in enumerate(("v", "w")):  # v.json exists (the "done" path), w does not (requeue / fail)
        claim = {"id": _climbing_id(victim, target), "items": ["x"], "attempt": attempt}
        (forged / f"00000077{i}.json").write_text(json.dumps(claim))
    queue.requeue_instance(job, "instance-0", "instance-0 exited with code 72", 3)
    assert _listing(victim) == before
    assert not list(tmp_path.glob("w.*")) and not (victim / "w.json").exists()


def test_lost_tries_are_never_logged_through_linked_log_folders(tmp_path: Path) -> None:
    job, victim = _job(tmp_path), _victim(tmp_path)
    before = _listing(victim)
    worker = job / layout.RUNNING_DIR / "instance-7.0"
    worker.mkdir()
    os.rename(job / layout.PENDING_DIR / "000000000.json", worker / "000000000.json")  # a real claim
    (job / layout.LOG_SYS_NODE).mkdir(parents=True)
    os.symlink(victim, job / layout.LOG_SYS_NODE / "instance-7")  # the node log folder of its instance
    (job / layout.LOG_ATTEMPTS_DIR).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(victim, job / layout.LOG_ATTEMPTS_DIR)  # the attempts folder
    assert queue.requeue_worker(job, "instance-7.0", "instance-7 exited with code 1", 3) == {"000000000": "requeued"}
    assert _listing(victim) == before
    assert (job / layout.PENDING_DIR / "000000000.json").is_file()  # the try still counts, only its log line is lost
