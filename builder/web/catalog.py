"""The endpoints page and the jobs list, read from the registry: deployments with their image,
environment, model and compute; jobs with their times and rates, filtered.

Names are matched through registry lookups (which decide how names compare), never by comparing
strings here: a filter or a job's endpoint is turned into the registry's own spelling first.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import config
from ..errors import BepbuildError, NotFoundError
from ..jobs.runner import FINAL
from ..store import Store
from .attempts import parse_time
from .state import ServerInfo

STATUSES = ("NotStarted", "Queued", "Preparing", "Running", "Finalizing", "Completed", "Failed", "Canceled")
JOBS_PAGE = 50


@dataclass
class DeploymentView:
    name: str
    default: bool
    doc: dict[str, Any]
    image: str | None
    image_size: str
    environment: str | None
    strategy: str | None
    lock_sha256: str | None
    packages: list[str]
    locked: list[str]
    model: str | None
    compute: str | None
    instance_count: Any
    settings: dict[str, Any]


@dataclass
class EndpointView:
    name: str
    description: str | None
    default: str | None
    scoring_uri: str | None
    deployments: list[DeploymentView] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)


_SIZES: dict[str, tuple[float, str]] = {}
_SIZES_LOCK = threading.Lock()
_ENGINE_DOWN_UNTIL = [0.0]


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def image_size(tag: str | None) -> str:
    """The image's size from the engine ("not built", or "engine unavailable"), cached a minute."""
    if not tag:
        return "-"
    now = time.monotonic()
    with _SIZES_LOCK:
        hit = _SIZES.get(tag)
        if hit and now - hit[0] < 60:
            return hit[1]
    if now < _ENGINE_DOWN_UNTIL[0]:
        return "engine unavailable"
    try:
        import docker

        from .. import images

        try:
            size = _human(images.engine().api.inspect_image(tag)["Size"])
        except docker.errors.ImageNotFound:
            size = "not built"
    except Exception:  # no engine, or it failed: the page still shows
        _ENGINE_DOWN_UNTIL[0] = now + 30
        return "engine unavailable"
    with _SIZES_LOCK:
        _SIZES[tag] = (now, size)
    return size


def _environment(store: Store, ref: str | None) -> list[str]:
    """The packages the environment declares (conda and pip), from its registered record."""
    if not ref:
        return []
    try:
        from ..registry import resolve

        env = resolve(store, "environment", ref)
    except (BepbuildError, ValueError):
        return []
    deps = ((env.get("conda_file") or {}).get("dependencies")) or []
    out: list[str] = []
    for d in deps:
        if isinstance(d, dict):
            out.extend(str(p) for p in d.get("pip") or [])
        else:
            out.append(str(d))
    return out


def _locked(endpoint: str, deployment: str) -> list[str]:
    """The pinned packages of the deployment's lock, when its build context is on this machine."""
    candidates: list[Path] = []
    try:
        from .. import naming

        candidates.append(naming.context_dir(endpoint, deployment))
    except (ImportError, AttributeError):
        pass
    candidates.append(config.home() / "contexts" / f"{endpoint}-{deployment}")
    for ctx in candidates:
        lock = ctx / "env" / "requirements.lock"
        try:
            text = lock.read_text(errors="replace")
        except OSError:
            continue
        return [ln.split(" ", 1)[0].rstrip("\\").strip() for ln in text.splitlines()
                if ln.strip() and not ln.lstrip().startswith(("#", "-", "--"))][:500]
    return []


def endpoints(store: Store, server: ServerInfo | None, *, jobs_per_endpoint: int = 5) -> list[EndpointView]:
    """Every endpoint with its deployments (the default first) and its last jobs."""
    out = []
    for ep in store.list_endpoints():
        name = ep["name"]
        default_name = (ep.get("defaults") or {}).get("deployment_name")
        default = None
        if default_name:
            try:
                default = store.get_deployment(name, default_name)["name"]
            except NotFoundError:
                default = None
        view = EndpointView(name, ep.get("description"), default, server.scoring_uri(name) if server else None)
        for d in store.list_deployments(name):
            settings = d.get("settings") or {}
            resources = d.get("resources") or {}
            view.deployments.append(DeploymentView(
                name=d["name"], default=d["name"] == default, doc=d, image=d.get("image"),
                image_size=image_size(d.get("image")), environment=d.get("environment"),
                strategy=d.get("strategy"), lock_sha256=d.get("lock_sha256"),
                packages=_environment(store, d.get("environment")), locked=_locked(name, d["name"]),
                model=d.get("model"), compute=d.get("compute"), instance_count=resources.get("instance_count"),
                settings=settings,
            ))
        view.deployments.sort(key=lambda v: (not v.default, v.name))
        view.jobs = [with_rates(j) for j in store.list_jobs(endpoint=name, limit=jobs_per_endpoint)]
        out.append(view)
    return out


def with_rates(job: dict[str, Any]) -> dict[str, Any]:
    """The job record plus `duration_seconds` and `items_per_second` (items over its run time)."""
    job = dict(job)
    started, ended = _epoch(job.get("started_at")), _epoch(job.get("ended_at"))
    end = ended or (time.time() if job.get("status") not in FINAL else None)
    duration = end - started if started and end else None
    counts = job.get("counts") or {}
    items = int(counts.get("items_succeeded") or 0) + int(counts.get("items_failed") or 0)
    job["duration_seconds"] = duration
    job["items_per_second"] = items / duration if duration and items else None
    return job


def _epoch(stamp: Any) -> float | None:
    try:
        return parse_time(str(stamp)) if stamp else None
    except ValueError:
        return None


@dataclass(frozen=True)
class JobFilter:
    endpoint: str | None = None
    deployment: str | None = None
    status: str | None = None


def jobs(store: Store, flt: JobFilter, page: int = 0) -> tuple[list[dict[str, Any]], int]:
    """One page of jobs (newest first) matching the filter, and how many match."""
    endpoint = store.get_endpoint(flt.endpoint)["name"] if flt.endpoint else None
    rows = store.list_jobs(endpoint=endpoint)
    if flt.status:
        rows = [j for j in rows if j.get("status") == flt.status]
    if flt.deployment:
        wanted = _deployments_named(store, flt.deployment, endpoint)
        canonical: dict[tuple[str, str], tuple[str, str] | None] = {}

        def key_of(j: dict[str, Any]) -> tuple[str, str] | None:
            key = (str(j.get("endpoint")), str(j.get("deployment")))
            if key not in canonical:
                try:
                    canonical[key] = (store.get_endpoint(key[0])["name"], store.get_deployment(*key)["name"])
                except NotFoundError:
                    canonical[key] = None  # deleted since: it cannot match a deployment that exists
            return canonical[key]

        rows = [j for j in rows if key_of(j) in wanted]
    total = len(rows)
    start = max(0, page) * JOBS_PAGE
    return [with_rates(j) for j in rows[start:start + JOBS_PAGE]], total


def _deployments_named(store: Store, deployment: str, endpoint: str | None) -> set[tuple[str, str]]:
    """(endpoint, deployment) pairs, in the registry's spelling, of the deployments called `deployment`
    (of one endpoint, or of any); NotFoundError for an endpoint's unknown deployment."""
    if endpoint is not None:
        return {(endpoint, store.get_deployment(endpoint, deployment)["name"])}
    found = set()
    for ep in store.list_endpoints():
        try:
            found.add((ep["name"], store.get_deployment(ep["name"], deployment)["name"]))
        except NotFoundError:
            continue
    return found
