"""Jobs never touch what is not theirs and run what they started with (process backend, no engine).

Names derived from endpoints, deployments and jobs are injective; a job is pinned to a snapshot of
the deployed code and model (copies: a script writing into its model changes no registered file);
inputs that are not files or folders are named; outputs are downloaded as a tree; a folder the
user made keeps its owner; http tar inputs unpack safely with or without tarfile's data filter.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from test_hostile import http_server  # noqa: F401 - the loopback HTTP server fixture
from test_jobs_process import BEPBUILD, DEPLOYMENT, ENDPOINT, Cli, kill_instances, lines, make_inputs, register
from typer.testing import CliRunner

from bepbuild import config, naming, registry
from bepbuild.cli import app
from bepbuild.hashing import tree_sha256
from bepbuild.store import Store
from bepbuild_runtime import layout

# Docker's grammar of a repository path (distribution/reference): components joined by '/'.
REPO_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"{REPO_COMPONENT}(?:/{REPO_COMPONENT})*")
CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")


def one_error_line(res: Any) -> str:
    lines_ = res.stderr.splitlines()
    assert len(lines_) == 1 and lines_[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr
    return lines_[0]


# -- names ------------------------------------------------------------------------------------------

PAIRS = [("abc-def", "ghi"), ("abc", "def-ghi"), ("ab", "c-def-ghi"), ("abc-def-ghi", "x")]


def test_names_derived_from_endpoint_and_deployment_are_injective() -> None:
    for derive in (naming.context_dir, naming.image_repo, naming.inline_model_name, naming.inline_environment_name):
        names = [derive(e, d) for e, d in PAIRS]
        assert len(set(names)) == len(PAIRS), (derive.__name__, names)
    for e, d in PAIRS:
        assert REPOSITORY.fullmatch(naming.image_repo(e, d)), naming.image_repo(e, d)
    # one resource, two spellings: the same names
    assert naming.image_repo("Abc", "Dpl") == naming.image_repo("abc", "dpl")
    assert naming.context_dir("Abc", "Dpl") == naming.context_dir("abc", "dpl")
    # a context is never inside another one, nor inside a context of the earlier `<endpoint>-<deployment>` layout
    legacy = {config.home() / "contexts" / f"{e}-{d}" for e, d in PAIRS}
    for e, d in PAIRS:
        ctx = naming.context_dir(e, d)
        assert not any(old == ctx or old in ctx.parents for old in legacy), ctx


@pytest.mark.parametrize("env", ["My__Env.", "_lead", "a..b", "x" * 255, "UPPER-case_1.2", "..."])
def test_environment_image_repositories_are_valid_docker_names(env: str) -> None:
    repo = naming.environment_image_repo(env)
    assert REPOSITORY.fullmatch(repo) and len(repo) < 200, repo
    assert repo.count("/") == 1  # deployments' repositories have two: the two never meet


def test_container_names_are_unique_per_job_and_home(tmp_path: Path) -> None:
    prefix = "a" * 60
    jobs = [f"{prefix}-one", f"{prefix}-two", "x" * 255]
    names = {naming.container_name(j, tmp_path / "jobs" / j, "instance-0") for j in jobs}
    names.add(naming.container_name(jobs[0], tmp_path / "other-home" / "jobs" / jobs[0], "instance-0"))
    names.add(naming.container_name(jobs[0], tmp_path / "jobs" / jobs[0], "instance-1"))
    assert len(names) == 5, names
    for n in names:
        assert CONTAINER_NAME.fullmatch(n) and len(n) <= 128, n


# -- a job runs what it started with ----------------------------------------------------------------

VERSIONED = """
import os, time
def run(mini_batch):
    time.sleep(@DELAY@)
    return [f"@VERSION@ {os.path.basename(p)}" for p in mini_batch]
"""


def versioned(version: str, delay: float = 0.0) -> str:
    return VERSIONED.replace("@VERSION@", version).replace("@DELAY@", repr(delay))


def test_resume_runs_the_code_the_job_started_with(tmp_path: Path) -> None:
    """Kill the host and its instances mid-job (the machine gone), redeploy with changed code, resume:
    every row comes from the first code."""
    register(versioned("v1", 0.15), mini_batch_size=1)
    names = make_inputs(tmp_path / "in", 16)
    job_dir = config.jobs_dir() / "pinned"
    host = subprocess.Popen([str(BEPBUILD), "batch-endpoint", "invoke", "--name", ENDPOINT, "--input",
                             str(tmp_path / "in"), "--backend", "process", "--job-name", "pinned", "-q", "-o", "none"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    try:
        while not (job_dir.is_dir() and len(list((job_dir / layout.DONE_DIR).glob("*.json"))) >= 3):
            assert time.monotonic() < deadline and host.poll() is None, "no mini-batch finished"
            time.sleep(0.05)
    finally:
        host.kill()
        host.wait()
        kill_instances(job_dir)
    register(versioned("v2"), mini_batch_size=1)  # the redeploy renders over the same context
    job = Cli().json("job", "resume", "--name", "pinned", "-q")
    assert job["status"] == "Completed", job
    assert sorted(lines(job["output_file"])) == sorted(f"v1 {n}" for n in names)
    # a new job runs the new code
    assert lines(Cli().invoke("--input", str(tmp_path / "in" / names[0]))["output_file"]) == [f"v2 {names[0]}"]


def test_invoke_refuses_a_context_that_no_longer_holds_the_deployed_code(tmp_path: Path) -> None:
    """`bepbuild build` or a failed deploy renders over the context without changing the deployment."""
    register(versioned("deployed"))
    make_inputs(tmp_path / "in", 2)
    (naming.context_dir(ENDPOINT, DEPLOYMENT) / "code" / "score.py").write_text(versioned("not-deployed"))
    res = Cli()("batch-endpoint", "invoke", "--name", ENDPOINT, "--backend", "process", "--input",
                str(tmp_path / "in"), code=2)
    assert "no longer holds the deployed code" in one_error_line(res)
    assert not config.jobs_dir().exists() or not any(config.jobs_dir().iterdir())
    store = Store.open()
    try:
        assert store.list_jobs() == []  # refused before any job existed
    finally:
        store.close()


WRITES_MODEL = """
import os
def init():
    root = os.environ["AZUREML_MODEL_DIR"]
    for folder, _, files in os.walk(root):
        for f in files:
            with open(os.path.join(folder, f), "a") as out:
                out.write("changed by the scoring script\\n")
    with open(os.path.join(root, "model", "new-file.txt"), "w") as out:
        out.write("new\\n")
def run(mini_batch):
    return [os.path.basename(p) for p in mini_batch]
"""


def test_a_script_writing_into_its_model_changes_no_registered_file(tmp_path: Path) -> None:
    register(WRITES_MODEL)
    store = Store.open()
    try:
        model = registry.resolve(store, "model", f"azureml:{naming.inline_model_name(ENDPOINT, DEPLOYMENT)}@latest")
    finally:
        store.close()
    before = {p.name: p.read_bytes() for p in Path(model["path"]).iterdir()}
    make_inputs(tmp_path / "in", 3)
    job = Cli().invoke("--input", str(tmp_path / "in"))
    assert job["status"] == "Completed", job
    assert tree_sha256(Path(model["path"])) == model["sha256"]
    assert {p.name: p.read_bytes() for p in Path(model["path"]).iterdir()} == before
    # the writes landed in the job's own copy
    copy = Path(job["model_dir"]) / "model"
    assert Path(job["job_dir"]) in copy.parents
    assert (copy / "new-file.txt").read_text() == "new\n"


# -- inputs that are neither files nor folders ------------------------------------------------------


def test_special_files_as_input_are_named(tmp_path: Path) -> None:
    register()
    os.mkfifo(tmp_path / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    try:
        for path, what in ((tmp_path / "fifo", "a named pipe"), (tmp_path / "sock", "a socket"),
                           (Path("/dev/null"), "a character device")):
            for kind in ([], ["--input-type", "uri_file"], ["--input-type", "uri_folder"]):
                res = Cli()("batch-endpoint", "invoke", "--name", ENDPOINT, "--backend", "process", "--input",
                            str(path), *kind, code=2)
                line = one_error_line(res)
                assert f"{path} is {what}, not a file or folder" in line, (kind, line)
    finally:
        sock.close()


def test_special_files_inside_an_input_folder_are_reported(tmp_path: Path) -> None:
    register()
    make_inputs(tmp_path / "in", 2)
    os.mkfifo(tmp_path / "in" / "a-fifo")
    res = CliRunner().invoke(app, ["batch-endpoint", "invoke", "--name", ENDPOINT, "--backend", "process",
                                   "--input", str(tmp_path / "in"), "-q", "-o", "json"])
    assert res.exit_code == 0, res.stderr
    assert res.stderr.splitlines() == [
        "note: skipped 1 special file(s) in the input folder (named pipes, sockets, devices)"]
    assert json.loads(res.stdout)["counts"]["items_succeeded"] == 2


# -- outputs ----------------------------------------------------------------------------------------

WRITES_TREE = """
import os
def run(mini_batch):
    out = os.environ["AZUREML_BI_OUTPUT_PATH"]
    os.makedirs(os.path.join(out, "parts", "deep"), exist_ok=True)
    for p in mini_batch:
        name = os.path.basename(p)
        with open(os.path.join(out, "parts", name + ".out"), "w") as f:
            f.write(name)
    with open(os.path.join(out, "parts", "deep", "summary.txt"), "w") as f:
        f.write("deep")
    if not os.path.lexists(os.path.join(out, "leak")):
        os.symlink("@SECRET@", os.path.join(out, "leak"))
        os.symlink("@SECRET_DIR@", os.path.join(out, "leak-dir"))
        os.symlink("parts/deep/summary.txt", os.path.join(out, "inner-link"))
    return mini_batch
"""


def test_download_copies_the_output_tree_but_no_link_leading_out(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    (tmp_path / "secret-dir").mkdir()
    (tmp_path / "secret-dir" / "also.txt").write_text("TOP-SECRET-2")
    register(WRITES_TREE.replace("@SECRET@", str(secret)).replace("@SECRET_DIR@", str(tmp_path / "secret-dir")),
             output_action="summary_only", output_file_name=None)
    names = make_inputs(tmp_path / "in", 3)
    job = Cli().invoke("--input", str(tmp_path / "in"), "--job-name", "tree")
    assert job["status"] == "Completed", job
    res = Cli()("job", "download", "--name", "tree", "--download-path", str(tmp_path / "dl"))
    target = tmp_path / "dl" / "named-outputs" / "score"
    assert res.stdout.strip() == str(target)
    got = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert got == sorted(["inner-link", "parts/deep/summary.txt",
                          *(f"parts/{n}.out" for n in names)]), got
    assert (target / "parts" / "deep" / "summary.txt").read_text() == "deep"
    assert not any(p.is_symlink() for p in target.rglob("*"))
    assert "leak" in res.stderr and "TOP-SECRET" not in "".join(p.read_text() for p in target.rglob("*") if p.is_file())
    # downloading again is fine (same content); a different file of the same name is never overwritten
    Cli()("job", "download", "--name", "tree", "--download-path", str(tmp_path / "dl"))
    (target / "parts" / "deep" / "summary.txt").write_text("mine")
    res = Cli()("job", "download", "--name", "tree", "--download-path", str(tmp_path / "dl"), code=2)
    assert "summary.txt" in one_error_line(res)
    assert (target / "parts" / "deep" / "summary.txt").read_text() == "mine"


def test_download_path_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    register()
    make_inputs(tmp_path / "in", 2)
    Cli().invoke("--input", str(tmp_path / "in"), "--job-name", "dl-file")
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    for path in (a_file, a_file / "below"):
        res = Cli()("job", "download", "--name", "dl-file", "--download-path", str(path), code=2)
        assert "--download-path" in one_error_line(res)
    assert a_file.read_text() == "keep me"


def test_download_paths_inside_bepbuilds_own_folders_are_refused(tmp_path: Path) -> None:
    """A download there would not stay the user's: registrations move and delete folders in the home."""
    register()
    make_inputs(tmp_path / "in", 2)
    Cli().invoke("--input", str(tmp_path / "in"), "--job-name", "dl-home")
    for dest in (config.home(), config.home() / "assets" / "models", config.jobs_dir() / "dl-home"):
        res = Cli()("job", "download", "--name", "dl-home", "--download-path", str(dest), code=2)
        assert "--download-path" in one_error_line(res) and "bepbuild's own files" in res.stderr
        res = Cli()("model", "download", "--name", f"{ENDPOINT}.{DEPLOYMENT}-model", "--version", "1",
                    "--download-path", str(dest), code=2)
        assert "--download-path" in one_error_line(res)
    assert not list(config.home().rglob("named-outputs"))


@pytest.mark.skipif(os.getuid() != 0, reason="needs root: only root can give a folder to another user")
def test_an_output_folder_the_user_made_keeps_its_owner(tmp_path: Path) -> None:
    register()
    make_inputs(tmp_path / "in", 3)
    for name, files in (("empty", {}), ("full", {"mine.txt": "keep"})):
        out = tmp_path / name
        out.mkdir()
        for f, text in files.items():
            (out / f).write_text(text)
        os.chown(out, 4242, 4242)
        job = Cli().invoke("--input", str(tmp_path / "in"), "--output-path", str(out))
        assert job["status"] == "Completed", job
        st = out.stat()
        assert (st.st_uid, st.st_gid) == (4242, 4242), name
        assert len(lines(out / "predictions.csv")) == 3
        for f, text in files.items():
            assert (out / f).read_text() == text
    # a folder bepbuild makes is bepbuild's
    job = Cli().invoke("--input", str(tmp_path / "in"), "--output-path", str(tmp_path / "made" / "here"))
    assert job["status"] == "Completed", job


def test_output_paths_cannot_land_in_bepbuild_s_own_folders(tmp_path: Path) -> None:
    register()
    make_inputs(tmp_path / "in", 2)
    home = config.home()
    cases = [
        ("azureml://datastores/workspaceblobstore/paths/../../../../escaped", "outside"),
        ("azureml://datastores/../paths/x", "datastore"),
        (str(home / "assets"), "BEPBUILD_HOME"),
        (str(config.jobs_dir() / "another-job"), "BEPBUILD_HOME"),
    ]
    for given, message in cases:
        res = Cli()("batch-endpoint", "invoke", "--name", ENDPOINT, "--backend", "process", "--input",
                    str(tmp_path / "in"), "--output-path", given, code=2)
        assert message in one_error_line(res), (given, res.stderr)
    assert not (home.parent / "escaped").exists() and not (home / "escaped").exists()
    job = Cli().invoke("--input", str(tmp_path / "in"), "--output-path",
                       "azureml://datastores/workspaceblobstore/paths/scores/run-1")
    assert Path(job["output_dir"]) == (home / "datastores" / "workspaceblobstore" / "scores" / "run-1").resolve()


# -- http tar inputs --------------------------------------------------------------------------------


def tarred(members: dict[str, bytes | str], *, links: dict[str, str] | None = None) -> bytes:
    """A gzip tar: files (bytes), folders (the string "dir") and symbolic links."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                t.addfile(info)
            else:
                assert isinstance(data, bytes)
                info.size, info.mode = len(data), 0o644
                t.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            t.addfile(info)
    return buf.getvalue()


@pytest.fixture(params=["data-filter", "no-data-filter"])
def tar_support(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """tarfile as it is, or as on Python builds from before the extraction filters (Debian's 3.11.2)."""
    if request.param == "no-data-filter":
        monkeypatch.delattr(tarfile, "data_filter")
        original = tarfile.TarFile.extractall

        def extractall(self: tarfile.TarFile, path: str = ".", members: Any = None, *, numeric_owner: bool = False,
                       **kwargs: Any) -> None:
            if kwargs:
                raise TypeError(f"extractall() got an unexpected keyword argument {next(iter(kwargs))!r}")
            original(self, path, members, numeric_owner=numeric_owner)

        monkeypatch.setattr(tarfile.TarFile, "extractall", extractall)
    return str(request.param)


def test_http_tar_inputs_unpack_with_or_without_tarfile_filters(
    tmp_path: Path, http_server: tuple[str, dict[str, tuple[bytes, bool]]], tar_support: str,  # noqa: F811
) -> None:
    from hostile_names import ECHO

    register(ECHO)
    url, routes = http_server
    routes["/docs.tar.gz"] = (tarred({"docs": "dir", "docs/one.txt": b"item-1", "docs/two.txt": b"item-2"}), True)
    job = Cli().invoke("--input", f"{url}/docs.tar.gz", "--input-type", "uri_folder")
    assert job["status"] == "Completed", job
    assert sorted(lines(job["output_file"])) == ['item-1 "one.txt"', 'item-2 "two.txt"']
    outside = tmp_path / "outside.txt"
    hostile = {
        "/climb.tar.gz": tarred({"../../../../escaped.txt": b"x"}),
        "/absolute.tar.gz": tarred({str(tmp_path / "absolute.txt"): b"x"}),
        "/link-out.tar.gz": tarred({"a.txt": b"x"}, links={"out.txt": str(outside)}),
    }
    for path, body in hostile.items():
        routes[path] = (body, True)
        res = Cli()("batch-endpoint", "invoke", "--name", ENDPOINT, "--backend", "process", "--input",
                    f"{url}{path}", "--input-type", "uri_folder", code=2)
        assert "cannot unpack the archive" in one_error_line(res), (path, res.stderr)
    assert not outside.exists() and not (tmp_path / "absolute.txt").exists()
    assert not list(config.home().parent.rglob("escaped.txt"))



def test_an_http_folder_input_named_like_the_unpack_folder_is_scored(
    http_server: tuple[str, dict[str, tuple[bytes, bool]]],  # noqa: F811
) -> None:
    """The download and the folder it is unpacked or moved into are two names, whatever the URL's."""
    from hostile_names import ECHO

    register(ECHO)
    url, routes = http_server
    routes["/data"] = (b"item-data", True)
    routes["/archive/data"] = (tarred({"one.txt": b"item-1"}), True)
    job = Cli().invoke("--input", f"{url}/data", "--input-type", "uri_folder")
    assert lines(job["output_file"]) == ['item-data "data"']
    job = Cli().invoke("--input", f"{url}/archive/data", "--input-type", "uri_folder")
    assert lines(job["output_file"]) == ['item-1 "one.txt"']
