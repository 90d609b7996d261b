"""A worker whose run() is short does its file work a few mini-batches at a time (worker._Held,
_Ahead.take(count)): how many, when they are written, and what a failure leaves."""

from __future__ import annotations

import os
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


def test_held_calls_run_in_order_when_due() -> None:
    held = _Held()
    ran: list[int] = []
    assert not held.due(1)
    for i in range(3):
        held.add(ran.append, i)
    assert ran == [] and not held.due(4) and held.due(3)
    held.flush()
    assert ran == [0, 1, 2]
    held.flush()  # nothing held: nothing runs
    assert ran == [0, 1, 2] and not held.due(1)


def test_calls_are_due_once_held_long_enough(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    now = [100.0]
    monkeypatch.setattr(worker.time, "perf_counter", lambda: now[0])
    held = _Held()
    held.add(print, "x")
    now[0] += HOLD_SECONDS / 2
    assert not held.due(MOST_HELD)
    now[0] += HOLD_SECONDS / 2
    assert held.due(MOST_HELD)


def test_a_failing_call_stops_the_flush_and_the_lines_before_it_are_still_written(tmp_path: Path) -> None:
    logs = reports.WorkerLogs(str(tmp_path), "i0.0")
    held = _Held()
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
    held = _Held(0.0)
    held.add(print, "x")
    assert held.due(pace.together())
