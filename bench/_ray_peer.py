"""The peer of P3: the same files and the same init()/run() through Ray Data, on this machine only.

    python bench/_ray_peer.py --input DIR --code DIR --script batch_driver.py --model-dir DIR \
        --workers N --mini-batch-size 10 --output FILE --out FILE.json

A path dataset (`ray.data.from_items`, one row per file, name order) goes through `map_batches`
with an actor pool of N actors (one CPU each), batch_size = mini_batch_size; each actor imports the
scoring script and calls init() once, then run() per batch; the DataFrames come back to the driver
and are written as one space-separated file without header, like bepbuild's append_row output.
`ray.init(num_cpus=2, include_dashboard=False)`: a local cluster on loopback only, usage stats off.
The caller's timer around this process includes Python's start, `import ray` and `ray.init`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--input", required=True)
    p.add_argument("--code", required=True)
    p.add_argument("--script", required=True)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--mini-batch-size", type=int, default=10)
    p.add_argument("--output", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    t0 = time.time()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    t_import = time.time()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             _node_ip_address="127.0.0.1")
    t_init = time.time()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    threads = str(max(1, 2 // args.workers))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
           "AZUREML_MODEL_DIR": args.model_dir}
    code, script = args.code, os.path.splitext(args.script)[0]

    class Scorer:
        def __init__(self) -> None:
            os.environ.update(env)
            sys.path.insert(0, code)
            import importlib

            self.module = importlib.import_module(script)
            self.module.init()

        def __call__(self, batch: dict) -> object:
            return self.module.run([str(p) for p in batch["path"]])

    with os.scandir(args.input) as it:
        names = sorted(e.name for e in it if e.is_file())
    ds = ray.data.from_items([{"path": os.path.join(args.input, n)} for n in names])
    scored = ds.map_batches(Scorer, batch_size=args.mini_batch_size, concurrency=args.workers, num_cpus=1,
                            batch_format="pandas")
    frame = scored.to_pandas()
    frame.to_csv(args.output, header=False, index=False, sep=" ", lineterminator="\n")
    t_done = time.time()
    ray.shutdown()
    t_end = time.time()
    with open(args.out, "w") as f:
        json.dump({"rows": len(frame), "import_s": t_import - t0, "init_s": t_init - t_import,
                   "pipeline_s": t_done - t_init, "shutdown_s": t_end - t_done}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
