"""Registering and looking up assets: the logic behind the model/environment/data/compute verbs.

Registered models and build contexts are copied under BEPBUILD_HOME, so a registered version never
changes when the source folder does (as an upload to Azure would freeze it). Data assets are
referenced in place: they are usually large and read-only.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from . import config, owners
from .errors import SpecError, UserError
from .hashing import is_executable, read_only_mode, stamp, tree_sha256, walk_files
from .mlflow_models import check_model
from .specs import AssetRef, EnvironmentSpec, Loaded
from .specs.common import check_asset_name, check_asset_version
from .store import Store

STAGING = ".staging"
# The registry folder of each kind whose versions hold files.
KIND_DIRS = {"model": "models", "environment": "environments"}
# Set inside `preview`: the caller's folder where what would be registered is frozen instead.
_preview_root: ContextVar[Path | None] = ContextVar("bepbuild_registry_preview", default=None)


@contextmanager
def preview(scratch: Path) -> Iterator[None]:
    """Register nothing inside this block, whoever asks (deploy's inline model and environment, an MLflow
    model's own environment): `bepbuild test` builds exactly what deploy would and leaves the registry
    as it was.

    `register_model` and `register_environment` return an identical registered version when there is
    one, as they always do, and otherwise the record they would write, with the version it would get
    and its files frozen (as the registry freezes them) in a copy under `scratch`, a folder of the
    caller's that the caller removes.
    """
    token = _preview_root.set(scratch)
    try:
        yield
    finally:
        _preview_root.reset(token)


def _unregistered(store: Store, kind: str, name: str, version: str | None, doc: dict[str, Any],
                  staged: Path | None, *, same: Callable[[dict[str, Any]], bool], reuse_latest: bool
                  ) -> dict[str, Any]:
    """The record `register_version` would write (see `preview`), or the version it would return."""
    found, name, version = store.preview_version(kind, name, version, same=same, reuse_latest=reuse_latest)
    if found is not None:
        return found
    return {**doc, "name": name, "version": version, "unregistered": True,
            **({"path": str(staged)} if staged is not None else {})}


def _staging_root() -> Path:
    return config.assets_dir() / STAGING


OWNER_SUFFIX = ".owner"  # <staging folder>.owner: the process copying into it (owners.owner)
UNOWNED_SWEEP_SECONDS = 86400.0  # an unmarked staging folder (an earlier bepbuild's) is swept after a day


def _new_staging(root: Path, prefix: str = "tmp-", *, make: bool = True) -> Path:
    """A new folder in `root` for a copy on its way into the registry (`make`: made here, else only
    named). In the registry's staging area its maker is written beside it first (`<folder>.owner`),
    so a registration killed half way leaves nothing for ever: the next one sweeps it (`_sweep_staging`)."""
    folder = root / f"{prefix}{uuid.uuid4().hex}"
    if root == _staging_root():
        folder.with_name(folder.name + OWNER_SUFFIX).write_text(owners.owner() + "\n")
    if make:
        folder.mkdir()
    return folder


def _done_staging(folder: Path) -> None:
    """The staging folder was moved into place or removed: drop its owner mark."""
    folder.with_name(folder.name + OWNER_SUFFIX).unlink(missing_ok=True)


def _sweep_staging() -> None:
    """Remove what killed registrations left in the staging area: folders whose maker is gone, and
    unmarked ones (left by an earlier bepbuild) older than a day."""
    root = _staging_root()
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return
    now = time.time()
    for n in names:
        path = root / n
        try:
            if n.endswith(OWNER_SUFFIX):
                if owners.owner_gone(path.read_text().strip()):
                    folder = path.with_name(n[: -len(OWNER_SUFFIX)])
                    if os.path.lexists(folder):
                        config.remove_owned(folder, root)
                    path.unlink(missing_ok=True)
            elif not os.path.lexists(root / (n + OWNER_SUFFIX)) and now - path.lstat().st_mtime > UNOWNED_SWEEP_SECONDS:
                config.remove_owned(path, root)
        except OSError:
            continue  # gone meanwhile (another sweep), or not removable now: the next registration tries again


def _check_name_version(kind: str, name: str, version: str | None) -> None:
    """Names and versions become folder names in the registry: checked whoever calls."""
    try:
        check_asset_name(name)
    except ValueError as e:
        raise UserError(f"{kind} name: {e}") from e
    if version is not None:
        try:
            check_asset_version(version)
        except ValueError as e:
            raise UserError(f"{kind} version: {e}") from e


def _check_source(src: Path, what: str) -> None:
    """Refuse a source whose copy would land inside itself: one holding BEPBUILD_HOME, or the staging area."""
    s, home, staging = src.resolve(), config.home().resolve(), _staging_root().resolve()
    if s == home or s in home.parents:
        raise UserError(f"{what} path {src} contains BEPBUILD_HOME ({home}), where its copy would go; "
                        "give a folder that does not hold it, or set BEPBUILD_HOME elsewhere")
    if s == staging or staging in s.parents:
        raise UserError(f"{what} path {src} lies in the registry's staging area {staging}")


def _digest(src: Path, what: str) -> str:
    try:
        return tree_sha256(src)
    except ValueError as e:
        raise UserError(f"{what} path {src}: {e}") from e


def _why(e: OSError) -> str:
    """The first reason of a failed copy (shutil.Error carries one entry per file)."""
    if isinstance(e, shutil.Error) and e.args and isinstance(e.args[0], list) and e.args[0]:
        errors = e.args[0]
        first = str(errors[0][-1])[:200]
        return first + (f" (and {len(errors) - 1} more files)" if len(errors) > 1 else "")
    return str(e.strerror or e)[:200]


def _stage(src: Path, what: str, root: Path | None = None) -> Path:
    """Copy a file or folder into a new staging folder of the registry (or of `root`); returns the copy.

    The copy is frozen there, before it is registered: files read-only, times fixed. Build contexts
    hard-link these files and never need to change them, and no link can be written through.
    A failed copy leaves nothing behind.
    """
    _check_source(src, what)
    try:
        walk_files(src)  # refuses symlinks and special files before anything is copied
    except ValueError as e:
        raise UserError(f"{what} path {src}: {e}") from e
    root = root or _staging_root()
    root.mkdir(parents=True, exist_ok=True)
    if root == _staging_root():
        _sweep_staging()
    staging = _new_staging(root)
    dest = staging / src.name
    try:
        if src.is_dir():
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest)
        for p in walk_files(dest):
            os.chmod(p, read_only_mode(is_executable(p)))
            stamp(p)
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        _done_staging(staging)
        if isinstance(e, OSError):
            raise UserError(f"{what} path {src}: cannot copy it into the registry: {_why(e)}") from None
        if isinstance(e, ValueError):  # the source changed under the copy (a link appeared)
            raise UserError(f"{what} path {src}: {e}") from None
        raise
    return dest


def _commit(store: Store, kind: str, name: str, version: str | None, doc: dict[str, Any], staged: Path, *,
            same: Callable[[dict[str, Any]], bool], reuse_latest: bool) -> dict[str, Any]:
    """Register `staged` (from `_stage`) as a version, or reuse an identical one, in one transaction.

    The new folder is moved into place inside the transaction, before its row is written. A folder
    already at that place has no row (a crash between the move and the write left it): it is moved
    aside first and removed only once the new one is in place and recorded.
    """
    staging, assets = staged.parent, config.assets_dir()
    done: dict[str, Path] = {}

    def place(stored_name: str, new_version: str) -> str:
        final = config.owned_path(assets, KIND_DIRS[kind], stored_name, new_version)
        final.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(final):
            aside = _new_staging(_staging_root(), "stale-", make=False)
            os.rename(final, aside)
            done["aside"], done["old"] = aside, final
        os.rename(staging, final)
        done["final"] = final
        return str(final / staged.name)

    try:
        record, created = store.register_version(kind, name, version, doc, same=same, reuse_latest=reuse_latest,
                                                 place=place)
    except BaseException:
        if "final" in done:  # moved, but the row was not written: take the copy back out
            config.remove_owned(done["final"], assets)
        if "aside" in done:
            os.rename(done["aside"], done["old"])
            _done_staging(done["aside"])
        shutil.rmtree(staging, ignore_errors=True)
        _done_staging(staging)
        raise
    if "aside" in done:
        config.remove_owned(done["aside"], _staging_root())
        _done_staging(done["aside"])
    if not created:  # an identical version was registered meanwhile: the copy is not needed
        config.remove_owned(staging, _staging_root())
    _done_staging(staging)
    return record


def register_model(
    store: Store,
    *,
    name: str,
    path: Path,
    type: str = "custom_model",
    version: str | None = None,
    description: str | None = None,
    tags: dict[str, str] | None = None,
    reuse_same_content: bool = False,
) -> dict[str, Any]:
    """Copy a model file/folder into the registry as a new version of `name`.

    With `reuse_same_content`, an identical latest version is returned instead (deployments
    re-registering their inline model on every deploy must not create a version each time). An
    explicit version that exists is returned when its content is the same, a conflict otherwise.
    """
    _check_name_version("model", name, version)
    if not path.exists():
        raise UserError(f"model path not found: {path}")
    if type == "mlflow_model":
        check_model(path)
    _check_source(path, "model")

    def same_as(digest: str) -> Callable[[dict[str, Any]], bool]:
        return lambda rec: rec.get("sha256") == digest and rec.get("type") == type

    # Nothing is copied when an identical version is registered already (a deploy of an unchanged model).
    if reuse_same_content or version is not None:
        found = store.find_version("model", name, version, same=same_as(_digest(path, "model")),
                                   reuse_latest=reuse_same_content)
        if found is not None:
            return found
    staged = _stage(path, "model", _preview_root.get())
    digest = tree_sha256(staged)  # of what is registered, should the source change during the copy
    doc: dict[str, Any] = {
        "type": type,
        "description": description,
        "tags": tags or {},
        "source": str(path),
        "folder_name": path.name,
        "sha256": digest,
    }
    if _preview_root.get() is not None:
        return _unregistered(store, "model", name, version, doc, staged, same=same_as(digest),
                             reuse_latest=reuse_same_content)
    return _commit(store, "model", name, version, doc, staged, same=same_as(digest),
                   reuse_latest=reuse_same_content)


def register_environment(store: Store, loaded: Loaded[Any], env: EnvironmentSpec, prefix: str = "",
                         reuse_same_content: bool = False) -> dict[str, Any]:
    """Register an environment: the image, the conda file's content, or a copy of the build context."""
    name = env.name or "anonymous-environment"
    _check_name_version("environment", name, env.version)
    doc: dict[str, Any] = {
        "description": env.description,
        "tags": env.tags,
        "image": env.image,
        "conda_file": loaded.conda.model_dump(mode="json", exclude_none=True) if loaded.conda else None,
        "build": None,
    }
    ctx = loaded.paths[prefix + "build.path"] if env.build is not None else None
    if env.build is not None and ctx is not None:
        _check_source(ctx, "environment build")
        doc["build"] = {"dockerfile_path": env.build.dockerfile_path, "sha256": _digest(ctx, "environment build")}

    def same(rec: dict[str, Any]) -> bool:
        return _same_env(rec, doc)

    if reuse_same_content or env.version is not None:
        found = store.find_version("environment", name, env.version, same=same, reuse_latest=reuse_same_content)
        if found is not None:
            return found
    scratch = _preview_root.get()
    if ctx is None:
        if scratch is not None:
            return _unregistered(store, "environment", name, env.version, doc, None, same=same,
                                 reuse_latest=reuse_same_content)
        record, _ = store.register_version("environment", name, env.version, doc, same=same,
                                           reuse_latest=reuse_same_content)
        return record
    staged = _stage(ctx, "environment build", scratch)
    doc["build"]["sha256"] = tree_sha256(staged)
    if scratch is not None:
        return _unregistered(store, "environment", name, env.version, doc, staged, same=same,
                             reuse_latest=reuse_same_content)
    return _commit(store, "environment", name, env.version, doc, staged, same=same,
                   reuse_latest=reuse_same_content)


def _same_env(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("image", "conda_file")
    if any(a.get(k) != b.get(k) for k in keys):
        return False
    return (a.get("build") or {}).get("sha256") == (b.get("build") or {}).get("sha256")


def resolve(store: Store, kind: str, ref: str | AssetRef) -> dict[str, Any]:
    """Look up `azureml:name:version` / `azureml:name@latest` in the registry."""
    from .specs import parse_ref

    r = parse_ref(ref, allow_bare=True) if isinstance(ref, str) else ref
    return store.get_version(kind, r.name, r.version, r.label)


def register_data(store: Store, *, name: str, path: str, type: str, version: str | None = None,
                  description: str | None = None) -> dict[str, Any]:
    """Register a data asset by reference: a local path (checked) or an http(s) URL."""
    _check_name_version("data", name, version)
    if type not in ("uri_folder", "uri_file"):
        raise SpecError(f"--type must be uri_folder or uri_file, got {type!r}")
    location = path
    if "://" not in path:
        p = Path(path).expanduser().resolve()
        if not p.exists():
            raise UserError(f"data path not found: {path}")
        if type == "uri_folder" and not p.is_dir():
            raise UserError(f"data path {path} is a file; use --type uri_file")
        if type == "uri_file" and not p.is_file():
            raise UserError(f"data path {path} is a folder; use --type uri_folder")
        location = str(p)
    elif not path.startswith(("http://", "https://")):
        raise UserError(f"data path {path}: only local paths and http(s) URLs are supported")
    doc = {"type": type, "path": location, "description": description}
    record, _ = store.register_version(
        "data", name, version, doc, same=lambda rec: rec.get("path") == location and rec.get("type") == type)
    return record


def download_model(store: Store, name: str, version: str | None, label: str | None, dest: Path) -> Path:
    """Copy a registered model's files to `dest/<name>/<registered file or folder>` (az ml model download).

    Never overwrites: an existing target is refused, and nothing is written outside that new folder.
    """
    config.refuse_own_folder(dest, "--download-path")
    model = store.get_version("model", name, version, label)
    src = Path(model["path"])
    if dest.exists() and not dest.is_dir():
        raise UserError(f"--download-path {dest} is a file; give a folder")
    target = dest / model["name"]
    if target.exists() or target.is_symlink():
        raise UserError(f"--download-path: {target} exists; remove it or choose another folder")
    staging = dest / f".{model['name']}.download-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir(parents=True)
        if src.is_dir():  # file contents only: the registry's read-only modes are not the user's
            shutil.copytree(src, staging / src.name, copy_function=shutil.copyfile)
        else:
            shutil.copyfile(src, staging / src.name)
        staging.rename(target)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"--download-path {dest}: cannot write the model there: {e.strerror or e}") from None
    return target / src.name
