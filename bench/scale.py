"""P6 input scale: listing + queue creation for folders of 10k, 100k and 1,000,000 empty files.

Each measurement runs in a fresh subprocess (so its peak RSS, `resource.getrusage(RUSAGE_SELF)
.ru_maxrss`, is its own), on folders made under /tmp (the same disk as the job folders) and removed
afterwards:

- list + queue: `bepbuild.jobs.inputs.items()` streamed into `bepbuild_runtime.queue.write_queue()`
  (mini_batch_size 10) in a scratch job folder;
- service.invoke: the whole invoke path up to the point where instances would start (registry,
  settings, listing, job folder, queue, handing the folder to the container user), with the no-op
  deployment registered in a throw-away BEPBUILD_HOME.

The page cache is synced (os.sync) after the files are made and after each run, so no run pays
for the writeback of the previous one's files. The RSS column is the peak of the whole process
(Python + bepbuild imports included) from /proc/self/status VmHWM; "imports" is the same peak
before the measured call, so the difference is what the listing and the queue cost.
(`resource.getrusage(RUSAGE_SELF).ru_maxrss` is recorded too, as maxrss_mb in --json, but Linux
folds the parent's peak into it at exec: under bench/run.py, whose process holds pandas and
numpy, it reads ~120 MB before the child has done anything.)
Goal at 1M files: <= 15 s and <= 500 MB.

    .venv/bin/python bench/scale.py [--sizes 10000 100000 1000000] [--reps 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

GOAL_S, GOAL_MB = 15.0, 500.0

CHILD = r"""
import json, os, resource, sys, time
mode, folder, job_dir, home = sys.argv[1:5]
os.environ["BEPBUILD_HOME"] = home
from pathlib import Path
from bepbuild.jobs import inputs
from bepbuild_runtime import queue
if mode == "invoke":
    from bepbuild.jobs import service
    from bepbuild.store import Store
    store = Store.open()
def hwm():  # this process's peak RSS in MB: VmHWM belongs to the mm made at exec, never inherited
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
base = hwm()
t = time.perf_counter()
if mode == "lib":
    spec = inputs.InputSpec(folder, "uri_folder", Path(folder))
    n = queue.write_queue(job_dir, inputs.items(spec), 10)
else:
    job = service.invoke(store, service.InvokeRequest(endpoint="bench-noop", input=folder, backend="process"))
    n = job["mini_batches"]
    job_dir = job["job_dir"]
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "mini_batches": n, "rss_mb": hwm(), "base_mb": base,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "job_dir": job_dir}))
"""


def make_files(folder: Path, n: int) -> float:
    t = time.perf_counter()
    folder.mkdir(parents=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for i in range(n):
        os.close(os.open(f"{folder}/{i:08d}.bin", flags, 0o644))
    return time.perf_counter() - t


def measure(mode: str, folder: Path, job_dir: Path, home: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(folder), str(job_dir), str(home)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"scale child failed: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    shutil.rmtree(out["job_dir"], ignore_errors=True)
    os.sync()  # the next run starts with no writeback of this one's 100k files under way
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/scale.py", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    results: dict[int, dict[str, list[dict]]] = {}
    with c.Home("scale") as h:
        h.deploy(c.noop_deployment(h.root / "noop"))
        for n in args.sizes:
            folder = h.root / f"in-{n}"
            made = make_files(folder, n)
            os.sync()  # creating 1M files leaves a long writeback: not the measured runs' cost
            c.log(f"{n} empty files made in {made:.1f} s")
            results[n] = {"lib": [], "invoke": []}
            reps = args.reps if n < 1_000_000 else max(1, min(args.reps, 2))
            for rep in range(reps):
                for mode in ("lib", "invoke"):
                    r = measure(mode, folder, h.root / f"job-{n}-{rep}", h.home)
                    results[n][mode].append(r)
                    c.log(f"{n} files, {mode}: {r['seconds']:.2f} s, peak RSS {r['rss_mb']:.0f} MB")
            t = time.perf_counter()
            shutil.rmtree(folder)
            c.log(f"{n} files removed in {time.perf_counter() - t:.1f} s")

    def col(n: int, mode: str, key: str) -> list[float]:
        return [r[key] for r in results[n][mode]]

    print(f"[{c.load()} at the end of the runs]")
    print("P6 input scale: empty files in one folder, mini_batch_size 10; median (min-max)")
    rows = []
    smallest = min(args.sizes)
    for n in args.sizes:
        for mode, label in (("lib", "items() + write_queue()"), ("invoke", "service.invoke")):
            sec = col(n, mode, "seconds")
            per = 1e6 * c.stats(sec)[0] / n
            base_per = 1e6 * c.stats(col(smallest, mode, "seconds"))[0] / smallest
            rows.append([f"{n:,}", label, len(sec), c.fmt(sec, 2), f"{per:.1f}", f"{per / base_per:.2f}",
                         c.fmt(col(n, mode, "rss_mb"), 0), c.fmt(col(n, mode, "base_mb"), 0)])
    print(c.table(["files", "what", "runs", "seconds", "us/file", "us/file x smallest", "peak RSS MB",
                   "imports MB"], rows))
    if 1_000_000 in results:
        for mode in ("lib", "invoke"):
            sec = c.stats(col(1_000_000, mode, "seconds"))[0]
            mb = max(col(1_000_000, mode, "rss_mb"))
            print(f"1M files, {mode}: {sec:.1f} s (goal <= {GOAL_S:g} s: {c.verdict(sec <= GOAL_S)}), "
                  f"peak RSS {mb:.0f} MB (goal <= {GOAL_MB:g} MB: {c.verdict(mb <= GOAL_MB)})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
