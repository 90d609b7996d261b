"""A throw-away loopback container registry for push tests: Debian's `docker-registry`, no container.

Loopback registries are insecure registries by default in dockerd, so pushes need no daemon config.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

BINARY = "/usr/bin/docker-registry"
PACKAGE = "docker-registry"


class RegistryUnavailable(RuntimeError):
    """The registry binary is missing and cannot be installed here."""


def ensure_installed() -> str:
    """Path of the registry binary; installs Debian's package when missing (root on Debian only)."""
    if os.access(BINARY, os.X_OK):
        return BINARY
    if os.geteuid() != 0 or not Path("/etc/debian_version").exists() or shutil.which("apt-get") is None:
        raise RegistryUnavailable(f"{BINARY} is missing; install the Debian package {PACKAGE} (needs root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", PACKAGE]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        # Empty or stale package lists: refresh once and retry.
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RegistryUnavailable(f"apt-get install {PACKAGE} failed: {done.stderr.strip()[-300:]}")
    return BINARY


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRegistry:
    """`docker-registry serve` on 127.0.0.1:<free port>, storage under `root`; use as a context manager."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> LocalRegistry:
        binary = ensure_installed()
        self.root.mkdir(parents=True, exist_ok=True)
        cfg = self.root / "config.yml"
        cfg.write_text(
            "version: 0.1\n"
            "log: {level: warn}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.root / 'data'}}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: {self.address}}}\n"
        )
        log = open(self.root / "registry.log", "wb")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen([binary, "serve", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RegistryUnavailable(f"registry exited: {(self.root / 'registry.log').read_text()[-500:]}")
            try:
                with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RegistryUnavailable(f"registry did not answer on {self.address} within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
