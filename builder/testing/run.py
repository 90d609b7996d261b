"""`bepbuild test`: try a deployment in its own image before any job, and check its environment.

One container per deployment, isolated as a job's instances are (`jobs.isolation`), runs the
runtime's probe (`bepbuild_runtime.probe`) on the first items of the input; `--pytest` runs the
user's tests in a second one, from an image derived for them (`pytest_image`). Everything the test
needs on the host lives in a scratch folder (`container.new_scratch`) removed at the end; nothing is
written to the registry or to any job folder.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bepbuild_runtime import layout

from .. import deploy
from ..errors import NotFoundError, UserError
from ..jobs import inputs, isolation
from ..store import Store
from . import container, pytest_image, report
from .target import Target, from_file, from_registered

Log = Callable[[str], None]


@dataclass
class Request:
    """What to try, the same for every deployment of a run."""

    input: str | None = None
    input_type: str | None = None
    limit: int | None = None  # items; default: one mini-batch
    mini_batch_size: int | None = None
    pytest: list[Path] = field(default_factory=list)
    junit_xml: Path | None = None
    env_check: bool = True
    backend: str = "auto"  # builder of the pytest image


def check(req: Request) -> None:
    """Refuse a request in one line before anything is built."""
    if req.input is None and not req.pytest:
        raise UserError("give --input SAMPLE (files to score), --pytest PATH (your tests), or both")
    for flag, value in (("--limit", req.limit), ("--mini-batch-size", req.mini_batch_size)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    for path in req.pytest:
        if not path.exists():
            raise UserError(f"--pytest {path}: no such file or folder")
        if not (path.is_file() or path.is_dir()):
            raise UserError(f"--pytest {path}: not a file or folder")
    if req.junit_xml is not None:
        if not req.pytest:
            raise UserError("--junit-xml needs --pytest")
        target = req.junit_xml
        if target.is_dir() or target.is_symlink():
            raise UserError(f"--junit-xml {target}: is a folder or a link; give a file name")
        if not target.parent.is_dir():
            raise UserError(f"--junit-xml {target}: the folder {target.parent} does not exist")


def test_file(store: Store, file: Path, *, endpoint_name: str | None, sets: list[str], opts: deploy.DeployOptions,
              req: Request, log: Log) -> dict[str, Any]:
    """Build (or reuse) a deployment file's image as deploy would and try it; registers nothing."""
    check(req)
    return _try(store, lambda scratch: from_file(store, file, endpoint_name=endpoint_name, sets=sets, opts=opts,
                                                 scratch=scratch, log=log, mini_batch_size=req.mini_batch_size),
                req, log)


def test_registered(store: Store, endpoint: str, name: str, req: Request, log: Log,
                    junit_xml: Path | None = None) -> dict[str, Any]:
    """Try a registered deployment in the image its jobs would run."""
    check(req)
    return _try(store, lambda _scratch: from_registered(store, endpoint, name, mini_batch_size=req.mini_batch_size),
                req, log, junit_xml)


def test_all(store: Store, endpoint: str, req: Request, log: Log) -> list[dict[str, Any]]:
    """Every deployment of an endpoint, one after the other (JUnit reports named per deployment)."""
    check(req)
    deployments = store.list_deployments(store.get_endpoint(endpoint)["name"])
    if not deployments:
        raise NotFoundError(f"endpoint {endpoint} has no deployment to test")
    return [test_registered(store, endpoint, d["name"], req, log, junit_path(req.junit_xml, d["name"]))
            for d in deployments]


def junit_path(given: Path | None, deployment: str) -> Path | None:
    """`report.xml` -> `report.<deployment>.xml`: one JUnit file per deployment of `--all`."""
    if given is None:
        return None
    return given.with_name(f"{given.stem}.{deployment.lower()}{given.suffix or '.xml'}")


def _try(store: Store, make: Callable[[Path], Target], req: Request, log: Log,
         junit_xml: Path | None = None) -> dict[str, Any]:
    container.sweep()
    spec = inputs.resolve(store, req.input, req.input_type) if req.input is not None else None
    scratch: Path | None = None
    try:
        with container.signals_interrupt():
            scratch = container.new_scratch()
            target = make(scratch)
            if spec is not None and spec.url:
                inputs.download(spec, scratch / "inputs")
            result = _probe(target, spec, req, scratch, log)
            if req.pytest:
                result["pytest"] = _pytest(target, result, req, scratch, log, junit_xml or req.junit_xml)
            return report.finish(result)
    finally:
        if scratch is not None:
            with container.deferred_signals():
                container.remove_scratch(scratch)


def _writable_by_containers(*folders: Path) -> None:
    """Folders a test container writes: given to its user when that is not the host user."""
    uid, gid = (int(x) for x in isolation.container_user().split(":"))
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        if (uid, gid) != (os.getuid(), os.getgid()):
            os.chown(folder, uid, gid)


def _probe(target: Target, spec: inputs.InputSpec | None, req: Request, scratch: Path, log: Log) -> dict[str, Any]:
    items: list[str] = []
    if spec is not None:
        wanted = req.limit or int(target.settings["mini_batch_size"])
        items = list(itertools.islice(inputs.items(spec), wanted))
        if not items:
            raise UserError(f"--input {req.input}: no files to score")
    request_dir, result_dir, out_dir = scratch / "request", scratch / "result", scratch / "outputs"
    request_dir.mkdir()
    _writable_by_containers(result_dir, out_dir)
    request = {"items": items, "input_dir": layout.CONTAINER_INPUT_DIR, "settings": target.settings,
               "scoring_script": target.scoring_script, "lock": target.lock, "python_pin": target.python_pin,
               "checks": req.env_check}
    (request_dir / layout.PROBE_REQUEST).write_text(json.dumps(request))
    mounts = [container.Mount(request_dir, layout.CONTAINER_PROBE_REQUEST_DIR),
              container.Mount(result_dir, layout.CONTAINER_PROBE_RESULT_DIR, writable=True),
              container.Mount(out_dir, layout.CONTAINER_OUTPUT_DIR, writable=True)]
    if spec is not None:
        mounts.append(container.Mount(spec.root, layout.CONTAINER_INPUT_DIR))
    env = {layout.ENV_OUTPUT_PATH: layout.CONTAINER_OUTPUT_DIR, layout.ENV_INPUT_DIR: layout.CONTAINER_INPUT_DIR,
           layout.ENV_INSTANCE: "test"}
    log(f"trying {target.endpoint}/{target.deployment} in {target.image} on {len(items)} item(s)")
    ran = container.run(target.image_id, scratch=scratch, what="probe", command=[], env=env, mounts=mounts,
                        limits=target.limits)
    result = _read_json(result_dir / layout.PROBE_RESULT)
    return report.assemble(target, req.input, result, ran, _files(out_dir))


def _read_json(path: Path) -> dict[str, Any] | None:
    """A file the container wrote, never through a link it may have put there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with open(fd, encoding="utf-8") as f:
        try:
            doc = json.load(f)
        except ValueError:
            return None
    return doc if isinstance(doc, dict) else None


def _files(root: Path) -> list[dict[str, Any]]:
    """The files scoring code wrote into the output folder (links listed, never followed)."""
    out = []
    for dirpath, _dirs, names in os.walk(root):
        for name in sorted(names):
            path = Path(dirpath) / name
            st = path.lstat()
            out.append({"path": path.relative_to(root).as_posix(),
                        "bytes": st.st_size if stat.S_ISREG(st.st_mode) else None})
    return sorted(out, key=lambda f: f["path"])


def _pytest(target: Target, result: dict[str, Any], req: Request, scratch: Path, log: Log,
            junit_xml: Path | None) -> dict[str, Any]:
    python = result.get("python")
    if not python:
        return {"ok": False, "exit_code": None, "log": "not run: the probe did not say which Python the image has",
                "junit_xml": None}
    tag = pytest_image.build(target.image, target.image_id, python, scratch=scratch, backend=req.backend, log=log)
    try:
        mounts, args = [], []
        for name, path in _pytest_folders(req.pytest):
            where = f"{layout.CONTAINER_PYTEST_DIR}/{name}"
            mounts.append(container.Mount(path if path.is_dir() else path.parent, where))
            args.append(where if path.is_dir() else f"{where}/{path.name}")
        result_dir, out_dir = scratch / "result", scratch / "outputs"
        mounts += [container.Mount(result_dir, layout.CONTAINER_PROBE_RESULT_DIR, writable=True),
                   container.Mount(out_dir, layout.CONTAINER_OUTPUT_DIR, writable=True)]
        junit_inside = f"{layout.CONTAINER_PROBE_RESULT_DIR}/{layout.PROBE_JUNIT}"
        command = ["pytest", "-p", "no:cacheprovider", "--rootdir", layout.CONTAINER_PYTEST_DIR, "--junit-xml",
                   junit_inside, *args]
        env = {**(target.settings.get("environment_variables") or {}),
               layout.ENV_OUTPUT_PATH: layout.CONTAINER_OUTPUT_DIR}
        log(f"running pytest on {', '.join(map(str, req.pytest))} in {target.image}")
        ran = container.run(tag, scratch=scratch, what="pytest", command=command, env=env, mounts=mounts,
                            limits=target.limits, working_dir=layout.CONTAINER_PYTEST_DIR)
    finally:
        pytest_image.remove(tag)
    written = None
    if junit_xml is not None:
        written = _copy_report(result_dir / layout.PROBE_JUNIT, junit_xml)
    return {"ok": ran.exit_code == 0, "exit_code": ran.exit_code, "log": ran.log, "seconds": round(ran.seconds, 3),
            "junit_xml": str(written) if written else None, "pytest": pytest_image.PYTEST_REQUIREMENT}


def _pytest_folders(paths: list[Path]) -> list[tuple[str, Path]]:
    """(mount folder name, path) per --pytest path: the name of the folder (the file's folder), made unique,
    so the tests are reported as `tests/test_x.py`."""
    out: list[tuple[str, Path]] = []
    taken: set[str] = set()
    for i, path in enumerate(paths):
        path = path.resolve()
        folder = path if path.is_dir() else path.parent
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", folder.name) or "tests"
        if name in taken or name in (".", ".."):
            name = f"{name}-{i}"
        taken.add(name)
        out.append((name, path))
    return out


def _copy_report(source: Path, dest: Path) -> Path | None:
    """The JUnit report onto the user's file: written beside it, then renamed (never through a link)."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with open(fd, "rb") as f:
        data = f.read()
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"--junit-xml {dest}: cannot write it: {e.strerror or e}") from None
    return dest
