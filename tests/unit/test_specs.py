"""Spec parsing: the seed YAMLs verbatim, Azure's defaults, both deployment layouts, --set, refs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from seedtree import SEED, make_seed_tree

from bepbuild.errors import SpecError
from bepbuild.specs import (
    AssetRef,
    BatchDeployment,
    BatchEndpoint,
    InlineModel,
    Settings,
    load_deployment,
    load_endpoint,
    parse_ref,
)
from bepbuild.specs.assets import EnvironmentSpec
from bepbuild.specs.overrides import apply, parse_assignment

# Azure's documented defaults for a `type: model` batch deployment (spec section 3.2).
AZURE_SETTINGS_DEFAULTS = {
    "max_concurrency_per_instance": 1,
    "mini_batch_size": 10,
    "output_action": "append_row",
    "output_file_name": "predictions.csv",
    "retry_settings": {"max_retries": 3, "timeout": 30},
    "error_threshold": -1,
    "logging_level": "info",
    "environment_variables": {},
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_seed_tree(tmp_path / "seed")


def settings_dict(spec: BatchDeployment) -> dict:
    return spec.settings.model_dump(mode="json", exclude_none=True)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- the seed files, verbatim ------------------------------------------------------------------


def test_seed_files_are_untouched_by_the_tree_copy(tree: Path) -> None:
    # The tests below parse copies; the copies must be the seed files byte for byte.
    for rel in ("endpoint.yml", "deployment-torch/deployment.yml", "deployment-keras/deployment.yml"):
        assert (tree / rel).read_bytes() == (SEED / rel).read_bytes()
    assert not (SEED / "deployment-torch" / "model").exists()


def test_seed_endpoint(tree: Path) -> None:
    loaded = load_endpoint(tree / "endpoint.yml")
    ep = loaded.spec
    assert isinstance(ep, BatchEndpoint)
    assert ep.name == "mnist-batch"
    assert ep.description == "A batch endpoint for scoring images from the MNIST dataset."
    assert ep.tags == {"type": "deep-learning"}
    assert ep.auth_mode == "aad_token"
    assert ep.defaults.deployment_name is None
    assert ep.schema_ == "https://azuremlschemas.azureedge.net/latest/batchEndpoint.schema.json"
    assert loaded.warnings == []


def test_seed_endpoint_name_overridden_by_cli_name(tree: Path) -> None:
    assert load_endpoint(tree / "endpoint.yml", name="other-name").spec.name == "other-name"


def test_seed_torch_deployment(tree: Path) -> None:
    loaded = load_deployment(tree / "deployment-torch" / "deployment.yml")
    d = loaded.spec
    assert d.name == "mnist-torch-dpl"
    assert d.endpoint_name == "mnist-batch"
    assert d.type == "model"
    assert isinstance(d.model, InlineModel)
    assert (d.model.name, d.model.path, d.model.type) == ("mnist-classifier-torch", "model", "custom_model")
    assert d.code_configuration is not None
    assert (d.code_configuration.code, d.code_configuration.scoring_script) == ("code", "batch_driver.py")
    assert isinstance(d.environment, EnvironmentSpec)
    assert d.environment.name == "batch-torch-py38"
    assert d.environment.image == "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"
    assert d.environment.conda_file == "environment/conda.yaml"
    assert d.compute == "batch-cluster"  # azureml: prefix dropped
    assert d.resources.instance_count == 1
    assert settings_dict(d) == {**AZURE_SETTINGS_DEFAULTS, "max_concurrency_per_instance": 2}
    # Local paths are resolved relative to the YAML's folder.
    base = (tree / "deployment-torch").resolve()
    assert loaded.paths["model.path"] == base / "model"
    assert loaded.paths["code"] == base / "code"
    assert loaded.paths["scoring_script"] == base / "code" / "batch_driver.py"
    assert loaded.paths["environment.conda_file"] == base / "environment" / "conda.yaml"
    # The conda file is read too.
    assert loaded.conda is not None
    assert loaded.conda.python_pin() == "3.8.5"
    assert "torch==1.13.0" in loaded.conda.pip_packages()
    assert "pip<22.0" in loaded.conda.conda_packages()
    assert loaded.warnings == []


def test_seed_keras_deployment_gets_defaults_for_unset_settings(tree: Path) -> None:
    # The keras YAML leaves retry_settings, error_threshold and logging_level out.
    raw = yaml.safe_load((tree / "deployment-keras" / "deployment.yml").read_text())
    assert "retry_settings" not in raw["settings"] and "error_threshold" not in raw["settings"]
    d = load_deployment(tree / "deployment-keras" / "deployment.yml").spec
    assert d.name == "mnist-keras-dpl"
    assert isinstance(d.model, InlineModel) and d.model.name == "mnist-classifier-keras"
    assert settings_dict(d) == {**AZURE_SETTINGS_DEFAULTS, "max_concurrency_per_instance": 2}
    assert d.resources.instance_count == 1


def test_minimal_deployment_has_every_azure_default(tree: Path) -> None:
    f = write(
        tree / "deployment-torch" / "minimal.yml",
        "name: mini-dpl\nendpoint_name: mnist-batch\nmodel:\n  path: model\n"
        "code_configuration:\n  code: code\n  scoring_script: batch_driver.py\n"
        "environment:\n  image: some/image:1\n",
    )
    d = load_deployment(f).spec
    assert settings_dict(d) == AZURE_SETTINGS_DEFAULTS
    assert d.resources.instance_count == 1
    assert d.type == "model"
    assert isinstance(d.model, InlineModel) and d.model.type == "custom_model" and d.model.name is None
    assert d.compute is None


def test_settings_class_defaults() -> None:
    assert Settings().model_dump(mode="json", exclude_none=True) == AZURE_SETTINGS_DEFAULTS


def test_summary_only_has_no_output_file_name() -> None:
    s = Settings(output_action="summary_only")
    assert s.output_file_name is None
    with pytest.raises(ValueError, match="need not to be specified"):
        Settings(output_action="summary_only", output_file_name="x.csv")


def test_rest_spellings_are_normalized() -> None:
    s = Settings.model_validate({"output_action": "AppendRow", "logging_level": "DEBUG"})
    assert (s.output_action, s.logging_level) == ("append_row", "debug")
    assert Settings.model_validate({"output_action": "SummaryOnly"}).output_action == "summary_only"


@pytest.mark.parametrize("name", ["abc", "a" * 32, "A-1-b", "Zz9"])
def test_endpoint_name_boundaries_accepted(name: str) -> None:
    assert BatchEndpoint(name=name).name == name


def test_deployment_endpoint_name_is_lowercased() -> None:
    d = BatchDeployment.model_validate({"name": "dpl", "endpoint_name": "MNIST-Batch", "model": "azureml:m:1"})
    assert d.endpoint_name == "mnist-batch"


# -- legacy flat layout --------------------------------------------------------------------------

FLAT_TORCH = """\
$schema: https://azuremlschemas.azureedge.net/latest/batchDeployment.schema.json
name: mnist-torch-dpl
description: A deployment using Torch to solve the MNIST classification dataset.
endpoint_name: mnist-batch
model:
  name: mnist-classifier-torch
  path: model
code_configuration:
  code: code
  scoring_script: batch_driver.py
environment:
  name: batch-torch-py38
  image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest
  conda_file: environment/conda.yaml
compute: azureml:batch-cluster
resources:
  instance_count: 1
max_concurrency_per_instance: 2
mini_batch_size: 10
output_action: append_row
output_file_name: predictions.csv
retry_settings:
  max_retries: 3
  timeout: 30
error_threshold: -1
logging_level: info
"""


def test_flat_layout_normalizes_to_the_type_model_settings(tree: Path) -> None:
    new = load_deployment(tree / "deployment-torch" / "deployment.yml").spec
    flat_loaded = load_deployment(write(tree / "deployment-torch" / "flat.yml", FLAT_TORCH))
    flat = flat_loaded.spec
    assert flat.settings == new.settings
    assert flat.resources == new.resources
    assert flat.type == "model"
    assert flat.model == new.model and flat.environment == new.environment
    assert flat_loaded.warnings == []


def test_flat_layout_non_default_values_land_in_settings(tree: Path) -> None:
    text = (
        FLAT_TORCH.replace("mini_batch_size: 10", "mini_batch_size: 7")
        .replace("timeout: 30", "timeout: 99")
        .replace("logging_level: info", "logging_level: debug")
        + "environment_variables:\n  FOO: 1\n"
    )
    d = load_deployment(write(tree / "deployment-torch" / "flat.yml", text)).spec
    assert d.settings.mini_batch_size == 7
    assert d.settings.retry_settings.timeout == 99
    assert d.settings.logging_level == "debug"
    assert d.settings.environment_variables == {"FOO": "1"}


def test_flat_layout_without_settings_gets_defaults(tree: Path) -> None:
    text = "\n".join(line for line in FLAT_TORCH.splitlines()[:17]) + "\n"
    assert "mini_batch_size" not in text and "resources:" in text
    d = load_deployment(write(tree / "deployment-torch" / "flat.yml", text)).spec
    assert settings_dict(d) == AZURE_SETTINGS_DEFAULTS


def test_flat_layout_mixed_with_settings_warns_and_settings_wins(tree: Path) -> None:
    text = FLAT_TORCH + "settings:\n  mini_batch_size: 3\n"
    loaded = load_deployment(write(tree / "deployment-torch" / "flat.yml", text))
    assert loaded.spec.settings.mini_batch_size == 3
    assert loaded.spec.settings.max_concurrency_per_instance == 2  # the flat key still counts
    assert len(loaded.warnings) == 1 and "mixes the legacy flat layout" in loaded.warnings[0]


def test_flat_top_level_instance_count_goes_to_resources(tree: Path) -> None:
    text = FLAT_TORCH.replace("resources:\n  instance_count: 1\n", "instance_count: 4\n")
    d = load_deployment(write(tree / "deployment-torch" / "flat.yml", text)).spec
    assert d.resources.instance_count == 4


def test_settings_instance_count_goes_to_resources(tree: Path) -> None:
    src = (tree / "deployment-torch" / "deployment.yml").read_text()
    text = src.replace("resources:\n  instance_count: 1\n", "") + "  instance_count: 5\n"
    d = load_deployment(write(tree / "deployment-torch" / "ic.yml", text)).spec
    assert d.resources.instance_count == 5
    assert d.settings.instance_count is None
    assert "instance_count" not in settings_dict(d)


def test_settings_instance_count_clashes_with_resources_instance_count(tree: Path) -> None:
    src = (tree / "deployment-torch" / "deployment.yml").read_text()
    with pytest.raises(SpecError, match="instance_count"):
        load_deployment(write(tree / "deployment-torch" / "ic.yml", src + "  instance_count: 5\n"))


# -- --set overrides -----------------------------------------------------------------------------


def test_set_overrides_nested_keys_with_ints(tree: Path) -> None:
    d = load_deployment(
        tree / "deployment-torch" / "deployment.yml",
        sets=[
            "settings.mini_batch_size=20",
            "settings.retry_settings.timeout=60",
            "settings.logging_level=debug",
            "resources.instance_count=3",
            "description=changed by --set",
        ],
    ).spec
    assert d.settings.mini_batch_size == 20 and isinstance(d.settings.mini_batch_size, int)
    assert d.settings.retry_settings.timeout == 60
    assert d.settings.retry_settings.max_retries == 3  # siblings untouched
    assert d.settings.logging_level == "debug"
    assert d.resources.instance_count == 3
    assert d.description == "changed by --set"


def test_set_creates_missing_mappings(tree: Path) -> None:
    # The keras YAML has no retry_settings: --set creates it.
    d = load_deployment(
        tree / "deployment-keras" / "deployment.yml",
        sets=["settings.retry_settings.max_retries=0", "settings.environment_variables.MODE=fast"],
    ).spec
    assert d.settings.retry_settings.max_retries == 0
    assert d.settings.retry_settings.timeout == 30
    assert d.settings.environment_variables == {"MODE": "fast"}


def test_set_value_that_fails_validation_is_reported(tree: Path) -> None:
    with pytest.raises(SpecError) as e:
        load_deployment(tree / "deployment-torch" / "deployment.yml", sets=["settings.mini_batch_size=0"])
    assert e.value.field == "settings.mini_batch_size"
    assert "positive integer" in e.value.message


def test_set_name_and_cli_name_precedence(tree: Path) -> None:
    f = tree / "deployment-torch" / "deployment.yml"
    assert load_deployment(f, sets=["name=from-set"]).spec.name == "from-set"
    # --name / --endpoint-name on the command line win over the file and --set.
    d = load_deployment(f, sets=["name=from-set"], name="from-flag", endpoint_name="other-ep").spec
    assert (d.name, d.endpoint_name) == ("from-flag", "other-ep")


@pytest.mark.parametrize(
    "text, value",
    [
        ("a=1", 1),
        ("a=-1", -1),
        ("a=1.5", 1.5),
        ("a=true", True),
        ("a=null", None),
        ("a=", ""),
        ("a=hello", "hello"),
        ("a=b=c", "b=c"),
        ("a=x: y", "x: y"),  # would be a mapping in YAML; kept as the string given
        ("a=[1, 2]", [1, 2]),
        ("a='007'", "007"),
    ],
)
def test_parse_assignment_values(text: str, value: object) -> None:
    assert parse_assignment(text) == (["a"], value)


def test_apply_list_index_and_copy_semantics() -> None:
    doc = {"dependencies": ["python=3.8", "pip", {"pip": ["a", "b"]}], "x": {"y": 1}}
    out = apply(doc, ["dependencies.0=python=3.11", "dependencies.2.pip.1=c", "x.z=2"])
    assert out == {"dependencies": ["python=3.11", "pip", {"pip": ["a", "c"]}], "x": {"y": 1, "z": 2}}
    # The input is not modified.
    assert doc == {"dependencies": ["python=3.8", "pip", {"pip": ["a", "b"]}], "x": {"y": 1}}


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("dependencies.5=x", "'5' is not an index of a list of 2"),
        ("dependencies.first=x", "'first' is not an index"),
        ("name.sub=1", "name is not a mapping"),
        ("noequals", "expected key=value"),
        ("=1", "expected key=value"),
        ("a..b=1", "empty part"),
    ],
)
def test_apply_errors(assignment: str, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace(".", r"\.")):
        apply({"name": "n", "dependencies": ["a", "b"]}, [assignment])


# -- asset references ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, ref",
    [
        ("azureml:mnist-classifier-torch:1", AssetRef("mnist-classifier-torch", version="1")),
        ("azureml:mnist-classifier-torch:12", AssetRef("mnist-classifier-torch", version="12")),
        ("azureml:mnist-classifier-torch@latest", AssetRef("mnist-classifier-torch", label="latest")),
        ("azureml:mnist-classifier-torch", AssetRef("mnist-classifier-torch", label="latest")),
        ("azureml:my_model.v2:abc", AssetRef("my_model.v2", version="abc")),
    ],
)
def test_parse_ref(text: str, ref: AssetRef) -> None:
    assert parse_ref(text) == ref


def test_ref_str_round_trip() -> None:
    assert str(parse_ref("azureml:m:3")) == "azureml:m:3"
    assert str(parse_ref("azureml:m@latest")) == "azureml:m@latest"
    assert str(parse_ref("azureml:m")) == "azureml:m@latest"


def test_bare_name_version_only_when_allowed() -> None:
    with pytest.raises(SpecError, match="not a reference"):
        parse_ref("m:1")
    assert parse_ref("m:1", allow_bare=True) == AssetRef("m", version="1")


@pytest.mark.parametrize(
    "text, message",
    [
        ("azureml://registries/azureml/models/m/versions/1", "registry and workspace URIs"),
        ("azureml://subscriptions/s/resourcegroups/r/workspaces/w/models/m/versions/1", "registry and workspace"),
        ("azureml:m:1:2", "expected azureml:<name>:<version>"),
        ("azureml::1", "expected azureml:<name>:<version>"),
        ("azureml:m@", "expected azureml:<name>@<label>"),
        ("azureml:-bad:1", "invalid name"),
        ("/subscriptions/x/models/m/versions/1", "not a reference"),
    ],
)
def test_parse_ref_refusals(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_ref(text)


def test_deployment_with_registered_refs(tree: Path) -> None:
    src = (tree / "deployment-torch" / "deployment.yml").read_text()
    text = src.replace(
        "model:\n  name: mnist-classifier-torch\n  path: model\n", "model: azureml:mnist-classifier-torch@latest\n"
    )
    text = text.replace(
        "environment:\n  name: batch-torch-py38\n  image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest\n"
        "  conda_file: environment/conda.yaml\n",
        "environment: azureml:batch-torch-py38:1\n",
    )
    loaded = load_deployment(write(tree / "deployment-torch" / "refs.yml", text))
    assert loaded.spec.model == "azureml:mnist-classifier-torch@latest"
    assert loaded.spec.environment == "azureml:batch-torch-py38:1"
    assert "model.path" not in loaded.paths and loaded.conda is None


@pytest.mark.parametrize(
    "model, message",
    [
        ("azureml://registries/azureml/models/m/versions/1", "registry and workspace URIs are not available locally"),
        ("model", "is not a reference"),
        ("azureml:m:1:2", "expected azureml:<name>:<version>"),
    ],
)
def test_deployment_model_string_must_be_a_local_ref(tree: Path, model: str, message: str) -> None:
    src = (tree / "deployment-torch" / "deployment.yml").read_text()
    text = src.replace("model:\n  name: mnist-classifier-torch\n  path: model\n", f"model: {model}\n")
    with pytest.raises(SpecError) as e:
        load_deployment(write(tree / "deployment-torch" / "refs.yml", text))
    assert e.value.field == "model"
    assert e.value.source is not None and e.value.source.endswith("refs.yml:6")
    assert message in e.value.message
