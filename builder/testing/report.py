"""What `bepbuild test` found, as a report (`-o json`), as text for people, and as one verdict line.

The verdict passes only when every item succeeded as Azure counts it (items returned against items
given), every environment check passed and the user's tests (`--pytest`) passed.
"""

from __future__ import annotations

from typing import Any

from ..output import human_size
from .container import Ran
from .target import Target


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def problems(report: dict[str, Any]) -> list[str]:
    """Every reason the test failed, one line each (the tracebacks are in the report)."""
    out: list[str] = []
    scoring = report.get("scoring") or {}
    if report.get("probe_error"):
        out.append(report["probe_error"])
    imported = scoring.get("import") or {}
    if imported.get("error"):
        out.append(f"importing {scoring.get('scoring_script')} failed: {_last_line(imported['error'])}")
    init = scoring.get("init") or {}
    if init.get("error"):
        out.append(f"init() failed: {_last_line(init['error'])}")
    for run in scoring.get("runs") or []:
        where = f"mini-batch {run['mini_batch']}"
        if run.get("error"):
            out.append(f"{where}: {run['status']}: {_last_line(run['error'])} ({run['items']} items failed)")
        elif run["failed"]:
            out.append(f"{where}: run() returned {run['succeeded']} items for {run['items']} inputs: {run['failed']} "
                       "failed (Azure counts the items run() returns against the items it was given)")
    env = report.get("environment") or {}
    py = env.get("python") or {}
    if py and not py.get("ok", True):
        out.append(f"Python {py['version']} is not the conda file's python={py['pin']}")
    pip = env.get("pip_check") or {}
    if pip and not pip.get("ok", True):
        out += [f"pip check: {line}" for line in (pip.get("output") or "failed").splitlines() if line.strip()]
    lock = env.get("lock") or {}
    for key, what in (("missing", "in the lock, not installed"), ("extra", "installed, not in the lock"),
                      ("different", "another version than the lock's")):
        out += [f"lock: {item}: {what}" for item in lock.get(key) or []]
    for failed in (env.get("imports") or {}).get("failed") or []:
        out.append(f"import {failed['module']} (of {failed['distribution']}) failed: {_last_line(failed['error'])}")
    if report.get("lock_mismatch"):
        out.append(report["lock_mismatch"])
    pytest = report.get("pytest")
    if pytest and not pytest.get("ok"):
        out.append(f"pytest: {_last_line(pytest.get('log')) or 'exit code ' + str(pytest.get('exit_code'))}")
    return out


def assemble(target: Target, given: str | None, result: dict[str, Any] | None, ran: Ran,
             files: list[dict[str, Any]]) -> dict[str, Any]:
    """The report of one deployment from what the probe wrote and what the engine saw."""
    report: dict[str, Any] = {
        "endpoint": target.endpoint, "deployment": target.deployment, "image": target.image,
        "image_id": target.image_id, "built": target.built, "source": target.source, "input": given,
        "notices": target.notices,
        "settings": {k: target.settings.get(k) for k in ("mini_batch_size", "output_action", "output_file_name",
                                                         "timeout", "max_concurrency_per_instance")},
        "limits": {"cpus": target.limits.cpus, "memory": target.limits.memory, "gpus": target.limits.gpus},
        "peak_memory_bytes": ran.peak_memory, "container_seconds": round(ran.seconds, 3),
        "container": {"exit_code": ran.exit_code, "oom_killed": ran.oom_killed, "log": ran.log},
    }
    if result is None:
        report["probe_error"] = _no_result(ran, target)
        report["scoring"] = None
    else:
        report.update(python=result.get("python"), scoring=result.get("scoring"),
                      scoring_max_rss=result.get("scoring_max_rss"), environment=result.get("environment"))
        lock = (result.get("environment") or {}).get("lock") or {}
        if target.lock_sha256 and lock.get("source") == "image" and lock.get("sha256") != target.lock_sha256:
            report["lock_mismatch"] = (f"the image's lock ({lock.get('sha256', '')[:12]}) is not the one deployment "
                                       f"{target.deployment} was built from ({target.lock_sha256[:12]})")
    scoring = report.get("scoring") or {}
    if scoring.get("output_action") == "append_row":
        report["rows"] = "".join(r.get("rows") or "" for r in scoring.get("runs") or [])
    report["files"] = files
    return report


def _no_result(ran: Ran, target: Target) -> str:
    if ran.oom_killed:
        return f"the container ran out of memory (the compute's limit {target.limits.memory}) and was killed"
    if "No module named bepbuild_runtime.probe" in ran.log:
        return (f"image {target.image} was built by an earlier bepbuild (its runtime cannot test it): deploy "
                f"{target.deployment} again")
    return f"the container exited with code {ran.exit_code} without a result: {_last_line(ran.log)}"


def finish(report: dict[str, Any]) -> dict[str, Any]:
    """Add the problems, `ok` and the verdict line."""
    found = problems(report)
    items = (report.get("scoring") or {}).get("items") or {}
    report["problems"] = found
    report["ok"] = not found
    name = f"{report['endpoint']}/{report['deployment']}"
    counted = (f"{items.get('succeeded', 0)}/{items.get('given', 0)} items succeeded" if items.get("given")
               else "nothing scored (no --input)" if report.get("input") is None else "not scored")
    tail = f" ({len(found)} problem{'s' if len(found) != 1 else ''}: {found[0]})" if found else ""
    report["verdict"] = f"{'PASS' if not found else 'FAIL'} {name}: {counted}{tail}"
    return report


def env_check(report: dict[str, Any]) -> str:
    """One word for the table: ok, failed, skipped."""
    env = report.get("environment")
    if not env:
        return "skipped"
    keys = ("python", "pip_check", "lock", "imports")
    ok = all((env.get(k) or {}).get("ok", True) for k in keys) and not report.get("lock_mismatch")
    return "ok" if ok else "failed"


def row(report: dict[str, Any]) -> dict[str, Any]:
    """The line of `--all`'s table."""
    scoring = report.get("scoring") or {}
    items = scoring.get("items") or {}
    runs = scoring.get("runs") or []
    return {
        "deployment": report["deployment"], "image": report["image"], "env_check": env_check(report),
        "init_s": round((scoring.get("init") or {}).get("seconds") or 0.0, 3),
        "run_s": round(sum(r.get("seconds") or 0.0 for r in runs), 3),
        "items_ok": f"{items.get('succeeded', 0)}/{items.get('given', 0)}", "ok": report["ok"],
    }


def text(report: dict[str, Any]) -> str:
    """The report for people: what ran, the rows as the job writes them, tracebacks in full, the verdict last."""
    out: list[str] = []
    add = out.append
    how = "built now" if report.get("built") else ("reused" if report.get("source") == "file" else "deployed")
    add(f"== {report['endpoint']}/{report['deployment']}: image {report['image']} ({how})")
    for notice in report.get("notices") or []:
        add(f"note: {notice}")
    scoring = report.get("scoring") or {}
    env = report.get("environment")
    if env:
        lock = env.get("lock") or {}
        imports = env.get("imports") or {}
        py = env.get("python") or {}
        pin = f" (pin {py['pin']})" if py.get("pin") else ""
        lock_text = (f"lock of {lock.get('packages')} packages ({lock.get('source')}) "
                     f"{'matches' if lock.get('ok') else 'differs'}" if lock.get("source") else "no lock (not a pip "
                     "environment)")
        pip = env.get("pip_check") or {}
        pip_state = f"skipped: {pip['skipped']}" if pip.get("skipped") else ("ok" if pip.get("ok") else "failed")
        pip_text = f"pip check {pip_state}"
        add(f"environment: Python {py.get('version')}{pin}; {pip_text}; {lock_text}; "
            f"{imports.get('checked', 0) - len(imports.get('failed') or [])}/{imports.get('checked', 0)} locked "
            "modules import")
    timings = []
    for phase in ("import", "init"):
        if scoring.get(phase):
            timings.append(f"{phase} {scoring[phase]['seconds']:.2f} s")
    runs = scoring.get("runs") or []
    if runs:
        each = ", ".join(f"{r.get('seconds', 0):.2f}" for r in runs)
        timings.append(f"run {sum(r.get('seconds') or 0 for r in runs):.2f} s ({len(runs)} mini-batch"
                       f"{'es' if len(runs) != 1 else ''}: {each})")
    peak = report.get("peak_memory_bytes")
    limit = (report.get("limits") or {}).get("memory")
    timings.append(f"peak memory {human_size(peak) if peak else 'not measured'}"
                   f"{f' of {limit}' if limit else ''}")
    add("; ".join(timings))
    if report.get("rows"):
        add(f"rows ({scoring.get('output_action')}, as the job writes them):")
        add(report["rows"].rstrip("\n"))
    if report.get("files"):
        add("files written to the output folder:")
        out.extend(f"  {f['path']} ({human_size(f['bytes'])})" for f in report["files"])
    for label, entry in (("import", scoring.get("import")), ("init()", scoring.get("init"))):
        if entry and entry.get("error"):
            add(f"-- {label} failed:\n{entry['error'].rstrip()}")
    for r in runs:
        if r.get("error"):
            add(f"-- mini-batch {r['mini_batch']} ({r['status']}):\n{r['error'].rstrip()}")
        if r.get("warning"):
            add(f"warning: mini-batch {r['mini_batch']}: {r['warning']}")
    for failed in ((env or {}).get("imports") or {}).get("failed") or []:
        add(f"-- import {failed['module']} (of {failed['distribution']}) failed:\n{failed['error'].rstrip()}")
    if (report["container"].get("log") or "").strip():
        add("-- what the container printed:\n" + report["container"]["log"].rstrip())
    pytest = report.get("pytest")
    if pytest:
        add(f"-- pytest ({'passed' if pytest['ok'] else 'failed'}, exit code {pytest['exit_code']}):")
        add((pytest.get("log") or "").rstrip())
        if pytest.get("junit_xml"):
            add(f"JUnit report: {pytest['junit_xml']}")
    for problem in report.get("problems") or []:
        add(f"problem: {problem}")
    add(report["verdict"])
    return "\n".join(out)
