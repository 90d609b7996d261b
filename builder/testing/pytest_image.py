"""`bepbuild test --pytest`: the deployment's image plus pytest, in a layer the deployment's image never holds.

The derived image (`naming.pytest_image`) is `FROM` the deployment's image with one more layer:
the wheels of a pinned pytest, locked and fetched on the host like any environment (`locking`, the
host's index settings, the shared wheelhouse), unpacked into `layout.IMAGE_PYTEST_DIR`. They are
pure-Python wheels, so unpacking is installing, and the image's own pip (if any) is never asked: the
build needs no network and the venv is left exactly as it is. The probe puts that folder after the
image's packages on sys.path. The image is removed when the test ends.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from bepbuild_runtime import layout

from .. import __version__, images, locking, naming
from ..errors import BuildError
from .container import TEST_LABEL

# The newest pytest that still runs on the runtime's oldest Python (3.8).
PYTEST_REQUIREMENT = "pytest==8.3.5"
KIND_LABEL = "io.bepbuild.kind"


def _unpack(wheel: Path, dest: Path) -> None:
    """A pure-Python wheel's files into `dest` (its .data scripts are not needed: pytest runs as a module)."""
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            path = PurePosixPath(info.filename)
            if path.is_absolute() or ".." in path.parts:
                raise BuildError(f"{wheel.name}: unsafe member {info.filename!r}")
            if info.is_dir() or path.parts[0].endswith(".data"):
                continue
            target = dest.joinpath(*path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(info))
            target.chmod(0o644)


def build(image: str, image_id: str, python: str, *, scratch: Path, backend: str, log: Callable[[str], None]) -> str:
    """Build the derived image for deployment image `image` (which must still be `image_id`) whose Python is
    `python` (X.Y[.Z]); returns its tag.

    FROM names the tag: BuildKit takes a bare image id for a repository to pull from.
    """
    if images.image_id(image) != image_id:
        raise BuildError(f"{image} no longer names the image under test ({image_id[:19]}): it was rebuilt or "
                         "removed meanwhile; test again", source=image)
    lock = locking.resolve([PYTEST_REQUIREMENT], python=python, options=["--only-binary=:all:"], log=log)
    context = scratch / "pytest-context"
    (context / "pytest").mkdir(parents=True)
    for p in lock.packages:
        _unpack(locking.wheelhouse() / p.filename, context / "pytest")
    (context / "Dockerfile").write_text(
        f"FROM {image}\n"
        f"COPY pytest/ {layout.IMAGE_PYTEST_DIR}/\n"
    )
    tag = naming.pytest_image(scratch.name, image_id, lock.digest)
    labels = {"org.opencontainers.image.vendor": "bepbuild", KIND_LABEL: "pytest", TEST_LABEL: scratch.name,
              "io.bepbuild.test-base": image_id,
              "io.bepbuild.pytest": " ".join(f"{p.name}=={p.version}" for p in lock.packages),
              "io.bepbuild.version": __version__}
    images.build(context, tag, labels=labels, network="none", backend=backend, on_line=log, dockerfile="Dockerfile")
    return tag


def remove(tag: str) -> None:
    """Remove the derived image (kept while another test still runs a container of it)."""
    images.remove_unused(tag)
