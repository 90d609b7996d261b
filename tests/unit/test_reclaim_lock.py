"""A worker given up for dead while alive, changing its claims at the moment its folder is taken.

The worker (failing a try, giving claims back) reaches its folder by a descriptor opened before the
take; the taker reaches the same folder under its new name. Both hold the folder's flock while they
change claims, and the worker acts only while the folder is still its own, so exactly one of them
gives each claim back: never two live copies in pending/, never a mini-batch both done and failed.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from bepbuild_runtime import layout, queue, reclaim

W, W2 = "i0.0", "i1.0"


def _job(tmp_path: Path, items: int = 2, size: int = 2) -> Path:
    job = tmp_path / "job"
    queue.write_queue(job, [f"f{i}.txt" for i in range(items)], size)
    return job


def _names(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def _attempt_rows(job: Path) -> list[str]:
    rows = []
    for path in (job / "logs").rglob("*.csv"):
        rows += [line for line in path.read_text().splitlines()[1:] if line.startswith("0000")]
    return rows


def test_a_taker_waits_for_the_workers_failed_try_and_gives_back_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _job(tmp_path)
    batch = queue.Claimer(job, W).claim()
    monkeypatch.setattr(reclaim, "TAKER_WAIT_SECONDS", 30.0)
    real_write = reclaim._write_at
    taker: dict[str, object] = {}

    def take() -> None:
        taker["outcome"] = queue.requeue_worker(job, W, "heartbeat expired", 3)

    thread = threading.Thread(target=take)

    def write_at(*args):  # noqa: ANN002, ANN202 - the worker, in the middle of giving its claim back
        if not thread.is_alive() and "outcome" not in taker:
            thread.start()  # the coordinator takes the folder now ...
            thread.join(0.5)  # ... and, unlocked, would give the same claim back meanwhile
        return real_write(*args)

    monkeypatch.setattr(reclaim, "_write_at", write_at)
    assert queue.fail_attempt(job, W, batch, "ValueError: boom", 3) is True
    thread.join(60)
    assert not thread.is_alive()
    assert taker["outcome"] == {}  # the worker gave it back first: nothing left for the taker
    assert _names(job / layout.PENDING_DIR) == ["000000000.json"]
    again = json.loads((job / layout.PENDING_DIR / "000000000.json").read_text())
    assert (again["attempt"], again["last_error"]) == (1, "ValueError: boom")
    assert os.listdir(job / layout.RUNNING_DIR) == []  # the taken folder was removed
    assert _attempt_rows(job) == []  # the taker logged no lost try


def test_a_worker_whose_folder_was_taken_while_it_waited_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _job(tmp_path)
    batch = queue.Claimer(job, W).claim()
    real_write = reclaim._write_at
    worker: dict[str, object] = {}

    def fail() -> None:
        worker["result"] = queue.fail_attempt(job, W, batch, "ValueError: late", 3)

    thread = threading.Thread(target=fail)

    def write_at(*args):  # noqa: ANN002, ANN202 - the taker, giving the claim back
        if not thread.is_alive() and "result" not in worker:
            thread.start()  # the worker fails its try now, through its own folder's name
            thread.join(0.5)
        return real_write(*args)

    monkeypatch.setattr(reclaim, "_write_at", write_at)
    assert queue.requeue_worker(job, W, "heartbeat expired", 3) == {"000000000": "requeued"}
    thread.join(60)
    assert worker["result"] is None  # not its to count any more
    assert _names(job / layout.PENDING_DIR) == ["000000000.json"]
    again = json.loads((job / layout.PENDING_DIR / "000000000.json").read_text())
    assert (again["attempt"], again["last_error"]) == (1, "heartbeat expired")
    assert not (job / layout.FAILED_DIR / "000000000.json").exists()


def test_a_folder_locked_by_a_stopped_worker_stays_taken_and_is_given_back_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _job(tmp_path)
    queue.Claimer(job, W).claim()
    monkeypatch.setattr(reclaim, "TAKER_WAIT_SECONDS", 0.2)
    held = os.open(job / layout.RUNNING_DIR / W, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(held, fcntl.LOCK_EX)  # a worker stopped (SIGSTOP) in the middle of a change
    try:
        assert queue.requeue_worker(job, W, "heartbeat expired", 3) == {}
        taken = os.listdir(job / layout.RUNNING_DIR)
        assert len(taken) == 1 and taken[0].startswith(layout.TAKEN_PREFIX)
        assert _names(job / layout.RUNNING_DIR / taken[0]) == ["000000000.json"]  # untouched
        assert os.listdir(job / layout.PENDING_DIR) == []
    finally:
        os.close(held)  # it dies: its lock with it
    assert taken[0] in queue.heartbeats(job)  # the coordinator's next sweep finds it ...
    assert queue.requeue_worker(job, taken[0], "heartbeat expired", 3) == {"000000000": "requeued"}  # ... and ends it
    assert _names(job / layout.PENDING_DIR) == ["000000000.json"]
    assert os.listdir(job / layout.RUNNING_DIR) == []


def test_a_claim_it_cannot_write_is_recorded_only_while_still_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """complete()'s path for a claim file it may not write: given up for dead on its last try at that
    moment (failed/ written, its folder made again by the next heartbeat), it records nothing."""
    job = _job(tmp_path)
    batch = queue.Claimer(job, W).claim()
    claim = str(job / layout.RUNNING_DIR / W / "000000000.json")
    real_open = os.open

    def not_owner(path, flags, *a, **kw):  # noqa: ANN001, ANN003
        if str(path) == claim and flags & os.O_WRONLY:
            monkeypatch.setattr(os, "open", real_open)
            assert queue.requeue_worker(job, W, "heartbeat expired", 1) == {"000000000": "failed"}
            queue.touch_heartbeat(job, W)
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(os, "open", not_owner)
    assert queue.complete(job, W, batch, "f0.txt 1\nf1.txt 1\n", 2) is False
    assert os.listdir(job / layout.DONE_DIR) == []
    assert _names(job / layout.FAILED_DIR) == ["000000000.json"]
    counts = queue.counts(job)
    assert (counts.done, counts.failed, counts.items_succeeded, counts.items_failed) == (0, 1, 0, 2)


def test_failing_a_try_after_the_folder_is_gone_writes_nothing_and_raises_nothing(tmp_path: Path) -> None:
    job = _job(tmp_path)
    batch = queue.Claimer(job, W).claim()
    assert queue.requeue_worker(job, W, "heartbeat expired", 3) == {"000000000": "requeued"}
    assert queue.fail_attempt(job, W, batch, "ValueError: late", 3) is None
    queue.touch_heartbeat(job, W)  # its supervisor's next heartbeat makes the folder again
    assert queue.fail_attempt(job, W, batch, "ValueError: late", 3) is None
    again = json.loads((job / layout.PENDING_DIR / "000000000.json").read_text())
    assert again["last_error"] == "heartbeat expired"
    assert os.listdir(job / layout.FAILED_DIR) == []
    w2 = queue.Claimer(job, W2).claim()
    assert w2 is not None and w2["attempt"] == 1


def test_a_child_forked_while_a_folder_is_locked_does_not_keep_its_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scoring code forking (multiprocessing, a data loader) while the writer thread records: the child's
    copy of the locked descriptor is closed, so the lock ends with the change, not with the child."""
    job = _job(tmp_path, 4, 2)
    claimer = queue.Claimer(job, W)
    first, second = claimer.claim(), claimer.claim()
    assert first is not None and second is not None
    monkeypatch.setattr(reclaim, "TAKER_WAIT_SECONDS", 0.2)
    real_write = reclaim._write_at
    child: dict[str, int] = {}

    def write_at(*args):  # noqa: ANN002, ANN202 - a fork while the worker's folder is locked
        if "pid" not in child:
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            child["pid"] = pid
        return real_write(*args)

    monkeypatch.setattr(reclaim, "_write_at", write_at)
    try:
        assert queue.fail_attempt(job, W, first, "ValueError: boom", 3) is True
        monkeypatch.setattr(reclaim, "_write_at", real_write)
        assert queue.fail_attempt(job, W, second, "ValueError: boom", 3) is True  # the child is alive
        third = queue.Claimer(job, W).claim()
        assert third is not None
        assert queue.requeue_worker(job, W, "heartbeat expired", 3) == {third["id"]: "requeued"}
    finally:
        os.kill(child["pid"], signal.SIGKILL)
        os.waitpid(child["pid"], 0)


def test_a_claim_taken_back_right_after_its_rename_is_no_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _job(tmp_path)
    real_line = queue._claim_line
    taker: dict[str, object] = {}

    def claim_line(path, folder):  # noqa: ANN001, ANN202 - the folder is taken between rename and read
        if "outcome" not in taker:
            taker["outcome"] = queue.requeue_worker(job, W, "heartbeat expired", 3)
        return real_line(path, folder)

    monkeypatch.setattr(queue, "_claim_line", claim_line)
    claimer = queue.Claimer(job, W)
    assert claimer.claim() is None  # it was not ours any more: no traceback, nothing held
    assert taker["outcome"] == {"000000000": "requeued"}
    queue.touch_heartbeat(job, W)  # its supervisor's next heartbeat makes its folder again
    again = claimer.claim()
    assert again is not None and again["attempt"] == 1  # the retry, claimed from pending/
    assert os.listdir(job / layout.PENDING_DIR) == []
