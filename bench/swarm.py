"""The MNIST torch example on a swarm compute against the docker backend, on this machine, in one run.

The deployment names `compute: azureml:batch-cluster`. The compute is switched between the two kinds
before each job, alternately: an `amlcompute` profile (containers on this engine, the docker
backend) and a `swarm` compute whose shared path holds the images (one Swarm service per instance on
this engine, joined to a single-node swarm for the benchmark when it is in none, and left after).
Same image, same inputs, same instance count.

- steady rate: items/s while every worker works, from the jobs' done records (bench/_common);
- invoke to first mini-batch: from the launch of `bepbuild batch-endpoint invoke` until the first
  mini-batch's run() started.

Goals: swarm steady rate >= 0.95 x docker's; invoke-to-first-mini-batch at most 2 s more.

    .venv/bin/python bench/swarm.py [--images 20000] [--reps 3] [--instances 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

DOCKER = "/usr/bin/docker"


def swarm_state() -> str:
    return subprocess.run([DOCKER, "info", "--format", "{{.Swarm.LocalNodeState}}"], capture_output=True,
                          text=True).stdout.strip()


def use_compute(h: c.Home, kind: str, shared: Path, instances: int) -> None:
    """batch-cluster as `kind`: amlcompute or swarm (on `shared`)."""
    args = ["compute", "create", "-n", "batch-cluster", "--max-instances", str(instances)]
    if kind == "swarm":
        args += ["--type", "swarm", "--shared-path", str(shared)]
    h.cli(*args)


def one_job(h: c.Home, images: Path, instances: int) -> dict:
    launched, wall, job = h.invoke("mnist-batch", images, instance_count=instances)
    st = c.steady_state(Path(job["job_dir"]))
    rows = sum(1 for _ in open(job["output_file"], "rb"))
    if rows != st["items"]:
        raise RuntimeError(f"{job['backend']}: {rows} rows for {st['items']} items")
    return {"backend": job["backend"], "wall": wall, "items_per_s": st["items_per_s"],
            "first_start": st["first_start"] - launched, "overhead_ms": st["overhead_ms"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/swarm.py", description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--instances", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    made = swarm_state() != "active"
    if made:
        subprocess.run([DOCKER, "swarm", "init", "--advertise-addr", "127.0.0.1"], check=True, capture_output=True)
        c.log("joined this engine to a single-node swarm for the benchmark")
    results: dict[str, list[dict]] = {"docker": [], "swarm": []}
    try:
        with c.Home("swarm") as h:
            dpl = c.torch_deployment(h.root)
            images = c.mnist_images(h.root / "images", args.images)  # under the shared path: used in place
            use_compute(h, "docker", h.root, args.instances)
            h.deploy(dpl, "settings.max_concurrency_per_instance=1")
            for rep in range(args.reps):
                for kind in ("docker", "swarm"):
                    use_compute(h, kind, h.root, args.instances)
                    r = one_job(h, images, args.instances)
                    if r["backend"] != kind:
                        raise RuntimeError(f"expected a {kind} job, got {r['backend']}")
                    results[kind].append(r)
                    c.log(f"rep {rep + 1} {kind}: {r['wall']:.2f} s, {r['items_per_s']:.0f} items/s steady, "
                          f"first mini-batch {r['first_start']:.2f} s after invoke")
    finally:
        if made:
            subprocess.run([DOCKER, "swarm", "leave", "--force"], capture_output=True)
            subprocess.run([DOCKER, "network", "rm", "docker_gwbridge"], capture_output=True)

    def col(kind: str, key: str) -> list[float]:
        return [r[key] for r in results[kind]]

    print(f"[{c.load()} at the end of the runs]")
    print(f"MNIST torch, {args.images} images, {args.instances} instances x 1 worker, mini_batch_size 10, "
          f"{args.reps} reps alternating; median (min-max)")
    rows = [[kind, c.fmt(col(kind, "items_per_s"), 0), c.fmt(col(kind, "first_start"), 2), c.fmt(col(kind, "wall"), 2),
             c.fmt(col(kind, "overhead_ms"), 3)] for kind in ("docker", "swarm")]
    print(c.table(["backend", "steady items/s", "invoke to first mini-batch s", "end-to-end s", "overhead ms/mb"],
                  rows))
    ratio = c.stats(col("swarm", "items_per_s"))[0] / c.stats(col("docker", "items_per_s"))[0]
    later = c.stats(col("swarm", "first_start"))[0] - c.stats(col("docker", "first_start"))[0]
    print(f"steady rate swarm / docker {ratio:.3f} (goal >= 0.95: {c.verdict(ratio >= 0.95)}); first mini-batch "
          f"{later:+.2f} s (goal <= 2 s: {c.verdict(later <= 2.0)})")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results,
                                         "ratio": ratio, "first_batch_delta_s": later}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
