"""A job's output folder: where it is, who may write into it, and copying its files out.

- `output_dir`: `--output-path` (a local folder, or `azureml://datastores/<name>/paths/<path>` under
  BEPBUILD_HOME/datastores), else the job folder's `outputs/`. Never one of bepbuild's own folders.
- `share_with_containers`: when the host user is root, scoring containers run as a fixed non-root
  user. Folders bepbuild made (the job folder, an output folder it created) are given to that user;
  a folder the user made keeps its owner: containers write into `outputs/` of the job folder and
  `publish` moves their files into the user's folder at the end of each run, never over a file.
- `download`: `job download` copies the output tree; links leading out of it are not followed.
"""

from __future__ import annotations

import errno
import filecmp
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from bepbuild_runtime import layout

from .. import config
from ..errors import ConflictError, NotFoundError, UserError

DATASTORE_PREFIX = "azureml://datastores/"


def output_dir(given: str | None, job_dir: Path) -> Path:
    """Where a job's outputs go; a one-line UserError for a path into bepbuild's own folders."""
    if not given:
        return job_dir / layout.OUTPUTS_DIR
    if given.startswith(DATASTORE_PREFIX):
        store_name, _, sub = given[len(DATASTORE_PREFIX):].partition("/paths/")
        if store_name in ("", ".", "..") or any(c in store_name for c in "/\\\0"):
            raise UserError(f"--output-path {given}: {store_name!r} is not a datastore name")
        base = (config.home() / "datastores" / store_name).resolve()
        path = (base / sub.strip("/")).resolve()
        if path != base and base not in path.parents:
            raise UserError(f"--output-path {given}: the path leads outside the datastore's folder {base}")
        return path
    if "://" in given:
        raise UserError(f"--output-path {given}: give a local folder or azureml://datastores/<name>/paths/<path>")
    path = Path(given).expanduser().resolve()
    for root, what in ((config.home(), "BEPBUILD_HOME"), (config.jobs_dir(), "the jobs folder")):
        root = root.resolve()
        if (path == root or root in path.parents) and not _is_under(path, config.home() / "datastores"):
            raise UserError(f"--output-path {given} is inside {what} ({root}), bepbuild's own files: give a "
                            "folder outside it, or azureml://datastores/<name>/paths/<path>")
        if path in root.parents:  # scoring code writes the output folder: never one holding bepbuild's files
            raise UserError(f"--output-path {given} holds {what} ({root}), bepbuild's own files: give a folder "
                            "that does not contain it")
    return path


def _is_under(path: Path, root: Path) -> bool:
    root = root.resolve()
    return root in path.parents


# What scoring containers write into, below the job folder: given to their user when the host is
# root (state/: the coordinator's lease, merge record and outcome). The rest (the folder itself,
# job.json, control/, the host's logs) stays the host's, so that an instance cannot put a link where
# the host writes (job.json's temporary file, the host lock, the reports).
CONTAINER_WRITES = (layout.QUEUE_DIR, layout.RESULTS_DIR, layout.OUTPUTS_DIR, layout.INPUTS_DIR, layout.STATE_DIR,
                    layout.LOG_USER_STDOUT.rsplit("/", 1)[0], layout.LOG_SYS_NODE, layout.LOG_ATTEMPTS_DIR)


def share_with_containers(job_dir: Path, out_dir: Path, *, made: bool, backend: str) -> tuple[str, Path | None]:
    """The uid:gid instances run as, and the folder they write outputs into when it is not `out_dir`.

    Local processes and a non-root host user need nothing: instances run as the host user. A root
    host runs containers as a fixed non-root user: the folders they write below the job folder, and
    `out_dir` when bepbuild made it (`made`), are given to that user; a folder the user made keeps
    its owner, and the containers write into the job folder's outputs/ instead (published into the
    user's folder at the end of each run).
    """
    if backend not in ("docker", "swarm") or os.getuid() != 0:
        return f"{os.getuid()}:{os.getgid()}", None
    uid, gid = layout.RUNTIME_UID, layout.RUNTIME_GID
    staging = None
    if not made and out_dir != job_dir / layout.OUTPUTS_DIR:
        staging = job_dir / layout.OUTPUTS_DIR
    for rel in CONTAINER_WRITES:
        top = job_dir / rel
        if rel in (layout.OUTPUTS_DIR, layout.INPUTS_DIR) and not top.exists() and top != staging:
            continue  # outputs/ only when it is where they write; inputs/ only for a downloaded input
        top.mkdir(parents=True, exist_ok=True, mode=0o755)
        for d in (job_dir, *reversed(top.relative_to(job_dir).parents[:-1])):
            os.chmod(job_dir / d, 0o755)  # the host's folders on the way: readable, not writable, by them
        for root, dirs, files in os.walk(top):  # bepbuild's folders; links are not followed
            os.chown(root, uid, gid)
            for n in dirs + files:
                os.lchown(os.path.join(root, n), uid, gid)
    for f in (job_dir / layout.JOB_FILE, job_dir / layout.CONTROL_DIR):
        if f.exists():
            os.chmod(f, 0o755 if f.is_dir() else 0o644)
    if made:
        os.chown(out_dir, uid, gid)
    return f"{uid}:{gid}", staging


def publish(job: dict[str, Any]) -> list[str]:
    """Move what the instances wrote into the job folder's outputs/ into the user's output folder.

    Files only, never over an existing name, never through a link in the user's folder: what cannot
    be placed stays in the job folder, and a notice says so. Folders made here get the owner of
    the user's folder, as do the files moved (they were the containers' user's).
    """
    staged = job.get("instance_output_dir")
    if not staged or not Path(staged).is_dir():
        return []
    src, dest = Path(staged), Path(job["output_dir"])
    try:
        owner = dest.stat()
    except OSError:
        return [f"the output folder {dest} is gone: the outputs stay in {src}"]
    left: list[str] = []
    for root, dirs, files in os.walk(src):
        here = Path(root)
        rel = here.relative_to(src)
        target_dir = dest / rel
        if rel != Path("."):
            if not _plain_dir(target_dir):
                if os.path.lexists(target_dir):
                    left.append(rel.as_posix())
                    dirs[:] = []
                    continue
                target_dir.mkdir()
                os.chown(target_dir, owner.st_uid, owner.st_gid)
        for name in files:
            p = here / name
            target = target_dir / name
            if not stat.S_ISREG(os.lstat(p).st_mode) or os.path.lexists(target):
                left.append((rel / name).as_posix())
                continue
            _move_no_overwrite(p, target)
            os.lchown(target, owner.st_uid, owner.st_gid)
    if not left:
        return []
    shown = ", ".join(left[:5]) + (", ..." if len(left) > 5 else "")
    return [f"kept {len(left)} output(s) in {src}: the output folder {dest} has entries of the same names, or "
            f"they are links ({shown})"]


def _plain_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _move_no_overwrite(src: Path, target: Path) -> None:
    """Move a file to `target`, failing (FileExistsError) rather than replacing what is there."""
    try:
        os.link(src, target)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        tmp = target.with_name(f".{target.name}.bepbuild-{os.getpid()}")
        shutil.copyfile(src, tmp)
        try:
            os.link(tmp, target)
        finally:
            tmp.unlink()
    src.unlink()


def download(job: dict[str, Any], dest: Path) -> tuple[Path, list[str]]:
    """Copy a job's output folder to DEST/named-outputs/score/ (as `az ml job download` lays it out).

    The whole tree, files as regular files; a link is copied as its target only when that lies
    inside the output folder, others are skipped (returned). A file of the same name that differs
    is never overwritten: nothing is copied then, and the error names it.
    """
    config.refuse_own_folder(dest, "--download-path")
    src = Path(job["output_dir"])
    if not src.is_dir():
        raise NotFoundError(f"job {job['name']} has no outputs at {src}")
    target = dest / "named-outputs" / "score"
    existing = next(p for p in (target, *target.parents) if os.path.lexists(p))
    if not existing.is_dir():
        raise UserError(f"--download-path {dest}: {existing} is a file; give a folder")
    real_src = src.resolve()
    if target.resolve() == real_src or real_src in target.resolve().parents:
        raise UserError(f"--download-path {dest} is inside the job's output folder {src}")
    files, skipped = _output_files(real_src)
    copies = []
    for rel, path in files:
        to = target / rel
        for folder in (target / part for part in reversed(rel.parents[:-1])):
            if os.path.lexists(folder) and not _plain_dir(folder):
                raise ConflictError(f"--download-path {dest}: {folder} is in the way (not a folder); nothing "
                                    "was downloaded")
        if os.path.lexists(to):
            if to.is_symlink() or not to.is_file() or not filecmp.cmp(path, to, shallow=False):
                raise ConflictError(f"--download-path {dest}: {to} exists and differs from the job's output; "
                                    "nothing was downloaded (move it away, or download elsewhere)")
            continue
        copies.append((path, to))
    target.mkdir(parents=True, exist_ok=True)
    for path, to in copies:
        to.parent.mkdir(parents=True, exist_ok=True)
        tmp = to.with_name(f".{to.name}.download-{os.getpid()}")
        shutil.copyfile(path, tmp)
        shutil.copystat(path, tmp)
        os.replace(tmp, to)
    return target, skipped


def _output_files(root: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(relative name, file to read) of every file under `root`; the names of links and special files
    that were skipped (links leading out of `root`, to folders, dangling)."""
    files: list[tuple[Path, Path]] = []
    skipped: list[str] = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        for d in list(dirs):
            if (here / d).is_symlink():
                dirs.remove(d)
                skipped.append((here / d).relative_to(root).as_posix())
        for n in sorted(names):
            p = here / n
            rel = p.relative_to(root)
            if p.is_symlink():
                real = Path(os.path.realpath(p))
                if root in real.parents and real.is_file() and not real.is_symlink():
                    files.append((rel, real))
                else:
                    skipped.append(rel.as_posix())
            elif stat.S_ISREG(os.lstat(p).st_mode):
                files.append((rel, p))
            else:
                skipped.append(rel.as_posix())
    return files, skipped
