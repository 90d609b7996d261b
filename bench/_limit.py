"""The limit of P2: plain Python processes scoring the same mini-batches with the same init()/run().

    python bench/_limit.py --input DIR --code DIR --script batch_driver.py --model-dir DIR \
        --workers N --mini-batch-size 10 --out FILE.json

The input folder is listed and cut into mini-batches exactly as bepbuild does (name order,
`mini_batch_size` files each); worker k of N takes mini-batches k, k+N, k+2N... (the same share a
perfect queue would give). Each worker is a forked process with the thread counts bepbuild gives a
worker (OMP/MKL/OPENBLAS = CPUs // N), imports the scoring script, calls init(), then run() on
each of its mini-batches, recording each one's start and run() seconds. Nothing is written: this is
the bound, not a competitor. The timer of the caller around this process includes its start.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time


def worker(k: int, args: argparse.Namespace, batches: list[list[str]], conn) -> None:  # noqa: ANN001
    threads = str(max(1, len(os.sched_getaffinity(0)) // args.workers))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = threads
    os.environ["AZUREML_MODEL_DIR"] = args.model_dir
    sys.path.insert(0, args.code)
    t0 = time.time()
    import importlib

    module = importlib.import_module(os.path.splitext(args.script)[0])
    module.init()
    ready = time.time()
    records = []
    devnull = open(os.devnull, "w")  # noqa: SIM115 - run() prints a line per call; bepbuild sends it to a log file
    sys.stdout = devnull
    for i in range(k, len(batches), args.workers):
        start, c0 = time.time(), time.perf_counter()
        module.run(batches[i])
        records.append({"start": start, "run_seconds": time.perf_counter() - c0, "worker": str(k),
                        "total": len(batches[i]), "elapsed": time.perf_counter() - c0})
    conn.send({"import_start": t0, "ready": ready, "records": records})
    conn.close()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--input", required=True)
    p.add_argument("--code", required=True)
    p.add_argument("--script", required=True)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--mini-batch-size", type=int, default=10)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    started = time.time()
    with os.scandir(args.input) as it:
        names = sorted(e.name for e in it if e.is_file())
    paths = [os.path.join(args.input, n) for n in names]
    size = args.mini_batch_size
    batches = [paths[i:i + size] for i in range(0, len(paths), size)]
    ctx = multiprocessing.get_context("fork")
    pipes, procs = [], []
    for k in range(args.workers):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=worker, args=(k, args, batches, child))
        proc.start()
        child.close()
        pipes.append(parent)
        procs.append(proc)
    results = [pipe.recv() for pipe in pipes]
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            return 1
    with open(args.out, "w") as f:
        json.dump({"started": started, "workers": results}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
