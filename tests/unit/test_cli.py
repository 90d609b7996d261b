"""CLI round trips (the seed walkthrough's registry steps), output formats, aliases, --help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml
from seedtree import make_seed_tree
from typer.testing import CliRunner

from bepbuild.cli import app
from bepbuild.store import Store

BEPBUILD = Path(sys.executable).parent / "bepbuild"
TORCH_MODEL = "deployment-torch/model"


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_seed_tree(tmp_path / "seed")
    monkeypatch.chdir(root)
    return root


class Cli:
    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int = 0):
        result = self.runner.invoke(app, list(args))
        assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr, result.exception)
        if code == 0:
            assert result.exception is None or isinstance(result.exception, SystemExit)
        else:
            assert "Traceback" not in result.stderr
            assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: "), result.stderr
        return result

    def json(self, *args: str):
        return json.loads(self(*args, "-o", "json").stdout)


@pytest.fixture
def cli(tree: Path) -> Cli:
    return Cli()


# -- endpoints ------------------------------------------------------------------------------------


def test_endpoint_create_and_show_name_tsv(cli: Cli) -> None:
    created = cli.json("batch-endpoint", "create", "--file", "endpoint.yml", "--name", "mnist-batch")
    assert created["name"] == "mnist-batch"
    assert created["auth_mode"] == "aad_token"
    assert created["tags"] == {"type": "deep-learning"}
    r = cli("batch-endpoint", "show", "--name", "mnist-batch", "--query", "name", "-o", "tsv")
    assert r.stdout == "mnist-batch\n"
    assert r.stderr == ""


def test_endpoint_create_name_flag_wins_over_file(cli: Cli) -> None:
    cli("batch-endpoint", "create", "--file", "endpoint.yml", "--name", "other-ep")
    names = cli.json("batch-endpoint", "list", "--query", "[].name")
    assert names == ["other-ep"]


def test_endpoint_create_twice_overwrites(cli: Cli) -> None:
    cli("batch-endpoint", "create", "--file", "endpoint.yml", "--name", "ep-one")
    cli("batch-endpoint", "create", "--file", "endpoint.yml", "--name", "ep-one", "--set", "description=second")
    assert cli.json("batch-endpoint", "list", "--query", "[].[name, description]") == [["ep-one", "second"]]


def test_endpoint_create_without_file(cli: Cli) -> None:
    out = cli.json("batch-endpoint", "create", "--name", "bare-ep")
    assert out["name"] == "bare-ep" and out["auth_mode"] == "aad_token"
    r = cli("batch-endpoint", "create", code=2)
    assert "give --file or --name" in r.stderr


def test_list_commands_output_formats_and_query(cli: Cli) -> None:
    cli("batch-endpoint", "create", "--file", "endpoint.yml", "--name", "ep-b", "--set", "description=bee")
    cli("batch-endpoint", "create", "--file", "endpoint.yml", "--name", "ep-a", "--set", "description=ay")

    as_json = cli.json("batch-endpoint", "list")
    assert [e["name"] for e in as_json] == ["ep-a", "ep-b"]

    as_yaml = yaml.safe_load(cli("batch-endpoint", "list", "-o", "yaml").stdout)
    assert [e["name"] for e in as_yaml] == ["ep-a", "ep-b"]
    assert as_yaml[0]["description"] == "ay"

    tsv = cli("batch-endpoint", "list", "-o", "tsv", "--query", "[].name").stdout
    assert tsv == "ep-a\nep-b\n"
    tsv2 = cli("batch-endpoint", "list", "-o", "tsv", "--query", "[].[name, description]").stdout
    assert tsv2 == "ep-a\tay\nep-b\tbee\n"

    table = cli("batch-endpoint", "list", "-o", "table").stdout.splitlines()
    assert "Name" in table[0] and "Description" in table[0]
    assert len(table) == 3
    assert "ep-a" in table[1] and "ay" in table[1] and "ep-b" in table[2]

    picked = cli("batch-endpoint", "list", "--query", "[?name=='ep-b'].description | [0]", "-o", "tsv").stdout
    assert picked == "bee\n"
    assert cli("batch-endpoint", "list", "-o", "none").stdout == ""

    bad_query = cli("batch-endpoint", "list", "--query", "[?", code=2)
    assert "--query" in bad_query.stderr
    bad_format = cli("batch-endpoint", "list", "-o", "xml", code=2)
    assert "--output" in bad_format.stderr and "'xml'" in bad_format.stderr


def test_model_list_formats(cli: Cli) -> None:
    cli("model", "create", "--name", "m-one", "--path", TORCH_MODEL)
    cli("model", "create", "--name", "m-two", "--path", TORCH_MODEL)
    cli("model", "create", "--name", "m-two", "--path", TORCH_MODEL)
    assert cli("model", "list", "-o", "tsv", "--query", "[].[name, version]").stdout == "m-one\t1\nm-two\t2\n"
    versions = yaml.safe_load(cli("model", "list", "--name", "m-two", "-o", "yaml", "--query", "[].version").stdout)
    assert versions == ["1", "2"]
    table = cli("model", "list", "-o", "table").stdout
    assert "Version" in table and "m-one" in table and "m-two" in table


def test_update_default_deployment_must_exist(cli: Cli) -> None:
    cli("batch-endpoint", "create", "--file", "endpoint.yml", "--name", "mnist-batch")
    r = cli("batch-endpoint", "update", "--name", "mnist-batch", "--set", "defaults.deployment_name=nope", code=2)
    assert "'nope'" in r.stderr and "does not exist" in r.stderr
    assert cli.json("batch-endpoint", "show", "--name", "mnist-batch")["defaults"] == {}

    # With the deployment registered, the same update sets the default.
    st = Store.open()
    st.put_deployment("mnist-batch", "mnist-torch-dpl", {"name": "mnist-torch-dpl", "endpoint_name": "mnist-batch"})
    st.close()
    out = cli.json(
        "batch-endpoint", "update", "--name", "mnist-batch", "--set", "defaults.deployment_name=mnist-torch-dpl"
    )
    assert out["defaults"] == {"deployment_name": "mnist-torch-dpl"}
    shown = cli("batch-endpoint", "show", "-n", "mnist-batch", "--query", "defaults.deployment_name", "-o", "tsv")
    assert shown.stdout == "mnist-torch-dpl\n"

    # Changing the name or setting an invalid value is refused and changes nothing.
    r = cli("batch-endpoint", "update", "--name", "mnist-batch", "--set", "name=renamed", code=2)
    assert "cannot be changed" in r.stderr
    r = cli("batch-endpoint", "update", "--name", "mnist-batch", "--set", "auth_mode=key", code=2)
    assert "auth_mode" in r.stderr
    assert cli.json("batch-endpoint", "show", "--name", "mnist-batch")["auth_mode"] == "aad_token"
    r = cli("batch-endpoint", "update", "--name", "not-there", "--set", "description=x", code=2)
    assert "not found" in r.stderr


def test_deleting_the_default_deployment_clears_the_default(cli: Cli) -> None:
    cli("batch-endpoint", "create", "--name", "mnist-batch")
    st = Store.open()
    st.put_deployment("mnist-batch", "mnist-torch-dpl", {"name": "mnist-torch-dpl"})
    st.put_deployment("mnist-batch", "mnist-keras-dpl", {"name": "mnist-keras-dpl"})
    st.close()
    cli("batch-endpoint", "update", "-n", "mnist-batch", "--set", "defaults.deployment_name=mnist-torch-dpl")
    shown = cli.json("batch-deployment", "show", "--name", "mnist-torch-dpl", "--endpoint-name", "mnist-batch")
    assert shown["name"] == "mnist-torch-dpl"
    cli("batch-deployment", "delete", "--name", "mnist-torch-dpl", "--endpoint-name", "mnist-batch", "--yes")
    assert cli.json("batch-endpoint", "show", "-n", "mnist-batch")["defaults"] == {}
    assert cli.json("batch-deployment", "list", "-e", "mnist-batch", "--query", "[].name") == ["mnist-keras-dpl"]
    r = cli("batch-deployment", "show", "--name", "mnist-torch-dpl", "-e", "mnist-batch", code=2)
    assert "mnist-torch-dpl not found" in r.stderr


def test_endpoint_delete(cli: Cli) -> None:
    cli("batch-endpoint", "create", "--file", "endpoint.yml", "--name", "mnist-batch")
    st = Store.open()
    st.put_deployment("mnist-batch", "mnist-torch-dpl", {"name": "mnist-torch-dpl"})
    st.add_job("job-1", {"endpoint": "mnist-batch", "deployment": "mnist-torch-dpl", "status": "Completed"})
    st.close()

    # Without --yes and without a terminal, nothing is deleted.
    r = cli("batch-endpoint", "delete", "--name", "mnist-batch", code=2)
    assert "--yes" in r.stderr
    assert cli.json("batch-endpoint", "list", "--query", "[].name") == ["mnist-batch"]

    r = cli("batch-endpoint", "delete", "--name", "mnist-batch", "--yes")
    assert "deleted endpoint mnist-batch" in r.stderr and "1 deployment" in r.stderr
    assert cli.json("batch-endpoint", "list") == []
    cli("batch-endpoint", "show", "--name", "mnist-batch", code=2)
    cli("batch-deployment", "list", "--endpoint-name", "mnist-batch", code=2)
    # The job is kept.
    assert cli.json("job", "show", "--name", "job-1")["status"] == "Completed"
    r = cli("batch-endpoint", "delete", "--name", "mnist-batch", "--yes", code=2)
    assert "not found" in r.stderr


def test_alias_groups(cli: Cli) -> None:
    cli("endpoint", "create", "--file", "endpoint.yml", "--name", "alias-ep")
    assert cli("batch-endpoint", "show", "-n", "alias-ep", "--query", "name", "-o", "tsv").stdout == "alias-ep\n"
    assert cli("endpoint", "show", "-n", "alias-ep", "--query", "name", "-o", "tsv").stdout == "alias-ep\n"
    st = Store.open()
    st.put_deployment("alias-ep", "dpl", {"name": "dpl"})
    st.close()
    assert cli.json("deployment", "list", "-e", "alias-ep", "--query", "[].name") == ["dpl"]
    assert cli.json("batch-deployment", "show", "-n", "dpl", "-e", "alias-ep", "--query", "name") == "dpl"
    cli("deployment", "delete", "-n", "dpl", "-e", "alias-ep", "--yes")
    cli("endpoint", "delete", "-n", "alias-ep", "--yes")
    assert cli.json("batch-endpoint", "list") == []


# -- models ---------------------------------------------------------------------------------------


def test_model_create_versions_and_latest(cli: Cli, bepbuild_home: Path) -> None:
    args = ("model", "create", "--name", "mnist-classifier-torch", "--type", "custom_model", "--path", TORCH_MODEL)
    first = cli.json(*args)
    second = cli.json(*args)
    assert (first["version"], second["version"]) == ("1", "2")
    assert first["type"] == "custom_model"
    latest = cli.json("model", "show", "--name", "mnist-classifier-torch", "--label", "latest")
    assert latest["version"] == "2"
    assert cli.json("model", "show", "--name", "mnist-classifier-torch", "--version", "1")["version"] == "1"
    assert cli.json("model", "show", "--name", "mnist-classifier-torch")["version"] == "2"
    # The folder itself is registered (the seed's `--path deployment-torch/model`), copied into the home.
    copy = Path(latest["path"])
    assert copy.name == "model" and copy.is_dir()
    assert bepbuild_home in copy.parents
    assert (copy / "model.pt").read_bytes() == b"\x80\x02tiny-model\n"
    r = cli("model", "show", "--name", "mnist-classifier-torch", "--version", "3", code=2)
    assert "version 3 not found" in r.stderr


def test_registered_model_is_frozen(cli: Cli, tree: Path) -> None:
    v1 = cli.json("model", "create", "--name", "frozen", "--path", TORCH_MODEL)
    source = tree / TORCH_MODEL / "model.pt"
    source.write_bytes(b"changed after registration")
    (tree / TORCH_MODEL / "extra.bin").write_bytes(b"new file")
    again = cli.json("model", "show", "--name", "frozen", "--version", "1")
    copy = Path(again["path"])
    assert (copy / "model.pt").read_bytes() == b"\x80\x02tiny-model\n"
    assert not (copy / "extra.bin").exists()
    assert again["sha256"] == v1["sha256"]
    v2 = cli.json("model", "create", "--name", "frozen", "--path", TORCH_MODEL)
    assert v2["sha256"] != v1["sha256"]
    assert (Path(v2["path"]) / "model.pt").read_bytes() == b"changed after registration"


def test_model_create_single_file_and_explicit_version(cli: Cli) -> None:
    out = cli.json("model", "create", "--name", "one-file", "--path", f"{TORCH_MODEL}/model.pt", "--version", "5")
    assert out["version"] == "5"
    assert Path(out["path"]).is_file() and Path(out["path"]).name == "model.pt"
    # the same content again under its version: that version, unchanged (versions never change)
    again = cli.json("model", "create", "--name", "one-file", "--path", f"{TORCH_MODEL}/model.pt", "--version", "5")
    assert again["path"] == out["path"] and again["sha256"] == out["sha256"]
    r = cli("model", "create", "--name", "one-file", "--path", "endpoint.yml", "--version", "5", code=2)
    assert "already exists with different content" in r.stderr
    assert cli.json("model", "create", "--name", "one-file", "--path", TORCH_MODEL)["version"] == "6"


def test_model_delete(cli: Cli) -> None:
    for _ in range(2):
        cli("model", "create", "--name", "gone", "--path", TORCH_MODEL)
    cli("model", "delete", "--name", "gone", "--version", "2", "--yes")
    assert cli.json("model", "list", "--name", "gone", "--query", "[].version") == ["1"]
    cli("model", "delete", "--name", "gone", "--yes")
    cli("model", "show", "--name", "gone", code=2)


# -- validate -------------------------------------------------------------------------------------


def test_validate_deployment_json_has_all_defaults(cli: Cli) -> None:
    out = cli.json("validate", "deployment-keras/deployment.yml")
    assert out["name"] == "mnist-keras-dpl"
    assert out["type"] == "model"
    assert out["compute"] == "batch-cluster"
    assert out["resources"]["instance_count"] == 1
    assert out["model"] == {"name": "mnist-classifier-keras", "path": "model", "type": "custom_model", "tags": {}}
    assert out["environment"]["os_type"] == "linux"
    assert out["settings"] == {
        "max_concurrency_per_instance": 2,
        "mini_batch_size": 10,
        "output_action": "append_row",
        "output_file_name": "predictions.csv",
        "retry_settings": {"max_retries": 3, "timeout": 30},
        "error_threshold": -1,
        "logging_level": "info",
        "environment_variables": {},
    }


def test_validate_default_output_is_yaml_and_kinds(cli: Cli) -> None:
    doc = yaml.safe_load(cli("validate", "deployment-torch/deployment.yml").stdout)
    assert doc["settings"]["retry_settings"] == {"max_retries": 3, "timeout": 30}
    assert cli.json("validate", "endpoint.yml")["auth_mode"] == "aad_token"
    conda = cli.json("validate", "deployment-torch/environment/conda.yaml")
    assert conda["name"] == "mnist-env" and conda["channels"] == ["conda-forge"]
    out = cli.json("validate", "deployment-torch/deployment.yml", "--set", "settings.mini_batch_size=20",
                   "--query", "settings.mini_batch_size")
    assert out == 20


# -- computes and data ----------------------------------------------------------------------------


def test_compute_create_and_show(cli: Cli) -> None:
    created = cli.json("compute", "create", "-n", "batch-cluster", "--type", "amlcompute",
                       "--min-instances", "0", "--max-instances", "5")
    assert (created["name"], created["type"], created["min_instances"], created["max_instances"]) == (
        "batch-cluster", "amlcompute", 0, 5)
    shown = cli.json("compute", "show", "-n", "batch-cluster")
    assert shown["max_instances"] == 5 and shown["min_instances"] == 0
    assert cli("compute", "show", "-n", "batch-cluster", "--query", "max_instances", "-o", "tsv").stdout == "5\n"
    assert cli.json("compute", "list", "--query", "[].name") == ["batch-cluster"]
    r = cli("compute", "create", "-n", "other", "--type", "kubernetes", code=2)
    assert "'kubernetes'" in r.stderr
    cli("compute", "show", "-n", "missing", code=2)
    cli("compute", "delete", "-n", "batch-cluster", "--yes")
    assert cli.json("compute", "list") == []


def test_data_create_folder_and_file(cli: Cli, tree: Path) -> None:
    folder = cli.json("data", "create", "--name", "d", "--path", "deployment-torch", "--type", "uri_folder")
    assert folder["type"] == "uri_folder" and folder["version"] == "1"
    assert folder["path"] == str((tree / "deployment-torch").resolve())
    r = cli("data", "create", "--name", "f", "--path", "endpoint.yml", "--type", "uri_folder", code=2)
    assert "is a file; use --type uri_file" in r.stderr
    f = cli.json("data", "create", "--name", "f", "--path", "endpoint.yml", "--type", "uri_file")
    assert f["type"] == "uri_file"
    r = cli("data", "create", "--name", "g", "--path", "deployment-torch", "--type", "uri_file", code=2)
    assert "is a folder; use --type uri_folder" in r.stderr
    r = cli("data", "create", "--name", "g", "--path", "deployment-torch", "--type", "mltable", code=2)
    assert "uri_folder or uri_file" in r.stderr
    cli("data", "create", "--name", "g", "--path", "no-such-dir", code=2)
    assert cli.json("data", "list", "--query", "[].name") == ["d", "f"]
    assert cli.json("data", "create", "--name", "d", "--path", "deployment-keras")["version"] == "2"
    assert cli.json("data", "show", "--name", "d", "--label", "latest", "--query", "version") == "2"


# -- --help everywhere ------------------------------------------------------------------------------


def _command_paths() -> list[list[str]]:
    root = typer.main.get_command(app)
    out: list[list[str]] = []

    def walk(cmd, path: list[str]) -> None:
        out.append(path)
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            walk(sub, [*path, name])

    walk(root, [])
    return out


COMMAND_PATHS = _command_paths()


def test_command_tree_has_the_seed_verbs() -> None:
    have = {" ".join(p) for p in COMMAND_PATHS}
    for verb in ("batch-endpoint create", "batch-endpoint show", "batch-endpoint update", "batch-endpoint delete",
                 "batch-deployment show", "batch-deployment delete", "model create", "compute create", "job show",
                 "endpoint create", "deployment list", "validate"):
        assert verb in have


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda p: " ".join(p) or "bepbuild")
def test_help(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert "Usage" in result.stdout
    assert result.stderr == ""


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("bepbuild ")


# -- real processes -----------------------------------------------------------------------------------


def run_real(*args: str, home: Path, cwd: Path, code: int = 0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BEPBUILD_HOME": str(home)}
    proc = subprocess.run([str(BEPBUILD), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60)
    assert proc.returncode == code, (args, proc.stdout, proc.stderr)
    return proc


def test_real_process_endpoint_round_trip(tree: Path, tmp_path: Path) -> None:
    home = tmp_path / "real-home"
    run_real("batch-endpoint", "create", "--file", "endpoint.yml", "--name", "mnist-batch", home=home, cwd=tree)
    shown = run_real("batch-endpoint", "show", "--name", "mnist-batch", "--query", "name", "-o", "tsv",
                     home=home, cwd=tree)
    assert shown.stdout == "mnist-batch\n" and shown.stderr == ""
    assert (home / "registry.db").is_file()
    run_real("batch-endpoint", "delete", "--name", "mnist-batch", "--yes", home=home, cwd=tree)
    assert run_real("batch-endpoint", "list", "-o", "json", home=home, cwd=tree).stdout.strip() == "[]"


def test_real_process_model_versions(tree: Path, tmp_path: Path) -> None:
    home = tmp_path / "real-home"
    args = ("model", "create", "--name", "mnist-classifier-torch", "--type", "custom_model", "--path", TORCH_MODEL,
            "--query", "version", "-o", "tsv")
    assert run_real(*args, home=home, cwd=tree).stdout == "1\n"
    assert run_real(*args, home=home, cwd=tree).stdout == "2\n"
    latest = run_real("model", "show", "--name", "mnist-classifier-torch", "--label", "latest", "-o", "json",
                      home=home, cwd=tree)
    assert json.loads(latest.stdout)["version"] == "2"
    assert Path(json.loads(latest.stdout)["path"]).is_relative_to(home)


def test_real_process_compute_and_error(tree: Path, tmp_path: Path) -> None:
    home = tmp_path / "real-home"
    run_real("compute", "create", "-n", "batch-cluster", "--type", "amlcompute", "--min-instances", "0",
             "--max-instances", "5", home=home, cwd=tree)
    shown = run_real("compute", "show", "-n", "batch-cluster", "-o", "yaml", home=home, cwd=tree)
    assert yaml.safe_load(shown.stdout)["max_instances"] == 5
    bad = run_real("batch-endpoint", "update", "--name", "nope", "--set", "defaults.deployment_name=x",
                   home=home, cwd=tree, code=2)
    assert bad.stdout == "" and bad.stderr.startswith("error: ") and len(bad.stderr.splitlines()) == 1
