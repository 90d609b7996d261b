"""complete() grows the claim file into the done record, rows included (no file created), safely at every step."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from bepbuild_runtime import layout, queue, record


def _job(tmp_path: Path, n_items: int, size: int, max_retries: int = 3) -> Path:
    job = tmp_path / "job"
    queue.ensure_dirs(job)
    (job / layout.JOB_FILE).write_text(json.dumps({"settings": {"max_retries": max_retries}}))
    queue.write_queue(job, (f"f{i:05d}.png" for i in range(n_items)), size)
    return job


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _merged(job: Path, out: Path) -> str:
    queue.merge_results(job, out)
    return out.read_text()


def test_done_record_is_the_renamed_claim_with_its_rows(tmp_path: Path) -> None:
    job = _job(tmp_path, 4, 2)
    claim = job / layout.PENDING_DIR / "000000000.json"
    claimed = claim.read_bytes()
    batch = queue.Claimer(job, "i.0").claim()
    claim = job / layout.RUNNING_DIR / "i.0" / "000000000.json"
    inode = claim.stat().st_ino
    queue.complete(job, "i.0", batch, "a 1\nb 2\n", 2, {"elapsed": 0.25})
    done = job / layout.DONE_DIR / "000000000.json"
    assert done.stat().st_ino == inode  # the same file, no new one
    raw = done.read_bytes()
    assert raw.startswith(claimed + b"\n") and raw.endswith(b"\na 1\nb 2\n")  # the claim untouched, rows last
    rec = record.read(str(done))
    assert (rec["id"], rec["items"], rec["attempt"], rec["status"]) == ("000000000", batch["items"], 0,
                                                                        layout.STATUS_DONE)
    assert (rec["total"], rec["succeeded"], rec["failed"], rec["elapsed"]) == (2, 2, 0, 0.25)
    assert _files(job / layout.RUNNING_DIR / "i.0") == []  # no claim, no temp file left
    assert _files(job / layout.RESULTS_DIR) == []  # no result file of its own
    assert _merged(job, tmp_path / "out.csv") == "a 1\nb 2\n"


def test_a_retried_claim_keeps_its_line_and_its_counts(tmp_path: Path) -> None:
    job = _job(tmp_path, 2, 2)
    first = queue.Claimer(job, "i.0").claim()
    assert queue.fail_attempt(job, "i.0", first, "x\ny" * 1000, max_retries=3)  # last_error: 500 chars
    retry = queue.Claimer(job, "i.1").claim()
    assert len(retry["last_error"]) == 500
    queue.complete(job, "i.1", retry, None, 0)
    rec = record.read(str(job / layout.DONE_DIR / "000000000.json"))
    assert (rec["attempt"], rec["succeeded"], rec["failed"], rec["worker"]) == (1, 0, 2, "i.1")
    assert rec["last_error"].startswith("x\ny")  # a newline in a field is escaped: line 1 stays one line
    assert queue.counts(job).items_failed == 2
    assert _merged(job, tmp_path / "out.csv") == ""


def test_killed_before_the_rename_the_claim_is_still_a_claim(
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
    [left] = queue.claims(job, "dead.0")  # grown, and still a valid claim
    assert (left["id"], left["items"], left["attempt"]) == (batch["id"], batch["items"], 0)
    assert "status" not in left
    assert queue.requeue_worker(job, "dead.0", "lost") == {"000000000": "requeued"}
    retry = queue.Claimer(job, "live.0").claim()
    assert (retry["id"], retry["attempt"]) == ("000000000", 1)
    queue.complete(job, "live.0", retry, "new row\n", 2)
    other = queue.Claimer(job, "live.0").claim()
    queue.complete(job, "live.0", other, "second\n", 2)
    out = tmp_path / "out.csv"
    assert queue.merge_results(job, out) == 2
    assert out.read_text() == "new row\nsecond\n"  # the dead try's rows never reach the output
    assert queue.is_drained(job)


@pytest.mark.parametrize("cut", [1, 7, 40, 60])
def test_a_claim_given_back_half_grown_is_cut_back_to_its_line(tmp_path: Path, cut: int) -> None:
    """A worker killed in the middle of its pwrite: its claim goes back as it was claimed (release), and
    only the retry's rows are merged."""
    job = _job(tmp_path, 4, 2)
    batch = queue.Claimer(job, "dead.0").claim()
    claim = job / layout.RUNNING_DIR / "dead.0" / "000000000.json"
    grown = record.tail({"status": "done", "worker": "dead.0", "total": 2, "succeeded": 2, "failed": 0},
                        b"stale row 1\nstale row 2\n")
    with open(claim, "ab") as f:
        f.write(grown[:cut])
    assert queue.release_claims(job, "dead.0") == ["000000000"]
    pending = job / layout.PENDING_DIR / "000000000.json"
    assert json.loads(pending.read_bytes()) == batch  # given back as it was claimed: its line alone
    retry = queue.Claimer(job, "live.0").claim()
    assert (retry["id"], retry["items"], retry["attempt"]) == ("000000000", batch["items"], 0)
    assert b"\n" not in (job / layout.RUNNING_DIR / "live.0" / "000000000.json").read_bytes()
    queue.complete(job, "live.0", retry, "fresh row\n", 2)
    rec = record.read(str(job / layout.DONE_DIR / "000000000.json"))
    assert (rec["worker"], rec["succeeded"]) == ("live.0", 2)
    assert _merged(job, tmp_path / "out.csv") == "fresh row\n"


def test_a_claim_it_cannot_write_takes_the_old_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = _job(tmp_path, 2, 2)
    batch = queue.Claimer(job, "i.0").claim()
    claim = str(job / layout.RUNNING_DIR / "i.0" / "000000000.json")
    real_open = os.open

    def not_owner(path, flags, *a, **kw):  # noqa: ANN001, ANN003
        if str(path) == claim and flags & os.O_WRONLY:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(os, "open", not_owner)
    queue.complete(job, "i.0", batch, "row\n", 2)
    monkeypatch.setattr(os, "open", real_open)
    assert record.read(str(job / layout.DONE_DIR / "000000000.json"))["succeeded"] == 2
    assert _files(job / layout.RUNNING_DIR / "i.0") == []
    assert _merged(job, tmp_path / "out.csv") == "row\n"


def test_disk_full_while_growing_the_claim_leaves_the_claim_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pwrite that fails half-way (ENOSPC) must leave neither a torn record nor a grown claim."""
    job = _job(tmp_path, 4, 2)
    before = (job / layout.PENDING_DIR / "000000000.json").read_bytes()
    batch = queue.Claimer(job, "i.0").claim()
    claim = job / layout.RUNNING_DIR / "i.0" / "000000000.json"
    real_pwrite = os.pwrite

    def torn(fd: int, data: bytes, offset: int) -> int:
        real_pwrite(fd, bytes(data[: len(data) // 2]), offset)  # half of it lands, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", torn)
    with pytest.raises(OSError):
        queue.complete(job, "i.0", batch, "a\nb\n" * 1000, 2)
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    assert claim.read_bytes() == before
    assert not (job / layout.DONE_DIR / "000000000.json").exists()
    assert queue.release_claims(job, "i.0") == ["000000000"]


def test_short_writes_are_continued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = _job(tmp_path, 2, 2)
    batch = queue.Claimer(job, "i.0").claim()
    real_pwrite = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, data, offset: real_pwrite(fd, bytes(data[:7]), offset))
    rows = "".join(f"row {i}\n" for i in range(100))
    queue.complete(job, "i.0", batch, rows, 2)
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    assert _merged(job, tmp_path / "out.csv") == rows


def test_records_of_an_older_runtime_are_merged_from_their_result_files(tmp_path: Path) -> None:
    """A job resumed after an upgrade: one-line done records with rows in results/<id>.csv, beside new ones."""
    job = _job(tmp_path, 6, 2)
    c = queue.Claimer(job, "i.0")
    for bid, rows in (("000000000", "old 0\n"), ("000000001", None)):
        batch = c.claim()
        assert batch["id"] == bid
        rec = {**batch, "status": "done", "worker": "i.0", "total": 2, "succeeded": 2 if rows else 0,
               "failed": 0 if rows else 2}
        (job / layout.DONE_DIR / f"{bid}.json").write_text(json.dumps(rec) + "   ")  # padded, as it was
        (job / layout.RUNNING_DIR / "i.0" / f"{bid}.json").unlink()
        if rows:
            (job / layout.RESULTS_DIR / f"{bid}.csv").write_text(rows)
    queue.complete(job, "i.0", c.claim(), "new 2", 2)  # no final newline: one is added
    (job / layout.RESULTS_DIR / "000000002.csv").write_text("a stray result file is never merged\n")
    assert _merged(job, tmp_path / "out.csv") == "old 0\nnew 2\n"
    counts = queue.counts(job)
    assert (counts.done, counts.items_succeeded, counts.items_failed) == (3, 4, 2)


def test_a_worker_given_up_for_dead_but_still_writing_never_writes_into_the_next_claim(tmp_path: Path) -> None:
    """Its claims given back (release_worker) while it is inside complete(): what it still writes goes
    to a file nobody reads, never into the file of the worker that claims the mini-batch next."""
    job = _job(tmp_path, 2, 2)
    batch = queue.Claimer(job, "instance-0.0").claim()
    held = os.open(job / layout.RUNNING_DIR / "instance-0.0" / "000000000.json", os.O_WRONLY)  # as complete() has it
    try:
        assert queue.release_worker(job, "instance-0.0") == ["000000000"]
        retry = queue.Claimer(job, "instance-1.0").claim()
        assert retry == batch
        end = os.fstat(held).st_size
        os.pwrite(held, record.tail({"status": "done", "worker": "instance-0.0", "total": 2, "succeeded": 2,
                                     "failed": 0}, b"from the worker given up\n"), end)
    finally:
        os.close(held)
    queue.complete(job, "instance-1.0", retry, "from the worker that claimed it next\n", 2)
    assert record.read(str(job / layout.DONE_DIR / "000000000.json"))["worker"] == "instance-1.0"
    assert _merged(job, tmp_path / "out.csv") == "from the worker that claimed it next\n"


def test_a_grown_claim_found_in_pending_is_claimed_as_a_fresh_file(tmp_path: Path) -> None:
    """On a full disk a claim goes back by rename, grown as it was: the next claimer takes its line into
    a file of its own, so a writer still holding the old file cannot reach it."""
    job = _job(tmp_path, 2, 2)
    pending = job / layout.PENDING_DIR / "000000000.json"
    line = pending.read_bytes()
    with open(pending, "ab") as f:
        f.write(record.tail({"status": "done", "worker": "gone.0"}, b"stale\n")[:30])
    held = os.open(pending, os.O_WRONLY)
    try:
        batch = queue.Claimer(job, "live.0").claim()
        claim = job / layout.RUNNING_DIR / "live.0" / "000000000.json"
        assert claim.read_bytes() == line
        os.pwrite(held, b"\nwritten late\n", os.fstat(held).st_size)
        assert claim.read_bytes() == line
    finally:
        os.close(held)
    queue.complete(job, "live.0", batch, "fresh\n", 2)
    assert _merged(job, tmp_path / "out.csv") == "fresh\n"


def test_a_grown_claim_is_read_no_further_than_its_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = _job(tmp_path, 2, 2)
    pending = job / layout.PENDING_DIR / "000000000.json"
    with open(pending, "ab") as f:
        f.write(b"\n" + b"x" * (8 << 20))  # rows of a worker killed before its rename
    read: list[int] = []
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: read.append(n) or real_read(fd, n))
    assert queue.Claimer(job, "live.0").claim()["id"] == "000000000"
    assert sum(read) <= 2 * record.CHUNK


def test_a_fifo_or_a_link_in_done_is_never_waited_on_nor_followed(tmp_path: Path) -> None:
    job = _job(tmp_path, 6, 2)
    c = queue.Claimer(job, "i.0")
    queue.complete(job, "i.0", c.claim(), "row\n", 2)
    for bid in ("000000001", "000000002"):
        (job / layout.RUNNING_DIR / "i.0").mkdir(exist_ok=True)
        c.claim()
        (job / layout.RUNNING_DIR / "i.0" / f"{bid}.json").unlink()
    os.mkfifo(job / layout.DONE_DIR / "000000001.json")  # a reader that waited on it would wait forever
    secret = tmp_path / "secret"
    secret.write_bytes(b'{"id":"000000002","items":[],"attempt":0}\n{"succeeded":1000,"failed":0}\nsecret\n')
    (job / layout.DONE_DIR / "000000002.json").symlink_to(secret)
    counts = queue.counts(job)
    assert (counts.done, counts.items_succeeded) == (3, 2)
    with pytest.raises(OSError, match="not a regular file|symbolic link"):
        queue.merge_results(job, tmp_path / "out.csv")


def test_a_link_fifo_or_folder_planted_in_pending_is_skipped_and_never_followed(tmp_path: Path) -> None:
    """Scoring code can write pending/: what it plants there under a claim's name is removed from the
    claimer's folder (a claim there would keep the job from draining), never read through nor cut."""
    job = _job(tmp_path, 2, 2)
    victim = tmp_path / "victim.txt"
    victim.write_text("first line\nsecond line\n")
    pending = job / layout.PENDING_DIR
    (pending / "000000007.json").symlink_to(victim)
    os.mkfifo(pending / "000000008.json")
    (pending / "000000009.json").mkdir()
    claimer = queue.Claimer(job, "i.0")
    batch = claimer.claim()
    assert batch["id"] == "000000000"
    assert claimer.claim() is None
    assert victim.read_text() == "first line\nsecond line\n"
    assert _files(job / layout.RUNNING_DIR / "i.0") == ["000000000.json"]
    assert _files(pending) == []
