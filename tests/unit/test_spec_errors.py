"""Malformed spec files through the real CLI: exit 2 and exactly one `error: ` line, no traceback.

Each case changes one thing in a copy of the seed tree and runs `bepbuild validate FILE` from the
tree's root, so files are named relative to it (e.g. `deployment-torch/deployment.yml:21`).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from seedtree import make_seed_tree
from typer.testing import CliRunner

from bepbuild.cli import app

BEPBUILD = Path(sys.executable).parent / "bepbuild"
EP = "endpoint.yml"
DEP = "deployment-torch/deployment.yml"
CONDA = "deployment-torch/environment/conda.yaml"
SCRIPT = "deployment-torch/code/batch_driver.py"

INLINE_MODEL = "model:\n  name: mnist-classifier-torch\n  path: model\n"
IMAGE = "  image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest\n"
CONDA_LINE = "  conda_file: environment/conda.yaml\n"


def garbage() -> bytes:
    rnd = random.Random(1234)
    return bytes(rnd.randrange(256) for _ in range(200)) + b"\x00\xff\xfe\x00"


@dataclass
class Case:
    id: str
    file: str  # the file that is changed (relative to the tree)
    change: Callable[[str], str | bytes] | None  # old text -> new text (None: leave the file alone)
    expect: list[str]  # substrings of the error line, besides "error: "
    prefix: str | None = None  # what the line must start with after "error: " (file:line: field)
    args: list[str] = field(default_factory=list)  # extra CLI arguments
    target: str | None = None  # the file given to validate (default: `file`)


def sub(old: str, new: str) -> Callable[[str], str]:
    def change(text: str) -> str:
        assert old in text, f"{old!r} not in the seed file"
        return text.replace(old, new, 1)

    return change


def add(extra: str) -> Callable[[str], str]:
    return lambda text: text + extra


def const(value: str | bytes) -> Callable[[str], str | bytes]:
    return lambda _text: value


CASES = [
    # -- endpoint names (Azure: 3-32 chars, letter first, alnum last, only '-' inside) -----------
    Case("ep-name-too-short", EP, sub("name: mnist-batch", "name: ab"),
         ["at least 3 and at most 32 characters", "'ab'"], prefix=f"{EP}:2: name: "),
    Case("ep-name-33-chars", EP, sub("name: mnist-batch", "name: " + "a" * 33),
         ["at least 3 and at most 32 characters", "a" * 33], prefix=f"{EP}:2: name: "),
    Case("ep-name-starts-with-digit", EP, sub("name: mnist-batch", "name: 1mnist"),
         ["must start with an upper- or lowercase letter", "'1mnist'"], prefix=f"{EP}:2: name: "),
    Case("ep-name-ends-with-dash", EP, sub("name: mnist-batch", "name: mnist-"),
         ["only consist of '-'s and alphanumeric characters", "'mnist-'"], prefix=f"{EP}:2: name: "),
    Case("ep-name-underscore", EP, sub("name: mnist-batch", "name: mnist_batch"),
         ["only consist of '-'s and alphanumeric characters", "'mnist_batch'"], prefix=f"{EP}:2: name: "),
    Case("ep-name-a-number", EP, sub("name: mnist-batch", "name: 12345"),
         ["must be a string"], prefix=f"{EP}:2: name: "),
    Case("ep-name-missing", EP, sub("name: mnist-batch\n", ""), ["required"], prefix=f"{EP}: name: "),
    Case("ep-auth-mode-key", EP, add("auth_mode: key\n"), ["'key'", "only aad_token"],
         prefix=f"{EP}:6: auth_mode: "),
    Case("ep-auth-mode-aml-token", EP, add("auth_mode: aml_token\n"), ["'aml_token'", "only aad_token"],
         prefix=f"{EP}:6: auth_mode: "),
    Case("ep-auth-mode-bogus", EP, add("auth_mode: bogus\n"), ["'aad_token'", "'bogus'"],
         prefix=f"{EP}:6: auth_mode: "),
    Case("ep-unknown-key", EP, add("foo: 1\n"), ["unknown key"], prefix=f"{EP}:6: foo: "),
    Case("ep-defaults-not-mapping", EP, add("defaults: x\n"), ["must be a mapping, got a string"],
         prefix=f"{EP}:6: defaults: "),
    # -- wrong types and ranges in settings --------------------------------------------------------
    Case("mini-batch-size-ten", DEP, sub("mini_batch_size: 10", "mini_batch_size: ten"),
         ["integer", "'ten'"], prefix=f"{DEP}:21: settings.mini_batch_size: "),
    Case("mini-batch-size-negative", DEP, sub("mini_batch_size: 10", "mini_batch_size: -1"),
         ["must be a positive integer, got -1"], prefix=f"{DEP}:21: settings.mini_batch_size: "),
    Case("mini-batch-size-zero", DEP, sub("mini_batch_size: 10", "mini_batch_size: 0"),
         ["must be a positive integer, got 0"], prefix=f"{DEP}:21: settings.mini_batch_size: "),
    Case("mini-batch-size-float", DEP, sub("mini_batch_size: 10", "mini_batch_size: 2.5"),
         ["integer", "2.5"], prefix=f"{DEP}:21: settings.mini_batch_size: "),
    Case("mini-batch-size-true", DEP, sub("mini_batch_size: 10", "mini_batch_size: true"),
         ["must be an integer, got True"], prefix=f"{DEP}:21: settings.mini_batch_size: "),
    Case("mini-batch-size-float-whole", DEP, sub("mini_batch_size: 10", "mini_batch_size: 10.0"),
         ["must be an integer, got 10.0"], prefix=f"{DEP}:21: settings.mini_batch_size: "),
    Case("duplicate-key", DEP, sub("mini_batch_size: 10", "mini_batch_size: 10\n  mini_batch_size: 20"),
         ["duplicate key (first on line 21)"], prefix=f"{DEP}:22: settings.mini_batch_size: "),
    Case("max-concurrency-zero", DEP, sub("max_concurrency_per_instance: 2", "max_concurrency_per_instance: 0"),
         ["must be a positive integer, got 0"], prefix=f"{DEP}:20: settings.max_concurrency_per_instance: "),
    Case("error-threshold-minus-two", DEP, sub("error_threshold: -1", "error_threshold: -2"),
         [">= -1", "-2"], prefix=f"{DEP}:27: settings.error_threshold: "),
    Case("timeout-zero", DEP, sub("timeout: 30", "timeout: 0"),
         ["must be a positive integer, got 0"], prefix=f"{DEP}:26: settings.retry_settings.timeout: "),
    Case("max-retries-negative", DEP, sub("max_retries: 3", "max_retries: -1"),
         [">= 0", "-1"], prefix=f"{DEP}:25: settings.retry_settings.max_retries: "),
    Case("instance-count-zero", DEP, sub("  instance_count: 1", "  instance_count: 0"),
         ["must be a positive integer, got 0"], prefix=f"{DEP}:18: resources.instance_count: "),
    Case("logging-level-bogus", DEP, sub("logging_level: info", "logging_level: bogus"),
         ["'warning'", "'info'", "'debug'", "'bogus'"], prefix=f"{DEP}:28: settings.logging_level: "),
    Case("output-action-bogus", DEP, sub("output_action: append_row", "output_action: bogus"),
         ["'append_row'", "'summary_only'", "'bogus'"], prefix=f"{DEP}:22: settings.output_action: "),
    Case("summary-only-with-output-file-name", DEP,
         sub("output_action: append_row", "output_action: summary_only"),
         ["When output_action is set to summary_only, the output_file_name need not to be specified."],
         prefix=f"{DEP}:19: settings: "),
    Case("output-file-name-with-slash", DEP, sub("output_file_name: predictions.csv", "output_file_name: a/b.csv"),
         ["plain file name", "'a/b.csv'"], prefix=f"{DEP}:23: settings.output_file_name: "),
    Case("env-vars-not-strings", DEP, add("  environment_variables:\n    MODE: [1, 2]\n"),
         ["must be a string, got a list"], prefix=f"{DEP}:30: settings.environment_variables.MODE: "),
    # -- unknown keys ------------------------------------------------------------------------------
    Case("unknown-top-level-key", DEP, add("foo: 1\n"), ["unknown key"], prefix=f"{DEP}:29: foo: "),
    Case("unknown-capitalized-key", DEP, add("Foo: 1\n"), ["unknown key"], prefix=f"{DEP}:29: Foo: "),
    Case("unknown-settings-key", DEP, add("  foo: 1\n"), ["unknown key"], prefix=f"{DEP}:29: settings.foo: "),
    Case("unknown-retry-settings-key", DEP, sub("    timeout: 30\n", "    timeout: 30\n    bar: 2\n"),
         ["unknown key"], prefix=f"{DEP}:27: settings.retry_settings.bar: "),
    Case("unknown-model-key", DEP, sub("  path: model\n", "  path: model\n  weights: x\n"),
         ["unknown key"], prefix=f"{DEP}:9: model.weights: "),
    Case("unknown-environment-key", DEP, sub(CONDA_LINE, CONDA_LINE + "  zap: 1\n"),
         ["unknown key"], prefix=f"{DEP}:16: environment.zap: "),
    # -- required keys -----------------------------------------------------------------------------
    Case("missing-name", DEP, sub("name: mnist-torch-dpl\n", ""), ["required"], prefix=f"{DEP}: name: "),
    Case("missing-endpoint-name", DEP, sub("endpoint_name: mnist-batch\n", ""), ["required"],
         prefix=f"{DEP}: endpoint_name: "),
    Case("missing-model", DEP, sub(INLINE_MODEL, ""), ["required"], prefix=f"{DEP}: model: "),
    Case("missing-model-path-key", DEP, sub("  path: model\n", ""), ["required"], prefix=f"{DEP}:6: model.path: "),
    Case("missing-scoring-script-key", DEP, sub("  scoring_script: batch_driver.py\n", ""), ["required"],
         prefix=f"{DEP}:9: code_configuration.scoring_script: "),
    # -- files that do not exist ---------------------------------------------------------------------
    Case("model-path-not-found", DEP, sub("  path: model", "  path: no-model"), ["path not found: no-model"],
         prefix=f"{DEP}:8: model.path: "),
    Case("code-folder-not-found", DEP, sub("code: code", "code: no-code"), ["path not found: no-code"],
         prefix=f"{DEP}:10: code_configuration.code: "),
    Case("code-is-a-file", DEP, sub("code: code", "code: deployment.yml"), ["must be a folder"],
         prefix=f"{DEP}:10: code_configuration.code: "),
    Case("scoring-script-not-found", DEP, sub("scoring_script: batch_driver.py", "scoring_script: score.py"),
         ["path not found: score.py"], prefix=f"{DEP}:11: code_configuration.scoring_script: "),
    Case("scoring-script-outside-code", DEP,
         sub("scoring_script: batch_driver.py", "scoring_script: ../deployment.yml"),
         ["inside the code folder"], prefix=f"{DEP}:11: code_configuration.scoring_script: "),
    Case("conda-file-not-found", DEP, sub("conda_file: environment/conda.yaml", "conda_file: environment/nope.yaml"),
         ["path not found: environment/nope.yaml"], prefix=f"{DEP}:15: environment.conda_file: "),
    Case("validate-missing-file", DEP, None, ["file not found"], prefix="nope.yml: ", target="nope.yml"),
    Case("validate-a-folder", DEP, None, ["is a folder"], prefix="deployment-torch: ", target="deployment-torch"),
    # -- the scoring script --------------------------------------------------------------------------
    Case("scoring-script-syntax-error", SCRIPT, const("def init():\n    pass\n\ndef run(mini_batch:\n    return []\n"),
         ["Failed to submit deployment mnist-torch-dpl due to syntax errors in scoring script", SCRIPT,
          "Error on line 4"], target=DEP),
    # -- not a YAML mapping ----------------------------------------------------------------------------
    Case("yaml-list", DEP, const("- name: a\n- name: b\n"), ["must be a YAML mapping, got a list"], prefix=f"{DEP}: "),
    Case("yaml-scalar", DEP, const("just some words\n"), ["must be a YAML mapping, got a string"], prefix=f"{DEP}: "),
    Case("yaml-number", DEP, const("42\n"), ["must be a YAML mapping, got a number"], prefix=f"{DEP}: "),
    Case("empty-file", DEP, const(""), ["file is empty"], prefix=f"{DEP}: "),
    Case("whitespace-only", DEP, const("  \n\n\t\n   \n"), ["empty"], prefix=f"{DEP}: "),
    Case("comments-only", DEP, const("# nothing here\n"), ["file is empty"], prefix=f"{DEP}: "),
    Case("binary-garbage", DEP, const(garbage()), ["not a text file"], prefix=f"{DEP}: "),
    Case("nul-in-utf8-text", DEP, const(b"name: mnist\x00-torch\nendpoint_name: x\n"), ["NUL"], prefix=f"{DEP}: "),
    Case("yaml-tab-indent", DEP, sub("  max_concurrency_per_instance: 2", "\tmax_concurrency_per_instance: 2"),
         ["invalid YAML"], prefix=f"{DEP}:20: "),
    Case("yaml-bad-indent", DEP, sub("endpoint_name: mnist-batch", "  endpoint_name: mnist-batch"),
         ["invalid YAML"], prefix=f"{DEP}:4: "),
    Case("yaml-unclosed-bracket", DEP, add("tags: [a, b\n"), ["invalid YAML"], prefix=f"{DEP}:"),
    # -- environments ----------------------------------------------------------------------------------
    Case("conda-file-a-list", CONDA, const("- python=3.8\n- pip\n"), ["must be a YAML mapping, got a list"],
         prefix=f"{CONDA}: ", target=DEP),
    Case("conda-dependencies-not-list", CONDA, const("name: x\ndependencies: 3\n"), ["must be a list"],
         prefix=f"{CONDA}:2: dependencies: ", target=DEP),
    Case("environment-image-and-build", DEP, sub(CONDA_LINE, "  build:\n    path: environment\n"),
         ["either image or build, not both"], prefix=f"{DEP}:12: environment: "),
    Case("environment-neither-image-nor-build", DEP, sub(IMAGE + CONDA_LINE, "  description: nothing\n"),
         ["one of image or build is required"], prefix=f"{DEP}:12: environment: "),
    Case("environment-registry-uri", DEP,
         sub("environment:\n  name: batch-torch-py38\n" + IMAGE + CONDA_LINE,
             "environment: azureml://registries/azureml/environments/e/versions/1\n"),
         ["registry and workspace URIs are not available locally"], prefix=f"{DEP}:12: environment: "),
    Case("model-registry-uri", DEP, sub(INLINE_MODEL, "model: azureml://registries/azureml/models/m/versions/1\n"),
         ["registry and workspace URIs are not available locally"], prefix=f"{DEP}:6: model: "),
    # -- layouts -----------------------------------------------------------------------------------------
    Case("type-pipeline", DEP, sub("type: model", "type: pipeline"), ["type: pipeline", "not supported"],
         prefix=f"{DEP}: "),
    Case("type-bogus", DEP, sub("type: model", "type: batch"), ["'model'", "'batch'"], prefix=f"{DEP}:5: type: "),
    Case("flat-key-with-type-model", DEP, add("mini_batch_size: 5\n"),
         ["mini_batch_size belongs under settings: when type is given"], prefix=f"{DEP}: "),
    Case("instance-count-and-resources", DEP, add("instance_count: 3\n"),
         ["Can't set instance_count when resources is provided."], prefix=f"{DEP}: "),
    # -- --set -----------------------------------------------------------------------------------------
    Case("set-without-equals", DEP, None, ["--set 'settings.mini_batch_size'", "expected key=value"],
         args=["--set", "settings.mini_batch_size"]),
    Case("set-into-a-scalar", DEP, None, ["--set 'name.first=x'", "name is not a mapping"],
         args=["--set", "name.first=x"]),
    Case("set-invalid-value", DEP, None, ["must be a positive integer, got 0"],
         prefix=f"{DEP}:21: settings.mini_batch_size: ", args=["--set", "settings.mini_batch_size=0"]),
    Case("set-unknown-key", DEP, None, ["unknown key"], prefix=f"{DEP}:19: settings.bogus: ",
         args=["--set", "settings.bogus=1"]),
    Case("kind-bogus", DEP, None, ["--kind", "'pipeline'"], args=["--kind", "pipeline"]),
]

assert len(CASES) >= 30
assert len({c.id for c in CASES}) == len(CASES)

# A handful also run as real processes of the installed console script.
SUBPROCESS_CASES = {
    "ep-name-33-chars",
    "mini-batch-size-ten",
    "summary-only-with-output-file-name",
    "binary-garbage",
    "scoring-script-syntax-error",
    "set-without-equals",
}


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_seed_tree(tmp_path / "seed")
    monkeypatch.chdir(root)
    return root


def prepare(case: Case, root: Path) -> list[str]:
    if case.change is not None:
        p = root / case.file
        new = case.change(p.read_text())
        if isinstance(new, bytes):
            p.write_bytes(new)
        else:
            p.write_text(new)
    return ["validate", case.target or case.file, *case.args]


def check(case: Case, code: int, stdout: str, stderr: str) -> None:
    assert "Traceback" not in stderr and "Traceback" not in stdout
    assert code == 2, (code, stderr)
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("error: "), line
    if case.prefix is not None:
        assert line[len("error: "):].startswith(case.prefix), line
    for part in case.expect:
        assert part in line, (part, line)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input(case: Case, tree: Path) -> None:
    argv = prepare(case, tree)
    result = CliRunner().invoke(app, argv)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    check(case, result.exit_code, result.stdout, result.stderr)


@pytest.mark.parametrize("case", [c for c in CASES if c.id in SUBPROCESS_CASES], ids=lambda c: c.id)
def test_malformed_input_real_process(case: Case, tree: Path, bepbuild_home: Path) -> None:
    argv = prepare(case, tree)
    env = {**os.environ, "BEPBUILD_HOME": str(bepbuild_home)}
    proc = subprocess.run([str(BEPBUILD), *argv], capture_output=True, text=True, env=env, timeout=60)
    check(case, proc.returncode, proc.stdout, proc.stderr)


def test_subprocess_cases_exist() -> None:
    assert SUBPROCESS_CASES <= {c.id for c in CASES}
    assert BEPBUILD.is_file()


def test_skip_script_validation_lets_a_syntax_error_pass(tree: Path) -> None:
    (tree / SCRIPT).write_text("def run(mini_batch:\n")
    runner = CliRunner()
    failed = runner.invoke(app, ["validate", DEP])
    assert failed.exit_code == 2 and "due to syntax errors in scoring script" in failed.stderr
    ok = runner.invoke(app, ["validate", DEP, "--skip-script-validation", "-o", "json", "--query", "name"])
    assert ok.exit_code == 0, ok.stderr
    assert ok.stdout.strip() == '"mnist-torch-dpl"'
    assert ok.stderr == ""


def test_the_unchanged_seed_validates(tree: Path) -> None:
    # The baseline every case above changes one thing of.
    runner = CliRunner()
    for f in (EP, DEP, "deployment-keras/deployment.yml"):
        r = runner.invoke(app, ["validate", f])
        assert r.exit_code == 0 and r.stderr == "", (f, r.stderr)


# -- a failed create writes nothing ---------------------------------------------------------------


def test_failed_endpoint_create_leaves_the_registry_empty(tree: Path) -> None:
    runner = CliRunner()
    (tree / EP).write_text((tree / EP).read_text() + "auth_mode: key\n")
    r = runner.invoke(app, ["batch-endpoint", "create", "--file", EP, "--name", "mnist-batch"])
    assert r.exit_code == 2 and r.stderr.startswith(f"error: {EP}:6: auth_mode:")
    r = runner.invoke(app, ["batch-endpoint", "create", "--file", EP, "--name", "bad_name"])
    assert r.exit_code == 2 and "name" in r.stderr
    r = runner.invoke(app, ["batch-endpoint", "create", "--name", "ok-name", "--set", "defaults.deployment_name=x"])
    assert r.exit_code == 2 and "'x' does not exist" in r.stderr
    listing = runner.invoke(app, ["batch-endpoint", "list", "-o", "json"])
    assert listing.exit_code == 0 and listing.stdout.strip() == "[]"
    shown = runner.invoke(app, ["batch-endpoint", "show", "--name", "mnist-batch"])
    assert shown.exit_code == 2 and "not found" in shown.stderr


def test_failed_model_create_leaves_no_version_and_no_copy(tree: Path, bepbuild_home: Path) -> None:
    runner = CliRunner()
    args = ["model", "create", "--name", "m1", "--path", "deployment-torch/model"]
    r = runner.invoke(app, [*args, "--type", "bogus_model"])
    assert r.exit_code == 2 and "--type" in r.stderr and len(r.stderr.splitlines()) == 1
    r = runner.invoke(app, ["model", "create", "--name", "m1", "--path", "no/such/folder"])
    assert r.exit_code == 2 and "not found" in r.stderr
    r = runner.invoke(app, ["model", "create", "--name", "-bad", "--path", "deployment-torch/model"])
    assert r.exit_code == 2 and "model name" in r.stderr
    assert runner.invoke(app, ["model", "list", "-o", "json"]).stdout.strip() == "[]"
    models = bepbuild_home / "assets" / "models"
    assert not models.exists() or not any(models.iterdir())


def test_failed_compute_and_data_create_write_nothing(tree: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["compute", "create", "-n", "c1", "--min-instances", "3", "--max-instances", "2"])
    assert r.exit_code == 2 and "min_instances" in r.stderr and len(r.stderr.splitlines()) == 1
    r = runner.invoke(app, ["compute", "create", "-n", "c1", "--max-instances", "0"])
    assert r.exit_code == 2 and "max_instances" in r.stderr
    assert runner.invoke(app, ["compute", "list", "-o", "json"]).stdout.strip() == "[]"
    r = runner.invoke(app, ["data", "create", "--name", "d", "--path", DEP, "--type", "uri_folder"])
    assert r.exit_code == 2 and "use --type uri_file" in r.stderr
    assert runner.invoke(app, ["data", "list", "-o", "json"]).stdout.strip() == "[]"
