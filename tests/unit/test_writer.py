"""The worker's writer thread (runtime/writer.py) and what a dead worker's claims become when it held
more than the mini-batch in run() (one claimed ahead, finished ones still waiting for the thread)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from bepbuild_runtime import layout, queue
from bepbuild_runtime.writer import Writer


def test_calls_run_in_order_and_close_waits_for_all_of_them() -> None:
    done: list[int] = []
    w = Writer(depth=2)
    for i in range(50):
        w.submit(lambda i=i: (time.sleep(0.001) if i % 10 == 0 else None, done.append(i)))
    w.close()
    assert done == list(range(50))


def test_a_failure_is_raised_at_the_next_hand_off_and_at_close_and_nothing_runs_after_it() -> None:
    ran: list[str] = []
    w = Writer(depth=1)

    def boom() -> None:
        raise OSError(28, "No space left on device")

    w.submit(boom)
    with pytest.raises(OSError, match="No space"):
        for i in range(1000):  # the queue holds one call: the thread's failure stops the hand-offs
            w.submit(ran.append, str(i))
    with pytest.raises(OSError, match="No space"):
        w.close()
    assert ran == []


def test_a_full_queue_makes_the_worker_wait_and_abort_drops_what_waits() -> None:
    gate = threading.Event()
    ran: list[int] = []
    w = Writer(depth=2)
    w.submit(gate.wait)
    w.submit(ran.append, 1)
    w.submit(ran.append, 2)
    blocked = threading.Thread(target=w.submit, args=(ran.append, 3))
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive()  # at most `depth` calls wait: the worker waits for room
    aborter = threading.Thread(target=w.abort)
    aborter.start()
    time.sleep(0.05)
    gate.set()
    aborter.join(5)
    blocked.join(5)
    assert not aborter.is_alive() and ran == []  # nothing after the call in progress


def test_a_dead_worker_pays_a_try_only_for_the_mini_batch_in_run(tmp_path: Path) -> None:
    job = tmp_path / "job"
    queue.write_queue(job, [f"f{i}" for i in range(4)], 1)
    (job / layout.JOB_FILE).write_text(json.dumps({"settings": {"max_retries": 1}}))
    claimer = queue.Claimer(job, "i.0")
    finished, in_run, ahead, recorded = (claimer.claim() for _ in range(4))
    assert finished and in_run and ahead and recorded
    queue.complete(job, "i.0", recorded, "f3 row\n", 1)
    Path(queue.worker_dir(job, "i.0"), f"{recorded['id']}.json").write_text(json.dumps(recorded))  # not yet dropped
    assert queue.release_unstarted(job, "i.0", in_run["id"]) == [finished["id"], ahead["id"]]
    assert queue.requeue_worker(job, "i.0", "worker died") == {in_run["id"]: "failed"}  # max_retries 1
    for batch in (finished, ahead):
        assert json.loads((job / layout.PENDING_DIR / f"{batch['id']}.json").read_text()) == batch  # untouched
    assert not (job / layout.PENDING_DIR / f"{recorded['id']}.json").exists()
