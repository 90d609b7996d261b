"""No secret in images: index credentials and a custom CA used on the host never reach a layer.

The deployment needs a package that only a password-protected loopback index (PEP 503, built here
from a hand-made wheel) serves. The host's pip is pointed at it with credentials in PIP_INDEX_URL,
the conda file adds a second credential in an `--extra-index-url` line, and PIP_CERT names a CA
bundle carrying a marker. After `bepbuild deploy`, `docker save` of the image is scanned: every file
of every layer, the image config (environment, labels, history) and the manifest, for the deployment's
image and for the environment image it starts FROM. Neither credential, nor the CA marker, nor any wheel
may appear (Debian's own /usr/share/python-wheels excepted). The rendered build context and the
host-side lock are checked for the credentials too.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import tarfile
import threading
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from jobkit import BEPBUILD, DOCKER

from bepbuild import config, images, naming

pytestmark = pytest.mark.docker

DEBIAN_WHEELS = "usr/share/python-wheels/"
PACKAGE = "bepbuild-secret-probe"


def make_wheel(folder: Path, version: str = "1.0") -> Path:
    """A minimal pure-Python wheel of PACKAGE (module bepbuild_secret_probe, VALUE = 42)."""
    module = PACKAGE.replace("-", "_")
    dist = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": b"VALUE = 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: bepbuild-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}\n"
        for n, d in files.items()) + f"{dist}/RECORD,,\n"
    files[f"{dist}/RECORD"] = record.encode()
    path = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for n, d in files.items():
            z.writestr(n, d)
    return path


@dataclass
class Index:
    url: str  # without credentials
    accepted: set[str]  # "user:password" pairs the index lets in
    log: list[tuple[str, bool]] = field(default_factory=list)  # (path, authorized)

    def with_auth(self, user_password: str) -> str:
        scheme, rest = self.url.split("://", 1)
        return f"{scheme}://{user_password}@{rest}"


@pytest.fixture
def private_index(tmp_path: Path) -> Iterator[Index]:
    """A loopback PEP 503 index serving PACKAGE only to requests with Basic credentials."""
    wheel = make_wheel(tmp_path)
    data = wheel.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    index = Index("", {f"user:s3cret-{uuid.uuid4().hex}", f"conda-user:s3cret-{uuid.uuid4().hex}"})
    allowed = {"Basic " + base64.b64encode(c.encode()).decode() for c in index.accepted}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            authorized = self.headers.get("Authorization") in allowed
            index.log.append((self.path, authorized))
            if not authorized:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="bepbuild-test"')
                self.end_headers()
                return
            if self.path.rstrip("/") == f"/simple/{PACKAGE}":
                # files outside the /simple/ prefix, as hosted indexes (Azure Artifacts, ...) do
                body = f'<html><body><a href="/files/{wheel.name}#sha256={digest}">{wheel.name}</a></body></html>'
                payload, kind = body.encode(), "text/html"
            elif self.path == f"/files/{wheel.name}":
                payload, kind = data, "application/octet-stream"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    index.url = f"http://127.0.0.1:{server.server_address[1]}/simple"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield index
    finally:
        server.shutdown()
        server.server_close()


def scan_saved_image(tag: str, workdir: Path, needles: list[bytes]) -> tuple[dict[bytes, list[str]], list[str]]:
    """`docker save` of `tag`: where each needle occurs (layer files, config, manifest), and the wheels."""
    archive = workdir / "image.tar"
    with open(archive, "wb") as f:
        for chunk in images.engine().images.get(tag).save(named=True):
            f.write(chunk)
    hits: dict[bytes, list[str]] = {n: [] for n in needles}
    wheels: list[str] = []
    overlap = max(len(n) for n in needles)

    def search(where: str, fobj: object) -> None:
        tail = b""
        while chunk := fobj.read(1 << 20):  # type: ignore[attr-defined]
            window = tail + chunk
            for n in needles:
                if n in window and where not in hits[n]:
                    hits[n].append(where)
            tail = window[-overlap:]

    with tarfile.open(archive) as outer:
        for member in outer:
            if not member.isfile():
                continue
            fobj = outer.extractfile(member)
            assert fobj is not None
            if not member.name.endswith("layer.tar"):
                search(member.name, fobj)  # the config (env, labels, history), manifest.json, repositories
                continue
            with tarfile.open(fileobj=fobj, mode="r|") as inner:
                for m in inner:
                    name = m.name.removeprefix("./")
                    for n in needles:
                        if n in name.encode() and name not in hits[n]:
                            hits[n].append(f"{member.name}!/{name}")
                    if name.endswith(".whl") and not name.startswith(DEBIAN_WHEELS):
                        wheels.append(f"{member.name}!/{name}")
                    if m.isfile():
                        data = inner.extractfile(m)
                        assert data is not None
                        search(f"{member.name}!/{name}", data)
    archive.unlink()
    return hits, wheels


def files_holding(folder: Path, needle: bytes, skip: tuple[str, ...] = ()) -> list[str]:
    found = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and not p.is_symlink() and not rel.startswith(skip) and needle in p.read_bytes():
            found.append(rel)
    return found


def test_index_credentials_and_ca_stay_out_of_the_image(private_index: Index, tmp_path: Path,
                                                       bepbuild_home: Path) -> None:
    host_cred, conda_cred = sorted(private_index.accepted)[1], sorted(private_index.accepted)[0]
    assert host_cred.startswith("user:") and conda_cred.startswith("conda-user:")
    marker = f"bepbuild-ca-marker-{uuid.uuid4().hex}"
    ca = tmp_path / "corporate-ca.pem"
    ca.write_text(Path("/etc/ssl/certs/ca-certificates.crt").read_text() + f"\n# {marker}\n")

    folder = tmp_path / "dep"
    (folder / "code").mkdir(parents=True)
    (folder / "model").mkdir()
    (folder / "model" / "weights.txt").write_text("1\n")
    (folder / "code" / "score.py").write_text(
        "import bepbuild_secret_probe as probe\n\ndef run(mini_batch):\n    return [probe.VALUE for _ in mini_batch]\n")
    (folder / "conda.yaml").write_text(
        "name: secret-test\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n"
        f"    - --extra-index-url {private_index.with_auth(conda_cred)}\n    - {PACKAGE}==1.0\n")
    endpoint = f"sec-{uuid.uuid4().hex[:10]}"
    (folder / "deployment.yml").write_text(json.dumps({
        "name": "secret-dpl", "endpoint_name": endpoint, "type": "model",
        "model": {"name": f"{endpoint}-model", "path": "model"},
        "code_configuration": {"code": "code", "scoring_script": "score.py"},
        "environment": {"name": f"{endpoint}-env", "image": config.base_image(), "conda_file": "conda.yaml"},
        "resources": {"instance_count": 1}, "settings": {"mini_batch_size": 1},
    }))
    env = {**os.environ, "PIP_INDEX_URL": private_index.with_auth(host_cred), "PIP_CERT": str(ca)}
    proc = subprocess.run([str(BEPBUILD), "deploy", str(folder / "deployment.yml"), "-q", "-o", "json"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    tag, env_tag = doc["image"], doc["environment_image"]
    assert env_tag and env_tag.startswith("bepbuild/env:")
    try:
        # the package really came from the protected index, with credentials
        assert any(path.startswith("/files/") and ok for path, ok in private_index.log), private_index.log
        out = subprocess.run([DOCKER, "run", "--rm", "--network", "none", "--entrypoint", "python3", tag, "-c",
                              "import bepbuild_secret_probe as p; print(p.VALUE)"],
                             capture_output=True, text=True, timeout=120)
        assert out.stdout.strip() == "42", out.stderr

        secrets = [host_cred.split(":", 1)[1].encode(), conda_cred.split(":", 1)[1].encode(), marker.encode()]
        # both images: the deployment's, and the environment image it starts FROM (where the wheels were installed)
        for ref in (tag, env_tag):
            hits, wheels = scan_saved_image(ref, tmp_path, secrets)
            assert {n.decode(): w for n, w in hits.items() if w} == {}, ref
            assert wheels == [], ref
            history = subprocess.run([DOCKER, "history", "--no-trunc", "--format", "{{.CreatedBy}}", ref],
                                     capture_output=True, text=True, check=True).stdout
            inspect = subprocess.run([DOCKER, "image", "inspect", ref], capture_output=True, text=True,
                                     check=True).stdout
            for s in secrets:
                assert s.decode() not in history and s.decode() not in inspect, ref

        # the build context sent to the engine: the deployment's holds no lock and no wheel; the environment's
        # (its wheels/ bind-mounted, never copied) is removed once its image is built
        context = naming.context_dir(endpoint, "secret-dpl")
        assert (context / "Dockerfile").is_file() and not (context / "wheels").exists()
        for s in secrets:
            assert files_holding(context, s) == [], s
        assert list((bepbuild_home / "contexts" / "environments").iterdir()) == []
        # the host's own credential is nowhere in bepbuild's home (pip logs redact it; the lock has none)
        assert files_holding(bepbuild_home, secrets[0]) == []
        for lock in (bepbuild_home / "locks").glob("*.json"):
            assert "://" not in lock.read_text(), lock
    finally:
        images.remove_image(tag)
        # the environment image too, unless a deployment image (of a session running now) was built from it
        env_id = images.image_id(env_tag)
        if env_id and not images.list_labelled(f"io.bepbuild.environment-image-id={env_id}"):
            images.remove_image(env_tag)
        shutil.rmtree(tmp_path / "dep", ignore_errors=True)
