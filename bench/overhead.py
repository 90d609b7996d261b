"""P1 runtime overhead: a no-op run() returning its mini-batch, 10,000 tiny files, mini_batch_size 10, 1 worker.

For the process and the docker backend, REPS attached invokes each (interleaved), timed from the
outside (end to end: CLI start to Completed), and the runtime's steady state from the job's done
records (see _common.steady_state): ms per mini-batch spent outside run() (claim, formatting, result
file, done record, logs) and mini-batches per second. The deployment's image is the base image's
Python alone (no packages), so start costs are the runtime's own.

Goal: <= 0.5 ms of overhead per mini-batch.

    .venv/bin/python bench/overhead.py [--files 10000] [--reps 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

GOAL_MS = 0.5


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/overhead.py", description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=10000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    backends = ("process", "docker")
    runs: dict[str, list[dict]] = {b: [] for b in backends}
    with c.Home("overhead") as h:
        dpl = c.noop_deployment(h.root / "noop", workers=1)
        h.deploy(dpl)
        files = c.tiny_files(h.root / "files", args.files)
        for rep in range(args.reps):
            for b in backends:
                _, wall, job = h.invoke("bench-noop", files, backend=b, mini_batch_size=10)
                st = c.steady_state(Path(job["job_dir"]))
                st["wall"] = wall
                runs[b].append(st)
                c.log(f"rep {rep + 1} {b}: {wall:.2f} s end to end, {st['overhead_ms']:.3f} ms/mini-batch")

    def col(b: str, k: str) -> list[float]:
        return [r[k] for r in runs[b]]

    batches = runs[backends[0]][0]["batches"]
    print(f"[{c.load()} at the end of the runs]")
    print(f"P1 runtime overhead: no-op run(), {args.files} files, mini_batch_size 10 ({batches} mini-batches), "
          f"1 worker, {args.reps} reps; median (min-max)")
    rows = []
    for b in backends:
        rows.append([b, c.fmt(col(b, "overhead_ms"), 3), c.fmt(col(b, "run_ms"), 4), c.fmt(col(b, "batches_per_s"), 0),
                     c.fmt(col(b, "span_s"), 3), c.fmt(col(b, "wall"), 2),
                     f"{c.stats(col(b, 'span_s'))[0] / c.stats(col(b, 'wall'))[0]:.3f}"])
    print(c.table(["backend", "overhead ms/mini-batch", "run() ms", "steady mini-batches/s", "steady span s",
                   "end-to-end s", "span / e2e"], rows))
    for b in backends:
        med = c.stats(col(b, "overhead_ms"))[0]
        print(f"{b}: {med:.3f} ms per mini-batch (goal <= {GOAL_MS} ms: {c.verdict(med <= GOAL_MS)})")
    print("steady = from the first mini-batch's start to the last one's (done records); end-to-end = the "
          "invoke command, CLI start to Completed (listing, queue, instance start, merge included).")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
