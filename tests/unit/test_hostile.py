"""Hostile input: whatever a user (or an attacker) hands in, bepbuild answers with a result or with
exactly one `error:` line, and never follows a link out of a folder, writes outside the job folder,
downloads without bound, or leaves a half-made job behind.

- property-based (hypothesis): random deployment and endpoint YAMLs, random YAML text and random
  `--set` overrides through the real CLI (`validate`, `batch-endpoint create`);
- input file names with spaces, unicode, newlines and undecodable bytes, scored by the process
  backend (the docker backend gets the same names in tests/docker/test_faults.py);
- symlinks leading out of the input folder, outputs that would overwrite inputs or files;
- http inputs that fail, are too large, unpack too large, or name a path that climbs out;
- model and code folders holding a symlink or a named pipe.
"""

from __future__ import annotations

import copy
import http.server
import io
import json
import os
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hostile_names import ECHO, make_weird_inputs, read_echo_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from seedtree import make_seed_tree
from test_jobs_process import ENDPOINT, Cli, register
from typer.testing import CliRunner

from bepbuild import config
from bepbuild.cli import app
from bepbuild_runtime import layout

EP = "endpoint.yml"
DEP = "deployment-torch/deployment.yml"

# Bounded: the four properties together stay well under a minute.
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def assert_one_line_or_ok(result: Any, argv: list[str]) -> None:
    """Exit 0, or exit 2 with exactly one `error: ` line on stderr and nothing on stdout; never a traceback."""
    what = (argv, result.exit_code, result.stdout[-500:], result.stderr[-1000:])
    assert result.exception is None or isinstance(result.exception, SystemExit), (what, result.exception)
    assert "Traceback" not in result.stdout + result.stderr, what
    assert "internal error" not in result.stderr, what
    if result.exit_code == 0:
        assert all(line.startswith("warning: ") for line in result.stderr.splitlines()), what
        return
    assert result.exit_code == 2, what
    assert result.stdout == "", what
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), what


def run_cli(*argv: str) -> Any:
    result = CliRunner().invoke(app, list(argv))
    assert_one_line_or_ok(result, list(argv))
    return result


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_seed_tree(tmp_path / "seed")
    monkeypatch.chdir(root)
    return root


# -- property-based: random specs and overrides -------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["", ".", "..", "/", "~", "-1", "0", "azureml:", "azureml:x:1", "azureml:x@latest", "model",
                     "code", "../../etc/passwd", "append_row", "summary_only", "a b", "\n", "ü", "${{x}}"]),
)
keys = st.one_of(st.text(max_size=12), st.integers(), st.booleans(), st.sampled_from(["", "$schema", "<<"]))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=10,
)

DEPLOYMENT_PATHS = [
    ("name",), ("endpoint_name",), ("type",), ("description",), ("$schema",), ("tags",), ("properties",),
    ("model",), ("model", "path"), ("model", "name"), ("model", "type"), ("model", "version"),
    ("code_configuration",), ("code_configuration", "code"), ("code_configuration", "scoring_script"),
    ("environment",), ("environment", "image"), ("environment", "conda_file"), ("environment", "name"),
    ("environment", "build"), ("compute",), ("resources",), ("resources", "instance_count"),
    ("settings",), ("settings", "max_concurrency_per_instance"), ("settings", "mini_batch_size"),
    ("settings", "output_action"), ("settings", "output_file_name"), ("settings", "retry_settings"),
    ("settings", "retry_settings", "max_retries"), ("settings", "retry_settings", "timeout"),
    ("settings", "error_threshold"), ("settings", "logging_level"), ("settings", "environment_variables"),
    ("settings", "environment_variables", "X"), ("job_definition",), ("output_action",), ("mini_batch_size",),
]
ENDPOINT_PATHS = [("name",), ("description",), ("tags",), ("tags", "type"), ("auth_mode",), ("defaults",),
                  ("defaults", "deployment_name"), ("$schema",), ("properties",)]


def mutations(paths: list[tuple[str, ...]]) -> st.SearchStrategy[list[tuple[tuple[Any, ...], str, Any]]]:
    path = st.one_of(st.sampled_from(paths), st.lists(keys, min_size=1, max_size=3).map(tuple))
    op = st.sampled_from(["set", "set", "delete"])
    return st.lists(st.tuples(path, op, values), min_size=1, max_size=4)


def mutate(doc: dict[str, Any], changes: list[tuple[tuple[Any, ...], str, Any]]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for path, op, value in changes:
        node: Any = doc
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        if op == "delete":
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    return doc


def write_yaml(path: Path, doc: Any) -> None:
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))


@FUZZ
@given(changes=mutations(DEPLOYMENT_PATHS))
def test_random_deployment_yaml(tree: Path, changes: list[tuple[tuple[Any, ...], str, Any]]) -> None:
    doc = mutate(yaml.safe_load((tree / DEP).read_text()), changes)
    target = tree / "deployment-torch" / "fuzz.yml"
    write_yaml(target, doc)
    run_cli("validate", str(target.relative_to(tree)), "--kind", "deployment")
    run_cli("validate", str(target.relative_to(tree)))  # kind detected from the content


@FUZZ
@given(changes=mutations(ENDPOINT_PATHS))
def test_random_endpoint_yaml(tree: Path, changes: list[tuple[tuple[Any, ...], str, Any]]) -> None:
    doc = mutate(yaml.safe_load((tree / EP).read_text()), changes)
    write_yaml(tree / "fuzz-endpoint.yml", doc)
    run_cli("validate", "fuzz-endpoint.yml", "--kind", "endpoint")
    run_cli("batch-endpoint", "create", "--file", "fuzz-endpoint.yml")


@FUZZ
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_random_yaml_text(tree: Path, text: str) -> None:
    path = tree / "fuzz.yml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    run_cli("validate", "fuzz.yml")
    run_cli("validate", "fuzz.yml", "--kind", "deployment")
    run_cli("batch-endpoint", "create", "--file", "fuzz.yml")


set_text = st.one_of(
    st.text(max_size=40),
    st.tuples(st.lists(st.one_of(st.sampled_from(["settings", "retry_settings", "name", "model", "path", "tags",
                                                  "mini_batch_size", "0", "-1", "[0]", ""]), st.text(max_size=8)),
                       min_size=1, max_size=4),
              st.text(max_size=20)).map(lambda kv: ".".join(kv[0]) + "=" + kv[1]),
)


@FUZZ
@given(sets=st.lists(set_text, min_size=1, max_size=3))
def test_random_set_overrides(tree: Path, sets: list[str]) -> None:
    flags = [a for s in sets for a in ("--set", s)]
    run_cli("validate", DEP, *flags)
    run_cli("batch-endpoint", "create", "--file", EP, *flags)


# -- the shapes that used to hang or crash ------------------------------------------------------------


def test_alias_bomb_recursive_alias_and_deep_nesting_are_one_line(tree: Path) -> None:
    laughs = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        laughs.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    cases = {
        "laughs.yml": "\n".join(laughs) + "\nname: x-ep\ndescription: *i\n",
        "recursive.yml": "a: &a [*a]\nname: x-ep\n",
        "deep-list.yml": "name: " + "[" * 5000 + "]" * 5000 + "\n",
        "deep-map.yml": "name: x-ep\ndescription: " + "{a: " * 80 + "1" + "}" * 80 + "\n",
    }
    for name, text in cases.items():
        (tree / name).write_text(text)
        for argv in (["validate", name, "--kind", "endpoint"], ["batch-endpoint", "create", "--file", name]):
            result = run_cli(*argv)
            assert result.exit_code == 2 and name in result.stderr, (name, result.stderr)


def test_error_line_stays_one_line_when_a_key_holds_a_newline(tree: Path) -> None:
    (tree / "nl.yml").write_text('name: ok-name\n"bad\\nkey": 1\n')
    result = run_cli("validate", "nl.yml", "--kind", "endpoint")
    assert result.exit_code == 2 and "bad\\nkey" in result.stderr


# -- input names, links and outputs (process backend) -------------------------------------------------

def test_hostile_file_names_are_scored_exactly_once(tmp_path: Path) -> None:
    register(ECHO, mini_batch_size=3)
    expected = make_weird_inputs(tmp_path / "in")
    job = Cli().invoke("--input", str(tmp_path / "in"))
    assert job["status"] == "Completed", job
    assert job["counts"]["items_succeeded"] == len(expected) and job["counts"]["items_failed"] == 0
    assert read_echo_rows(job["output_file"]) == expected


def test_symlinks_out_of_the_input_folder_are_skipped_not_followed(tmp_path: Path) -> None:
    register(ECHO, mini_batch_size=2)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP-SECRET")
    (outside / "folder").mkdir()
    (outside / "folder" / "also-secret.txt").write_text("TOP-SECRET-2")
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "a.txt").write_text("item-a")
    (inp / "b.txt").write_text("item-b")
    (inp / "to-secret.txt").symlink_to(outside / "secret.txt")
    (inp / "relative-out.txt").symlink_to(Path("..") / "outside" / "secret.txt")
    (inp / "to-folder").symlink_to(outside / "folder")
    (inp / "dangling.txt").symlink_to(tmp_path / "nothing-here")
    (inp / "inner-link.txt").symlink_to("a.txt")  # inside the folder: scored like its target
    os.mkfifo(inp / "a-fifo")  # never opened: reading it would block
    result = CliRunner().invoke(app, ["batch-endpoint", "invoke", "--name", ENDPOINT, "--backend", "process",
                                      "--input", str(inp), "-q", "-o", "json"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == ["note: skipped 4 symbolic link(s) leading outside the input folder",
                                          "note: skipped 1 special file(s) in the input folder (named pipes, sockets, "
                                          "devices)"]
    job = json.loads(result.stdout)
    assert job["status"] == "Completed" and job["counts"]["items_succeeded"] == 3
    output = Path(job["output_file"]).read_text()
    assert "SECRET" not in output
    assert sorted(output.splitlines()) == ['item-a "a.txt"', 'item-a "inner-link.txt"', 'item-b "b.txt"']
    assert job["notices"] == ["skipped 4 symbolic link(s) leading outside the input folder",
                              "skipped 1 special file(s) in the input folder (named pipes, sockets, devices)"]


def jobs_left() -> list[str]:
    folder = config.jobs_dir()
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_outputs_that_would_clobber_are_refused_and_leave_no_job(tmp_path: Path) -> None:
    register(ECHO)
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "a.txt").write_text("item-a")
    before = sorted(os.listdir(inp))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "predictions.csv").write_text("precious\n")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    cli = Cli()
    cases = [
        (["--output-path", str(inp)], "is the input folder"),
        (["--output-path", str(inp) + "/"], "is the input folder"),
        (["--output-path", str(inp / ".." / "in")], "is the input folder"),
        (["--output-path", str(out_dir)], "output file exists"),
        (["--output-path", str(a_file)], "is a file"),
        (["--output-path", str(a_file / "sub")], "cannot create the folder"),
        (["--job-name", "../escape"], "not a valid name"),
        (["--job-name", "a\nb"], "not a valid name"),
    ]
    for args, message in cases:
        res = cli("batch-endpoint", "invoke", "--name", ENDPOINT, "--backend", "process", "--input", str(inp),
                  *args, code=2)
        assert message in res.stderr, (args, res.stderr)
    assert sorted(os.listdir(inp)) == before
    assert (out_dir / "predictions.csv").read_text() == "precious\n"
    assert a_file.read_text() == "not a folder"
    assert jobs_left() == []
    assert not (tmp_path / "escape").exists()


# -- http inputs ------------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[bytes, bool]] = {}  # path -> (body, send Content-Length)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        route = self.routes.get(self.path) or self.routes.get("*")
        if route is None:
            self.send_error(404, "File not found")
            return
        body, with_length = route
        self.send_response(200)
        if with_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[str, dict[str, tuple[bytes, bool]]]]:
    """A loopback HTTP server; tests fill in its routes."""
    routes: dict[str, tuple[bytes, bool]] = {}
    handler = type("Handler", (_Handler,), {"routes": routes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", routes
    finally:
        server.shutdown()
        server.server_close()


def zipped(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_failing_and_oversized_http_inputs_are_one_line_and_leave_no_job(
    tmp_path: Path, http_server: tuple[str, dict[str, tuple[bytes, bool]]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    register(ECHO)
    url, routes = http_server
    monkeypatch.setenv("BEPBUILD_MAX_DOWNLOAD_BYTES", "10000")
    routes["/big.txt"] = (b"x" * 50_000, True)
    routes["/big-no-length.txt"] = (b"x" * 50_000, False)  # only the streamed count can stop it
    routes["/bomb.zip"] = (zipped({"zeros.txt": b"\0" * 2_000_000}), True)  # ~2 KB that unpacks to 2 MB
    routes["/broken.zip"] = (b"PK\x03\x04" + b"\0" * 100, True)
    cli = Cli()
    cases = [
        (f"{url}/missing.txt", "HTTP Error 404"),
        (f"{url}/missing-folder/", "HTTP Error 404"),
        (f"{url}/big.txt", "50000 bytes is more than the limit of 10000 bytes"),
        (f"{url}/big-no-length.txt", "larger than the limit of 10000 bytes"),
        (f"{url}/bomb.zip", "unpacks to 2000000 bytes"),
        ("http://127.0.0.1:1/refused.txt", "download failed"),
    ]
    for source, message in cases:
        args = ["--input-type", "uri_folder"] if source.endswith(".zip") else []
        res = cli("batch-endpoint", "invoke", "--name", ENDPOINT, "--backend", "process", "--input", source, *args,
                  code=2)
        assert message in res.stderr, (source, res.stderr)
    assert jobs_left() == []
    # what does fit, works; an archive is unpacked and scored
    routes["/docs.zip"] = (zipped({"one.txt": b"item-1", "two.txt": b"item-2"}), True)
    job = cli.invoke("--input", f"{url}/docs.zip", "--input-type", "uri_folder")
    assert sorted(Path(job["output_file"]).read_text().splitlines()) == ['item-1 "one.txt"', 'item-2 "two.txt"']


def test_http_input_name_cannot_climb_out_of_the_job_folder(
    tmp_path: Path, http_server: tuple[str, dict[str, tuple[bytes, bool]]],
) -> None:
    register(ECHO)
    url, routes = http_server
    routes["*"] = (b"item-escaped", True)
    job = Cli().invoke("--input", f"{url}/..%2F..%2F..%2Fescape.txt", "--input-type", "uri_file")
    assert job["status"] == "Completed"
    assert Path(job["output_file"]).read_text() == 'item-escaped ".._.._.._escape.txt"\n'
    inside = Path(job["job_dir"]) / layout.INPUTS_DIR
    assert [p.name for p in inside.iterdir()] == [".._.._.._escape.txt"]
    assert not list(config.home().rglob("escape.txt")) and not (tmp_path / "escape.txt").exists()


# -- model and code folders with links and special files ---------------------------------------------------


def test_model_create_refuses_links_and_special_files(tmp_path: Path, bepbuild_home: Path) -> None:
    cli = Cli()
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    cases: dict[str, Path] = {}
    for kind in ("file-link", "dir-link", "fifo", "fifo-path"):
        model = tmp_path / kind
        model.mkdir()
        (model / "weights.bin").write_bytes(b"\0" * 10)
        if kind == "file-link":
            (model / "link.bin").symlink_to(outside)
        elif kind == "dir-link":
            (model / "sub").symlink_to(tmp_path)
        elif kind == "fifo":
            os.mkfifo(model / "pipe")
        else:
            os.mkfifo(model / "pipe")
            model = model / "pipe"
        cases[kind] = model
    for kind, path in cases.items():
        res = cli("model", "create", "--name", f"m-{kind}", "--path", str(path), code=2)
        assert str(path) in res.stderr and ("symbolic link" in res.stderr or "not a regular file" in res.stderr), res
    assert cli.json("model", "list") == []
    assets = config.assets_dir()
    leftovers = [p for p in assets.rglob("*") if p.is_file()] if assets.exists() else []
    assert leftovers == []


def test_deploy_refuses_code_or_model_folder_with_links_or_pipes(tree: Path) -> None:
    cli = Cli()
    code = tree / "deployment-torch" / "code"
    model = tree / "deployment-torch" / "model"
    (code / "helper.py").symlink_to("/etc/hostname")
    res = cli("deploy", DEP, code=2)
    assert "helper.py is a symbolic link" in res.stderr and "code" in res.stderr
    res = cli("validate", DEP, code=2)
    assert "helper.py is a symbolic link" in res.stderr
    (code / "helper.py").unlink()
    os.mkfifo(code / "pipe")
    res = cli("deploy", DEP, code=2)
    assert "pipe is not a regular file" in res.stderr
    (code / "pipe").unlink()
    os.mkfifo(model / "pipe")
    res = cli("deploy", DEP, code=2)
    assert "pipe is not a regular file" in res.stderr
    assert cli.json("model", "list") == []
