"""Shared helpers of the benchmarks (not a benchmark itself: no main()).

Every benchmark works in a fresh BEPBUILD_HOME under /tmp (its own registry and jobs; images are
shared with the engine, so an image built before is reused by content tag) and drives bepbuild
through its command line, as a user would, timing from the outside. Steady-state figures come
from the job folder itself: every done record (`queue/done/<id>.json`) carries the mini-batch's
start (wall clock, full precision), its elapsed and its run() seconds, the same figures the node
logs and the attempts CSV show rounded.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bepbuild_runtime import record

REPO = Path(__file__).resolve().parent.parent
MNIST = REPO / "examples" / "mnist"
TORCH_DPL = MNIST / "deployment-torch"
SAMPLE = MNIST / "sample"
DOCKER = os.environ.get("BEPBUILD_DOCKER") or "/usr/bin/docker"


def log(message: str) -> None:
    """Progress on stderr (the tables go to stdout)."""
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- statistics and tables ---------------------------------------------------------------------
def stats(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def fmt(values: Sequence[float] | float | None, digits: int = 3) -> str:
    """`median (min-max)` of several runs, or one number."""
    if values is None:
        return "-"
    if isinstance(values, (int, float)):
        return f"{values:.{digits}f}"
    if not values:
        return "-"
    med, lo, hi = stats(values)
    if len(values) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain text table, columns left-aligned."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def load() -> str:
    """The 1/5/15-minute load averages: on a shared 2-core machine they say how quiet a run was."""
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- a bepbuild home and its command line ---------------------------------------------------------
def bepbuild_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "bepbuild"
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from bepbuild.cli import main; main()"]


class Home:
    """A throw-away BEPBUILD_HOME (and scratch folder) for one benchmark."""

    def __init__(self, prefix: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"bepbuild-bench-{prefix}-", dir="/tmp"))
        self.home = self.root / "home"
        self.env = {**os.environ, "BEPBUILD_HOME": str(self.home)}
        os.sync()  # start with no writeback of an earlier benchmark's files under way

    def __enter__(self) -> Home:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        # Job folders of docker jobs belong to the container user: root removes them all the same.
        shutil.rmtree(self.root, ignore_errors=True)
        os.sync()  # leave no writeback of our deletions to the next benchmark

    def cli(self, *args: str, check: bool = True) -> tuple[float, Any]:
        """Run `bepbuild ARGS -o json`: (wall seconds, parsed stdout)."""
        start = time.perf_counter()
        proc = subprocess.run([*bepbuild_cmd(), *args, "-o", "json"], capture_output=True, text=True, env=self.env)
        seconds = time.perf_counter() - start
        if check and proc.returncode != 0:
            raise RuntimeError(f"bepbuild {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        try:
            doc = json.loads(proc.stdout) if proc.stdout.strip() else None
        except ValueError:
            doc = proc.stdout
        return seconds, doc

    def deploy(self, deployment_yml: Path, *sets: str) -> dict[str, Any]:
        args = ["deploy", str(deployment_yml), "--set-default", "-q"]
        for s in sets:
            args += ["--set", s]
        seconds, doc = self.cli(*args)
        log(f"deployed {doc['name']} ({'built' if doc.get('built') else 'image reused'}) in {seconds:.1f} s")
        return doc

    def invoke(self, endpoint: str, input_dir: Path, *, backend: str = "docker", mini_batch_size: int | None = None,
               instance_count: int | None = None, deployment: str | None = None,
               extra: Sequence[str] = ()) -> tuple[float, float, dict[str, Any]]:
        """One attached invoke: (wall clock at launch, wall seconds, the final job)."""
        args = ["batch-endpoint", "invoke", "--name", endpoint, "--input", str(input_dir), "--backend", backend, "-q"]
        if deployment:
            args += ["--deployment-name", deployment]
        if mini_batch_size:
            args += ["--mini-batch-size", str(mini_batch_size)]
        if instance_count:
            args += ["--instance-count", str(instance_count)]
        args += list(extra)
        for attempt in (1, 2):
            launched = time.time()
            try:
                seconds, job = self.cli(*args)
            except RuntimeError as e:  # e.g. the engine restarted under us (a shared machine): once more
                if attempt == 2:
                    raise
                log(f"invoke failed, retrying once: {str(e)[-300:]}")
                time.sleep(5)
                continue
            if isinstance(job, dict) and job.get("status") == "Completed":
                break
            if attempt == 2:
                raise RuntimeError(f"invoke did not complete: {str(job)[:2000]}")
            log(f"invoke ended {job.get('status') if isinstance(job, dict) else job!r}, retrying once")
        return launched, seconds, job


# -- the writer thread and its baseline ----------------------------------------------------------
# The runtime records each finished mini-batch in a writer thread (runtime/writer.py) while run() is
# longer than that work; this variable set to 0 in a deployment's environment_variables makes its
# workers always do it themselves between two run() calls, as before: the baseline measured in the
# same run.
SEQUENTIAL_ENV = {"BEPBUILD_WRITER_DEPTH": "0"}
# A worker with a short run() claims and records a few mini-batches at a time (worker._Held); this
# makes it take and record them one at a time, as before: the baseline of what that buys.
ONE_AT_A_TIME_ENV = {"BEPBUILD_HOLD_SECONDS": "0"}


class DiskLoad:
    """A known background disk load (bench/_disk_load.py) while the `with` block runs: `mb_per_s`
    written in 1 MiB fsynced chunks and `files_per_s` small files created, on the disk of /tmp."""

    def __init__(self, root: Path, mb_per_s: float = 20.0, files_per_s: float = 200.0) -> None:
        self.root, self.mb_per_s, self.files_per_s = root, mb_per_s, files_per_s
        self.proc: subprocess.Popen[bytes] | None = None

    def describe(self) -> str:
        return f"{self.mb_per_s:g} MB/s in fsynced 1 MiB writes + {self.files_per_s:g} file creations/s"

    def __enter__(self) -> DiskLoad:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "_disk_load.py"),
                                      str(self.root / "disk-load"), "--mb-per-s", str(self.mb_per_s),
                                      "--files-per-s", str(self.files_per_s)])
        time.sleep(1.0)  # let its writeback start
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None
        os.sync()


# -- inputs --------------------------------------------------------------------------------------
def tiny_files(folder: Path, n: int, size: int = 8) -> Path:
    """`n` small files named f0000000.txt..., `size` bytes each."""
    folder.mkdir(parents=True, exist_ok=True)
    data = b"x" * size
    for i in range(n):
        fd = os.open(folder / f"f{i:07d}.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        if size:
            os.write(fd, data)
        os.close(fd)
    os.sync()  # their writeback is not the measured runs' cost
    return folder


def mnist_images(folder: Path, n: int) -> Path:
    """`n` MNIST PNGs: hard links (copies across filesystems) to the 100 samples, with new names."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = sorted(SAMPLE.glob("*.png"))
    for i in range(n):
        src = samples[i % len(samples)]
        dst = folder / f"img{i:06d}_{src.stem}.png"
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    os.sync()
    return folder


# -- the no-op deployment ------------------------------------------------------------------------
NOOP_SCRIPT = '''\
"""No-op scoring script of the benchmarks: run() returns its mini-batch (one output row per item)."""


def init():
    pass


def run(mini_batch):
    return mini_batch
'''


def noop_deployment(folder: Path, endpoint: str = "bench-noop", workers: int = 1, name: str = "noop-dpl",
                    env: dict[str, str] | None = None) -> Path:
    """A deployment whose image is the base image's Python only (no packages) and whose run() is a no-op.

    `name` and `env` (its environment_variables) make variants of it on the same endpoint and image.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "code").mkdir(parents=True, exist_ok=True)
    (folder / "model").mkdir(exist_ok=True)
    (folder / "code" / "score.py").write_text(NOOP_SCRIPT)
    (folder / "model" / "weights.txt").write_text("no weights\n")
    (folder / "endpoint.yml").write_text(f"name: {endpoint}\ndescription: bench no-op endpoint\n")
    env_yaml = "".join(f"\n    {k}: \"{v}\"" for k, v in (env or {}).items())
    (folder / "deployment.yml").write_text(f"""\
name: {name}
endpoint_name: {endpoint}
type: model
model:
  name: bench-noop-model
  path: model
code_configuration:
  code: code
  scoring_script: score.py
environment:
  name: bench-noop-env
  image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest
resources:
  instance_count: 1
settings:
  max_concurrency_per_instance: {workers}
  mini_batch_size: 10
  output_action: append_row
  output_file_name: predictions.csv
  retry_settings:
    max_retries: 3
    timeout: 30
""" + (f"  environment_variables:{env_yaml}\n" if env_yaml else ""))
    return folder / "deployment.yml"


def torch_deployment(folder: Path) -> Path:
    """A copy of the MNIST torch example (so a `--set` on deploy never touches the repo's files)."""
    shutil.copy(MNIST / "endpoint.yml", folder / "endpoint.yml")
    shutil.copytree(TORCH_DPL, folder / "deployment-torch", ignore=shutil.ignore_patterns("__pycache__"))
    return folder / "deployment-torch" / "deployment.yml"


def variant_deployment(deployment_yml: Path, name: str, env: dict[str, str]) -> Path:
    """A sibling of `deployment_yml` (same code, model and image) named `name`, with `env` added to
    its settings' environment_variables (the file must end inside its `settings:` block)."""
    text = deployment_yml.read_text()
    old_name = next(line for line in text.splitlines() if line.startswith("name: "))
    text = text.replace(old_name, f"name: {name}", 1).rstrip("\n") + "\n  environment_variables:\n"
    text += "".join(f'    {k}: "{v}"\n' for k, v in env.items())
    out = deployment_yml.with_name(f"deployment-{name}.yml")
    out.write_text(text)
    return out


# -- what a finished job folder tells ------------------------------------------------------------
def done_records(job_dir: Path) -> list[dict[str, Any]]:
    folder = job_dir / "queue" / "done"
    out = []
    for p in folder.iterdir():
        if p.name.endswith(".json") and not p.name.startswith("."):
            out.append(record.read(str(p)))
    return out


def steady_state(job_dir: Path) -> dict[str, float]:
    """Figures of the runtime at work, from the done records (time between first and last start).

    - batches_per_s: the sum over workers of (n_w - 1) / (its last start - its first start): the
      rate while every worker works (start and end, when some workers already idle, left out);
    - cycle_ms: per worker, the mean time from one mini-batch's start to the next one's;
    - run_ms: the mean time inside run();
    - overhead_ms: cycle - run, per worker then averaged: what the runtime costs per mini-batch
      (claim, result formatting and write, done record, logs), with nothing else in it.
    """
    recs = done_records(job_dir)
    starts = sorted(r["start"] for r in recs)
    n = len(starts)
    span = starts[-1] - starts[0] if n > 1 else float("nan")
    by_worker: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        by_worker.setdefault(r["worker"], []).append(r)
    cycles, overheads = [], []
    for rs in by_worker.values():
        rs.sort(key=lambda r: r["start"])
        if len(rs) < 2:
            continue
        cyc = (rs[-1]["start"] - rs[0]["start"]) / (len(rs) - 1)
        run = statistics.fmean(r["run_seconds"] for r in rs[:-1])
        cycles.append(cyc)
        overheads.append(cyc - run)
    items = sum(r["total"] for r in recs)
    return {
        "batches": n,
        "items": items,
        "span_s": span,
        "batches_per_s": worker_rate(recs),
        "items_per_s": worker_rate(recs) * items / n if n else float("nan"),
        "cycle_ms": 1000 * statistics.fmean(cycles) if cycles else float("nan"),
        "run_ms": 1000 * statistics.fmean(r["run_seconds"] for r in recs),
        "overhead_ms": 1000 * statistics.fmean(overheads) if overheads else float("nan"),
        "first_start": starts[0],
        "first_end": min(r["start"] + r["elapsed"] for r in recs),
        "last_end": max(r["start"] + r["elapsed"] for r in recs),
    }


def worker_rate(recs: Sequence[dict[str, Any]]) -> float:
    """Mini-batches per second while all workers work: sum over workers of (n_w - 1) / span_w."""
    by_worker: dict[str, list[float]] = {}
    for r in recs:
        by_worker.setdefault(str(r["worker"]), []).append(r["start"])
    rate = 0.0
    for starts in by_worker.values():
        if len(starts) > 1 and max(starts) > min(starts):
            rate += (len(starts) - 1) / (max(starts) - min(starts))
    return rate or float("nan")


def node_times(job_dir: Path) -> dict[str, list[float]]:
    """Wall-clock stamps from the node logs: worker 'starting' and 'init() done' lines, per worker."""
    from datetime import datetime

    def stamp(text: str) -> float:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=__import__("datetime").timezone.utc
                                                                       ).timestamp()

    out: dict[str, list[float]] = {"supervisor": [], "worker_start": [], "init_done": []}
    for p in (job_dir / "logs" / "sys" / "node").glob("*/*.txt"):
        for line in p.read_text(errors="replace").splitlines():
            parts = line.split(" ", 2)
            if len(parts) < 3:
                continue
            if p.name == "_main.txt" and parts[2].startswith("starting "):
                out["supervisor"].append(stamp(parts[0]))
            elif " starting: " in line:
                out["worker_start"].append(stamp(parts[0]))
            elif parts[2].startswith("init() done"):
                out["init_done"].append(stamp(parts[0]))
    return out
