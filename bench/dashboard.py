"""The dashboard with a job of 100,000 mini-batches: how long its page takes to open.

A job page opens in two requests: the page itself (record, counts, settings) and its first live
update (progress, throughput chart, timeline, failures), then the first page of its mini-batch
table. Each is timed cold (a server that never saw the job: the attempts CSVs and queue records are
read for the first time) and warm (the next poll, which reads only what is new). Jobs are made on
disk directly (tests/unit/webkit.big_job), in a fresh BEPBUILD_HOME:

- finished: Completed, 100,000 done records, 100,000 attempts rows, a 100,000-row output file;
- started: Running, 100,000 pending records (nothing done yet);
- halfway: Running, 50,000 done and 50,000 pending records, 50,000 attempts rows.

The goal: under a second for each open (page + first live update), cold included.

    .venv/bin/python bench/dashboard.py [--mini-batches 100000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "unit"))

import _common as c  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"


def timed(client, url: str, params: dict | None = None) -> float:  # noqa: ANN001
    t = time.perf_counter()
    r = client.get(url, params=params or {})
    took = time.perf_counter() - t
    if r.status_code != 200:
        raise SystemExit(f"bench/dashboard: {url} answered {r.status_code}: {r.text[:300]}")
    return took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mini-batches", type=int, default=100_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    n = args.mini_batches
    home = Path(tempfile.mkdtemp(prefix="bepbuild-bench-dashboard-"))
    os.environ["BEPBUILD_HOME"] = str(home)
    os.environ.pop("BEPBUILD_JOBS_DIR", None)
    from starlette.testclient import TestClient
    from webkit import big_job

    from bepbuild.web.app import create_app

    results: dict[str, dict[str, float]] = {}
    try:
        jobs = {
            "finished": dict(status="Completed", done=n, attempts=n, prediction_rows=n),
            "started": dict(status="Running", pending=n),
            "halfway": dict(status="Running", done=n // 2, pending=n - n // 2, attempts=n // 2),
        }
        for name, spec in jobs.items():
            t = time.perf_counter()
            big_job(name, n, **spec)
            c.log(f"made job {name} ({n:,} mini-batches) in {time.perf_counter() - t:.1f} s")
        subprocess.run(["sync"], check=False)
        client = TestClient(create_app(TOKEN, backend="process"), headers={"Authorization": f"Bearer {TOKEN}"})
        with client:
            for name in jobs:
                r: dict[str, float] = {}
                r["page"] = timed(client, f"/jobs/{name}")
                r["live cold"] = timed(client, f"/jobs/{name}/live")
                r["open"] = r["page"] + r["live cold"]
                r["table cold"] = timed(client, f"/jobs/{name}/mini-batches")
                time.sleep(0.6)  # past the index's refresh interval: the next poll reads what is new
                r["live warm"] = timed(client, f"/jobs/{name}/live")
                r["table last page"] = timed(client, f"/jobs/{name}/mini-batches", {"page": 10**9})
                if name == "finished":
                    r["outputs"] = timed(client, f"/jobs/{name}/outputs")
                    r["outputs last page"] = timed(client, f"/jobs/{name}/outputs", {"page": 10**9})
                results[name] = r
    finally:
        shutil.rmtree(home, ignore_errors=True)
    columns = ["page", "live cold", "open", "table cold", "live warm", "table last page", "outputs",
               "outputs last page"]
    print(c.table(["job", *columns], [[name, *(c.fmt(r.get(k)) for k in columns)] for name, r in results.items()]))
    worst = max(r["open"] for r in results.values())
    print(f"slowest open (page + first live update): {worst:.3f} s; goal under 1 s: {c.verdict(worst < 1.0)}")
    if args.json:
        args.json.write_text(json.dumps({"mini_batches": n, "seconds": results}, indent=1))
    return 0 if worst < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
