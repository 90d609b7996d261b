"""Which files of a job the server may send: only files inside one of the job's own folders.

A relative path from a URL is joined onto the folder, resolved (symbolic links followed, `..`
collapsed) and must still lie inside the folder's resolved path: `../`, absolute paths, encoded
traversals and links leading out all end outside and are refused. Input files are sent only as
images (thumbnails) and only when they are inputs of the job: the input folder is the user's, not
bepbuild's, and a uri_file input's folder holds files the user never handed in. Likewise an output
folder the user chose (`--output-path`) is theirs: of it only the job's output file is sent; the
whole output folder only when it is the job's own (`<job>/outputs`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bepbuild_runtime import layout, record

from ..errors import NotFoundError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")

# area in a URL -> the job record's field naming the folder
AREAS = {"job": "job_dir", "output": "output_dir", "input": "input_root"}


def area_root(job: dict[str, Any], area: str) -> Path:
    """The folder of `area` (job, output or input) of a job record."""
    field = AREAS.get(area)
    value = job.get(field) if field else None
    if not value:
        raise NotFoundError(f"job {job.get('name')} has no {area} folder")
    return Path(value)


def inside(root: Path, rel: str) -> Path | None:
    """`root/rel` resolved, when it is a regular file inside `root` (resolved); else None."""
    if not rel or "\x00" in rel:
        return None
    try:
        base = root.resolve(strict=True)
        target = (base / rel).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        return None
    if target == base or not target.is_relative_to(base) or not target.is_file():
        return None
    return target


def job_file(job: dict[str, Any], area: str, rel: str) -> Path:
    """The file `rel` of the job's `area` folder, or NotFoundError (never a file outside it)."""
    root = area_root(job, area)
    target = inside(root, rel)
    if (target is None or (area == "input" and not _is_input_image(job, rel, target))
            or (area == "output" and not own_output_folder(job) and target != _resolved(job.get("output_file")))):
        raise NotFoundError(f"no file {rel!r} in the {area} folder of job {job.get('name')}")
    return target


def _resolved(path: Any) -> Path | None:
    try:
        return Path(path).resolve(strict=True) if path else None
    except (OSError, RuntimeError):
        return None


def own_output_folder(job: dict[str, Any]) -> bool:
    """The job's output folder lies inside its job folder (no --output-path was given)."""
    out, job_dir = _resolved(job.get("output_dir")), _resolved(job.get("job_dir"))
    return out is not None and job_dir is not None and out.is_relative_to(job_dir)


def _is_input_image(job: dict[str, Any], rel: str, target: Path) -> bool:
    # Folder inputs are listed without recursion: an item is a direct child of the input folder.
    if "/" in rel or "\\" in rel or target.suffix.lower() not in IMAGE_SUFFIXES:
        return False
    if (job.get("input") or {}).get("type") == "uri_file":
        return rel == single_item(job)
    return True


def single_item(job: dict[str, Any]) -> str | None:
    """The one item of a uri_file job, read from its only mini-batch record."""
    job_dir = Path(job.get("job_dir") or "")
    name = layout.mini_batch_id(0) + ".json"
    for folder in (layout.DONE_DIR, layout.FAILED_DIR, layout.PENDING_DIR):
        path = job_dir / folder / name
        try:
            items = record.read(str(path)).get("items") or []
        except (OSError, ValueError):
            continue
        return str(items[0]) if len(items) == 1 else None
    return None


def relative(root: Path, path: Path) -> str | None:
    """`path` relative to `root` in URL form (forward slashes), None when outside."""
    try:
        rel = Path(os.path.relpath(path, root))
    except ValueError:
        return None
    if rel.parts[:1] == ("..",) or rel.is_absolute():
        return None
    return rel.as_posix()
