"""The SDK's entities <-> bepbuild's YAML: every field of the deployment and endpoint specs.

An entity becomes the YAML document bepbuild's loaders validate (bepbuild.sdk.convert), and a
stored record or a loaded spec becomes an entity again (bepbuild.sdk.entities). The property:
an entity made from a YAML file dumps back to a YAML that loads to the same spec (paths compared
resolved, a conda file by its content: the SDK reads the file when the Environment is made).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from azure.ai.ml.constants import AssetTypes, BatchDeploymentOutputAction
from azure.ai.ml.entities import (
    BatchDeployment,
    BatchEndpoint,
    BatchRetrySettings,
    BuildContext,
    CodeConfiguration,
    Environment,
    JobResourceConfiguration,
    Model,
    ModelBatchDeployment,
    ModelBatchDeploymentSettings,
)
from azure.ai.ml.exceptions import ValidationException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bepbuild.sdk import convert, entities
from bepbuild.specs import load_deployment, load_endpoint

CONDA = "name: t\ndependencies:\n  - python=3.11\n  - pip:\n    - pandas\n"


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with a model, code, a conda file and a build context; relative paths of
    entities are read from here, as the SDK reads them."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.txt").write_text("1\n")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "score.py").write_text("def init():\n    pass\n\ndef run(b):\n    return b\n")
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "conda.yaml").write_text(CONDA)
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def loaded_deployment(doc: dict[str, Any]) -> Any:
    with convert.written(doc, "test") as file:
        return load_deployment(file)


def normalized(loaded: Any) -> dict[str, Any]:
    """A loaded deployment spec with its paths resolved and its conda file as content."""
    doc = loaded.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc.pop("$schema", None)
    if isinstance(doc.get("model"), dict):
        doc["model"]["path"] = str(loaded.paths["model.path"])
    if doc.get("code_configuration"):
        doc["code_configuration"]["code"] = str(loaded.paths["code"])
    env = doc.get("environment")
    if isinstance(env, dict):
        if "conda_file" in env:
            env["conda_file"] = loaded.conda.model_dump(mode="json", exclude_none=True)
        if "build" in env:
            env["build"]["path"] = str(loaded.paths["environment.build.path"])
    return doc


def entity_of(loaded: Any, legacy: bool) -> BatchDeployment:
    """The entity a YAML file stands for: its spec, paths absolute, as SDK entities."""
    doc = loaded.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(doc.get("model"), dict):
        doc["model"]["path"] = str(loaded.paths["model.path"])
    if doc.get("code_configuration"):
        doc["code_configuration"]["code"] = str(loaded.paths["code"])
    env = doc.get("environment")
    if isinstance(env, dict):
        if isinstance(env.get("conda_file"), str):
            env["conda_file"] = str(loaded.paths["environment.conda_file"])
        if "build" in env:
            env["build"]["path"] = str(loaded.paths["environment.build.path"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy class warns that it is deprecated
        return entities.deployment_entity(doc, legacy=legacy)


# -- the entity, field by field ---------------------------------------------------------------


def mnist_deployment() -> ModelBatchDeployment:
    env = Environment(name="batch-torch-py38", conda_file="env/conda.yaml",
                      image="mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest")
    return ModelBatchDeployment(
        name="mnist-torch-dpl", endpoint_name="Mnist-Batch", description="torch", tags={"a": "b", "n": 1},
        properties={"p": "q"},
        model=Model(name="mnist-classifier-torch", path="model/", type=AssetTypes.CUSTOM_MODEL),
        code_configuration=CodeConfiguration(code="code/", scoring_script="score.py"),
        environment=env, compute="batch-cluster",
        settings=ModelBatchDeploymentSettings(
            max_concurrency_per_instance=2, mini_batch_size=10, instance_count=2,
            output_action=BatchDeploymentOutputAction.APPEND_ROW, output_file_name="predictions.csv",
            retry_settings=BatchRetrySettings(max_retries=3, timeout=30), logging_level="info",
            error_threshold=5, environment_variables={"A": "1"}),
    )


def test_model_deployment_entity_becomes_the_yaml_bepbuild_validates(tree: Path) -> None:
    doc = convert.deployment_doc(mnist_deployment())
    spec = loaded_deployment(doc).spec
    assert spec.name == "mnist-torch-dpl" and spec.endpoint_name == "mnist-batch"
    assert spec.description == "torch" and spec.tags == {"a": "b", "n": "1"} and spec.properties == {"p": "q"}
    assert spec.type == "model"
    assert spec.model.name == "mnist-classifier-torch" and spec.model.type == "custom_model"
    assert spec.model.path == str(tree / "model")  # relative to the working directory, as the SDK reads it
    assert spec.code_configuration.code == str(tree / "code") and spec.code_configuration.scoring_script == "score.py"
    assert spec.environment.name == "batch-torch-py38"
    assert spec.environment.image == "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
    assert spec.environment.conda_file["dependencies"][0] == "python=3.11"
    assert spec.compute == "batch-cluster"
    assert spec.resources.instance_count == 2  # settings.instance_count, as the SDK copies it
    s = spec.settings
    assert (s.max_concurrency_per_instance, s.mini_batch_size, s.output_action, s.output_file_name) == (
        2, 10, "append_row", "predictions.csv")
    assert (s.retry_settings.max_retries, s.retry_settings.timeout, s.logging_level, s.error_threshold) == (
        3, 30, "info", 5)
    assert s.environment_variables == {"A": "1"}


def test_resources_fields_and_a_registered_model_and_environment_become_references(tree: Path) -> None:
    model = entities.model_entity({"name": "m", "version": "4", "path": str(tree / "model"), "created_at": "x"})
    env = entities.environment_entity({"name": "e", "version": "2", "image": "img", "created_at": "x"})
    dep = ModelBatchDeployment(
        name="dpl", endpoint_name="ep1", model=model, environment=env,
        code_configuration=CodeConfiguration(code=str(tree / "code"), scoring_script="score.py"),
        resources=JobResourceConfiguration(instance_count=3, instance_type="cpu", properties={"k": 1},
                                           shm_size="1g", docker_args="--init"),
        settings=ModelBatchDeploymentSettings(mini_batch_size=4, output_action="summary_only"))
    spec = loaded_deployment(convert.deployment_doc(dep)).spec
    assert spec.model == "azureml:m:4" and spec.environment == "azureml:e:2"
    r = spec.resources
    assert (r.instance_count, r.instance_type, r.properties, r.shm_size, r.docker_args) == (3, "cpu", {"k": 1}, "1g",
                                                                                          "--init")
    assert spec.settings.output_action == "summary_only" and spec.settings.output_file_name is None


def test_legacy_batch_deployment_flat_settings(tree: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dep = BatchDeployment(name="legacy-dpl", endpoint_name="ep1", model="azureml:m:1",
                              code_configuration=CodeConfiguration(code="code", scoring_script="score.py"),
                              environment="azureml:e@latest", instance_count=2, mini_batch_size=7,
                              max_concurrency_per_instance=3, output_action="append_row", output_file_name="o.csv",
                              retry_settings=BatchRetrySettings(max_retries=1, timeout=9), error_threshold=2,
                              logging_level="debug", environment_variables={"X": "y"})
    doc = convert.deployment_doc(dep)
    assert "type" not in doc and "settings" not in doc  # the legacy layout, as the SDK dumps it
    spec = loaded_deployment(doc).spec
    s = spec.settings
    assert spec.resources.instance_count == 2 and (s.mini_batch_size, s.max_concurrency_per_instance) == (7, 3)
    assert (s.output_file_name, s.retry_settings.max_retries, s.retry_settings.timeout) == ("o.csv", 1, 9)
    assert (s.error_threshold, s.logging_level, s.environment_variables) == (2, "debug", {"X": "y"})


def test_anonymous_inline_assets_are_named_by_bepbuild(tree: Path) -> None:
    dep = ModelBatchDeployment(name="dpl", endpoint_name="ep1", model=Model(path="model"),
                               environment=Environment(build=BuildContext(path="ctx")),
                               code_configuration=CodeConfiguration(code="code", scoring_script="score.py"))
    spec = loaded_deployment(convert.deployment_doc(dep)).spec
    assert spec.model.name is None and spec.environment.name is None and spec.environment.version is None
    assert spec.environment.build.path == str(tree / "ctx") and spec.environment.inference_config is None


def test_bad_entity_is_one_line_naming_the_entity_and_field(tree: Path) -> None:
    dep = mnist_deployment()
    dep.settings.mini_batch_size = 0
    with pytest.raises(Exception) as caught:
        loaded_deployment_label(convert.deployment_doc(dep), "ModelBatchDeployment 'mnist-torch-dpl'")
    assert str(caught.value) == ("ModelBatchDeployment 'mnist-torch-dpl': settings.mini_batch_size: must be a "
                                 "positive integer, got 0")


def loaded_deployment_label(doc: dict[str, Any], label: str) -> Any:
    with convert.written(doc, label) as file:
        return load_deployment(file)


def test_pipeline_deployments_are_refused() -> None:
    from azure.ai.ml.entities import PipelineComponentBatchDeployment

    with pytest.raises(ValidationException, match="only model deployments"):
        convert.deployment_doc(PipelineComponentBatchDeployment(name="pipe", endpoint_name="ep1"))


def test_endpoint_entity_every_field(tree: Path) -> None:
    ep = BatchEndpoint(name="my-ep", description="d", tags={"type": "deep-learning"}, auth_mode="aad_token",
                       defaults={"deployment_name": "dpl"}, properties={"ignored": "x"})
    doc = convert.endpoint_doc(ep)
    with convert.written(doc, "BatchEndpoint") as file:
        spec = load_endpoint(file).spec
    assert (spec.name, spec.description, spec.tags, spec.auth_mode, spec.defaults.deployment_name) == (
        "my-ep", "d", {"type": "deep-learning"}, "aad_token", "dpl")


def test_fetched_endpoint_default_can_be_set_and_sent_back() -> None:
    ep = entities.endpoint_entity({"name": "my-ep", "description": "d", "created_at": "2026-01-02T03:04:05Z",
                                   "updated_at": "2026-01-02T03:04:09Z", "defaults": {}}, "http://127.0.0.1:1/x")
    assert ep.provisioning_state == "Succeeded" and ep.scoring_uri == "http://127.0.0.1:1/x"
    assert (ep.creation_context.last_modified_at - ep.creation_context.created_at).total_seconds() == 4
    ep.defaults.deployment_name = "dpl"  # as Azure's notebooks do after get()
    assert convert.endpoint_doc(ep) == {"name": "my-ep", "description": "d", "tags": {}, "properties": {},
                                        "auth_mode": "aad_token", "defaults": {"deployment_name": "dpl"}}


# -- the property: YAML -> entity -> YAML loads to the same spec ----------------------------------------

names = st.from_regex(r"[a-z][a-z0-9-]{1,20}[a-z0-9]", fullmatch=True)
asset_names = st.from_regex(r"[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,15}", fullmatch=True)
versions = st.from_regex(r"[0-9][0-9a-z.]{0,5}", fullmatch=True)
words = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=12)
str_dicts = st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True), words, max_size=3)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def without_none(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


@st.composite
def inline_model(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(optional(asset_names))
    return without_none(name=name, version=draw(optional(versions)) if name else None,
                        description=draw(optional(words)), tags=draw(optional(str_dicts)),
                        path=draw(st.sampled_from(["model", "model/weights.txt"])),
                        type=draw(optional(st.sampled_from(["custom_model", "mlflow_model", "triton_model"]))))


@st.composite
def inline_environment(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(optional(asset_names))
    env = without_none(name=name, version=draw(optional(versions)) if name else None,
                       description=draw(optional(words)), tags=draw(optional(str_dicts)))
    if draw(st.booleans()):
        env["build"] = without_none(path="ctx", dockerfile_path=draw(optional(st.just("Dockerfile"))))
    else:
        env["image"] = draw(st.sampled_from(["local/debian-py:bookworm", "mcr.microsoft.com/azureml/x:latest"]))
        conda = draw(optional(st.sampled_from(["env/conda.yaml", {"dependencies": ["python=3.11", "pip"]}])))
        if conda is not None:
            env["conda_file"] = conda
    if draw(st.booleans()):
        env["os_type"] = "linux"
    if draw(st.booleans()):
        env["inference_config"] = {"liveness_route": {"path": "/", "port": 5001}}
    return env


@st.composite
def settings_doc(draw: st.DrawFn) -> dict[str, Any]:
    action = draw(optional(st.sampled_from(["append_row", "summary_only"])))
    doc = without_none(
        max_concurrency_per_instance=draw(optional(st.integers(1, 8))),
        mini_batch_size=draw(optional(st.integers(1, 100))), output_action=action,
        output_file_name=draw(optional(st.sampled_from(["p.csv", "out.txt"]))) if action != "summary_only" else None,
        retry_settings=draw(optional(st.fixed_dictionaries({}, optional={"max_retries": st.integers(0, 5),
                                                                          "timeout": st.integers(1, 600)}))),
        error_threshold=draw(optional(st.integers(-1, 10))),
        logging_level=draw(optional(st.sampled_from(["warning", "info", "debug"]))),
        environment_variables=draw(optional(str_dicts)),
    )
    return doc


@st.composite
def deployment_yaml(draw: st.DrawFn) -> tuple[dict[str, Any], bool]:
    model = draw(st.one_of(st.sampled_from(["azureml:m:1", "azureml:m@latest"]), inline_model()))
    mlflow_inline = isinstance(model, dict) and model.get("type") == "mlflow_model"
    code = None if mlflow_inline and draw(st.booleans()) else {"code": "code", "scoring_script": "score.py"}
    # The loader's rule: an inline model needs an environment unless it is MLflow scored without code.
    environment = st.one_of(st.just("azureml:e:2"), inline_environment())
    may_omit = isinstance(model, str) or (mlflow_inline and code is None)
    doc = without_none(
        name=draw(names), endpoint_name=draw(names), description=draw(optional(words)),
        tags=draw(optional(str_dicts)), properties=draw(optional(str_dicts)), model=model,
        code_configuration=code, environment=draw(optional(environment) if may_omit else environment),
        compute=draw(optional(st.sampled_from(["azureml:batch-cluster", "cpu-cluster"]))),
    )
    resources = without_none(instance_count=draw(optional(st.integers(1, 5))),
                             instance_type=draw(optional(words)),
                             properties=draw(optional(st.dictionaries(st.sampled_from(["a", "b"]), st.integers(),
                                                                      max_size=2))),
                             shm_size=draw(optional(st.sampled_from(["1g", "256m"]))),
                             docker_args=draw(optional(st.just("--init"))))
    if resources or draw(st.booleans()):
        doc["resources"] = resources
    settings_part = draw(settings_doc())
    legacy = draw(st.booleans())
    if legacy:
        doc.update(settings_part)
    else:
        doc["type"] = "model"
        if "resources" not in doc and draw(st.booleans()):
            settings_part["instance_count"] = draw(st.integers(1, 5))  # the SDK's place for it
        doc["settings"] = settings_part
    return doc, legacy


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=deployment_yaml())
def test_deployment_yaml_to_entity_and_back_loads_the_same_spec(tree: Path, case: tuple[dict[str, Any], bool]) -> None:
    doc, legacy = case
    (tree / "deployment.yml").write_text(json.dumps(doc))
    original = load_deployment(tree / "deployment.yml")
    entity = entity_of(original, legacy)
    assert isinstance(entity, ModelBatchDeployment) != legacy
    again = loaded_deployment(convert.deployment_doc(entity))
    assert normalized(again) == normalized(original)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names, description=optional(words), tags=optional(str_dicts), default=optional(names),
       auth=st.booleans())
def test_endpoint_yaml_to_entity_and_back_loads_the_same_spec(tree: Path, name: str, description: str | None,
                                                             tags: dict[str, str] | None, default: str | None,
                                                             auth: bool) -> None:
    doc = without_none(name=name, description=description, tags=tags, auth_mode="aad_token" if auth else None,
                       defaults={"deployment_name": default} if default else None)
    (tree / "endpoint.yml").write_text(json.dumps(doc))
    original = load_endpoint(tree / "endpoint.yml").spec
    entity = entities.endpoint_entity(original.model_dump(mode="json", by_alias=True, exclude_none=True))
    with convert.written(convert.endpoint_doc(entity), "BatchEndpoint") as file:
        again = load_endpoint(file).spec
    assert again == original


def test_stored_deployment_record_becomes_an_entity_that_deploys_the_same(tree: Path) -> None:
    record = {
        "name": "dpl", "endpoint_name": "ep1", "type": "model", "description": "d", "tags": {"t": "1"},
        "properties": {}, "model": "azureml:m:3", "environment": "azureml:e:1", "compute": "cpu",
        "code_configuration": {"code": str(tree / "code"), "scoring_script": "score.py"},
        "resources": {"instance_count": 2, "properties": {}},
        "settings": {"max_concurrency_per_instance": 2, "mini_batch_size": 5, "output_action": "append_row",
                     "output_file_name": "predictions.csv", "retry_settings": {"max_retries": 3, "timeout": 30},
                     "error_threshold": -1, "logging_level": "info", "environment_variables": {}},
        "image": "bepbuild/ep1-dpl:abc", "provisioning_state": "Succeeded", "created_at": "2026-01-01T00:00:00Z",
    }
    dep = entities.deployment_entity(record)
    assert dep.provisioning_state == "Succeeded" and dep.id.endswith("/batchEndpoints/ep1/deployments/dpl")
    assert dep.settings.mini_batch_size == 5 and dep.resources.instance_count == 2 and dep.model == "azureml:m:3"
    spec = loaded_deployment(convert.deployment_doc(dep)).spec
    stored = {k: record[k] for k in ("name", "endpoint_name", "model", "environment", "compute", "settings")}
    assert {k: v for k, v in spec.model_dump(mode="json", exclude_none=True).items() if k in stored} == stored


def test_generated_mlflow_driver_is_no_code_configuration() -> None:
    dep = entities.deployment_entity({"name": "dpl", "endpoint_name": "ep1", "model": "azureml:m:1",
                                      "code_configuration": {"code": None, "scoring_script": "mlflow_driver.py",
                                                             "generated": True},
                                      "image": "x", "created_at": "2026-01-01T00:00:00Z"})
    assert dep.code_configuration is None
