"""Make the README's screenshot of a job page: docs/img/job-page.png.

    .venv/bin/python scripts/screenshot.py [--out docs/img/job-page.png] [--at 0.6]

In a throw-away BEPBUILD_HOME: a deployment registered the way the tests register theirs (no
image: the process backend runs its scoring script with this venv's Python), 60 small images
(two of which the script refuses), `bepbuild serve` on a free loopback port, a job started with
Azure's REST call, and the job page shot in headless Chromium (Debian's, `make browser`) once the
job is `--at` of the way through (1 = when it has ended), tracebacks folded (they name this
machine's folders).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "unit"))

CHROMIUM = os.environ.get("BEPBUILD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

# A digit per image after a pause; "smudged" images always fail, a "flaky" one fails its first try only.
SCRIPT = """
import os, time

def init():
    pass

def run(mini_batch):
    worker = os.environ.get("BEPBUILD_WORKER", "instance-0.0")  # instance-1 is the slower machine
    time.sleep({"instance-0.0": 1.4, "instance-0.1": 1.9, "instance-1.0": 2.6, "instance-1.1": 3.1}.get(worker, 2))
    for p in mini_batch:
        name = os.path.basename(p)
        if "smudged" in name:
            raise ValueError(f"{name}: no digit found (the image is blank)")
        marker = os.path.join(os.environ["AZUREML_BI_OUTPUT_PATH"], "." + name + ".tried")
        if "flaky" in name and not os.path.exists(marker):
            open(marker, "w").close()
            raise ConnectionError(f"{name}: the feature store did not answer in time")
    return [f"{os.path.basename(p)} {sum(os.path.basename(p).encode()) % 10} 0.9{len(p) % 10}" for p in mini_batch]
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "job-page.png")
    parser.add_argument("--at", type=float, default=0.75, help="fraction of mini-batches done when shot (0-1)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bepbuild-shot-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        os.environ["BEPBUILD_HOME"] = str(home)
        os.environ.pop("BEPBUILD_JOBS_DIR", None)
        return shoot(Path(tmp), home, args.out, args.at)


def shoot(tmp: Path, home: Path, out: Path, at: float) -> int:
    from playwright.sync_api import sync_playwright
    from test_jobs_process import register
    from webkit import Server, invoke_body, make_images, wait_for

    from bepbuild.store import Store

    register(SCRIPT, endpoint="mnist-batch", deployment="mnist-torch-dpl", mini_batch_size=2,
             max_concurrency_per_instance=2, retry_settings={"max_retries": 2, "timeout": 30})
    store = Store.open()
    dep = store.get_deployment("mnist-batch", "mnist-torch-dpl")
    store.put_deployment("mnist-batch", "mnist-torch-dpl", {**dep, "resources": {"instance_count": 2}})
    store.close()
    inputs = tmp / "sample"
    make_images(inputs, 60)
    for name, new in (("digit-07.png", "digit-07-smudged.png"), ("digit-12.png", "digit-12-flaky.png"),
                      ("digit-31.png", "digit-31-smudged.png")):
        (inputs / name).rename(inputs / new)
    server = Server(home)
    try:
        r = server.client.post("/endpoints/mnist-batch/jobs", json=invoke_body(inputs))
        r.raise_for_status()
        name = r.json()["name"]

        def far_enough() -> bool:
            job = server.client.get(f"/jobs/{name}/live").json()
            p = job["progress"]
            return job["final"] or (at < 1 and p["total"] and p["finished"] >= at * p["total"])

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1640}, device_scale_factor=1)
            wait_for(far_enough, timeout=120, every=0.2, what="the job to get far enough")
            page.goto(server.page(f"/jobs/{name}"))
            page.wait_for_selector("#timeline svg", timeout=15000)
            page.wait_for_selector("#table table", timeout=15000)
            time.sleep(1.2)  # one more live update: bars, chart and counters in step
            # Tracebacks folded (their summaries stay): they name this machine's folders.
            page.evaluate("document.querySelectorAll('#failures details').forEach(d => d.removeAttribute('open'))")
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))  # the viewport: progress, charts, failures, the table's start
            browser.close()
        wait_for(lambda: server.client.get(f"/jobs/{name}/live").json()["final"], timeout=120, what="the job's end")
    finally:
        server.stop()
    print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
