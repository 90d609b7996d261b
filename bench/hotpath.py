"""Hot paths of the queue protocol and the host loop, in-process, each against its earlier form.

On a shared machine whose file operations cost 30-300 us depending on the neighbours, the end-to-end
figures move a lot between runs; these micro-benchmarks alternate the two variants of each step in
the same second, so their ratios hold even when the absolute numbers move.

- claim + complete: one mini-batch of 10 items through Claimer.claim() and queue.complete() (the
  claim grown into the done record, rows included, and renamed), against the earlier complete()
  that wrote the rows to a result file of their own (tmp + rename) and then rewrote the claim as
  the done record;
- DataFrame -> append_row text: output.frame_text against pandas' to_csv (the MNIST frame: file,
  class, probability; 10 rows);
- worker logs: one WorkerLogs.attempt() (node-log line + attempts-CSV row);
- merge: queue.merge_results of 2,000 result files (20,000 rows), streamed;
- host poll: one ProgressReader.read() on a 2,000-mini-batch queue (news only), and the
  supervisor's looks_empty();
- write_queue: 20,000 items into 2,000 mini-batch files;
- progress at scale (--progress-batches, default 100,000 mini-batches, half of them done): one
  ProgressReader.read() as the host polls it (20 new records each time) and a first read (what
  `job show` pays once per process), against the reader as it was (it listed pending/ and filtered
  every name in Python, and read records with open()); and queue.counts() asked twice.

    .venv/bin/python bench/hotpath.py [--batches 2000] [--reps 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

from bepbuild_runtime import _fs, layout, output, queue, reports  # noqa: E402


def old_complete(job: str, worker: str, batch: dict, text: str | None, succeeded: int, timings: dict) -> None:
    """complete() as it was: the rows in a result file of their own (tmp + rename into results/),
    then the claim rewritten in place as a one-line done record and renamed into done/."""
    folder = _fs.worker_dir(job, worker)
    bid = batch["id"]
    if text:
        results = layout.path(job, layout.RESULTS_DIR)
        os.makedirs(results, exist_ok=True)
        _fs.write_atomic(results + "/" + bid + layout.RESULT_SUFFIX, text.encode(), folder)
    total = len(batch["items"])
    rec = {"id": bid, "items": batch["items"], "attempt": batch.get("attempt", 0), "status": layout.STATUS_DONE,
           "worker": worker, "total": total, "succeeded": succeeded, "failed": total - succeeded, **timings}
    data = _fs.dumps(rec).encode("ascii")
    claim = folder + "/" + bid + ".json"
    fd = os.open(claim, os.O_WRONLY)
    try:
        size = os.fstat(fd).st_size
        os.pwrite(fd, data + b" " * max(0, size - len(data)), 0)
    finally:
        os.close(fd)
    os.rename(claim, layout.path(job, layout.DONE_DIR, bid + ".json"))


def _parse_whole(raw: bytes) -> dict:
    first = raw.find(b"\n")
    if first < 0:
        return json.loads(raw)
    second = raw.find(b"\n", first + 1)
    return {**json.loads(raw[:first]), **json.loads(raw[first + 1:second])}


class OldProgressReader(queue.ProgressReader):
    """ProgressReader.read() as it was: pending/ listed and filtered in Python, records read with open()."""

    def _scan(self, sub: str) -> tuple[int, int, int]:
        seen, sums = self._seen[sub], self._sums[sub]
        folder = layout.path(self.job_dir, sub)
        for name in _fs.listdir(folder):
            if name in seen or not _fs.is_claim(name):
                continue
            try:
                with open(os.path.join(folder, name), "rb") as f:
                    rec = _parse_whole(f.read())
            except (FileNotFoundError, ValueError):
                continue
            seen.add(name)
            sums[0] += int(rec.get("succeeded", 0))
            sums[1] += int(rec.get("failed", 0))
        return len(seen), sums[0], sums[1]

    def read(self) -> queue.QueueCounts:
        if self._total is None:
            self._total = _fs.total_count(self.job_dir)
        pending = sum(1 for n in _fs.listdir(layout.path(self.job_dir, layout.PENDING_DIR)) if _fs.is_claim(n))
        running_dir = layout.path(self.job_dir, layout.RUNNING_DIR)
        running = sum(1 for w in _fs.listdir(running_dir)
                      for n in _fs.listdir(os.path.join(running_dir, w)) if _fs.is_claim(n))
        done, ok_done, bad_done = self._scan(layout.DONE_DIR)
        failed, _, bad_failed = self._scan(layout.FAILED_DIR)
        return queue.QueueCounts(self._total, pending, running, done, failed, ok_done, bad_done + bad_failed)


def progress_at_scale(root: Path, batches: int, reps: int, add: Callable[[str, float], None]) -> None:
    """Reads of a queue of `batches` mini-batches, half done, old and new readers alternated."""
    job = str(root / "progress")
    queue.write_queue(job, (f"f{i:07d}" for i in range(batches)), 1)
    claimer = queue.Claimer(job, "i.0")
    for _ in range(batches // 2):
        queue.complete(job, "i.0", claimer.claim(), None, 1)
    os.sync()
    for _ in range(reps):
        for kind, cls in (("old", OldProgressReader), ("new", queue.ProgressReader)):
            reader = cls(job)
            t = time.perf_counter()
            reader.read()
            add(f"progress_first_{kind}", time.perf_counter() - t)
            polls = []
            for _ in range(5):
                for _ in range(20):
                    queue.complete(job, "i.0", claimer.claim(), None, 1)
                t = time.perf_counter()
                reader.read()
                polls.append((time.perf_counter() - t) * 1000)
            add(f"progress_poll_{kind}", sorted(polls)[len(polls) // 2])
    t = time.perf_counter()
    queue.counts(job)
    add("counts_first", time.perf_counter() - t)
    queue.complete(job, "i.0", claimer.claim(), None, 1)
    t = time.perf_counter()
    queue.counts(job)
    add("counts_again_ms", (time.perf_counter() - t) * 1000)
    shutil.rmtree(job)
    os.sync()


def fresh_job(root: Path, batches: int) -> str:
    job = root / f"job-{time.monotonic_ns()}"
    queue.ensure_dirs(job)
    (job / layout.JOB_FILE).write_text(json.dumps({"settings": {}}))
    queue.write_queue(job, (f"img{i:06d}.png" for i in range(batches * 10)), 10)
    os.sync()
    return str(job)


def per_batch_ms(root: Path, batches: int, complete: Callable[..., None]) -> float:
    job = fresh_job(root, batches)
    claimer = queue.Claimer(job, "i.0")
    timings = {"start": time.time(), "elapsed": 0.002, "run_seconds": 0.002}
    t = time.perf_counter()
    while (batch := claimer.claim()) is not None:
        text = "".join(f"{item} 7 0.99\n" for item in batch["items"])
        complete(job, "i.0", batch, text, len(batch["items"]), timings)
    ms = (time.perf_counter() - t) * 1000 / batches
    shutil.rmtree(job)
    return ms


def timeit_us(fn: Callable[[], object], n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) * 1e6 / n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/hotpath.py", description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=2000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--progress-batches", type=int, default=100_000, help="0: skip the progress reads at scale")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    import numpy as np
    import pandas as pd

    r: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        r.setdefault(key, []).append(value)

    root = Path(tempfile.mkdtemp(prefix="bepbuild-bench-hotpath-", dir="/tmp"))
    try:
        frame = pd.DataFrame({"file": [f"img{i:06d}_3.png" for i in range(10)],
                              "class": np.arange(10).astype(int), "probability": np.random.rand(10)})
        for _ in range(args.reps):
            add("complete_old", per_batch_ms(root, args.batches, old_complete))
            add("complete_new", per_batch_ms(root, args.batches, queue.complete))
            add("to_csv", timeit_us(lambda: frame.to_csv(header=None, index=None, sep=" ", lineterminator="\n"), 2000))
            add("frame_text", timeit_us(lambda: output.frame_text(frame), 2000))

            job = fresh_job(root, args.batches)
            logs = reports.WorkerLogs(job, "i.0")
            batch = {"id": "000000001", "items": [f"img{i:06d}.png" for i in range(10)], "attempt": 0}
            add("logs", timeit_us(lambda logs=logs, batch=batch: logs.attempt(
                batch, layout.STATUS_DONE, start=time.time(), elapsed=0.002, process_seconds=0.002, run_seconds=0.002,
                succeeded=10), 2000))
            logs.close()
            # host poll on a queue where 1/4 is done and 20 records are news at each read
            reader = queue.ProgressReader(job)
            claimer = queue.Claimer(job, "i.0")
            polls = []
            for _ in range(25):
                for _ in range(20):
                    b = claimer.claim()
                    queue.complete(job, "i.0", b, "".join(f"{x} 1 0.5\n" for x in b["items"]), 10)
                t = time.perf_counter()
                reader.read()
                polls.append((time.perf_counter() - t) * 1000)
            add("poll_ms", sorted(polls)[len(polls) // 2])
            add("looks_empty_us", timeit_us(lambda job=job: queue.looks_empty(job), 200))
            while (b := claimer.claim()) is not None:
                queue.complete(job, "i.0", b, "".join(f"{x} 1 0.5\n" for x in b["items"]), 10)
            os.sync()
            out = Path(job) / "merged.csv"
            t = time.perf_counter()
            queue.merge_results(job, out)
            add("merge_ms", (time.perf_counter() - t) * 1000)
            add("merge_mb", out.stat().st_size / 1e6)
            shutil.rmtree(job)
            t = time.perf_counter()
            fresh = root / "wq"
            queue.write_queue(fresh, (f"img{i:06d}.png" for i in range(args.batches * 10)), 10)
            add("write_queue_ms", (time.perf_counter() - t) * 1000)
            shutil.rmtree(fresh)
            os.sync()
        if args.progress_batches:
            progress_at_scale(root, args.progress_batches, max(1, args.reps // 2), add)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"[{c.load()} at the end of the runs]")
    print(f"Hot paths, in-process, {args.batches} mini-batches of 10, {args.reps} reps alternating; median (min-max)")
    old, new = c.stats(r["complete_old"])[0], c.stats(r["complete_new"])[0]
    csv_, fast = c.stats(r["to_csv"])[0], c.stats(r["frame_text"])[0]
    rows = [
        ["claim + complete, result file + claim rewritten as the record (before)", c.fmt(r["complete_old"], 3) + " ms",
         "1.00"],
        ["claim + complete, claim grown into the record, rows included", c.fmt(r["complete_new"], 3) + " ms",
         f"{new / old:.2f}"],
        ["DataFrame (10 rows) -> text, pandas to_csv (before)", c.fmt(r["to_csv"], 1) + " us", "1.00"],
        ["DataFrame (10 rows) -> text, output.frame_text", c.fmt(r["frame_text"], 1) + " us", f"{fast / csv_:.2f}"],
        ["worker logs: node line + attempts row", c.fmt(r["logs"], 1) + " us", ""],
        [f"host poll: ProgressReader.read(), {args.batches} mini-batches, 20 new", c.fmt(r["poll_ms"], 3) + " ms", ""],
        ["supervisor poll: looks_empty()", c.fmt(r["looks_empty_us"], 1) + " us", ""],
        [f"merge the rows of {args.batches} done records ({c.stats(r['merge_mb'])[0]:.1f} MB)",
         c.fmt(r["merge_ms"], 1) + " ms", ""],
        [f"write_queue: {args.batches * 10} items -> {args.batches} files", c.fmt(r["write_queue_ms"], 1) + " ms", ""],
    ]
    if args.progress_batches:
        n = f"{args.progress_batches:,} mini-batches, half done"
        old_poll, new_poll = c.stats(r["progress_poll_old"])[0], c.stats(r["progress_poll_new"])[0]
        old_first, new_first = c.stats(r["progress_first_old"])[0], c.stats(r["progress_first_new"])[0]
        rows += [
            [f"host poll at {n}, 20 new records (before)", c.fmt(r["progress_poll_old"], 1) + " ms", "1.00"],
            [f"host poll at {n}, 20 new records (now)", c.fmt(r["progress_poll_new"], 1) + " ms",
             f"{new_poll / old_poll:.2f}"],
            [f"first read at {n} (before)", c.fmt(r["progress_first_old"], 2) + " s", "1.00"],
            [f"first read at {n} (now)", c.fmt(r["progress_first_new"], 2) + " s", f"{new_first / old_first:.2f}"],
            [f"queue.counts() at {n}: first call / asked again (job show, pollers)",
             f"{c.stats(r['counts_first'])[0]:.2f} s / {c.stats(r['counts_again_ms'])[0]:.1f} ms", ""],
        ]
    print(c.table(["step", "cost", "x before"], rows))
    if args.json:
        args.json.write_text(json.dumps(r, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
