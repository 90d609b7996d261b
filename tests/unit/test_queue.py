"""The queue protocol over a real job folder (bepbuild_runtime.queue)."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from bepbuild_runtime import layout, queue, record


def _job(tmp_path: Path, n_items: int, size: int, max_retries: int = 3) -> Path:
    job = tmp_path / "job"
    job.mkdir()
    (job / layout.JOB_FILE).write_text(json.dumps({"settings": {"max_retries": max_retries}}))
    queue.write_queue(job, (f"f{i:05d}.png" for i in range(n_items)), size)
    return job


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_write_queue_cuts_items_into_id_ordered_batches(tmp_path: Path) -> None:
    job = _job(tmp_path, 25, 10)
    pending = job / layout.PENDING_DIR
    assert _names(pending) == ["000000000.json", "000000001.json", "000000002.json"]
    batches = [json.loads((pending / n).read_text()) for n in _names(pending)]
    assert [len(b["items"]) for b in batches] == [10, 10, 5]
    assert batches[2] == {"id": "000000002", "items": [f"f{i:05d}.png" for i in range(20, 25)], "attempt": 0}
    assert queue.total_count(job) == 3
    assert not (job / layout.QUEUE_STAGING_DIR).exists()
    with pytest.raises(FileExistsError):
        queue.write_queue(job, ["again.png"], 1)


def test_write_queue_empty_and_odd_names(tmp_path: Path) -> None:
    job = tmp_path / "job"
    assert queue.write_queue(job, iter(()), 3) == 0
    assert queue.total_count(job) == 0
    assert queue.is_drained(job)
    odd = tmp_path / "odd"
    weird = "caf\u00e9 \udcff.png"  # a space, non-ASCII and an undecodable byte (surrogateescape)
    queue.write_queue(odd, [weird], 1)
    batch = queue.Claimer(odd, "i.0").claim()
    assert batch is not None and batch["items"] == [weird]


def test_write_queue_is_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    n = queue.write_queue(tmp_path / "job", (f"dir/file-{i}.png" for i in range(200_000)), 10)
    elapsed = time.perf_counter() - start
    assert n == 20_000
    assert elapsed < 8, f"write_queue took {elapsed:.2f}s for 20k mini-batches"


def test_claimer_claims_in_order_and_lists_pending_only_when_exhausted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = _job(tmp_path, 5, 1)
    claimer = queue.Claimer(job, "inst.0")
    listings = []
    real = os.listdir
    pending = str(job / layout.PENDING_DIR)
    monkeypatch.setattr(queue.os, "listdir", lambda p=".": listings.append(p) or real(p))
    got = [claimer.claim()["id"] for _ in range(5)]
    assert got == [layout.mini_batch_id(i) for i in range(5)]
    assert listings == [pending]
    assert claimer.claim() is None
    assert listings == [pending, pending]
    assert _names(job / layout.RUNNING_DIR / "inst.0") == [f"{g}.json" for g in got]


def test_claimer_skips_batches_taken_by_someone_else(tmp_path: Path) -> None:
    job = _job(tmp_path, 3, 1)
    a, b = queue.Claimer(job, "a.0"), queue.Claimer(job, "b.0")
    assert a.claim()["id"] == "000000000"  # a caches the listing of 3
    assert b.claim()["id"] == "000000001"  # b lists 1 and 2, takes 1
    assert a.claim()["id"] == "000000002"  # a loses 1 to b and moves on
    assert a.lost_races == 1
    assert a.claim() is None and b.claim() is None


def test_requeued_batch_is_found_after_the_cached_listing_is_exhausted(tmp_path: Path) -> None:
    job = _job(tmp_path, 2, 1)
    c = queue.Claimer(job, "i.0")
    first = c.claim()
    assert queue.fail_attempt(job, "i.0", first, "boom", max_retries=3) is True
    assert c.claim()["id"] == "000000001"
    again = c.claim()
    assert again["id"] == "000000000" and again["attempt"] == 1 and again["last_error"] == "boom"


def test_complete_writes_the_done_record_with_its_rows_then_drops_claim(tmp_path: Path) -> None:
    job = _job(tmp_path, 3, 3)
    batch = queue.Claimer(job, "i.0").claim()
    queue.complete(job, "i.0", batch, "a 1\nb 2\n", 2, {"elapsed": 0.5})
    done = record.read(str(job / layout.DONE_DIR / "000000000.json"))
    assert (done["total"], done["succeeded"], done["failed"], done["elapsed"]) == (3, 2, 1, 0.5)
    assert done["items"] == batch["items"] and done["status"] == layout.STATUS_DONE
    assert _names(job / layout.RUNNING_DIR / "i.0") == []
    assert not [p for p in (job / layout.RUNNING_DIR / "i.0").iterdir() if p.name.startswith(".tmp")]
    assert queue.merge_results(job, tmp_path / "out.csv") == 1
    assert (tmp_path / "out.csv").read_text() == "a 1\nb 2\n"


def test_retry_without_rows_merges_no_rows_of_a_crashed_earlier_try(tmp_path: Path) -> None:
    job = _job(tmp_path, 2, 2)
    batch = queue.Claimer(job, "dead.0").claim()
    # The first try grew its claim with its rows, then died before the rename into done/.
    claim = job / layout.RUNNING_DIR / "dead.0" / "000000000.json"
    with open(claim, "ab") as f:
        f.write(record.tail({"status": "done", "worker": "dead.0", "total": 2, "succeeded": 1, "failed": 1},
                            b"stale row\n"))
    assert queue.requeue_worker(job, "dead.0", "lost") == {"000000000": "requeued"}
    retry = queue.Claimer(job, "live.0").claim()
    assert retry["attempt"] == 1
    queue.complete(job, "live.0", retry, None, 0)
    assert queue.merge_results(job, tmp_path / "out.csv") == 0
    assert (tmp_path / "out.csv").read_text() == ""
    del batch


def test_fail_attempt_retries_max_retries_tries_then_fails(tmp_path: Path) -> None:
    job = _job(tmp_path, 2, 2)
    c = queue.Claimer(job, "i.0")
    outcomes = []
    for _ in range(3):
        batch = c.claim()
        outcomes.append(queue.fail_attempt(job, "i.0", batch, f"try {batch['attempt']}", max_retries=3))
    assert outcomes == [True, True, False]
    assert c.claim() is None
    failed = json.loads((job / layout.FAILED_DIR / "000000000.json").read_text())
    assert (failed["attempt"], failed["error"], failed["failed"], failed["succeeded"]) == (3, "try 2", 2, 0)
    assert failed["status"] == layout.STATUS_EXCEPTION
    counts = queue.counts(job)
    assert (counts.failed, counts.items_failed, counts.pending, counts.running) == (1, 2, 0, 0)


def test_requeue_worker_gives_back_claims_skips_done_and_removes_folder(tmp_path: Path) -> None:
    job = _job(tmp_path, 3, 1, max_retries=2)
    c = queue.Claimer(job, "gone.1")
    b0, b1, b2 = c.claim(), c.claim(), c.claim()
    # b0 finished but the worker died before dropping the claim: done file and claim both exist.
    queue.complete(job, "gone.1", b0, "row\n", 1)
    (job / layout.RUNNING_DIR / "gone.1" / "000000000.json").write_text(json.dumps(b0))
    b2["attempt"] = 1  # b2 is on its last try (max_retries=2)
    (job / layout.RUNNING_DIR / "gone.1" / "000000002.json").write_text(json.dumps(b2))
    out = queue.requeue_worker(job, str(job / layout.RUNNING_DIR / "gone.1"), "instance lost", max_retries=2)
    assert out == {"000000000": "done", "000000001": "requeued", "000000002": "failed"}
    assert not (job / layout.RUNNING_DIR / "gone.1").exists()
    assert _names(job / layout.PENDING_DIR) == ["000000001.json"]
    assert json.loads((job / layout.PENDING_DIR / "000000001.json").read_text())["attempt"] == 1
    assert json.loads((job / layout.FAILED_DIR / "000000002.json").read_text())["error"] == "instance lost"
    with open(job / layout.LOG_ATTEMPTS_DIR / "gone.1.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["Mini-batch Id"], r["Status"]) for r in rows] == [
        ("000000001", layout.STATUS_LOST), ("000000002", layout.STATUS_LOST)]
    assert queue.requeue_worker(job, "gone.1", "again", max_retries=2) == {}
    del b1


def test_requeue_reads_max_retries_from_job_json(tmp_path: Path) -> None:
    job = _job(tmp_path, 1, 1, max_retries=1)
    queue.Claimer(job, "x.0").claim()
    assert queue.requeue_worker(job, "x.0", "lost") == {"000000000": "failed"}


def test_claimer_drops_a_retried_batch_that_is_already_done(tmp_path: Path) -> None:
    job = _job(tmp_path, 1, 1)
    batch = queue.Claimer(job, "a.0").claim()
    queue.complete(job, "a.0", batch, "row\n", 1)
    # a retry of it left in pending/ (as an older runtime could leave one): never run again
    (job / layout.PENDING_DIR / "000000000.json").write_text(json.dumps({**batch, "attempt": 1}))
    assert queue.Claimer(job, "other.0").claim() is None
    assert _names(job / layout.RUNNING_DIR / "other.0") == []
    assert queue.is_drained(job)


def test_a_worker_given_up_for_dead_claims_its_requeued_batch_back_to_record_it(tmp_path: Path) -> None:
    job = _job(tmp_path, 2, 1)
    slow = queue.Claimer(job, "slow.0")
    batch = slow.claim()
    # slow.0's heartbeat expired: its folder was taken and its claim requeued; then it finished anyway
    assert queue.requeue_worker(job, "slow.0", "stale heartbeat") == {"000000000": "requeued"}
    assert queue.complete(job, "slow.0", batch, "a\n", 1)
    assert _names(job / layout.DONE_DIR) == ["000000000.json"]
    assert _names(job / layout.RUNNING_DIR / "slow.0") == []
    other = queue.Claimer(job, "other.0")
    assert other.claim()["id"] == "000000001"  # the retry is not run again: it was claimed back
    assert other.claim() is None


@pytest.mark.parametrize("max_retries", [1, 3])
def test_a_worker_given_up_for_dead_records_nothing_it_no_longer_holds(tmp_path: Path, max_retries: int) -> None:
    """Its last try failed meanwhile (max_retries 1), or another worker claimed the retry (3): its
    late result is dropped, so a mini-batch is never both done and failed, nor recorded by two."""
    job = _job(tmp_path, 2, 1, max_retries=max_retries)
    batch = queue.Claimer(job, "slow.0").claim()
    queue.requeue_worker(job, "slow.0", "stale heartbeat")
    other = queue.Claimer(job, "other.0")
    retry = other.claim() if max_retries > 1 else None
    assert not queue.complete(job, "slow.0", batch, "late\n", 1)
    assert _names(job / layout.DONE_DIR) == []
    if retry is None:
        assert _names(job / layout.FAILED_DIR) == ["000000000.json"]
    else:
        assert retry["id"] == "000000000" and retry["attempt"] == 1
        queue.complete(job, "other.0", retry, "retried\n", 1)
    queue.complete(job, "other.0", other.claim(), "b\n", 1)
    counts = queue.ProgressReader(job).read()
    assert (counts.done, counts.failed) == ((1, 1) if retry is None else (2, 0))
    out = tmp_path / "out" / "predictions.csv"
    queue.merge_results(job, out)
    assert out.read_text() == ("b\n" if retry is None else "retried\nb\n")


def test_a_worker_given_up_for_dead_whose_run_fails_writes_no_record_for_it(tmp_path: Path) -> None:
    """Its claim requeued meanwhile, its run() then raises on what was its last try: the retry in
    pending/ decides, no failed record is written next to it (it would be failed and then done)."""
    job = _job(tmp_path, 1, 1, max_retries=1)
    batch = queue.Claimer(job, "slow.0").claim()
    assert queue.requeue_worker(job, "slow.0", "stale heartbeat", max_retries=2) == {"000000000": "requeued"}
    os.makedirs(job / layout.RUNNING_DIR / "slow.0")  # its folder made again (its heartbeat, its next claim)
    assert not queue.fail_attempt(job, "slow.0", batch, "ValueError", max_retries=1)
    assert _names(job / layout.FAILED_DIR) == []
    retry = queue.Claimer(job, "other.0").claim()
    assert retry["attempt"] == 1
    assert queue.complete(job, "other.0", retry, "row\n", 1)
    assert queue.ProgressReader(job).read() == queue.QueueCounts(1, 0, 0, 1, 0, 1, 0)


def test_stale_workers_by_heartbeat_age(tmp_path: Path) -> None:
    job = _job(tmp_path, 1, 1)
    queue.touch_heartbeat(job, "fresh.0")
    queue.touch_heartbeat(job, "old.0")
    os.makedirs(job / layout.RUNNING_DIR / "nobeat.0")
    now = time.time()
    old = now - layout.HEARTBEAT_EXPIRY_SECONDS - 5
    os.utime(job / layout.RUNNING_DIR / "old.0" / layout.HEARTBEAT_FILE, (old, old))
    os.utime(job / layout.RUNNING_DIR / "nobeat.0", (old, old))
    assert queue.stale_workers(job, now) == ["nobeat.0", "old.0"]
    assert queue.stale_workers(job, now + 3600) == ["fresh.0", "nobeat.0", "old.0"]


def test_progress_reader_reads_each_record_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = _job(tmp_path, 10, 2)
    reader = queue.ProgressReader(job)
    c = queue.Claimer(job, "i.0")
    assert reader.read() == queue.QueueCounts(5, 5, 0, 0, 0, 0, 0)
    queue.complete(job, "i.0", c.claim(), "x\n", 1)
    queue.complete(job, "i.0", c.claim(), "x\ny\n", 2)
    c.claim()
    first = reader.read()
    assert (first.pending, first.running, first.done, first.items_succeeded, first.items_failed) == (2, 1, 2, 3, 1)
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: opened.append(str(p)) or real_open(p, *a, **k))
    queue.complete(job, "i.0", c.claim(), None, 0)
    second = reader.read()
    assert [os.path.basename(p) for p in opened if layout.DONE_DIR in p] == ["000000003.json"]
    assert (second.done, second.items_succeeded, second.items_failed, second.items_processed) == (3, 3, 3, 6)


def test_merge_results_in_id_order_only_done_and_never_overwrites(tmp_path: Path) -> None:
    job = _job(tmp_path, 4, 1)
    c = queue.Claimer(job, "i.0")
    batches = [c.claim() for _ in range(4)]
    for b in reversed(batches[:3]):  # finished out of order
        queue.complete(job, "i.0", b, f"row {b['id']}" + ("\n" if b["id"] != "000000001" else ""), 1)
    (job / layout.RESULTS_DIR / "000000003.csv").write_text("no done record\n")
    grown = job / layout.RUNNING_DIR / "i.0" / "000000003.json"  # grown, never renamed: not merged
    with open(grown, "ab") as f:
        f.write(record.tail({"status": "done"}, b"not done\n"))
    out = tmp_path / "outputs" / "predictions.csv"
    assert queue.merge_results(job, out) == 3
    assert out.read_text() == "row 000000000\nrow 000000001\nrow 000000002\n"
    assert [p.name for p in out.parent.iterdir()] == ["predictions.csv"]
    with pytest.raises(FileExistsError):
        queue.merge_results(job, out)
    assert out.read_text().count("\n") == 3


def _race(job: str, worker: str, out: str, barrier: multiprocessing.Barrier, share: tuple[int, int] = (0, 1)) -> None:
    claimer = queue.Claimer(job, worker, *share)
    got = []
    barrier.wait()
    while (batch := claimer.claim()) is not None:
        got.append(batch["id"])
        queue.complete(job, worker, batch, batch["id"] + "\n", 1)
    Path(out).write_text("\n".join(got))


@pytest.mark.parametrize("shares", [False, True])
def test_concurrent_claimers_never_claim_a_batch_twice(tmp_path: Path, shares: bool) -> None:
    job = _job(tmp_path, 2000, 1)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_race, args=(str(job), f"r{k}.0", str(tmp_path / f"got{k}"), barrier,
                                             (k, 4) if shares else (0, 1)))
             for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    claimed = [line for k in range(4) for line in (tmp_path / f"got{k}").read_text().split("\n") if line]
    assert len(claimed) == 2000
    assert sorted(claimed) == [layout.mini_batch_id(i) for i in range(2000)]
    assert sum(1 for k in range(4) if (tmp_path / f"got{k}").read_text()) >= 2  # they did race
    assert queue.is_drained(job)
    out = tmp_path / "merged.csv"
    queue.merge_results(job, out)
    assert out.read_text().split() == [layout.mini_batch_id(i) for i in range(2000)]


def test_looks_empty_and_is_drained(tmp_path: Path) -> None:
    job = _job(tmp_path, 2, 1)
    assert not queue.looks_empty(job)
    c = queue.Claimer(job, "i.0")
    b0, b1 = c.claim(), c.claim()
    assert not queue.looks_empty(job)  # claimed but not finished
    queue.complete(job, "i.0", b0, None, 1)
    queue.fail_attempt(job, "i.0", b1, "x", max_retries=1)
    assert queue.looks_empty(job) and queue.is_drained(job)
    # A done record lost by hand: the listing looks empty but the count says otherwise.
    os.unlink(job / layout.DONE_DIR / "000000000.json")
    assert queue.looks_empty(job) and not queue.is_drained(job)


def test_requeue_instance_covers_all_its_workers_and_no_other(tmp_path: Path) -> None:
    job = _job(tmp_path, 3, 1)
    for worker in ("dead.0", "dead.1", "alive.0"):
        queue.Claimer(job, worker).claim()
    out = queue.requeue_instance(job, "dead", "container exited 137", max_retries=3)
    assert out == {"000000000": "requeued", "000000001": "requeued"}
    assert sorted(os.listdir(job / layout.RUNNING_DIR)) == ["alive.0"]
    assert _names(job / layout.PENDING_DIR) == ["000000000.json", "000000001.json"]


def test_claimer_recovers_when_its_folder_was_swept(tmp_path: Path) -> None:
    job = _job(tmp_path, 3, 1)
    c = queue.Claimer(job, "i.0")
    assert c.claim()["id"] == "000000000"
    queue.requeue_worker(job, "i.0", "heartbeat expired (wrongly)")  # removes i.0's folder
    assert c.claim() is None  # every rename fails: the folder is gone
    got = c.claim()
    assert got is not None and got["id"] == "000000000"  # folder recreated, requeued batch found


def test_claimers_start_at_their_share_and_jump_after_a_lost_race(tmp_path: Path) -> None:
    job = _job(tmp_path, 8, 1)
    a, b = queue.Claimer(job, "instance-0.0", 0, 2), queue.Claimer(job, "instance-1.0", 1, 2)
    assert a.claim()["id"] == "000000000"
    assert b.claim()["id"] == "000000004"  # its half of the listing: no race for the first names
    assert queue.Claimer(job, "instance-2.0").claim()["id"] == "000000001"  # a's next one, taken
    got = [a.claim()["id"]]
    assert a.lost_races == 1 and got[0] not in ("000000000", "000000001", "000000004")  # jumped elsewhere
    while (batch := a.claim()) is not None:
        got.append(batch["id"])
    while (batch := b.claim()) is not None:
        got.append(batch["id"])
    assert sorted(got) == [layout.mini_batch_id(i) for i in (2, 3, 5, 6, 7)]  # the rest, once each
