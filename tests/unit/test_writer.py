"""The worker's writer thread (runtime/writer.py) and what a dead worker's claims become when it held
more than the mini-batch in run() (one claimed ahead, finished ones still waiting for the thread)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from bepbuild_runtime import layout, queue
from bepbuild_runtime.worker import _Pace
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


# -- whether the worker hands its file work to the thread (worker._Pace) ---------------------------------


def simulate(cadence: dict[bool, float], batches: int, run_seconds: float = 0.004,
             file_seconds: float = 0.0003) -> list[bool]:
    """The modes a worker's _Pace picks over `batches` mini-batches whose cadence (one run() start to
    the next) is cadence[mode]: a clock of its own, advanced as a worker's would be."""
    now = [0.0]
    pace = _Pace(clock=lambda: now[0])
    modes = []
    for _ in range(batches):
        mode = pace.overlap()
        modes.append(mode)
        pace.ran(run_seconds)
        pace.filed(file_seconds)
        now[0] += cadence[mode]
    return modes


def test_the_worker_keeps_the_mode_whose_cadence_is_shorter() -> None:
    p = _Pace
    trial_end = p.WARM_UP + 4 * p.BLOCK
    # run() slowed by the thread beside it (torch's threads on every core): inline is faster
    modes = simulate({True: 0.0050, False: 0.0042}, trial_end + 200)
    assert True in modes[p.WARM_UP:trial_end] and False in modes[p.WARM_UP:trial_end]  # both were tried
    assert not any(modes[trial_end + 1:])
    # a run() that waits (a GPU, a remote call): the file work hidden behind it is faster
    modes = simulate({True: 0.0040, False: 0.0046}, trial_end + 200)
    assert all(modes[trial_end + 1:])


def test_the_trial_comes_again_as_the_load_changes() -> None:
    now = [0.0]
    pace = _Pace(clock=lambda: now[0])
    cadence = {True: 0.0050, False: 0.0042}
    modes = []
    for i in range(_Pace.WARM_UP + 4 * _Pace.BLOCK + _Pace.RETRY + 4 * _Pace.BLOCK + 10):
        if i == _Pace.RETRY:
            cadence = {True: 0.0040, False: 0.0046}  # the machine's neighbours went quiet
        mode = pace.overlap()
        modes.append(mode)
        pace.ran(0.004)
        pace.filed(0.0003)
        now[0] += cadence[mode]
    assert not modes[_Pace.RETRY - 1] and all(modes[-5:])


def test_a_run_shorter_than_its_file_work_is_never_overlapped() -> None:
    assert not any(simulate({True: 0.0003, False: 0.0004}, 300, run_seconds=0.0001, file_seconds=0.0003))


def test_an_idle_wait_counts_for_neither_mode() -> None:
    now = [0.0]
    pace = _Pace(clock=lambda: now[0])
    modes = []
    for i in range(_Pace.WARM_UP + 4 * _Pace.BLOCK + 20):
        mode = pace.overlap()
        modes.append(mode)
        pace.ran(0.004)
        pace.filed(0.0003)
        now[0] += 0.0045 if mode else 0.0040
        if not mode and i % 3 == 0:
            pace.idle()  # pending/ empty for a while, the worker sleeping after inline mini-batches
            now[0] += 1.0
    assert not any(modes[-10:])



def test_wait_returns_once_everything_submitted_has_run_and_raises_a_failure() -> None:
    done: list[int] = []
    w = Writer(depth=2)
    for i in range(5):
        w.submit(lambda i=i: (time.sleep(0.01), done.append(i)))
    w.wait()
    assert done == [0, 1, 2, 3, 4]

    def boom() -> None:
        raise OSError(5, "Input/output error")

    w.submit(boom)
    with pytest.raises(OSError, match="Input/output"):
        w.wait()
    with pytest.raises(OSError):
        w.close()
