"""P2 (the limit) and P3 (the peer): the MNIST torch example on 20,000 images.

The images are the 100 PNGs of examples/mnist/sample, hard-linked under new names into a temp
folder. For 1 and 2 workers (the deployment redeployed with `max_concurrency_per_instance` = N, one
instance; the image is reused), each repetition runs, in turn:

- bepbuild, docker backend: `bepbuild batch-endpoint invoke ... -q -o json`, timed from the outside
  (CLI start, listing, queue, container start, torch import, init(), scoring, merge, Completed);
  its steady state from the job's done records;
- bepbuild, process backend: the same, with local processes instead of a container;
- the limit (bench/_limit.py): N plain forked processes, each with its share of the same
  mini-batches, calling the same init()/run(); the timer includes its Python start;
- the peer (bench/_ray_peer.py): Ray Data, `ray.init(num_cpus=2, include_dashboard=False)`, a path
  dataset + map_batches with an actor pool of N, writing one output file; the timer includes
  Python's start, `import ray` and `ray.init`.

Unless --no-baseline, each repetition also runs bepbuild (docker) with BEPBUILD_HOLD_SECONDS=0: the
same runtime with its workers claiming and recording one mini-batch at a time (as before they did a
few at a time), the baseline of what that buys, measured in the same run.

Goals: steady-state rate >= 0.95 x the limit's; end-to-end wall <= 1.3 x the limit's; bepbuild
(docker) >= 3.5 x faster than Ray end to end.

    .venv/bin/python bench/mnist.py [--images 20000] [--reps 3] [--workers 1 2] [--no-ray] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

BENCH = Path(__file__).resolve().parent
BASELINE = "mnist-torch-one"  # the baseline deployment: one mini-batch at a time (bench/_common.ONE_AT_A_TIME_ENV)


def run_limit(h: c.Home, images: Path, code: Path, model_dir: Path, workers: int, mbs: int) -> dict:
    out = h.root / "limit.json"
    cmd = [sys.executable, str(BENCH / "_limit.py"), "--input", str(images), "--code", str(code), "--script",
           "batch_driver.py", "--model-dir", str(model_dir), "--workers", str(workers), "--mini-batch-size",
           str(mbs), "--out", str(out)]
    launched = time.time()
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"limit failed: {proc.stderr[-2000:]}")
    doc = json.loads(out.read_text())
    recs = [r for w in doc["workers"] for r in w["records"]]
    n = len(recs)
    items = sum(r["total"] for r in recs)
    rate = c.worker_rate(recs)  # the same measure as bepbuild's (bench/_common.steady_state)
    return {"wall": wall, "batches_per_s": rate, "items_per_s": rate * items / n,
            "ready": max(w["ready"] for w in doc["workers"]) - launched,
            "run_ms": 1000 * sum(r["run_seconds"] for r in recs) / n}


def run_ray(h: c.Home, images: Path, code: Path, model_dir: Path, workers: int, mbs: int) -> dict:
    out, output = h.root / "ray.json", h.root / "ray-predictions.csv"
    output.unlink(missing_ok=True)
    cmd = [sys.executable, str(BENCH / "_ray_peer.py"), "--input", str(images), "--code", str(code), "--script",
           "batch_driver.py", "--model-dir", str(model_dir), "--workers", str(workers), "--mini-batch-size",
           str(mbs), "--output", str(output), "--out", str(out)]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(h.root / "ray")}
    (h.root / "ray").mkdir(exist_ok=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"ray failed: {proc.stderr[-3000:]}")
    doc = json.loads(out.read_text())
    doc["wall"] = wall
    return doc


def run_bepbuild(h: c.Home, images: Path, backend: str, deployment: str | None = None) -> dict:
    launched, wall, job = h.invoke("mnist-batch", images, backend=backend, deployment=deployment)
    jd = Path(job["job_dir"])
    st = c.steady_state(jd)
    nt = c.node_times(jd)
    rows = sum(1 for _ in open(job["output_file"], "rb"))
    if rows != st["items"]:
        raise RuntimeError(f"bepbuild wrote {rows} rows for {st['items']} items")
    return {"wall": wall, **st, "supervisor": min(nt["supervisor"]) - launched,
            "ready": max(nt["init_done"]) - launched, "last_end_at": st["last_end"] - launched}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/mnist.py", description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--no-ray", action="store_true")
    p.add_argument("--no-process", action="store_true", help="skip the process backend rows")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the baseline: docker with BEPBUILD_HOLD_SECONDS=0 (one mini-batch at a time)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    mbs = 10
    results: dict[str, dict[int, list[dict]]] = {k: {} for k in ("docker", "one", "process", "limit", "ray")}
    with c.Home("mnist") as h:
        dpl = c.torch_deployment(h.root)
        code = dpl.parent / "code"
        model_dir = h.root / "azureml-model-dir"  # as in the image: $AZUREML_MODEL_DIR/<model folder>/model.pt
        (model_dir / "model").mkdir(parents=True)
        os.link(dpl.parent / "model" / "model.pt", model_dir / "model" / "model.pt")
        t = time.perf_counter()
        images = c.mnist_images(h.root / "images", args.images)
        c.log(f"{args.images} images in {time.perf_counter() - t:.1f} s")
        seq = c.variant_deployment(dpl, BASELINE, c.ONE_AT_A_TIME_ENV)
        for n in args.workers:
            sets = (f"settings.max_concurrency_per_instance={n}", f"settings.mini_batch_size={mbs}")
            if not args.no_baseline:
                h.deploy(seq, *sets)
            h.deploy(dpl, *sets)  # the default deployment: deployed last
            for k in results:
                results[k][n] = []
            for rep in range(args.reps):
                r = run_bepbuild(h, images, "docker")
                results["docker"][n].append(r)
                c.log(f"{n} worker(s) rep {rep + 1}: bepbuild docker {r['wall']:.2f} s "
                      f"({r['items_per_s']:.0f} items/s steady)")
                if not args.no_baseline:
                    r = run_bepbuild(h, images, "docker", BASELINE)
                    results["one"][n].append(r)
                    c.log(f"{n} worker(s) rep {rep + 1}: bepbuild docker, one at a time {r['wall']:.2f} s "
                          f"({r['items_per_s']:.0f} items/s steady)")
                if not args.no_process:
                    r = run_bepbuild(h, images, "process")
                    results["process"][n].append(r)
                    c.log(f"{n} worker(s) rep {rep + 1}: bepbuild process {r['wall']:.2f} s")
                r = run_limit(h, images, code, model_dir, n, mbs)
                results["limit"][n].append(r)
                c.log(f"{n} worker(s) rep {rep + 1}: limit {r['wall']:.2f} s ({r['items_per_s']:.0f} items/s)")
                if not args.no_ray:
                    r = run_ray(h, images, code, model_dir, n, mbs)
                    results["ray"][n].append(r)
                    c.log(f"{n} worker(s) rep {rep + 1}: ray {r['wall']:.2f} s")

    def col(kind: str, n: int, key: str) -> list[float]:
        return [r[key] for r in results[kind].get(n, [])]

    print(f"[{c.load()} at the end of the runs]")
    print(f"P2 limit: MNIST torch, {args.images} images, mini_batch_size {mbs}, {args.reps} reps; "
          "median (min-max)")
    rows = []
    for n in args.workers:
        for kind, label in (("limit", "limit (plain processes)"), ("docker", "bepbuild docker"),
                            ("one", "bepbuild docker, one at a time"), ("process", "bepbuild process")):
            if not results[kind].get(n):
                continue
            rate = col(kind, n, "items_per_s")
            wall = col(kind, n, "wall")
            lim_rate = c.stats(col("limit", n, "items_per_s"))[0]
            lim_wall = c.stats(col("limit", n, "wall"))[0]
            ready = col(kind, n, "ready")
            rows.append([n, label, c.fmt(rate, 0), f"{c.stats(rate)[0] / lim_rate:.3f}", c.fmt(wall, 2),
                         f"{c.stats(wall)[0] / lim_wall:.3f}", c.fmt(ready, 2),
                         c.fmt(col(kind, n, "overhead_ms"), 3) if kind != "limit" else "-"])
    print(c.table(["workers", "what", "steady items/s", "x limit", "end-to-end s", "x limit", "ready s",
                   "overhead ms/mb"], rows))
    goals = []
    for n in args.workers:
        if results["docker"].get(n):
            rate = c.stats(col("docker", n, "items_per_s"))[0] / c.stats(col("limit", n, "items_per_s"))[0]
            wall = c.stats(col("docker", n, "wall"))[0] / c.stats(col("limit", n, "wall"))[0]
            goals.append(f"{n} worker(s): steady rate {rate:.3f} x limit (goal >= 0.95: {c.verdict(rate >= 0.95)}); "
                         f"end-to-end {wall:.3f} x limit (goal <= 1.3: {c.verdict(wall <= 1.3)})")
    print("\n".join(goals))
    print("ready s = from launch until the last worker's init() returned (bepbuild: node logs; limit: its own "
          "stamps).")
    if results["docker"]:
        print("\nbepbuild docker timeline (medians, s from launch): supervisor start, workers ready, last "
              "mini-batch done, Completed")
        for n in args.workers:
            if results["docker"].get(n):
                print(f"  {n} worker(s): " + ", ".join(
                    f"{c.stats(col('docker', n, k))[0]:.2f}" for k in ("supervisor", "ready", "last_end_at", "wall")))

    if not args.no_ray and any(results["ray"].values()):
        print(f"\nP3 peer: Ray Data {_ray_version()} vs bepbuild (docker), "
              "same files, same init()/run(); median (min-max)")
        rows = []
        for n in args.workers:
            ray_wall = col("ray", n, "wall")
            bb_wall = col("docker", n, "wall")
            rows.append([n, c.fmt(bb_wall, 2), c.fmt(ray_wall, 2), c.fmt(col("ray", n, "init_s"), 2),
                         c.fmt(col("ray", n, "pipeline_s"), 2),
                         f"{c.stats(ray_wall)[0] / c.stats(bb_wall)[0]:.2f}"])
        print(c.table(["workers", "bepbuild e2e s", "ray e2e s", "ray.init s", "ray pipeline s",
                       "ray / bepbuild"], rows))
        for n in args.workers:
            ray_wall = c.stats(col("ray", n, "wall"))[0]
            ratio = ray_wall / c.stats(col("docker", n, "wall"))[0]
            ceiling = ray_wall / c.stats(col("limit", n, "wall"))[0]
            print(f"{n} worker(s): bepbuild is {ratio:.2f} x faster than Ray end to end "
                  f"(goal >= 3.5: {c.verdict(ratio >= 3.5)}); the limit is {ceiling:.2f} x faster than Ray "
                  "(the most any runtime could reach in this run)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


def _ray_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ray")
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
