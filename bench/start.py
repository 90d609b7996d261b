"""P5 start latency: invoke -> first mini-batch done, excluding the scoring script's import and init().

For the no-op deployment (base image Python only, init() does nothing) and the MNIST torch example,
process and docker backends, REPS attached invokes on 100 files each. Measured from the wall clock
at launch (before the `bepbuild` command starts) to the end of the first finished mini-batch (done
records), minus the time the slowest-to-start worker spent between its 'starting' and 'init() done'
node-log lines (importing the scoring script, e.g. torch, and init()). What remains is bepbuild's
own: CLI start, registry, listing, queue, job folder, container (or process) start, the runtime's
start, the worker fork, the first claim and the first result.

Goal: <= 3 s.

    .venv/bin/python bench/start.py [--reps 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

GOAL_S = 3.0


def measure(h: c.Home, endpoint: str, files: Path, backend: str) -> dict:
    launched, wall, job = h.invoke(endpoint, files, backend=backend)
    jd = Path(job["job_dir"])
    st = c.steady_state(jd)
    nt = c.node_times(jd)
    # The worker that ran the first mini-batch became ready at min(init_done); its start is the
    # latest worker start before that.
    ready = min(nt["init_done"])
    began = max(t for t in nt["worker_start"] if t <= ready)
    init = ready - began
    return {"first_done": st["first_end"] - launched, "init": init, "latency": st["first_end"] - launched - init,
            "supervisor": min(nt["supervisor"]) - launched, "wall": wall}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/start.py", description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    cases = [("no-op", "process"), ("no-op", "docker"), ("mnist torch", "process"), ("mnist torch", "docker")]
    runs: dict[str, list[dict]] = {f"{d} / {b}": [] for d, b in cases}
    with c.Home("start") as h:
        h.deploy(c.noop_deployment(h.root / "noop"))
        h.deploy(c.torch_deployment(h.root))
        files = c.tiny_files(h.root / "files", 100)
        inputs = {"no-op": ("bench-noop", files), "mnist torch": ("mnist-batch", c.SAMPLE)}
        for rep in range(args.reps):
            for d, b in cases:
                endpoint, folder = inputs[d]
                r = measure(h, endpoint, folder, b)
                runs[f"{d} / {b}"].append(r)
                c.log(f"rep {rep + 1} {d} / {b}: first mini-batch at {r['first_done']:.2f} s, init {r['init']:.2f} s")

    def col(k: str, key: str) -> list[float]:
        return [r[key] for r in runs[k]]

    print(f"[{c.load()} at the end of the runs]")
    print(f"P5 start latency: invoke -> first mini-batch done, 100 files, {args.reps} reps; seconds, median (min-max)")
    rows = [[k, c.fmt(col(k, "latency"), 2), c.fmt(col(k, "first_done"), 2), c.fmt(col(k, "init"), 2),
             c.fmt(col(k, "supervisor"), 2), c.fmt(col(k, "wall"), 2)] for k in runs]
    print(c.table(["deployment / backend", "latency excl. init", "first mini-batch done", "import+init()",
                   "runtime started", "end-to-end"], rows))
    for k in runs:
        med = c.stats(col(k, "latency"))[0]
        print(f"{k}: {med:.2f} s (goal <= {GOAL_S:g} s: {c.verdict(med <= GOAL_S)})")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
