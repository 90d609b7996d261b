"""P9 the queue under contention: 1 to 64 claimer processes emptying one pending/ folder.

What a cluster does to the shared job folder: every worker of every instance claims from the same
pending/ folder. One queue of BATCHES mini-batches (one item each) is written once; for each number
of claimers, REPS times (interleaved), that many forked processes start together and each claims
with `queue.Claimer` until pending/ is empty, moving each claim on to done/ at once (a no-op run()
and the done record's rename: the worker's folder stays as small as a real worker's). Then the
claims go back to pending/ for the next run. Each process records every id it claimed and the time
of each claim() call; the check: every mini-batch claimed exactly once, none twice.

Two claimers are compared, alternated in the same run: `walk` (every claimer walks the sorted listing
from its start, as the runtime's Claimer did before) and `spread` (the runtime's Claimer now: each
worker starts at its own place in the listing and jumps after a lost race).

Reported per number of claimers: claims per second (all of them, first start to last end), the mean
and 99th percentile of one claim() call, renames lost to another claimer per claim, and listings of
pending/ per claimer. docs/performance.md turns the counts into round trips for NFS.

    .venv/bin/python bench/contention.py [--batches 100000] [--claimers 1 2 4 8 16 32 64] [--reps 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

from bepbuild_runtime import layout, queue  # noqa: E402
from bepbuild_runtime._fs import is_claim, listdir, unlink_quiet  # noqa: E402


class WalkClaimer(queue.Claimer):
    """The claimer as it was: every worker walks the same sorted listing from its first name."""

    def __init__(self, job_dir: str, worker: str, index: int = 0, count: int = 1) -> None:
        super().__init__(job_dir, worker)
        self._next = 0

    def claim(self) -> queue.MiniBatch | None:
        relisted = False
        while True:
            if self._next >= len(self._names):
                if relisted:
                    return None
                if not self._won and self._names:
                    os.makedirs(self.folder, exist_ok=True)
                self._names = sorted(n for n in listdir(self._pending) if is_claim(n))
                self.listings += 1
                self._next = 0
                self._won = False
                relisted = True
                continue
            name = self._names[self._next]
            self._next += 1
            dst = self.folder + "/" + name
            try:
                os.rename(self._pending + "/" + name, dst)
            except FileNotFoundError:
                self.lost_races += 1
                continue
            self._won = True
            with open(dst, "rb") as f:
                batch: queue.MiniBatch = json.loads(f.read())
            if batch.get("attempt") and os.path.exists(self._done + "/" + name):
                unlink_quiet(dst)
                continue
            return batch


CLAIMERS = {"walk": WalkClaimer, "spread": queue.Claimer}


def _claimer(job: str, worker: str, index: int, count: int, kind: str, go: object, out: str) -> None:
    claimer = CLAIMERS[kind](job, worker, index, count)
    done = layout.path(job, layout.DONE_DIR)
    go.wait()  # type: ignore[attr-defined]
    ids: list[str] = []
    times: list[float] = []
    start = time.perf_counter()
    t0 = time.time()
    while True:
        t = time.perf_counter()
        batch = claimer.claim()
        times.append(time.perf_counter() - t)
        if batch is None:
            break
        ids.append(batch["id"])
        os.rename(f"{claimer.folder}/{batch['id']}.json", f"{done}/{batch['id']}.json")
    end = time.time()
    with open(out, "w") as f:
        json.dump({"ids": ids, "times": times, "start": t0, "end": end, "seconds": time.perf_counter() - start,
                   "lost": claimer.lost_races, "listings": claimer.listings}, f)


def _reset(job: str) -> None:
    """Every mini-batch back to pending/ (renames only: no file is created)."""
    pending, done = layout.path(job, layout.PENDING_DIR), layout.path(job, layout.DONE_DIR)
    for name in os.listdir(done):
        os.rename(f"{done}/{name}", f"{pending}/{name}")
    running = layout.path(job, layout.RUNNING_DIR)
    for w in os.listdir(running):
        shutil.rmtree(f"{running}/{w}")
    os.sync()


def run_once(job: str, root: Path, kind: str, n: int, batches: int) -> dict:
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    outs = [str(root / f"out-{kind}-{n}-{i}.json") for i in range(n)]
    procs = [ctx.Process(target=_claimer, args=(job, f"instance-{i // 4}.{i % 4}", i, n, kind, go, outs[i]))
             for i in range(n)]
    for p in procs:
        p.start()
    time.sleep(0.2)
    go.set()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"a claimer exited {p.exitcode}")
    docs = [json.loads(Path(o).read_text()) for o in outs]
    for o in outs:
        os.unlink(o)
    ids = [i for d in docs for i in d["ids"]]
    if len(ids) != len(set(ids)):
        raise RuntimeError(f"{kind}, {n} claimers: {len(ids) - len(set(ids))} mini-batches claimed twice")
    if len(set(ids)) != batches:
        raise RuntimeError(f"{kind}, {n} claimers: {batches - len(set(ids))} mini-batches never claimed")
    times = sorted(t for d in docs for t in d["times"])
    wall = max(d["end"] for d in docs) - min(d["start"] for d in docs)
    return {"claims_per_s": batches / wall, "wall": wall, "claim_ms": 1000 * statistics.fmean(times),
            "claim_p99_ms": 1000 * times[int(0.99 * (len(times) - 1))],
            "lost_per_claim": sum(d["lost"] for d in docs) / batches,
            "listings_per_claimer": statistics.fmean(d["listings"] for d in docs)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/contention.py", description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=100_000)
    p.add_argument("--claimers", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    results: dict[str, list[dict]] = {}
    with c.Home("contention") as h:
        job = str(h.root / "job")
        t = time.perf_counter()
        queue.write_queue(job, (f"f{i:07d}" for i in range(args.batches)), 1)
        os.sync()
        c.log(f"queue of {args.batches} mini-batches written in {time.perf_counter() - t:.1f} s")
        for rep in range(args.reps):
            for n in args.claimers:
                for kind in CLAIMERS:
                    r = run_once(job, h.root, kind, n, args.batches)
                    results.setdefault(f"{kind}|{n}", []).append(r)
                    c.log(f"rep {rep + 1} {kind} {n} claimers: {r['claims_per_s']:.0f} claims/s, "
                          f"{r['claim_ms']:.3f} ms per claim, {r['lost_per_claim']:.2f} lost races per claim")
                    _reset(job)

    def col(kind: str, n: int, k: str) -> list[float]:
        return [r[k] for r in results[f"{kind}|{n}"]]

    print(f"[{c.load()} at the end of the runs]")
    print(f"P9 the queue under contention: {args.batches} mini-batches, claimer processes on this disk, "
          f"{args.reps} reps alternated; median (min-max). Every mini-batch claimed exactly once in every run.")
    rows = []
    for n in args.claimers:
        for kind in CLAIMERS:
            rate = c.stats(col(kind, n, "claims_per_s"))[0]
            base = c.stats(col("walk", n, "claims_per_s"))[0]
            rows.append([n, kind, c.fmt(col(kind, n, "claims_per_s"), 0), f"{rate / base:.2f}",
                         c.fmt(col(kind, n, "claim_ms"), 3), c.fmt(col(kind, n, "claim_p99_ms"), 3),
                         c.fmt(col(kind, n, "lost_per_claim"), 2), c.fmt(col(kind, n, "listings_per_claimer"), 1)])
    print(c.table(["claimers", "claimer", "claims/s", "x walk", "ms per claim()", "p99 ms", "lost races per claim",
                   "listings per claimer"], rows))
    print("claims/s: all claims over the span from the first claimer's start to the last one's end; a claim "
          "is one rename out of pending/ and one read, plus the rename on to done/ in this loop.")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
