"""Build, inspect, pull and remove images on the local Docker engine (pushing them: `image_push`).

Builds go through a small backend seam: ``buildkit`` runs ``DOCKER_BUILDKIT=1 <docker_cli> build``
(the only way to BuildKit here: the SDK builds with the legacy builder only); ``sdk`` uses the
docker SDK's legacy builder, which cannot do ``RUN --mount``. Inspect, tag, push and remove use
the SDK. Tags are content hashes, so an existing tag means "already built".
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import docker
import docker.errors
import requests

from . import config
from .errors import BuildError, EngineError, NotFoundError

LineSink = Callable[[str], None]
TAIL_LINES = 15
BACKENDS = ("buildkit", "sdk")
LEGACY_DOCKERFILE = "Dockerfile.legacy"
# The Dockerfile each backend takes from a rendered context: the legacy builder cannot run `RUN --mount`.
DOCKERFILES = {"buildkit": "Dockerfile", "sdk": LEGACY_DOCKERFILE}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_HINT = "run `make engine` or `bepbuild doctor`"

_client: docker.DockerClient | None = None


@dataclass
class BuildResult:
    """What `build` did: the image id behind `tag`, and whether it was built now."""

    image_id: str
    tag: str
    built: bool
    seconds: float
    log_path: Path | None
    layers_built: int = 0  # COPY/RUN/ADD steps that ran (not taken from the build cache)
    size: int | None = None  # of the whole image, bytes


@contextmanager
def engine_calls(what: str) -> Iterator[None]:
    """Turn "cannot reach the engine" (which docker-py lets through as requests errors) into EngineError."""
    try:
        yield
    except (requests.exceptions.ConnectionError, docker.errors.DockerException) as e:
        if isinstance(e, docker.errors.APIError):
            raise
        raise EngineError(f"{what}: no Docker engine answers ({first_line(e)}); {_HINT}") from e


def engine() -> docker.DockerClient:
    """The cached SDK client; `EngineError` when no engine answers."""
    global _client
    if _client is None:
        with engine_calls("docker"):
            client = docker.from_env(version="auto")
            client.ping()
        _client = client
    return _client


def inspect(tag: str) -> dict | None:
    """The engine's description of image `tag` (``Id``, ``Size``, ``Config.Labels``...), or None when there is none."""
    with engine_calls(f"inspect {tag}"):
        try:
            return engine().api.inspect_image(tag)
        except docker.errors.ImageNotFound:
            return None


def image_id(tag: str) -> str | None:
    """The image id (``sha256:...``) behind `tag`, or None when there is no such image."""
    found = inspect(tag)
    return None if found is None else found["Id"]


def image_exists(tag: str) -> bool:
    return image_id(tag) is not None


def labels(tag: str) -> dict[str, str]:
    """The labels of image `tag`; `NotFoundError` when it does not exist."""
    with engine_calls(f"inspect {tag}"):
        try:
            attrs = engine().api.inspect_image(tag)
        except docker.errors.ImageNotFound as e:
            raise NotFoundError(f"no image {tag}") from e
    return dict(attrs.get("Config", {}).get("Labels") or {})


def pull(ref: str) -> str:
    """Pull image `ref` (``[registry/]repo[:tag]``) from its registry; its id. One line when it cannot."""
    with engine_calls(f"pull {ref}"):
        try:
            engine().api.pull(_repository(ref), tag=tag_part(ref))
        except docker.errors.APIError as e:
            raise EngineError(f"cannot pull {ref}: {first_line(e)}") from e
    found = image_id(ref)
    if found is None:
        raise EngineError(f"pulled {ref}, but the engine has no such image")
    return found


def list_labelled(*labels: str, dangling: bool | None = None) -> list[dict]:
    """Summaries (``Id``, ``RepoTags``, ``Labels``, ``Size``, ``Created``) of the images carrying every
    label ``key=value`` of `labels` (only the untagged ones with `dangling`)."""
    filters: dict[str, object] = {"label": list(labels)}
    if dangling is not None:
        filters["dangling"] = dangling
    with engine_calls("list images"):
        return list(engine().api.images(filters=filters))


def used_by_container(image_id: str) -> bool:
    """Whether any container (running or not) was created from the image or an image built on it."""
    with engine_calls(f"list containers of {image_id}"):
        return bool(engine().containers.list(all=True, filters={"ancestor": image_id}))


def remove_unused(image_id: str) -> bool:
    """Remove an image by id unless the engine refuses (in use, or an image is built on it): whether it is gone."""
    with engine_calls(f"remove {image_id}"):
        try:
            engine().api.remove_image(image_id)
        except docker.errors.ImageNotFound:
            return True
        except docker.errors.APIError:
            return False
    return True


def remove_image(tag: str) -> None:
    """Remove image `tag` (only untag it when it has other tags); a missing image is fine."""
    with engine_calls(f"remove {tag}"):
        try:
            engine().api.remove_image(tag)
        except docker.errors.ImageNotFound:
            pass


@cache
def _buildkit_works(cli: str) -> bool:
    """Whether `DOCKER_BUILDKIT=1 cli build` works: clients before 23 carry BuildKit, later ones need buildx."""
    path = shutil.which(cli)
    if path is None:
        return False
    out = subprocess.run([path, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True)
    major = re.match(r"(\d+)\.", out.stdout.strip())
    if major is None:
        return False
    return int(major.group(1)) < 23 or subprocess.run([path, "buildx", "version"], capture_output=True).returncode == 0


def pick_backend(backend: str = "auto") -> str:
    """Resolve "auto" to "buildkit" when the docker CLI can build with BuildKit, else "sdk"."""
    if backend == "auto":
        return "buildkit" if _buildkit_works(config.docker_cli()) else "sdk"
    if backend not in BACKENDS:
        raise BuildError(f"unknown build backend {backend!r} (choose auto, {', '.join(BACKENDS)})")
    return backend


def dockerfile_for(backend: str, context_dir: Path) -> str:
    """The Dockerfile that `backend` (already picked: buildkit or sdk) builds in `context_dir`.

    The only place that makes this choice, so that it always follows the builder that really runs
    (``auto`` falls back to sdk without BuildKit). A context without the backend's own Dockerfile
    (an environment's build context, a hand-made one) is built from its ``Dockerfile``.
    """
    own = DOCKERFILES[backend]
    return own if (Path(context_dir) / own).is_file() else "Dockerfile"


def build(
    context_dir: Path,
    tag: str,
    *,
    labels: dict[str, str] | None = None,
    network: str = "none",
    secrets: dict[str, Path] | None = None,
    backend: str = "auto",
    on_line: LineSink | None = None,
    log_path: Path | None = None,
    force: bool = False,
    dockerfile: str | None = None,
    build_args: dict[str, str] | None = None,
) -> BuildResult:
    """Build `context_dir` as `tag`, or do nothing (one inspect call) when `tag` exists and not `force`.

    `dockerfile` is relative to the context; by default the backend's own (`dockerfile_for`), which
    is what a rendered deployment context needs. `secrets` maps secret ids to files (BuildKit only;
    nothing of them lands in a layer). Every output line goes to `on_line` and `log_path`. An
    image of `tag`'s repository that the build left untagged and unused is removed.
    """
    start = time.monotonic()
    old = inspect(tag)
    if old is not None and not force:
        return BuildResult(old["Id"], tag, False, time.monotonic() - start, None, size=old.get("Size"))
    context_dir = Path(context_dir).resolve()
    backend = pick_backend(backend)
    if dockerfile is None:
        dockerfile = dockerfile_for(backend, context_dir)
    if not (context_dir / dockerfile).is_file():
        raise BuildError(f"no {dockerfile} in {context_dir}", source=tag)
    for sid, src in (secrets or {}).items():
        if not Path(src).is_file():
            raise BuildError(f"secret {sid!r}: no file {src}", source=tag)
    with engine_calls(f"build {tag}"):
        before = {img.id for img in engine().images.list(name=_repository(tag))}
    log = _Log(log_path, on_line)
    try:
        if backend == "buildkit":
            layers = _build_buildkit(context_dir, dockerfile, tag, labels, network, secrets, build_args, log)
        else:
            if secrets:
                log.line(f"note: the sdk backend cannot pass secrets ({', '.join(sorted(secrets))}); not used")
            with engine_calls(f"build {tag}"):
                layers = _build_sdk(context_dir, dockerfile, tag, labels, network, build_args, log)
    finally:
        log.close()
    new = inspect(tag)
    if new is None:
        raise BuildError(f"build finished but there is no image {tag}{log.pointer()}", source=tag)
    _remove_orphans(before - {new["Id"]})
    return BuildResult(new["Id"], tag, True, time.monotonic() - start, log_path, layers or 0, new.get("Size"))


# A build step that makes a layer, as BuildKit titles it: "[2/5] COPY ...", "[install 3/4] RUN ...".
_LAYER_STEP = re.compile(r"\[[^\]]*?\d+/\d+\] (COPY|RUN|ADD)\b")


def _build_buildkit(context_dir: Path, dockerfile: str, tag: str, labels: dict[str, str] | None, network: str,
                    secrets: dict[str, Path] | None, build_args: dict[str, str] | None, log: _Log) -> int:
    """Run the build; the number of layer steps that ran (not cached)."""
    cli = shutil.which(config.docker_cli())
    if cli is None:
        raise EngineError(f"no docker CLI at {config.docker_cli()}; {_HINT}")
    cmd = [cli, "build", "--progress", "plain", "--network", network, "-t", tag]
    if dockerfile != "Dockerfile":
        cmd += ["-f", str(context_dir / dockerfile)]
    cmd += [a for k, v in sorted((labels or {}).items()) for a in ("--label", f"{k}={v}")]
    cmd += [a for k, v in sorted((build_args or {}).items()) for a in ("--build-arg", f"{k}={v}")]
    cmd += [a for k, p in sorted((secrets or {}).items()) for a in ("--secret", f"id={k},src={Path(p).resolve()}")]
    cmd.append(str(context_dir))
    log.line("$ DOCKER_BUILDKIT=1 " + " ".join(cmd), echo=False)
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env)
    # Step titles ("#5 [3/3] RUN ...") are kept over the whole stream: a chatty step can push its
    # title out of the tail before its "#5 ERROR: ..." line arrives.
    titles: dict[str, str] = {}
    ran: set[str] = set()
    step = error = None
    with proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            log.line(line)
            if error is None and (m := re.match(r"#(\d+) (\[.+)$", line)):
                titles[m.group(1)] = m.group(2)
            elif error is None and (m := re.match(r"#(\d+) ERROR: (.*)$", line)):
                step, error = titles.get(m.group(1)), m.group(2)
            elif (m := re.match(r"#(\d+) DONE\b", line)) and _LAYER_STEP.match(titles.get(m.group(1), "")):
                ran.add(m.group(1))
    if proc.returncode != 0:
        last = next((ln.strip() for ln in reversed(log.tail) if ln.strip()), None)
        raise log.failure(tag, step, error or last or f"docker build exited with {proc.returncode}")
    return len(ran)


def _build_sdk(context_dir: Path, dockerfile: str, tag: str, labels: dict[str, str] | None, network: str,
               build_args: dict[str, str] | None, log: _Log) -> int:
    """Run the build with the legacy builder; the number of layer steps that ran (not cached).

    Its step images are removed afterwards when nothing needs them: after a failure, and those of a
    throwaway stage (the environment's install stage holds the wheels) after a success; the steps of
    the image itself are its parents and stay.
    """
    log.line(f"$ sdk legacy build -f {dockerfile} --network {network} -t {tag} {context_dir}", echo=False)
    step = None
    made: list[str] = []  # step images; after a failure they are dangling leftovers
    layer_steps: dict[str, bool] = {}  # step number ("3/9") -> ran (False: taken from the cache)
    number = ""
    try:
        # rm and forcerm: without them a failed step leaves its intermediate container behind.
        stream = engine().api.build(path=str(context_dir), dockerfile=dockerfile, tag=tag, rm=True, forcerm=True,
                                    network_mode=network, labels=labels or None, buildargs=build_args or None,
                                    decode=True)
        for chunk in stream:
            if "error" in chunk:
                detail = str(chunk.get("errorDetail", {}).get("message") or chunk["error"])
                log.line(detail.rstrip())
                raise log.failure(tag, step, first_line(detail))
            for line in _ANSI.sub("", str(chunk.get("stream", ""))).splitlines():
                if m := re.match(r"Step (\d+/\d+) : (.*)", line):
                    step = f"[{m.group(1)}] {m.group(2)}"  # the same shape as BuildKit's step titles
                    number = m.group(1)
                    if _LAYER_STEP.match(step):
                        layer_steps[number] = True
                elif line.strip() == "---> Using cache" and number in layer_steps:
                    layer_steps[number] = False
                elif m := re.match(r" ---> ([0-9a-f]{12,})$", line):
                    made.append(m.group(1))
                if line.strip():
                    log.line(line)
    except docker.errors.APIError as e:
        _remove_orphans(reversed(made))
        raise log.failure(tag, step, first_line(e)) from e
    except BuildError:
        _remove_orphans(reversed(made))
        raise
    _remove_orphans(reversed(made))
    return sum(layer_steps.values())


def _remove_orphans(candidates: Iterable[str]) -> None:
    """Remove those of `candidates` that are untagged, have no children and no container uses."""
    client = engine()
    for old in candidates:
        try:
            if client.api.inspect_image(old).get("RepoTags"):
                continue  # still tagged (an older content hash, or another repo's tag): not ours to drop
            if client.containers.list(all=True, filters={"ancestor": old}):
                continue
            client.api.remove_image(old)  # refused (409) while it has children
        except docker.errors.APIError:
            pass  # gone meanwhile, or in use: leave it


class _Log:
    """Fans build output out to a callback and a log file, and keeps the tail for error messages."""

    def __init__(self, path: Path | None, on_line: LineSink | None):
        self.path = path
        self.on_line = on_line
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._file = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def line(self, text: str, *, echo: bool = True) -> None:
        self.tail.append(text)
        if self._file is not None:
            self._file.write(text + "\n")
            self._file.flush()
        if echo and self.on_line is not None:
            self.on_line(text)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def pointer(self) -> str:
        """Where to read the last lines; writes the tail to a temporary file when no log file was asked for."""
        self.close()
        if self.path is None:
            fd, name = tempfile.mkstemp(prefix="bepbuild-build-", suffix=".log")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("\n".join(self.tail) + "\n")
            self.path = Path(name)
        return f" (last lines: {self.path})"

    def failure(self, tag: str, step: str | None, error: str) -> BuildError:
        """One-line BuildError; the tail and log path ride along as attributes."""
        where = f"at {step}: " if step else ""
        err = BuildError(f"build failed {where}{error}{self.pointer()}", source=tag)
        err.tail = list(self.tail)  # type: ignore[attr-defined]
        err.log_path = self.path  # type: ignore[attr-defined]
        return err


def _repository(tag: str) -> str:
    """``host:5000/a/b:tag`` -> ``host:5000/a/b`` (only a colon after the last slash starts the tag)."""
    head, _, last = tag.split("@", 1)[0].rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def tag_part(tag: str) -> str:
    """``host:5000/a/b:tag`` -> ``tag`` (``latest`` when there is none)."""
    last = tag.split("@", 1)[0].rpartition("/")[2]
    return last.split(":", 1)[1] if ":" in last else "latest"


def first_line(error: object) -> str:
    """The first line of an engine error's message (its explanation when it has one)."""
    text = str(getattr(error, "explanation", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
