"""complete() turns the claim file into the done record in place (no file created), safely at every step."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bepbuild_runtime import layout, queue


def _job(tmp_path: Path, n_items: int, size: int, max_retries: int = 3) -> Path:
    job = tmp_path / "job"
    queue.ensure_dirs(job)
    (job / layout.JOB_FILE).write_text(json.dumps({"settings": {"max_retries": max_retries}}))
    queue.write_queue(job, (f"f{i:05d}.png" for i in range(n_items)), size)
    return job


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_done_record_is_the_renamed_claim(tmp_path: Path) -> None:
    job = _job(tmp_path, 4, 2)
    batch = queue.Claimer(job, "i.0").claim()
    claim = job / layout.RUNNING_DIR / "i.0" / "000000000.json"
    inode = claim.stat().st_ino
    queue.complete(job, "i.0", batch, "a\nb\n", 2, {"elapsed": 0.25})
    done = job / layout.DONE_DIR / "000000000.json"
    assert done.stat().st_ino == inode  # the same file, no new one
    rec = json.loads(done.read_text())
    assert (rec["id"], rec["items"], rec["attempt"], rec["status"]) == ("000000000", batch["items"], 0,
                                                                        layout.STATUS_DONE)
    assert (rec["total"], rec["succeeded"], rec["failed"], rec["elapsed"]) == (2, 2, 0, 0.25)
    assert _files(job / layout.RUNNING_DIR / "i.0") == []  # no claim, no temp file left


def test_a_claim_longer_than_its_record_is_padded_not_left_with_a_tail(tmp_path: Path) -> None:
    job = _job(tmp_path, 2, 2)
    first = queue.Claimer(job, "i.0").claim()
    assert queue.fail_attempt(job, "i.0", first, "x" * 2000, max_retries=3)  # last_error: 500 chars
    retry = queue.Claimer(job, "i.1").claim()
    claim = job / layout.RUNNING_DIR / "i.1" / "000000000.json"
    assert len(retry["last_error"]) == 500 and claim.stat().st_size > 500
    queue.complete(job, "i.1", retry, None, 0)
    rec = json.loads((job / layout.DONE_DIR / "000000000.json").read_text())  # trailing blanks are JSON
    assert (rec["attempt"], rec["succeeded"], rec["failed"], rec["worker"]) == (1, 0, 2, "i.1")
    assert queue.counts(job).items_failed == 2


def test_killed_between_rewrite_and_rename_the_claim_is_still_a_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _job(tmp_path, 4, 2)
    batch = queue.Claimer(job, "dead.0").claim()
    real_rename = os.rename

    def die_before_done(src, dst):  # noqa: ANN001
        if layout.DONE_DIR in str(dst):
            raise SystemExit("killed")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", die_before_done)
    with pytest.raises(SystemExit):
        queue.complete(job, "dead.0", batch, "old row\n", 2)
    monkeypatch.setattr(os, "rename", real_rename)
    [left] = queue.claims(job, "dead.0")  # a done record, and a valid claim
    assert (left["id"], left["items"], left["attempt"]) == (batch["id"], batch["items"], 0)
    assert queue.requeue_worker(job, "dead.0", "lost") == {"000000000": "requeued"}
    retry = queue.Claimer(job, "live.0").claim()
    assert (retry["id"], retry["attempt"]) == ("000000000", 1)
    queue.complete(job, "live.0", retry, "new row\n", 2)
    other = queue.Claimer(job, "live.0").claim()
    queue.complete(job, "live.0", other, "second\n", 2)
    out = tmp_path / "out.csv"
    assert queue.merge_results(job, out) == 2
    assert out.read_text() == "new row\nsecond\n"  # replaced, never duplicated
    assert queue.is_drained(job)


def test_a_claim_it_cannot_rewrite_takes_the_old_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = _job(tmp_path, 2, 2)
    batch = queue.Claimer(job, "i.0").claim()
    claim = str(job / layout.RUNNING_DIR / "i.0" / "000000000.json")
    real_open = os.open

    def not_owner(path, flags, *a):  # noqa: ANN001
        if str(path) == claim and flags & os.O_WRONLY:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *a)

    monkeypatch.setattr(os, "open", not_owner)
    queue.complete(job, "i.0", batch, "row\n", 2)
    monkeypatch.setattr(os, "open", real_open)
    assert json.loads((job / layout.DONE_DIR / "000000000.json").read_text())["succeeded"] == 2
    assert _files(job / layout.RUNNING_DIR / "i.0") == []


def test_disk_full_while_growing_the_claim_leaves_a_valid_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pwrite that fails half-way (ENOSPC past the claim's blocks) must not leave a torn record."""
    import errno

    job = _job(tmp_path, 4, 2)
    batch = queue.Claimer(job, "i.0").claim()
    claim = job / layout.RUNNING_DIR / "i.0" / "000000000.json"
    real_pwrite = os.pwrite
    calls = []

    def torn(fd: int, data: bytes, offset: int) -> int:
        calls.append(len(data))
        if len(calls) == 1:  # the record: half of it lands, then the disk is full
            real_pwrite(fd, data[: len(data) // 2] + b"\0" * 3, offset)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", torn)
    with pytest.raises(OSError):
        queue.complete(job, "i.0", batch, "a\nb\n", 2)
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    rec = json.loads(claim.read_text())
    assert (rec["id"], rec["items"], rec["attempt"]) == ("000000000", batch["items"], 0)
    assert "status" not in rec and not (job / layout.DONE_DIR / "000000000.json").exists()
    assert queue.requeue_worker(job, "i.0", "disk full", 3) == {"000000000": "requeued"}
