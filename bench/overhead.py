"""P1 runtime overhead: a no-op run() returning its mini-batch, 10,000 tiny files, mini_batch_size 10, 1 worker.

For the process and the docker backend, REPS attached invokes each (interleaved), timed from the
outside (end to end: CLI start to Completed), and the runtime's steady state from the job's done
records (see _common.steady_state): ms per mini-batch of run()'s cadence spent outside run() and
mini-batches per second. Each repetition runs the runtime as it is (with a no-op run(), the worker
claims and records up to 16 mini-batches at a time) and, as baselines in the same run, with
BEPBUILD_HOLD_SECONDS=0 (one mini-batch at a time, the runtime before that) and with
BEPBUILD_WRITER_DEPTH=0 (no writer thread). With
`--disk-load on|both` the same runs are repeated under a known background disk load
(bench/_disk_load.py: fsynced writes and file creations on the same disk). The deployment's image is
the base image's Python alone (no packages), so start costs are the runtime's own.

Goal: <= 0.2 ms of overhead per mini-batch, on both backends, with and without the disk load.

    .venv/bin/python bench/overhead.py [--files 10000] [--reps 5] [--disk-load off|on|both] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

GOAL_MS = 0.2
VARIANTS = {"runtime": "noop-dpl", "one at a time": "noop-one", "sequential": "noop-seq"}  # deployment of each
BASE = "one at a time"  # the ratios' baseline


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/overhead.py", description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=10000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--disk-load", choices=("off", "on", "both"), default="both")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    backends = ("process", "docker")
    loads = {"off": ["quiet"], "on": ["disk load"], "both": ["quiet", "disk load"]}[args.disk_load]
    runs: dict[str, list[dict]] = {}
    loadavg: dict[str, str] = {}
    with c.Home("overhead") as h:
        h.deploy(c.noop_deployment(h.root / "seq", workers=1, name=VARIANTS["sequential"], env=c.SEQUENTIAL_ENV))
        h.deploy(c.noop_deployment(h.root / "one", workers=1, name=VARIANTS[BASE], env=c.ONE_AT_A_TIME_ENV))
        h.deploy(c.noop_deployment(h.root / "noop", workers=1))
        files = c.tiny_files(h.root / "files", args.files)
        disk = c.DiskLoad(h.root)
        for load in loads:
            with disk if load == "disk load" else nullcontext():
                for rep in range(args.reps):
                    for b in backends:
                        # ABBA: neither variant always runs right after the other one's writeback
                        for variant, dpl in list(VARIANTS.items())[:: 1 if rep % 2 == 0 else -1]:
                            _, wall, job = h.invoke("bench-noop", files, backend=b, mini_batch_size=10,
                                                    deployment=dpl)
                            st = c.steady_state(Path(job["job_dir"]))
                            st["wall"] = wall
                            runs.setdefault(f"{load}|{b}|{variant}", []).append(st)
                            c.log(f"{load} rep {rep + 1} {b} {variant}: {wall:.2f} s end to end, "
                                  f"{st['overhead_ms']:.3f} ms/mini-batch")
                loadavg[load] = c.load()

    def col(key: str, k: str) -> list[float]:
        return [r[k] for r in runs[key]]

    def med(key: str, k: str) -> float:
        return c.stats(col(key, k))[0]

    batches = next(iter(runs.values()))[0]["batches"]
    print(f"[{c.load()} at the end of the runs; " + "; ".join(f"{k}: {v}" for k, v in loadavg.items()) + "]")
    print(f"P1 runtime overhead: no-op run(), {args.files} files, mini_batch_size 10 ({batches} mini-batches), "
          f"1 worker, {args.reps} reps interleaved; median (min-max). disk load = {disk.describe()}")
    rows = []
    for load in loads:
        for b in backends:
            for variant in VARIANTS:
                key, base = f"{load}|{b}|{variant}", f"{load}|{b}|{BASE}"
                rows.append([load, b, variant, c.fmt(col(key, "overhead_ms"), 3),
                             f"{med(key, 'overhead_ms') / med(base, 'overhead_ms'):.2f}",
                             c.fmt(col(key, "batches_per_s"), 0), c.fmt(col(key, "wall"), 2),
                             f"{med(key, 'wall') / med(base, 'wall'):.2f}"])
    print(c.table(["disk", "backend", "runtime", "overhead ms/mini-batch", f"x {BASE}", "steady mini-batches/s",
                   "end-to-end s", f"x {BASE}"], rows))
    for load in loads:
        for b in backends:
            m = med(f"{load}|{b}|runtime", "overhead_ms")
            print(f"{load}, {b}: {m:.3f} ms per mini-batch (goal <= {GOAL_MS} ms: {c.verdict(m <= GOAL_MS)})")
    print("overhead = run()'s cadence (first to last start, done records) minus the mean run() time; "
          "one at a time = the same runtime with BEPBUILD_HOLD_SECONDS=0 (claims and records one mini-batch at a "
          "time), sequential = with BEPBUILD_WRITER_DEPTH=0 (no writer thread), both measured in the same run; "
          "end-to-end = the invoke command, CLI start to Completed.")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
