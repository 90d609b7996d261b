"""Progress counts that stay cheap on a queue of 100,000 mini-batches (bepbuild_runtime.progress)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bepbuild_runtime import layout, progress, queue


def _job(tmp_path: Path, batches: int) -> Path:
    job = tmp_path / "job"
    job.mkdir()
    (job / layout.JOB_FILE).write_text(json.dumps({"settings": {}}))
    queue.write_queue(job, (f"f{i:05d}.png" for i in range(batches)), 1)
    return job


def _listings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = os.listdir
    monkeypatch.setattr(progress.os, "listdir", lambda p=".": seen.append(os.path.basename(str(p))) or real(p))
    return seen


def test_pending_is_counted_without_listing_it_and_a_drained_queue_is_not_listed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = _job(tmp_path, 6)
    claimer = queue.Claimer(job, "i.0")
    for _ in range(2):
        queue.complete(job, "i.0", claimer.claim(), "x\n", 1)
    held = claimer.claim()
    queue.fail_attempt(job, "i.0", claimer.claim(), "boom", 1)
    listed = _listings(monkeypatch)
    reader = queue.ProgressReader(job)
    assert reader.read() == queue.QueueCounts(6, 2, 1, 2, 1, 2, 1)
    assert "pending" not in listed  # queue/count is known: pending is what is nowhere else
    queue.complete(job, "i.0", held, "x\n", 1)
    while (batch := claimer.claim()) is not None:
        queue.complete(job, "i.0", batch, "x\n", 1)
    assert reader.read() == queue.QueueCounts(6, 0, 0, 5, 1, 5, 1)
    listed.clear()
    assert reader.read() == queue.QueueCounts(6, 0, 0, 5, 1, 5, 1)
    assert "done" not in listed and "failed" not in listed  # records are never removed: nothing to look for


def test_counts_of_a_job_asked_again_reads_only_new_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = _job(tmp_path, 4)
    claimer = queue.Claimer(job, "i.0")
    queue.complete(job, "i.0", claimer.claim(), "x\n", 1)
    read: list[str] = []
    real = progress._record_counts
    monkeypatch.setattr(progress, "_record_counts", lambda p: read.append(os.path.basename(p)) or real(p))
    assert queue.counts(job).done == 1
    queue.complete(job, "i.0", claimer.claim(), "x\n", 1)
    assert queue.counts(job).done == 2
    assert read == ["000000000.json", "000000001.json"]
    # the same path made again is another job: its reader starts afresh
    shutil.rmtree(job)
    job = _job(tmp_path, 4)
    assert queue.counts(job) == queue.QueueCounts(4, 4, 0, 0, 0, 0, 0)


def test_a_display_reader_lists_done_at_most_its_budget_of_the_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = _job(tmp_path, 4)
    claimer = queue.Claimer(job, "i.0")
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    reader = queue.ProgressReader(job, budget=0.5)
    queue.complete(job, "i.0", claimer.claim(), "x\n", 1)
    held = claimer.claim()  # something is running: the reader may save its listings
    assert reader.read().done == 1  # the first read lists
    reader._scan_cost = 1.0  # as if that listing had taken a second
    queue.complete(job, "i.0", claimer.claim(), "x\n", 1)
    clock[0] += 1.5
    assert reader.read().done == 1  # 1 s of listing is more than half of 1.5 s: the last counts
    clock[0] += 0.6
    assert reader.read().done == 2  # 2.1 s later: listed again
    queue.complete(job, "i.0", held, "x\n", 1)
    assert queue.ProgressReader(job).read().done == 3  # the default reads exactly, every time
    assert reader.read().done == 3  # nothing claimed any more: maybe the last read, always exact


def test_the_host_shares_its_display_reader_with_counts_and_counts_stay_exact(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job's record at its end (counts()) reads only what the host's poll has not read yet, and a
    display reader's saved listings never make counts() lag."""
    job = _job(tmp_path, 4)
    claimer = queue.Claimer(job, "i.0")
    display = queue.shared_reader(job, queue.ProgressReader.DISPLAY_BUDGET)
    queue.complete(job, "i.0", claimer.claim(), "x\n", 1)
    held = claimer.claim()
    assert display.read().done == 1
    display._scan_cost = 1e9  # its next listings are far over budget
    queue.complete(job, "i.0", claimer.claim(), "x\n", 1)
    assert display.read().done == 1  # the display lags while something runs
    opened: list[str] = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: opened.append(str(p)) or real_open(p, *a, **k))
    assert queue.counts(job).done == 2  # exact all the same
    assert [os.path.basename(p) for p in opened if layout.DONE_DIR in p] == ["000000002.json"]
    assert queue.shared_reader(job) is display
    queue.complete(job, "i.0", held, "x\n", 1)
    assert queue.counts(job).done == 3
