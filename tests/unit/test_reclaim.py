"""Giving claims back follows no link below the job folder and takes no name from a claim's content.

The host (perhaps root) gives back the claims of instances that stopped or died, in `queue/`, which
scoring containers may write whole: a queue folder replaced by a link, a file or FIFO planted as a
claim, a claim naming another id, a folder name that is not a worker's. Nothing outside the job
folder may change, the host never blocks or crashes, and what is ignored is noted in the node log.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from bepbuild_runtime import layout, queue


def _job(tmp_path: Path) -> Path:
    job = tmp_path / "job"
    job.mkdir()
    (job / layout.JOB_FILE).write_text(json.dumps({"settings": {"max_retries": 3}}))
    queue.write_queue(job, ["a.txt", "b.txt", "c.txt"], 1)
    return job


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "host-folder"
    victim.mkdir()
    (victim / "000000000.json").write_text(json.dumps({"id": "000000000", "items": ["secret"], "attempt": 0}))
    (victim / "000000001.csv").write_text("keep")
    (victim / ".tmp.x").write_text("keep")
    return victim


def _listing(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def _claim(job: Path, worker: str, bid: str) -> Path:
    folder = job / layout.RUNNING_DIR / worker
    folder.mkdir(exist_ok=True)
    os.rename(job / layout.PENDING_DIR / f"{bid}.json", folder / f"{bid}.json")
    return folder


@pytest.mark.parametrize("replaced", [layout.RUNNING_DIR, layout.PENDING_DIR, layout.DONE_DIR, layout.FAILED_DIR])
def test_a_queue_folder_replaced_by_a_link_is_never_followed(tmp_path: Path, replaced: str) -> None:
    job, victim = _job(tmp_path), _victim(tmp_path)
    before = _listing(victim)
    if replaced != layout.RUNNING_DIR:
        for i in range(3):
            _claim(job, f"instance-{i}.0", f"00000000{i}")
    aside = job / "queue" / "aside"
    os.rename(job / replaced, aside)  # what a container that owns queue/ can do
    os.symlink(victim, job / replaced)
    queue.requeue_instance(job, "instance-0", "instance-0 exited with code 1", 1)  # out of tries: failed/
    queue.requeue_instance(job, "instance-1", "instance-1 exited with code 1", 3)  # back to pending/
    queue.release_instance(job)  # untouched, back to pending/
    assert _listing(victim) == before
    assert (job / replaced).is_dir() and not (job / replaced).is_symlink()


def test_a_claim_whose_id_is_not_its_name_is_ignored_and_noted(tmp_path: Path) -> None:
    job = _job(tmp_path)
    folder = _claim(job, "instance-0.0", "000000000")
    # A valid id, but another one than the file's: moving or failing it would touch another batch.
    (folder / "000000002.json").write_text(json.dumps({"id": "000000001", "items": ["x"], "attempt": 0}))
    (folder / "000000003.json").write_text("not json")
    (folder / "000000004.json").write_text(json.dumps({"id": "000000004", "items": "x", "attempt": 0}))
    os.symlink(job / layout.JOB_FILE, folder / "000000005.json")
    assert queue.claims(job, "instance-0.0") == [{"id": "000000000", "items": ["a.txt"], "attempt": 0}]
    assert queue.requeue_worker(job, "instance-0.0", "lost", 3) == {"000000000": "requeued"}
    assert sorted(os.listdir(job / layout.PENDING_DIR)) == ["000000000.json", "000000001.json", "000000002.json"]
    assert json.loads((job / layout.PENDING_DIR / "000000001.json").read_text())["items"] == ["b.txt"]
    log = (job / layout.LOG_SYS_NODE / "instance-0" / "instance-0.0.txt").read_text()
    assert "ignored 4 file(s)" in log and "000000002.json" in log
    assert not (job / layout.RUNNING_DIR).joinpath("instance-0.0").exists()


def test_release_gives_back_only_valid_claims(tmp_path: Path) -> None:
    job = _job(tmp_path)
    folder = _claim(job, "instance-0.0", "000000000")
    (folder / "12.json").write_text(json.dumps({"id": "12", "items": ["x"], "attempt": 0}))  # not an id we make
    assert queue.release_worker(job, "instance-0.0") == ["000000000"]
    assert sorted(os.listdir(job / layout.PENDING_DIR)) == ["000000000.json", "000000001.json", "000000002.json"]


def test_a_fifo_planted_as_a_claim_never_blocks_the_host(tmp_path: Path) -> None:
    job = _job(tmp_path)
    folder = _claim(job, "instance-0.0", "000000000")
    os.mkfifo(folder / "000000009.json")
    done: list[dict[str, str]] = []
    t = threading.Thread(target=lambda: done.append(queue.requeue_worker(job, "instance-0.0", "lost", 3)),
                         daemon=True)
    t.start()
    t.join(10)
    assert done == [{"000000000": "requeued"}]


@pytest.mark.parametrize("name", ["...", "..0", ".hidden.0", "instance-0", "instance-0.x"])
def test_a_folder_that_is_no_workers_is_left_alone(tmp_path: Path, name: str) -> None:
    job = _job(tmp_path)
    odd = job / layout.RUNNING_DIR / name
    odd.mkdir()
    (odd / "000000000.json").write_text(json.dumps({"id": "000000000", "items": ["x"], "attempt": 0}))
    queue.release_instance(job)
    assert queue.requeue_worker(job, name, "lost", 3) == {}
    assert (odd / "000000000.json").exists()


def test_a_worker_folder_that_is_a_file_is_removed(tmp_path: Path) -> None:
    job = _job(tmp_path)
    (job / layout.RUNNING_DIR / "instance-0.0").write_text("{}")
    assert queue.requeue_instance(job, "instance-0", "lost", 3) == {}
    assert os.listdir(job / layout.RUNNING_DIR) == []
