"""Helpers of the dashboard tests (unit and browser): jobs on the process backend, the app in-process,
a real server in a subprocess, small images.

Deployments are registered without an image (`test_jobs_process.register`): the process backend
runs the scoring script with this venv's Python.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import httpx

from bepbuild.web import state

TOKEN = "test-token-0123456789abcdef"
BEPBUILD = Path(sys.executable).parent / "bepbuild"

# One `<file> <size>` line per input; a file whose name holds "bad" raises (its mini-batch fails).
SCORE_OR_FAIL = """
import os, time

def init():
    pass

def run(mini_batch):
    delay = float(os.environ.get("SCORE_DELAY", "0") or 0)
    if delay:
        time.sleep(delay)
    for p in mini_batch:
        if "bad" in os.path.basename(p):
            raise ValueError(f"cannot score {os.path.basename(p)}: the pixels are upside down")
    return [f"{os.path.basename(p)} {os.path.getsize(p)}" for p in mini_batch]
"""


def png(width: int = 8, height: int = 8, shade: int = 128) -> bytes:
    """A small grey PNG (no imaging library needed)."""
    raw = b"".join(b"\x00" + bytes([shade]) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def make_images(folder: Path, n: int, prefix: str = "digit") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{prefix}-{i:02d}.png" for i in range(n)]
    for i, name in enumerate(names):
        (folder / name).write_bytes(png(shade=20 * i % 256))
    return names


def wait_for(predicate: Any, timeout: float = 60.0, every: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Server:
    """`bepbuild serve` in a subprocess on 127.0.0.1, a free port, the process backend."""

    def __init__(self, home: Path, extra_env: dict[str, str] | None = None) -> None:
        self.home = home
        env = {**os.environ, "BEPBUILD_HOME": str(home), **(extra_env or {})}
        self.log = open(home / "serve-test.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([str(BEPBUILD), "serve", "--port", "0", "--backend", "process",
                                      "--token", TOKEN], env=env, stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        self.info = wait_for(lambda: self._info(), timeout=30, what="the server's state file")
        self.base = self.info.base_url
        self.client = httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)

    def _info(self) -> state.ServerInfo | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"bepbuild serve exited {self.proc.returncode}: "
                                 f"{(self.home / 'serve-test.log').read_text()[-2000:]}")
        info = state.read(self.home)
        return info if info is not None and info.pid == self.proc.pid else None

    def page(self, path: str) -> str:
        return self.info.page(path)

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def invoke_body(folder: Path, kind: str = "UriFolder") -> dict[str, Any]:
    return {"properties": {"InputData": {"mnistinput": {"JobInputType": kind, "Uri": str(folder)}}}}


def poll_job(client: httpx.Client, endpoint: str, name: str, timeout: float = 90.0) -> dict[str, Any]:
    """GET the job until it ends; its last answer."""
    def ended() -> dict[str, Any] | None:
        r = client.get(f"/endpoints/{endpoint}/jobs/{name}")
        assert r.status_code == 200, r.text
        job = r.json()
        return job if job["status"] in ("Completed", "Failed", "Canceled") else None

    return wait_for(ended, timeout=timeout, every=0.2, what=f"job {name} to end")


def dumps(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True)


def big_job(name: str, mini_batches: int, *, status: str = "Completed", pending: int = 0, done: int = 0,
            attempts: int | None = None, workers: int = 8, prediction_rows: int = 0) -> dict[str, Any]:
    """A job of `mini_batches` one-item mini-batches made on disk directly (no run): its record,
    `pending`/`done` queue records, one attempts-CSV row per finished mini-batch (or `attempts`),
    spread over `workers` workers, and an output file of `prediction_rows` rows."""
    from bepbuild import config
    from bepbuild.store import Store
    from bepbuild_runtime import layout, queue, reports

    job_dir = config.jobs_dir() / name
    queue.ensure_dirs(job_dir)
    (job_dir / layout.QUEUE_COUNT_FILE).write_text(f"{mini_batches}\n")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    t0 = time.time() - 3600
    for folder, ids in ((layout.PENDING_DIR, range(mini_batches - pending, mini_batches)),
                        (layout.DONE_DIR, range(done))):
        for i in ids:
            bid = layout.mini_batch_id(i)
            rec = {"id": bid, "items": [f"img-{i:06d}.png"], "attempt": 0}
            if folder == layout.DONE_DIR:
                rec.update(status=layout.STATUS_DONE, worker="instance-0.0", total=1, succeeded=1, failed=0)
            fd = os.open(job_dir / folder / f"{bid}.json", flags, 0o644)
            os.write(fd, json.dumps(rec).encode())
            os.close(fd)
    rows = done if attempts is None else attempts
    folder = job_dir / layout.LOG_ATTEMPTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for w in range(workers):
        worker = f"instance-{w // 4}.{w % 4}"
        with open(folder / f"{worker}.csv", "w", encoding="utf-8") as f:
            f.write(",".join(layout.PROCESSED_COLUMNS) + "\n")
            for i in range(w, rows, workers):
                ok = i % 97 != 0
                f.write(f"{layout.mini_batch_id(i)},1,{worker},{reports.now_iso(t0 + i * 0.01)},1,{int(ok)},"
                        f"{int(not ok)},0.0800,0.0100,0.0700,{layout.STATUS_DONE if ok else layout.STATUS_EXCEPTION},"
                        f"{'' if ok else 'UserError'},{'' if ok else 'ValueError: bad pixel'},"
                        f"\"{{\"\"items\"\": [\"\"img-{i:06d}.png\"\"]}}\"\n")
    out = job_dir / layout.OUTPUTS_DIR
    out.mkdir(exist_ok=True)
    if prediction_rows:
        with open(out / "predictions.csv", "w") as f:
            f.writelines(f"img-{i:06d}.png {i % 10} 0.9\n" for i in range(prediction_rows))
    final = status in ("Completed", "Failed", "Canceled")
    doc = {
        "name": name, "endpoint": "big-ep", "deployment": "big-dpl", "status": status, "backend": "process",
        "image": "bepbuild/big-ep/big-dpl:notbuilt", "scoring_script": "score.py", "job_dir": str(job_dir),
        "settings": {"mini_batch_size": 1, "instance_count": 2, "max_concurrency_per_instance": 4,
                     "output_action": "append_row", "output_file_name": "predictions.csv", "max_retries": 3,
                     "timeout": 30, "error_threshold": -1, "logging_level": "info", "environment_variables": {}},
        "input": {"path": str(job_dir / "no-inputs"), "type": "uri_folder"}, "input_root": str(job_dir / "no-inputs"),
        "output_dir": str(out), "output_file": str(out / "predictions.csv"), "mini_batches": mini_batches,
        "started_at": reports.now_iso(t0)[:19] + "Z",
        **({"ended_at": reports.now_iso(t0 + rows * 0.01)[:19] + "Z",
            "counts": {"mini_batches": mini_batches, "done": done, "failed": 0, "items_succeeded": done,
                       "items_failed": 0}} if final else {}),
    }
    store = Store.open()
    try:
        store.add_job(name, doc)
    finally:
        store.close()
    return doc
