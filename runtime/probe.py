"""`python -m bepbuild_runtime.probe`: one try of a deployment in its own image, for `bepbuild test`.

`score` (the default) does what one worker of a job does, once and in the open: import the scoring
script, `init()`, `run()` on the given items in mini-batches, each return formatted as the job writes
it (`output`), then checks the environment it ran in:

- `pip check`;
- the installed distributions against the lock (the host's, else the one the image was installed
  from): any package missing, extra or of another version is an error (the venv's own pip,
  setuptools and wheel excepted, unless the lock names them);
- the Python version against the conda file's pin;
- every top-level module of every locked distribution imported in a child process (`imports`), so a
  wheel that installs but cannot load on this base is named with its traceback.

The request is a JSON file from the host (`layout.PROBE_REQUEST`), the answer a JSON file in the
result folder (`layout.PROBE_RESULT`), so nothing the scoring code prints can mix with it. Exit 0
only when every item succeeded and every check passed, 1 otherwise, 2 for a bad request.

`pytest ARGS...` runs pytest from `layout.IMAGE_PYTEST_DIR` (a derived image's own layer), after the
image's packages on sys.path, so the tests import the deployment's versions of what both need.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any

from . import layout, output
from .settings import APPEND_ROW, from_job
from .supervisor import cpu_count
from .worker import WorkerSpec, configure_logging, import_script, thread_env

# Installed by `python -m venv` itself: not part of a lock unless the lock names them.
VENV_TOOLS = ("pip", "setuptools", "wheel", "distribute")
# Top-level names that are not the distribution's API (test suites shipped by mistake, private modules).
NOT_API = ("test", "tests", "testing", "doc", "docs", "example", "examples", "benchmarks", "scripts")
METADATA_DIRS = (".dist-info", ".egg-info", ".data")
IMPORTS_TIMEOUT = 900.0
PIP_CHECK_TIMEOUT = 300.0


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _traceback() -> str:
    return traceback.format_exc()


# -- scoring ----------------------------------------------------------------------------------------


def _timed(fn: Any, *args: Any) -> tuple[Any, float, str | None]:
    """(return value, seconds, traceback or None): anything raised, SystemExit included, is a failure."""
    t0 = time.perf_counter()
    try:
        value = fn(*args)
    except BaseException:  # noqa: B036 - SystemExit from user code fails the phase, as in a worker
        return None, time.perf_counter() - t0, _traceback()
    return value, time.perf_counter() - t0, None


def _batches(items: list[str], size: int) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def score(request: dict[str, Any]) -> dict[str, Any]:
    """Import, init() and run() as one worker of a job would, timing each; the report's `scoring` part."""
    settings = from_job({"settings": request.get("settings") or {}})
    code_dir = request.get("code_dir") or os.environ.get(layout.ENV_CODE_DIR) or layout.IMAGE_CODE_DIR
    script = request.get("scoring_script") or os.environ.get(layout.ENV_SCORING_SCRIPT) or ""
    script = script if os.path.isabs(script) else os.path.join(code_dir, script)
    input_dir = request.get("input_dir") or layout.CONTAINER_INPUT_DIR
    items = [str(i) for i in request.get("items") or []]
    threads = max(1, cpu_count() // settings.max_concurrency_per_instance)
    spec = WorkerSpec(job_dir="", input_dir=input_dir, instance="test", index=0, name="test.0", code_dir=code_dir,
                      scoring_script=script, settings=settings, threads=threads)
    os.environ.update(thread_env(spec))
    configure_logging(settings.log_level)
    report: dict[str, Any] = {
        "scoring_script": script, "output_action": settings.output_action,
        "mini_batch_size": settings.mini_batch_size, "timeout": settings.timeout,
        "import": None, "init": None, "runs": [], "shutdown": None,
        "items": {"given": len(items), "succeeded": 0, "failed": len(items)},
    }
    module, seconds, error = _timed(import_script, code_dir, script, settings.logging_level)
    report["import"] = {"seconds": round(seconds, 6), "error": error}
    if error:
        return report
    init = getattr(module, "init", None)
    if init is not None:
        _, seconds, error = _timed(init)
        report["init"] = {"seconds": round(seconds, 6), "error": error}
        if error:
            return report
    run = getattr(module, "run", None)
    if not callable(run):
        report["init"] = report["init"] or {"seconds": 0.0, "error": None}
        report["init"]["error"] = f"AttributeError: the scoring script {script} has no run(mini_batch) function\n"
        return report
    formatter = output.format_append_row if settings.output_action == APPEND_ROW else output.count_summary
    prefix = input_dir.rstrip("/") + "/"
    succeeded = 0
    for number, batch in enumerate(_batches(items, settings.mini_batch_size)):
        report["runs"].append(_run_once(run, formatter, number, batch, prefix, settings.timeout))
        succeeded += report["runs"][-1]["succeeded"]
    report["items"] = {"given": len(items), "succeeded": succeeded, "failed": len(items) - succeeded}
    shutdown = getattr(module, "shutdown", None)
    if callable(shutdown):
        _, seconds, error = _timed(shutdown)
        report["shutdown"] = {"seconds": round(seconds, 6), "error": error}
    return report


def _run_once(run: Any, formatter: Any, number: int, batch: list[str], prefix: str, timeout: float
              ) -> dict[str, Any]:
    """One run() on one mini-batch, counted as Azure counts it."""
    entry: dict[str, Any] = {"mini_batch": number, "items": len(batch), "succeeded": 0, "failed": len(batch),
                             "status": layout.STATUS_DONE, "rows": None, "warning": None, "error": None}
    t0 = time.perf_counter()
    try:
        result = run([prefix + item for item in batch])
        entry["seconds"] = round(time.perf_counter() - t0, 6)
        outcome = formatter(result, len(batch))
    except BaseException:  # noqa: B036 - whatever run() raises fails this mini-batch only
        entry.setdefault("seconds", round(time.perf_counter() - t0, 6))
        entry.update(status=layout.STATUS_EXCEPTION, error=_traceback())
        return entry
    if entry["seconds"] > timeout:
        # A job's worker is stopped at the timeout: nothing of this mini-batch would be written.
        entry.update(status=layout.STATUS_TIMEOUT,
                     error=f"run() took {entry['seconds']:.1f} s, more than the {timeout:g} s timeout "
                           "(retry_settings.timeout) a job allows: a job stops it and tries the mini-batch again\n")
        return entry
    entry.update(rows=outcome.text, succeeded=outcome.succeeded, failed=len(batch) - outcome.succeeded,
                 warning=outcome.warning)
    return entry


# -- environment checks -----------------------------------------------------------------------------


def read_lock(text: str) -> dict[str, str]:
    """{canonical name: version} of a lock's `name==version --hash=...` lines."""
    pins: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or "==" not in line:
            continue
        name, _, rest = line.partition("==")
        pins[canonical(name.strip())] = rest.split()[0].strip() if rest.split() else ""
    return pins


def installed() -> dict[str, Any]:
    """{canonical name: distribution} of what this interpreter finds (the first of each name wins)."""
    from importlib import metadata

    found: dict[str, Any] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical(name), dist)
    return found


def compare_lock(pins: dict[str, str], dists: dict[str, Any]) -> dict[str, Any]:
    """What differs between a lock and the installed distributions."""
    missing = sorted(f"{n}=={v}" for n, v in pins.items() if n not in dists)
    different = sorted(f"{n}: {v} locked, {dists[n].version} installed" for n, v in pins.items()
                       if n in dists and _same_version(v, dists[n].version) is False)
    extra = sorted(f"{n}=={d.version}" for n, d in dists.items() if n not in pins and n not in VENV_TOOLS)
    return {"missing": missing, "extra": extra, "different": different,
            "ok": not (missing or extra or different)}


def _same_version(a: str, b: str) -> bool:
    norm = [re.sub(r"^v", "", v.strip().lower()) for v in (a, b)]
    return norm[0] == norm[1]


def import_names(dist: Any) -> list[str]:
    """The top-level modules a distribution installs: its top_level.txt, else the first parts of its RECORD."""
    text = dist.read_text("top_level.txt")
    names = set()
    if text:
        names = {line.strip().replace("/", ".").split(".")[0] for line in text.splitlines() if line.strip()}
    else:
        for path in dist.files or []:
            parts = path.parts
            if not parts or parts[0] in ("..", "__pycache__") or parts[0].endswith(METADATA_DIRS):
                continue
            if len(parts) > 1:
                names.add(parts[0])
            elif parts[0].endswith((".py", ".so", ".pyd")):
                names.add(parts[0].split(".")[0])
    return sorted(n for n in names if n.isidentifier() and not n.startswith("_") and n not in NOT_API)


def check_python(pin: str | None) -> dict[str, Any]:
    """This Python's version against the conda file's pin (`3.8`, `3.8.5`, `3.11.*`)."""
    version = platform.python_version()
    if not pin:
        return {"version": version, "pin": None, "ok": True}
    have = version.split(".")
    want = [p for p in pin.split(".") if p not in ("*", "")]
    return {"version": version, "pin": pin, "ok": have[:len(want)] == want}


def pip_check() -> dict[str, Any]:
    """`python -m pip check`; skipped (not failed) where this Python has no pip."""
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "check", "--disable-pip-version-check"],
                              capture_output=True, text=True, timeout=PIP_CHECK_TIMEOUT,
                              env=dict(os.environ, PIP_NO_INDEX="1", PIP_NO_INPUT="1"))
    except subprocess.TimeoutExpired:
        return {"ok": False, "skipped": None, "output": f"pip check did not end within {PIP_CHECK_TIMEOUT:g} s"}
    text = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 and "No module named pip" in text:
        return {"ok": True, "skipped": "this Python has no pip", "output": text}
    return {"ok": proc.returncode == 0, "skipped": None, "output": text}


def check_imports(modules: list[list[str]], timeout: float = IMPORTS_TIMEOUT) -> dict[str, Any]:
    """Import each (distribution, module) in a child process; one that kills its process is named too."""
    failed: list[dict[str, str]] = []
    todo = list(modules)
    deadline = time.monotonic() + timeout
    while todo:
        left = deadline - time.monotonic()
        if left <= 0:
            failed += [{"distribution": d, "module": m, "error": "not tried: the import check ran out of time\n"}
                       for d, m in todo]
            break
        cmd = [sys.executable, "-m", "bepbuild_runtime.probe", "imports", *[m for _, m in todo]]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=left)
            lines, code = proc.stdout.splitlines(), proc.returncode
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            lines, code = out.splitlines(), None
        done = {}
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            done[entry["module"]] = entry
        for dist, module in todo:
            if module in done and done[module].get("error"):
                failed.append({"distribution": dist, "module": module, "error": done[module]["error"]})
        rest = [(d, m) for d, m in todo if m not in done]
        if not rest:
            break
        # The first one not answered took its process down (or the time): name it, go on with the others.
        why = ("the import did not end in time" if code is None
               else f"the interpreter died while importing it (exit code {code})")
        failed.append({"distribution": rest[0][0], "module": rest[0][1], "error": why + "\n"})
        todo = rest[1:]
    return {"checked": len(modules), "failed": failed, "ok": not failed}


def _imports_main(modules: list[str]) -> int:
    """Child of check_imports: one JSON line per module, printed as soon as it is imported or failed."""
    import importlib

    out = sys.stdout
    sys.stdout = sys.stderr  # what an imported module prints must not break the lines
    for module in modules:
        try:
            importlib.import_module(module)
            error = None
        except BaseException:  # noqa: B036 - a module may raise anything, SystemExit included
            error = _traceback()
        out.write(json.dumps({"module": module, "error": error}) + "\n")
        out.flush()
    return 0


def environment(request: dict[str, Any]) -> dict[str, Any]:
    """The environment checks of the report: pip check, lock, Python, imports."""
    lock_text, source = request.get("lock"), "deployment"
    if lock_text is None and os.path.isfile(layout.IMAGE_LOCK):
        with open(layout.IMAGE_LOCK, encoding="utf-8") as f:
            lock_text, source = f.read(), "image"
    dists = installed()
    report: dict[str, Any] = {"python": check_python(request.get("python_pin")), "pip_check": pip_check()}
    if lock_text is None:
        report["lock"] = {"source": None, "ok": True, "missing": [], "extra": [], "different": []}
        report["imports"] = {"checked": 0, "failed": [], "ok": True}
        return report
    import hashlib

    pins = read_lock(lock_text)
    report["lock"] = dict(compare_lock(pins, dists), source=source,
                          sha256=hashlib.sha256(lock_text.encode()).hexdigest(), packages=len(pins))
    modules = [[name, module] for name in sorted(pins) if name in dists for module in import_names(dists[name])]
    report["imports"] = check_imports(modules)
    return report


# -- entry points ---------------------------------------------------------------------------------------


def ok(report: dict[str, Any]) -> bool:
    """Whether every item succeeded and every check passed."""
    scoring = report.get("scoring") or {}
    phases = [scoring.get(k) or {} for k in ("import", "init")]
    if any(p.get("error") for p in phases) or not scoring.get("import"):
        return False
    items = scoring.get("items") or {}
    if items.get("failed"):
        return False
    env = report.get("environment")
    return env is None or all((env.get(k) or {}).get("ok", True) for k in ("python", "pip_check", "lock", "imports"))


def _write_result(folder: str, report: dict[str, Any]) -> None:
    tmp = os.path.join(folder, "." + layout.PROBE_RESULT + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    os.replace(tmp, os.path.join(folder, layout.PROBE_RESULT))


def _score_main(request_file: str, result_dir: str) -> int:
    try:
        with open(request_file, encoding="utf-8") as f:
            request = json.load(f)
        if not isinstance(request, dict):
            raise ValueError("the request must be a JSON object")
        from_job({"settings": request.get("settings") or {}})
    except (OSError, ValueError) as e:
        sys.stderr.write(f"bepbuild_runtime.probe: bad request {request_file}: {e}\n")
        return layout.EXIT_USAGE
    started = time.time()
    report: dict[str, Any] = {"python": platform.python_version(), "started": started}
    try:
        os.chdir(tempfile.mkdtemp(prefix="bepbuild-test-"))  # as a worker: the code folder may be read-only
    except OSError:
        pass
    sys.argv = [sys.argv[0]]
    report["scoring"] = score(request)
    report["scoring_seconds"] = round(time.time() - started, 6)
    try:
        import resource

        report["scoring_max_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    except (ImportError, OSError):
        report["scoring_max_rss"] = None
    if request.get("checks", True):
        sys.stdout.flush()
        report["environment"] = environment(request)
    report["ok"] = ok(report)
    _write_result(result_dir, report)
    return 0 if report["ok"] else 1


def _pytest_main(args: list[str]) -> int:
    sys.path.append(layout.IMAGE_PYTEST_DIR)  # after the image's own packages: theirs win
    import pytest

    return int(pytest.main(args))


def main(argv: list[str | None] = None) -> int:
    """Entry point; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["imports"]:
        return _imports_main(argv[1:])
    if argv[:1] == ["pytest"]:
        return _pytest_main(argv[1:])
    if argv[:1] == ["score"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="python -m bepbuild_runtime.probe",
                                     description="Try a deployment's scoring script once, as a job runs it.")
    parser.add_argument("--request", default=os.path.join(layout.CONTAINER_PROBE_REQUEST_DIR, layout.PROBE_REQUEST))
    parser.add_argument("--result-dir", default=layout.CONTAINER_PROBE_RESULT_DIR)
    args = parser.parse_args(argv)
    return _score_main(args.request, args.result_dir)


if __name__ == "__main__":
    sys.exit(main())
