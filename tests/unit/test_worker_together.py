"""A worker whose run() is short does its file work a few mini-batches at a time (worker._Held,
_Ahead.take(count), WorkerLogs.together): how many, when they are written, and what a failure leaves."""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

import pytest

from bepbuild_runtime import layout, queue, reports, worker
from bepbuild_runtime.worker import HOLD_SECONDS, MOST_HELD, _Ahead, _Held, _Pace


def paced(run_seconds: float, file_seconds: float, runs: int) -> _Pace:
    pace = _Pace()
    for _ in range(runs):
        pace.ran(run_seconds)
        pace.filed(file_seconds)
    return pace


def test_how_many_at_a_time_follows_the_time_of_run() -> None:
    assert paced(0.001, 0.0001, _Pace.WARM_UP - 1).together() == 1  # nothing timed yet
    assert paced(0.004, 0.0003, 100).together() == int(HOLD_SECONDS / 0.0043)
    assert paced(0.00001, 0.0001, 100).together() == MOST_HELD
    assert paced(HOLD_SECONDS, 0.0003, 100).together() == 1  # a long run(): each recorded at once
    assert paced(2.0, 0.0003, 100).together() == 1


def test_held_calls_run_in_order_when_due_and_their_log_lines_go_out_in_one_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logs = reports.WorkerLogs(str(tmp_path), "i0.0")
    held = _Held(logs)
    assert not held.due(1)
    for i in range(3):
        held.add(functools.partial(logs.attempt, start=0.0, elapsed=0.1), {"id": f"{i:09d}", "items": [f"f{i}"]},
                 layout.STATUS_DONE)
    assert not held.due(4) and held.due(3)
    writes: list[int] = []
    real_write = os.write
    monkeypatch.setattr(reports.os, "write", lambda fd, data: writes.append(fd) or real_write(fd, data))
    held.flush()
    assert len(writes) == 2  # one per file for three mini-batches
    node = (tmp_path / layout.LOG_SYS_NODE / "i0" / "i0.0.txt").read_text().splitlines()
    assert [line.split(" mini-batch ")[1].split()[0] for line in node] == ["000000000", "000000001", "000000002"]
    rows = (tmp_path / layout.LOG_ATTEMPTS_DIR / "i0.0.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[3].startswith("000000002,")
    held.flush()  # nothing held: nothing written
    assert len(writes) == 2
    logs.close()


def test_calls_are_due_once_held_long_enough(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    now = [100.0]
    monkeypatch.setattr(worker.time, "perf_counter", lambda: now[0])
    held = _Held(reports.WorkerLogs(str(tmp_path), "i0.0"))
    held.add(print, "x")
    now[0] += HOLD_SECONDS / 2
    assert not held.due(MOST_HELD)
    now[0] += HOLD_SECONDS / 2
    assert held.due(MOST_HELD)


def test_a_failing_call_stops_the_flush_and_the_lines_before_it_are_still_written(tmp_path: Path) -> None:
    logs = reports.WorkerLogs(str(tmp_path), "i0.0")
    held = _Held(logs)
    ran: list[int] = []

    def boom() -> None:
        raise OSError(28, "No space left on device")

    held.add(logs.note, "first")
    held.add(boom)
    held.add(ran.append, 3)
    with pytest.raises(OSError, match="No space"):
        held.flush()
    assert ran == []  # nothing after the failure: its claim goes back untouched
    assert "first" in (tmp_path / layout.LOG_SYS_NODE / "i0" / "i0.0.txt").read_text()
    held.flush()  # the failed flush dropped what it held
    assert ran == []
    logs.close()


def test_claims_taken_together_come_out_in_order_and_go_back_untouched(tmp_path: Path) -> None:
    job = tmp_path / "job"
    queue.write_queue(job, [f"f{i}" for i in range(10)], 1)
    ahead = _Ahead(queue.Claimer(job, "i.0"), None, _Pace())
    first = ahead.take(4)
    assert first is not None
    held_ids = sorted(p.name for p in Path(queue.worker_dir(job, "i.0")).glob("*.json"))
    assert len(held_ids) == 4  # one given, three claimed ahead
    second = ahead.take(4)  # from those claimed ahead: no new claim
    assert second is not None and second["id"] != first["id"]
    assert len(list(Path(queue.worker_dir(job, "i.0")).glob("*.json"))) == 4
    for batch in (first, second):
        queue.complete(job, "i.0", batch, None, 0)
    queue.release_claims(job, "i.0")  # the worker stops: the two never started go back untouched
    assert len(os.listdir(job / layout.PENDING_DIR)) == 8
    assert not list(Path(queue.worker_dir(job, "i.0")).glob("*.json"))
    again = _Ahead(queue.Claimer(job, "i.1"), None, _Pace())  # the next worker takes them all, in turn
    ids = [b["id"] for b in iter(lambda: again.take(100), None)]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 8 and {first["id"], second["id"]}.isdisjoint(ids)


def test_at_the_end_of_the_queue_take_returns_what_there_is_then_none(tmp_path: Path) -> None:
    job = tmp_path / "job"
    queue.write_queue(job, ["a", "b", "c"], 1)
    ahead = _Ahead(queue.Claimer(job, "i.0"), None, _Pace())
    got = [ahead.take(8) for _ in range(4)]
    assert [b is not None for b in got] == [True, True, True, False]
    assert sorted(b["items"][0] for b in got if b) == ["a", "b", "c"]


def test_lines_another_thread_logs_meanwhile_are_written_at_once(tmp_path: Path) -> None:
    # The writer thread may still be recording earlier mini-batches while the worker records held
    # ones: its lines must neither wait for nor be lost with the worker's.
    logs = reports.WorkerLogs(str(tmp_path), "i0.0")
    node = tmp_path / layout.LOG_SYS_NODE / "i0" / "i0.0.txt"
    with logs.together():
        logs.note("held")
        thread = threading.Thread(target=logs.note, args=("from the thread",))
        thread.start()
        thread.join()
        assert "from the thread" in node.read_text() and "held" not in node.read_text()
    assert node.read_text().splitlines()[1].endswith("held")
    logs.close()


@pytest.mark.parametrize(("value", "expected"), [("0", 0.0), ("0.2", 0.2), ("-3", 0.0), ("inf", 1.0),
                                                 ("nan", HOLD_SECONDS), ("x", HOLD_SECONDS), (None, HOLD_SECONDS)])
def test_the_hold_is_a_setting_within_bounds(monkeypatch: pytest.MonkeyPatch, value: str | None,
                                             expected: float) -> None:
    if value is None:
        monkeypatch.delenv(layout.ENV_HOLD_SECONDS, raising=False)
    else:
        monkeypatch.setenv(layout.ENV_HOLD_SECONDS, value)
    assert worker.hold_seconds() == expected


def test_no_hold_is_one_mini_batch_at_a_time(tmp_path: Path) -> None:
    pace = _Pace(hold=0.0)
    for _ in range(100):
        pace.ran(0.00001)
    assert pace.together() == 1
    held = _Held(reports.WorkerLogs(str(tmp_path), "i0.0"), 0.0)
    held.add(print, "x")
    assert held.due(pace.together())
