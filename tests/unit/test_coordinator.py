"""The job's coordinator (bepbuild_runtime.coordinator): its lease, dead workers' claims, the threshold,
the final merge and outcome, on a real job folder (the real-process paths are in test_runtime.py,
test_jobs_process.py and test_faults_process.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from bepbuild_runtime import coordinator, layout, queue
from bepbuild_runtime.progress import merge_tmp
from bepbuild_runtime.settings import Settings


def _job(tmp_path: Path, n: int, **settings: object) -> Path:
    job = tmp_path / "job"
    job.mkdir()
    (job / layout.JOB_FILE).write_text(json.dumps({"settings": {"max_retries": 3, **settings}, "run": 1}))
    queue.write_queue(job, [f"f{i:03d}" for i in range(n)], 1)
    return job


def _finish(job: Path, worker: str, rows: bool = True) -> None:
    claimer = queue.Claimer(job, worker)
    while (batch := claimer.claim()) is not None:
        queue.complete(job, worker, batch, f"{batch['items'][0]} row\n" if rows else None, 1 if rows else 0)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self, step: float = 0.0) -> float:
        self.t += step
        return self.t


# -- the lease ----------------------------------------------------------------------------------------


def test_one_candidate_takes_the_first_term_and_another_waits_until_it_goes_quiet(tmp_path: Path) -> None:
    job = _job(tmp_path, 1)
    a, b = coordinator.Lease(str(job), "instance-0", 1), coordinator.Lease(str(job), "instance-1", 1)
    now = Clock()
    assert a.tick(now()) and not b.tick(now())
    assert a.held() and a.term == 1
    # a renews it (its mtime changes): b never takes it, however long it watches
    for _ in range(30):
        os.utime(job / layout.lease_file(1), ns=(time.time_ns(), time.time_ns()))
        assert not b.tick(now(1.0))
    # a stops renewing: after LEASE_SECONDS of b's own watching, b takes term 2 and a steps down
    for _ in range(int(layout.LEASE_SECONDS) - 1):
        assert not b.tick(now(1.0))
    assert b.tick(now(1.0)) and b.term == 2
    assert not a.held() and not a.tick(now())
    assert sorted(p.name for p in (job / layout.STATE_DIR).iterdir()) == [Path(layout.lease_file(2)).name]
    assert json.loads((job / layout.lease_file(2)).read_text())["holder"] == "instance-1"


def test_a_paused_observer_does_not_count_its_pause(tmp_path: Path) -> None:
    """A machine that slept: on waking nobody renewed anything, but nobody could either."""
    job = _job(tmp_path, 1)
    a, b = coordinator.Lease(str(job), "instance-0", 1), coordinator.Lease(str(job), "instance-1", 1)
    now = Clock()
    assert a.tick(now())
    assert not b.tick(now())
    assert not b.tick(now(3600))  # one look an hour later: the hour is not counted
    assert not b.tick(now(1.0))


def test_a_lease_of_an_earlier_run_or_of_our_own_earlier_life_is_taken_at_once(tmp_path: Path) -> None:
    job = _job(tmp_path, 1)
    now = Clock()
    assert coordinator.Lease(str(job), "instance-0", 1).tick(now())
    assert coordinator.Lease(str(job), "instance-0", 1).tick(now())  # a new life of instance-0: term 2
    assert not coordinator.Lease(str(job), "instance-1", 1).tick(now())  # another instance waits
    assert coordinator.Lease(str(job), "instance-1", 2).tick(now())  # a resumed run (run 2): at once
    assert json.loads((job / layout.lease_file(3)).read_text())["run"] == 2


def test_two_candidates_never_hold_one_term(tmp_path: Path) -> None:
    job = _job(tmp_path, 1)
    now = Clock()
    holder = coordinator.Lease(str(job), "instance-0", 1)
    assert holder.tick(now())
    rivals = [coordinator.Lease(str(job), f"instance-{i}", 1) for i in range(1, 6)]
    for lease in rivals:
        lease.tick(now())
    for _ in range(int(layout.LEASE_SECONDS) + 1):
        now(1.0)
        for lease in rivals:
            lease.tick(now())
    assert sum(lease.held() for lease in [holder, *rivals]) == 1
    assert not holder.held()


# -- dead workers, the threshold, the merge ------------------------------------------------------------


def test_the_holder_gives_back_the_claims_of_a_worker_whose_heartbeat_stopped(tmp_path: Path) -> None:
    job = _job(tmp_path, 3)
    dead, mine = queue.Claimer(job, "instance-1.0"), queue.Claimer(job, "instance-0.0")
    lost, kept = dead.claim(), mine.claim()
    queue.touch_heartbeat(job, "instance-1.0")
    coord = coordinator.Coordinator(str(job), "instance-0", Settings(max_retries=3), str(tmp_path / "out"), 1)
    now = Clock()
    coord.step(now(), {"instance-0.0"})
    steps = int(layout.HEARTBEAT_EXPIRY_SECONDS / coordinator.STEP_SECONDS)
    for _ in range(steps - 1):
        coord.step(now(coordinator.STEP_SECONDS), {"instance-0.0"})
    assert (job / layout.RUNNING_DIR / "instance-1.0").is_dir()  # not yet: 30 s of watching
    coord.step(now(coordinator.STEP_SECONDS), {"instance-0.0"})
    coord.step(now(coordinator.STEP_SECONDS), {"instance-0.0"})
    assert not (job / layout.RUNNING_DIR / "instance-1.0").exists()
    back = json.loads((job / layout.PENDING_DIR / f"{lost['id']}.json").read_text())
    assert back["attempt"] == 1 and back["last_status"] == layout.STATUS_LOST
    assert "heartbeat of instance-1.0 expired" in back["last_error"]
    assert (job / layout.RUNNING_DIR / "instance-0.0" / f"{kept['id']}.json").exists()  # ours: alive


def test_a_dead_workers_claims_are_given_back_once_however_many_find_it(tmp_path: Path) -> None:
    """The host that saw the instance exit, its new life and the coordinator may all find one dead worker:
    the folder is taken by rename first, so one of them gives its claims back and the others find nothing."""
    job = _job(tmp_path, 3)
    batch = queue.Claimer(job, "instance-1.0").claim()
    first = queue.requeue_worker(job, "instance-1.0", "exited", 3)
    assert first == {batch["id"]: "requeued"}
    assert queue.requeue_worker(job, "instance-1.0", "heartbeat expired", 3) == {}
    assert queue.release_worker(job, "instance-1.0") == []
    assert json.loads((job / layout.PENDING_DIR / f"{batch['id']}.json").read_text())["attempt"] == 1
    # a taker that died half way leaves its folder taken: whoever finds it takes it again
    again = queue.Claimer(job, "instance-2.0").claim()
    taken = queue.take_worker(job, "instance-2.0")
    assert taken and Path(taken).name.startswith(layout.TAKEN_PREFIX)
    assert queue.requeue_worker(job, Path(taken).name, "its taker died", 3) == {again["id"]: "requeued"}
    assert not any((job / layout.RUNNING_DIR).iterdir())


def test_the_holder_fails_the_job_above_the_error_threshold(tmp_path: Path) -> None:
    job = _job(tmp_path, 4)
    claimer = queue.Claimer(job, "instance-0.0")
    for _ in range(2):
        batch = claimer.claim()
        queue.fail_attempt(job, "instance-0.0", batch, "ValueError: bad", 1)
    settings = Settings(error_threshold=1)
    coord = coordinator.Coordinator(str(job), "instance-0", settings, str(tmp_path / "out"), 1)
    coord.step(Clock()())
    outcome = coordinator.read_outcome(job)
    assert outcome and outcome["status"] == "Failed"
    assert outcome["error"] == "Exceeded error threshold: 2 failed items > 1."


def test_finalize_merges_once_and_writes_the_outcome(tmp_path: Path) -> None:
    job = _job(tmp_path, 5)
    _finish(job, "instance-0.0")
    out = tmp_path / "out"
    a = coordinator.Coordinator(str(job), "instance-0", Settings(), str(out), 1)
    b = coordinator.Coordinator(str(job), "instance-1", Settings(), str(out), 1)
    now = Clock()
    first = a.finalize(now())  # the first to look takes the first term, merges, decides
    assert first and first["status"] == "Completed" and first["error"] is None
    assert b.finalize(now()) == first == coordinator.read_outcome(job)  # the other finds it decided
    assert (out / "predictions.csv").read_text() == "".join(f"f{i:03d} row\n" for i in range(5))
    assert [p.name for p in out.iterdir()] == ["predictions.csv"]  # no temp file left


def test_finalize_without_rows_fails_as_azure_says(tmp_path: Path) -> None:
    job = _job(tmp_path, 2)
    _finish(job, "instance-0.0", rows=False)
    outcome = coordinator.finalize_drained(str(job), Settings(), str(tmp_path / "out"), 1, "host")
    assert outcome and outcome["status"] == "Failed" and outcome["error"] == coordinator.NO_RESULT


def test_a_coordinator_that_died_merging_is_finished_by_the_next_one(tmp_path: Path) -> None:
    """Its temp file is removed; an output it already published is kept when it is byte for byte the
    merge, and anything else at that name fails the job instead of being overwritten."""
    job = _job(tmp_path, 4)
    _finish(job, "instance-0.0")
    out = tmp_path / "out"
    out.mkdir()
    expected = "".join(f"f{i:03d} row\n" for i in range(4))
    for content, status in ((expected, "Completed"), ("someone else's\n", "Failed")):
        for p in out.iterdir():
            p.unlink()
        (job / layout.OUTCOME_FILE).unlink(missing_ok=True)
        (out / "predictions.csv").write_text(content)
        tmp = out / f".predictions.csv{layout.MERGE_TMP_INFIX}deadbeef"
        tmp.write_text(expected[:7])
        (job / layout.STATE_DIR).mkdir(exist_ok=True)
        (job / layout.MERGING_FILE).write_text(json.dumps({"token": "deadbeef", "holder": "instance-1"}))
        outcome = coordinator.finalize_drained(str(job), Settings(), str(out), 1, "instance-0")
        assert outcome and outcome["status"] == status, outcome
        assert not tmp.exists()
        assert (out / "predictions.csv").read_text() == content
    assert "output file exists" in outcome["error"]


def test_the_merge_temp_file_is_named_by_its_coordinator(tmp_path: Path) -> None:
    out = tmp_path / "o.csv"
    assert merge_tmp(out, "tok") == str(tmp_path / f".o.csv{layout.MERGE_TMP_INFIX}tok")


def test_a_job_that_drains_before_the_holder_looked_still_fails_above_the_threshold(tmp_path: Path) -> None:
    """The last mini-batches may fail between two looks: the end itself is checked against the threshold."""
    job = _job(tmp_path, 3)
    claimer = queue.Claimer(job, "instance-0.0")
    batch = claimer.claim()
    queue.fail_attempt(job, "instance-0.0", batch, "ValueError: bad", 1)
    _finish(job, "instance-0.0")
    outcome = coordinator.finalize_drained(str(job), Settings(error_threshold=0), str(tmp_path / "out"), 1, "host")
    assert outcome and outcome["status"] == "Failed" and outcome["error"].startswith("Exceeded error threshold")
    assert not (tmp_path / "out" / "predictions.csv").exists()
