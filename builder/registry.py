"""Registering and looking up assets: the logic behind the model/environment/data/compute verbs.

Registered models and build contexts are copied under BEPBUILD_HOME, so a registered version never
changes when the source folder does (as an upload to Azure would freeze it). Data assets are
referenced in place: they are usually large and read-only.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import yaml

from . import config
from .errors import SpecError, UserError
from .hashing import tree_sha256, walk_files
from .specs import AssetRef, EnvironmentSpec, Loaded
from .specs.common import check_asset_name
from .store import Store


def _copy_tree(src: Path, kind: str) -> Path:
    """Copy a file or folder to a staging place under the assets dir; returns the copy."""
    staging = config.assets_dir() / ".staging" / uuid.uuid4().hex
    staging.mkdir(parents=True)
    dest = staging / src.name
    try:
        walk_files(src)  # refuses symlinks and special files before anything is copied
    except ValueError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"{kind} path {src}: {e}") from e
    if src.is_dir():
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        shutil.copy2(src, dest)
    return dest


def _finalize(staged: Path, kind: str, name: str, version: str) -> Path:
    final_dir = config.assets_dir() / kind / name / version
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    if final_dir.exists():
        shutil.rmtree(final_dir)
    staged.parent.rename(final_dir)
    return final_dir / staged.name


def check_mlflow_model(path: Path) -> dict[str, Any]:
    """An MLflow model folder must have an MLmodel file with the python_function flavor."""
    mlmodel = path / "MLmodel"
    if not path.is_dir() or not mlmodel.is_file():
        raise UserError(f"{path}: an mlflow_model must be a folder with an MLmodel file")
    try:
        doc = yaml.safe_load(mlmodel.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{mlmodel}: not a valid MLmodel file: {e}") from e
    flavors = (doc or {}).get("flavors") or {}
    if "python_function" not in flavors:
        raise UserError(
            f"{mlmodel}: only MLflow models with the python_function flavor can be deployed "
            f"without a scoring script (flavors: {', '.join(sorted(flavors)) or 'none'})"
        )
    return doc


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
    re-registering their inline model on every deploy must not create a version each time).
    """
    try:
        check_asset_name(name)
    except ValueError as e:
        raise UserError(f"model name: {e}") from e
    if not path.exists():
        raise UserError(f"model path not found: {path}")
    if type == "mlflow_model":
        check_mlflow_model(path)
    try:
        digest = tree_sha256(path)
    except ValueError as e:
        raise UserError(f"model path {path}: {e}") from e
    if reuse_same_content and version is None:
        try:
            latest = store.get_version("model", name)
        except UserError:
            latest = None
        if latest and latest.get("sha256") == digest and latest.get("type") == type:
            return latest
    staged = _copy_tree(path, "model")
    doc: dict[str, Any] = {
        "type": type,
        "description": description,
        "tags": tags or {},
        "source": str(path),
        "folder_name": path.name,
        "sha256": digest,
    }
    try:
        version = store.add_version("model", name, version, doc)
    except BaseException:
        shutil.rmtree(staged.parent, ignore_errors=True)
        raise
    doc = store.update_asset_path("model", name, version, str(_finalize(staged, "models", name, version)))
    return doc


def register_environment(store: Store, loaded: Loaded[Any], env: EnvironmentSpec, prefix: str = "",
                         reuse_same_content: bool = False) -> dict[str, Any]:
    """Register an environment: the image, the conda file's content, or a copy of the build context."""
    name = env.name or "anonymous-environment"
    doc: dict[str, Any] = {
        "description": env.description,
        "tags": env.tags,
        "image": env.image,
        "conda_file": loaded.conda.model_dump(mode="json", exclude_none=True) if loaded.conda else None,
        "build": None,
    }
    staged: Path | None = None
    if env.build is not None:
        ctx = loaded.paths[prefix + "build.path"]
        doc["build"] = {"dockerfile_path": env.build.dockerfile_path, "sha256": tree_sha256(ctx)}
    if reuse_same_content and env.version is None:
        try:
            latest = store.get_version("environment", name)
        except UserError:
            latest = None
        if latest and _same_env(latest, doc):
            return latest
    if env.build is not None:
        staged = _copy_tree(loaded.paths[prefix + "build.path"], "environment build")
    try:
        version = store.add_version("environment", name, env.version, doc)
    except BaseException:
        if staged:
            shutil.rmtree(staged.parent, ignore_errors=True)
        raise
    if staged is not None:
        final = _finalize(staged, "environments", name, version)
        return store.update_asset_path("environment", name, version, str(final))
    return store.get_version("environment", name, version)


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
    try:
        check_asset_name(name)
    except ValueError as e:
        raise UserError(f"data name: {e}") from e
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
    version = store.add_version("data", name, version, doc)
    return store.get_version("data", name, version)


def download_model(store: Store, name: str, version: str | None, label: str | None, dest: Path) -> Path:
    """Copy a registered model's files to `dest/<name>/<registered file or folder>` (az ml model download).

    Never overwrites: an existing target is refused, and nothing is written outside that new folder.
    """
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
        if src.is_dir():
            shutil.copytree(src, staging / src.name)
        else:
            shutil.copyfile(src, staging / src.name)
        staging.rename(target)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"--download-path {dest}: cannot write the model there: {e.strerror or e}") from None
    return target / src.name
