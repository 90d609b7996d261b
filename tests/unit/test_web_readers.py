"""The dashboard's job-folder readers: the incremental attempts index (rows still being written,
error messages over several lines, a rewritten file), the job's progress while its records are read
the first time, failures' tracebacks, and pages of the output file."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest
from webkit import wait_for

from bepbuild.web import attempts, jobview, outputs
from bepbuild_runtime import layout, queue, reports


def row(bid: int, worker: str = "instance-0.0", status: str = layout.STATUS_DONE, message: str = "",
        start: float = 1_700_000_000.0) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(
        [layout.mini_batch_id(bid), 1, worker, reports.now_iso(start + bid), 2, 2 if not message else 0,
         0 if not message else 2, "0.5000", "0.0100", "0.4000", status, "UserError" if message else "", message,
         json.dumps({"items": [f"a{bid}.png", f"b{bid}.png"]})])
    return buf.getvalue().encode()


def attempts_file(job: Path, worker: str = "instance-0.0") -> Path:
    path = job / layout.LOG_ATTEMPTS_DIR / f"{worker}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(",".join(layout.PROCESSED_COLUMNS) + "\n")
    return path


def test_attempts_are_read_incrementally_whole_rows_only(tmp_path: Path) -> None:
    path = attempts_file(tmp_path)
    multi = "ValueError: bad input\nsecond line, with a comma and a \"quote\""
    with open(path, "ab") as f:
        f.write(row(0) + row(1, status=layout.STATUS_EXCEPTION, message=multi))
        f.write(row(2)[:25])  # a row still being written
    index = attempts.AttemptIndex(tmp_path)
    index.refresh()
    assert list(index.batch) == [0, 1]
    assert [index.attempt(i).status for i in range(2)] == [layout.STATUS_DONE, layout.STATUS_EXCEPTION]
    assert index.failed_indexes() == [1]
    full = index.rows([1, 0])
    assert full[0][12] == multi and json.loads(full[0][13])["items"] == ["a1.png", "b1.png"]
    assert full[1][0] == layout.mini_batch_id(0)
    with open(path, "ab") as f:  # the row ends, a new worker starts
        f.write(row(2)[25:])
    with open(attempts_file(tmp_path, "instance-1.0"), "ab") as f:
        f.write(row(3, worker="instance-1.0") + row(4, worker="instance-1.0", message="x\ny\nz",
                                                       status=layout.STATUS_EXCEPTION)[:-4])  # quote still open
    index.refresh()
    assert sorted(index.batch) == [0, 1, 2, 3]
    assert index.workers == ["instance-0.0", "instance-1.0"]
    assert index.order() == sorted(range(4), key=lambda i: index.start[i])
    with open(attempts_file(tmp_path, "instance-1.0"), "ab") as f:
        f.write(row(4, worker="instance-1.0", message="x\ny\nz", status=layout.STATUS_EXCEPTION)[-4:])
    index.refresh()
    assert sorted(index.batch) == [0, 1, 2, 3, 4] and index.rows([4])[0][12] == "x\ny\nz"
    path.write_bytes((",".join(layout.PROCESSED_COLUMNS) + "\n").encode() + row(0))  # rewritten shorter: read again
    index.refresh()
    assert sorted(index.batch) == [0, 3, 4]


def test_progress_of_a_big_running_job_answers_before_its_records_are_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    queue.write_queue(tmp_path, [f"f{i}" for i in range(6)], 1)
    for bid in ("000000000", "000000001"):
        rec = {"id": bid, "items": ["f"], "attempt": 0, "status": layout.STATUS_DONE, "succeeded": 1, "failed": 0}
        (tmp_path / layout.PENDING_DIR / f"{bid}.json").rename(tmp_path / layout.DONE_DIR / f"{bid}.json")
        (tmp_path / layout.DONE_DIR / f"{bid}.json").write_text(json.dumps(rec))
    job = {"name": "j", "status": "Running", "job_dir": str(tmp_path), "started_at": "2024-01-01T00:00:00Z"}
    monkeypatch.setattr(jobview, "SYNC_READ_LIMIT", 0)  # every record counts as "many"
    first = jobview.progress(job)
    assert (first.total, first.done, first.pending, first.items_succeeded) == (6, 2, 4, None)
    later = wait_for(lambda: (p := jobview.progress(job)).items_succeeded is not None and p, what="the warm-up")
    assert (later.total, later.done, later.pending, later.items_succeeded, later.items_failed) == (6, 2, 4, 2, 0)


def test_failures_are_the_newest_tracebacks_of_every_worker(tmp_path: Path) -> None:
    for worker, n in (("instance-0.0", 3), ("instance-1.2", 1)):
        path = Path(reports.user_error_path(str(tmp_path), worker))
        path.parent.mkdir(parents=True, exist_ok=True)
        for k in range(n):
            stamp = reports.now_iso(time.time() - 100 + 10 * k + (5 if worker.startswith("instance-1") else 0))
            reports.append_text(str(path), f"{stamp} run() failed on mini-batch {k:09d}:\nTraceback (most recent "
                                           f"call last):\n  File \"score.py\"\nKeyError: {worker}-{k}\n\n")
    found, files = jobview.failures(tmp_path, limit=3)
    assert files == 2
    assert [f.text.splitlines()[-1] for f in found] == ["KeyError: instance-0.0-2", "KeyError: instance-0.0-1",
                                                        "KeyError: instance-1.2-0"]
    assert found[0].worker == "instance-0.0" and found[0].log == "logs/user/error/instance-0/instance-0.0.txt"
    assert found[0].header == "run() failed on mini-batch 000000002:"


def test_output_pages_split_as_azure_reads_them(tmp_path: Path) -> None:
    out = tmp_path / "predictions.csv"
    out.write_text("".join(f'img-{i}.png {i % 10} "a b"\n' for i in range(120)) + "last-line-without-newline x")
    job = {"name": "j", "output_file": str(out), "output_dir": str(tmp_path), "input_root": None}
    first = outputs.predictions_page(job, 0)
    assert first is not None and first.total_rows == 121 and first.pages == 3
    assert first.rows[0] == ["img-0.png", "0", "a b"]  # spaces split fields, quotes keep them together
    last = outputs.predictions_page(job, 99)  # past the end: the last page
    assert last is not None and last.page == 2 and last.rows[-1] == ["last-line-without-newline", "x"]
    assert len(last.rows) == 21
    mlflow = outputs.predictions_page({**job, "scoring_script": "mlflow_driver.py"}, 0)
    assert mlflow is not None and mlflow.rows[0] == ['img-0.png 0 "a b"']  # commas for the MLflow driver
