"""Build timings of the mnist torch deployment: cold build, new deployment, code-only rebuild, no-op deploy.

Every step is a `bepbuild deploy` on the command line, timed from the outside (what a user waits for),
against a copy of `examples/mnist` (on an endpoint of its own, whose images are removed at the end)
under a fresh BEPBUILD_HOME:

- cold: the deployment's image and its environment image removed and the BuildKit cache pruned
  (`docker builder prune -af`: the build cache only, never an image), then deploy: lock resolution,
  wheel fetch, the environment image, the deployment image;
- new deployment: the same deployment under another name (`--set name=...`, REPS times), as a second
  deployment of the endpoint or one on another endpoint: its environment image exists, so only its
  own layers are built (runtime, model, code) and no wheel is sent to the engine;
- code-only: a comment appended to the scoring script, then deploy (REPS times);
- no-op: deploy of the unchanged deployment (REPS times).

Ratios are against the cold build of the same run. Goals: new deployment <= 3 s, code-only <= 1 s,
no-op <= 1 s.
Run it alone with `.venv/bin/python bench/build.py [--reps N] [--json FILE]`, or through bench/run.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "mnist"
DEPLOYMENT = "deployment-torch"
SCRIPT = "code/batch_driver.py"
GOALS = {"new-deploy": 3.0, "code-only": 1.0, "no-op": 1.0}


def _bepbuild() -> list[str]:
    exe = Path(sys.executable).parent / "bepbuild"
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from bepbuild.cli import main; main()"]


def _docker() -> str:
    return os.environ.get("BEPBUILD_DOCKER") or "/usr/bin/docker"


def deploy(file: Path, home: Path, *extra: str) -> tuple[float, dict]:
    """One `bepbuild deploy`: wall seconds and its JSON result."""
    start = time.perf_counter()
    proc = subprocess.run([*_bepbuild(), "deploy", str(file), "--quiet", *extra, "-o", "json"], capture_output=True,
                          text=True, env={**os.environ, "BEPBUILD_HOME": str(home)})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench/build: deploy failed: {proc.stderr.strip()}")
    return seconds, json.loads(proc.stdout)


def content_tags(file: Path, scratch: Path) -> list[str]:
    """The image tags a deploy of `file` will build, the deployment's and its environment's (rendered in a
    scratch home, so the timed home stays cold)."""
    proc = subprocess.run([*_bepbuild(), "render", str(file), "--output-dir", str(scratch / "ctx"), "-o", "json"],
                          capture_output=True, text=True, env={**os.environ, "BEPBUILD_HOME": str(scratch / "home")})
    if proc.returncode != 0:
        raise SystemExit(f"bench/build: render failed: {proc.stderr.strip()}")
    doc = json.loads(proc.stdout)
    return [t for t in (doc["tag"], doc.get("environment_image")) if t]


def make_cold(tags: list[str]) -> None:
    """Remove the images `tags` and the BuildKit build cache (no other image is touched)."""
    docker = _docker()
    for tag in tags:
        if subprocess.run([docker, "image", "inspect", tag], capture_output=True).returncode != 0:
            continue
        rm = subprocess.run([docker, "rmi", tag], capture_output=True, text=True)
        if rm.returncode != 0:
            raise SystemExit(f"bench/build: cannot remove {tag} for a cold build: {rm.stderr.strip()}")
    prune = subprocess.run([docker, "builder", "prune", "-af"], capture_output=True, text=True)
    if prune.returncode != 0:
        raise SystemExit(f"bench/build: docker builder prune failed: {prune.stderr.strip()}")


def summary(name: str, runs: list[float], cold: float) -> dict:
    med = statistics.median(runs)
    return {"step": name, "runs": len(runs), "median_s": round(med, 3), "min_s": round(min(runs), 3),
            "max_s": round(max(runs), 3), "ratio_to_cold": round(med / cold, 4) if cold else None,
            "goal_s": GOALS.get(name), "result": ("PASS" if med <= GOALS[name] else "MISS") if name in GOALS else ""}


def table(rows: list[dict]) -> str:
    head = f"{'step':<10} {'runs':>4} {'median s':>9} {'min s':>8} {'max s':>8} {'x cold':>8}  goal"
    lines = [head, "-" * len(head)]
    for r in rows:
        goal = f"<= {r['goal_s']:g} s {r['result']}" if r["goal_s"] is not None else "(baseline)"
        ratio = f"{r['ratio_to_cold']:.4f}" if r["ratio_to_cold"] is not None else ""
        lines.append(f"{r['step']:<10} {r['runs']:>4} {r['median_s']:>9.3f} {r['min_s']:>8.3f} {r['max_s']:>8.3f} "
                     f"{ratio:>8}  {goal}")
    return "\n".join(lines)


def run(reps: int, keep: Path | None = None) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="bepbuild-bench-") as tmp:
        work = Path(tmp) if keep is None else keep
        work.mkdir(parents=True, exist_ok=True)
        shutil.copy(EXAMPLE / "endpoint.yml", work / "endpoint.yml")
        shutil.copytree(EXAMPLE / DEPLOYMENT, work / DEPLOYMENT, ignore=shutil.ignore_patterns("__pycache__"))
        # An endpoint of its own: its images are the benchmark's (other users of the engine may run the example's).
        endpoint = f"bench-build-{os.getpid()}"
        for name in ("endpoint.yml", f"{DEPLOYMENT}/deployment.yml"):
            text = (work / name).read_text()
            (work / name).write_text(text.replace("mnist-batch", endpoint))
        file = work / DEPLOYMENT / "deployment.yml"
        home = work / "home"
        made: list[str] = []  # the deployment images of this run: removed at the end
        tags = content_tags(file, work / "scratch")
        print(f"bench/build: cold build of {', '.join(tags)} (images removed, build cache pruned)", file=sys.stderr)
        make_cold(tags)
        cold, doc = deploy(file, home)
        made.append(doc["image"])
        built = doc.get("build_summary") or {}
        if not doc.get("built") or not built.get("environment_built"):
            raise SystemExit("bench/build: the cold deploy did not build (was an image re-created meanwhile?)")
        print(f"bench/build: cold {cold:.1f} s (environment image {built['environment_seconds']:.1f} s, "
              f"deployment image {doc.get('build_seconds', 0):.1f} s)", file=sys.stderr)

        new_deploy: list[float] = []
        for i in range(reps):
            seconds, doc = deploy(file, home, "--set", f"name=bench-new-{i}-{time.time_ns() % 10**6}")
            if not doc.get("built") or (doc.get("build_summary") or {}).get("environment_built"):
                raise SystemExit("bench/build: a new deployment of the environment did not reuse its image")
            new_deploy.append(seconds)
            made.append(doc["image"])

        code_only: list[float] = []
        for i in range(reps):
            with open(work / DEPLOYMENT / SCRIPT, "a") as f:
                f.write(f"# bench change {i} {time.time_ns()}\n")
            seconds, doc = deploy(file, home)
            if not doc.get("built"):
                raise SystemExit("bench/build: a code change did not rebuild")
            code_only.append(seconds)
            made.append(doc["image"])
        no_op: list[float] = []
        for _ in range(reps):
            seconds, doc = deploy(file, home)
            if doc.get("built"):
                raise SystemExit("bench/build: an unchanged deployment was rebuilt")
            no_op.append(seconds)

        # The environment image stays (it is the example's too); the benchmark's deployment images go.
        subprocess.run([_docker(), "rmi", *dict.fromkeys(made)], capture_output=True)
    return [summary("cold", [cold], cold), summary("new-deploy", new_deploy, cold),
            summary("code-only", code_only, cold), summary("no-op", no_op, cold)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/build.py", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions of code-only and no-op (default 3)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--keep", type=Path, help="work in this (new) folder and keep it: homes, build logs")
    args = parser.parse_args(argv)
    rows = run(max(1, args.reps), args.keep)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
