"""`bepbuild doctor`: is this machine ready to build and run deployments? One line per check.

Each check says what it found and, when it is not ok, one line of what to do. `fix()` runs the
repository's `scripts/engine.sh` (what `make engine` runs) when bepbuild runs from a checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import docker
import docker.errors

from . import config

OK, WARN, FAIL = "ok", "warn", "fail"
MIN_FREE_GB = 5.0
_FIX_ENGINE = "run `make engine` or `bepbuild doctor --fix`"


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str  # what was found
    fix: str = ""  # one line of what to do, when not ok

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _run(cmd: list[str], *, timeout: float = 30, env: dict[str, str] | None = None,
         stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, input=stdin)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def check_docker_cli() -> Check:
    cli = config.docker_cli()
    path = shutil.which(cli)
    if path is None:
        return Check("docker CLI", FAIL, f"no docker client at {cli}",
                     f"install Docker's client ({_FIX_ENGINE}), or point BEPBUILD_DOCKER at one")
    try:
        out = _run([path, "version", "--format", "{{.Client.Version}}"], timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return Check("docker CLI", FAIL, f"{path} does not run: {e}", "reinstall the docker client")
    version = out.stdout.strip().splitlines()[0] if out.stdout.strip() else "unknown version"
    return Check("docker CLI", OK, f"{path} {version}")


def check_engine() -> Check:
    try:
        client = docker.from_env(version="auto", timeout=10)
        try:
            client.ping()
            info = client.version()
        finally:
            client.close()
    except Exception as e:  # every way of not reaching the engine
        return Check("engine", FAIL, f"no Docker engine answers ({type(e).__name__})", f"start it: {_FIX_ENGINE}")
    return Check("engine", OK, f"Docker {info.get('Version', '?')} (API {info.get('ApiVersion', '?')})")


def check_buildkit() -> Check:
    """A real BuildKit build of a one-line Dockerfile (output discarded: no image is left behind)."""
    from . import images

    cli = shutil.which(config.docker_cli())
    if cli is None:
        return Check("BuildKit", FAIL, "no docker CLI", "fix the docker CLI first")
    if not images._buildkit_works(config.docker_cli()):
        return Check("BuildKit", WARN, f"{cli} cannot build with BuildKit (a client >= 23 without buildx)",
                     "builds fall back to the slower legacy builder; use Debian's docker.io client (/usr/bin/docker)")
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    try:
        out = _run([cli, "build", "--quiet", "--output", "type=tar,dest=/dev/null", "-"], env=env, timeout=60,
                   stdin="FROM scratch\nLABEL io.bepbuild.doctor=1\n")
    except subprocess.TimeoutExpired:
        return Check("BuildKit", FAIL, "a one-line BuildKit build did not finish in 60 s", "check the engine's logs")
    if out.returncode != 0:
        return Check("BuildKit", FAIL, f"a one-line BuildKit build failed: {_last_line(out.stderr)}",
                     f"check the engine ({_FIX_ENGINE}); `--builder sdk` builds without BuildKit")
    return Check("BuildKit", OK, "DOCKER_BUILDKIT=1 builds work (RUN --mount, secrets)")


def check_base_image() -> Check:
    base = config.base_image()
    try:
        client = docker.from_env(version="auto", timeout=10)
        try:
            image = client.images.get(base)
        finally:
            client.close()
    except docker.errors.ImageNotFound:
        return Check("base image", FAIL, f"{base} is missing",
                     f"{_FIX_ENGINE} to create it; or pull it, or choose another with BEPBUILD_BASE_IMAGE")
    except Exception as e:
        return Check("base image", FAIL, f"cannot inspect {base} ({type(e).__name__})", "fix the engine first")
    python = ""
    try:
        from . import environments

        info = environments.probe_base(base)
        python = f", Python {info.python}" if info.python else ", no python3"
        if info.python is None and info.conda is None:
            return Check("base image", WARN, f"{base} ({image.short_id}) has no python3",
                         "conda files need a base image with Python 3 (or conda)")
    except Exception as e:  # probing needs a container run; report, do not fail the check
        python = f", not probed ({type(e).__name__})"
    return Check("base image", OK, f"{base} ({image.short_id.removeprefix('sha256:')}{python})")


def _pip_config() -> dict[str, str]:
    """`pip config list` of the pip that resolves locks, as option -> value (the last one wins)."""
    out = _run([sys.executable, "-m", "pip", "config", "list"], timeout=30)
    if out.returncode != 0:
        raise RuntimeError(_last_line(out.stderr) or "pip config list failed")
    options: dict[str, str] = {}
    for line in out.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            options[key.rsplit(".", 1)[-1]] = value.strip().strip("'\"")
    return options


def check_pip() -> Check:
    try:
        opts = _pip_config()
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        return Check("pip settings", FAIL, f"the host's pip does not run: {e}",
                     f"install pip for {sys.executable}: locks are resolved with it")
    index = opts.get("index-url", "PyPI")
    extra = len(opts.get("extra-index-url", "").split())
    links = len(opts.get("find-links", "").split())
    parts = [f"index {index}"]
    if extra:
        parts.append(f"{extra} extra index{'es' if extra > 1 else ''}")
    if links:
        parts.append(f"{links} find-links")
    if opts.get("proxy"):
        parts.append("a proxy")
    cert = opts.get("cert")
    if cert and not Path(cert).is_file():
        return Check("pip settings", WARN, "; ".join(parts) + f"; cert {cert} is missing",
                     "fix pip's `cert` setting (pip config list) or the file it names")
    ca = config.ca_bundle()
    if ca is None:
        return Check("pip settings", WARN, "; ".join(parts) + "; no CA bundle found",
                     "set PIP_CERT or REQUESTS_CA_BUNDLE if your network needs a CA (conda builds get it as a secret)")
    return Check("pip settings", OK, "; ".join(parts) + f"; CA {ca}")


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk() -> Check:
    home = config.home()
    free = shutil.disk_usage(_existing(home)).free / 1e9
    detail = f"{free:.1f} GB free under {home}"
    if free < MIN_FREE_GB:
        return Check("disk", WARN, detail,
                     f"free some space (images and wheels need several GB), or point BEPBUILD_HOME elsewhere "
                     f"(want >= {MIN_FREE_GB:.0f} GB)")
    return Check("disk", OK, detail)


# (name, function in this module, needs the engine): looked up when run, so tests can replace one.
CHECKS: list[tuple[str, str, bool]] = [
    ("docker CLI", "check_docker_cli", False),
    ("engine", "check_engine", False),
    ("BuildKit", "check_buildkit", True),
    ("base image", "check_base_image", True),
    ("pip settings", "check_pip", False),
    ("disk", "check_disk", False),
]


def run_checks() -> list[Check]:
    """Every check, in order; one that needs the engine is reported, not run, when the engine is down."""
    results: list[Check] = []
    engine_ok = True
    for name, attr, needs_engine in CHECKS:
        if needs_engine and not engine_ok:
            results.append(Check(name, FAIL, "not checked: no engine", "fix the engine first"))
            continue
        try:
            result = globals()[attr]()
        except Exception as e:  # a check must never crash the doctor
            result = Check(name, FAIL, f"check crashed: {type(e).__name__}: {e}", "report this as a bepbuild bug")
        if name == "engine" and result.status == FAIL:
            engine_ok = False
        results.append(result)
    return results


def failed(results: list[Check]) -> bool:
    return any(r.status == FAIL for r in results)


def engine_script() -> Path | None:
    """`scripts/engine.sh` of the checkout bepbuild runs from (an editable install), if any."""
    root = Path(__file__).resolve().parent.parent
    script = root / "scripts" / "engine.sh"
    if script.is_file() and (root / "pyproject.toml").is_file():
        return script
    return None


def fix(log: Callable[[str], None]) -> bool:
    """Run the engine set-up script (install, start dockerd, base image); True when it succeeded."""
    script = engine_script()
    if script is None:
        log("no scripts/engine.sh here (bepbuild is not running from a checkout): run `make engine` in one, "
            "or start Docker and create the base image yourself")
        return False
    env = {**os.environ, "BEPBUILD_DOCKER": config.docker_cli(), "BEPBUILD_BASE_IMAGE": config.base_image()}
    log(f"$ bash {script}")
    proc = subprocess.Popen(["bash", str(script)], cwd=script.parent.parent, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    assert proc.stdout is not None
    for line in proc.stdout:
        log(re.sub(r"\s+$", "", line))
    return proc.wait() == 0
