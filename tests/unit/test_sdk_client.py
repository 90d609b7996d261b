"""bepbuild.MLClient without an engine: the SDK's operations mapped onto bepbuild's functions.

Jobs run on the process backend (`MLClient(backend="process")`); a deployment's build is the one
thing faked (`deploy.create`: the real loader reads the file the SDK wrote, and the deployment row
is stored as a deploy leaves it, as in test_jobs_process.py). The engine-backed flows, with the
examples' real images, are in tests/docker/test_sdk_examples.py.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from azure.ai.ml import Input, Output
from azure.ai.ml.constants import AssetTypes
from azure.ai.ml.entities import (
    AmlCompute,
    BatchEndpoint,
    BatchJob,
    CodeConfiguration,
    Data,
    Environment,
    Model,
    ModelBatchDeployment,
    ModelBatchDeploymentSettings,
    PipelineJob,
)
from azure.ai.ml.exceptions import JobException, ValidationException
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.core.paging import ItemPaged
from azure.core.polling import LROPoller
from test_jobs_process import SCRIPT, make_inputs, register

from bepbuild import config, deploy, endpoints
from bepbuild.sdk import invoke as invoking
from bepbuild.specs import load_deployment
from bepbuild.store import Store

ENDPOINT = "sdk-ep"


@pytest.fixture
def ml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from bepbuild import MLClient

    monkeypatch.chdir(tmp_path)
    return MLClient.from_config(credential=object(), path="nowhere")  # credential and config ignored


@pytest.fixture
def fake_build(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """deploy.create without the image: the real loader reads the SDK's file; the row is stored."""
    loaded_files: list[Any] = []

    def create(store: Store, file: Path, *, create_endpoint: bool, opts: deploy.DeployOptions, log: Any,
               **kwargs: Any) -> dict[str, Any]:
        loaded = load_deployment(file, skip_script_validation=opts.skip_script_validation)
        deploy.ensure_endpoint(store, loaded.spec, file, create_endpoint)
        loaded_files.append(loaded)
        spec = loaded.spec
        register(loaded.paths["scoring_script"].read_text(), endpoint=spec.endpoint_name, deployment=spec.name,
                 default=False, **spec.settings.model_dump(mode="json", exclude_none=True))
        if not (store.get_endpoint(spec.endpoint_name).get("defaults") or {}).get("deployment_name"):
            endpoints.set_default(store, spec.endpoint_name, spec.name)
        return store.get_deployment(spec.endpoint_name, spec.name) | {"built": True, "notices": []}

    monkeypatch.setattr(deploy, "create", create)
    return loaded_files


def scoring_folder(tmp_path: Path) -> Path:
    (tmp_path / "code").mkdir(exist_ok=True)
    (tmp_path / "code" / "score.py").write_text(SCRIPT)
    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "model" / "w.txt").write_text("1\n")
    return tmp_path


def deployed(ml: Any, tmp_path: Path, name: str = "sdk-dpl", **settings: Any) -> ModelBatchDeployment:
    scoring_folder(tmp_path)
    if not any(e.name == ENDPOINT for e in ml.batch_endpoints.list()):
        ml.begin_create_or_update(BatchEndpoint(name=ENDPOINT, description="sdk")).result()
    dep = ModelBatchDeployment(
        name=name, endpoint_name=ENDPOINT, model=Model(name="sdk-model", path="model/"),
        environment=Environment(name="sdk-env", image="local/debian-py:bookworm"),
        code_configuration=CodeConfiguration(code="code/", scoring_script="score.py"),
        settings=ModelBatchDeploymentSettings(mini_batch_size=settings.pop("mini_batch_size", 2), **settings))
    return ml.begin_create_or_update(dep).result()


# -- client ----------------------------------------------------------------------------------------------


def test_the_cli_does_not_import_the_sdk() -> None:
    code = "import sys, bepbuild.cli; print(any(m.startswith('azure') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_unknown_backend_and_entity_types_are_validation_errors(ml: Any) -> None:
    from bepbuild import MLClient

    with pytest.raises(ValidationException, match="backend must be docker or process, got 'k8s'"):
        MLClient(backend="k8s")
    with pytest.raises(ValidationException, match="got Model"):
        ml.begin_create_or_update(Model(name="m", path="."))
    with pytest.raises(ValidationException, match="only batch endpoint jobs run locally"):
        ml.jobs.create_or_update(object())


# -- endpoints -------------------------------------------------------------------------------------------


def test_endpoint_create_get_list_delete(ml: Any) -> None:
    poller = ml.begin_create_or_update(BatchEndpoint(name="mnist-batch", description="d", tags={"type": "dl"}))
    assert isinstance(poller, LROPoller) and poller.done() and poller.wait() is None
    created = poller.result()
    assert isinstance(created, BatchEndpoint) and created.provisioning_state == "Succeeded"
    got = ml.batch_endpoints.get("MNIST-BATCH")  # names ignore case
    assert (got.name, got.description, got.tags, got.scoring_uri) == ("mnist-batch", "d", {"type": "dl"}, None)
    assert got.id.endswith("/batchEndpoints/mnist-batch") and got.creation_context.created_at is not None
    listed = ml.batch_endpoints.list()
    assert isinstance(listed, ItemPaged) and [e.name for e in listed] == ["mnist-batch"]
    assert ml.batch_endpoints.begin_delete(name="mnist-batch").result() is None
    with pytest.raises(ResourceNotFoundError, match="^batch endpoint 'mnist-batch' not found$"):
        ml.batch_endpoints.get("mnist-batch")


def test_endpoint_scoring_uri_while_a_server_runs(ml: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from bepbuild.web import state

    ml.begin_create_or_update(BatchEndpoint(name="served-ep")).result()
    monkeypatch.setattr(state, "scoring_uri", lambda name, home=None: f"http://127.0.0.1:8765/endpoints/{name}/jobs")
    assert ml.batch_endpoints.get("served-ep").scoring_uri == "http://127.0.0.1:8765/endpoints/served-ep/jobs"


def test_bad_endpoint_is_a_validation_exception_with_bepbuild_s_line(ml: Any) -> None:
    with pytest.raises(ValidationException) as caught:
        ml.batch_endpoints.begin_create_or_update(BatchEndpoint(name="x"))
    assert str(caught.value).startswith("BatchEndpoint 'x': name: the name for an endpoint must be at least 3")
    assert "\n" not in str(caught.value)
    with pytest.raises(ValidationException, match=r"defaults.deployment_name: deployment 'nope' does not exist"):
        ml.begin_create_or_update(BatchEndpoint(name="ep-ok", defaults={"deployment_name": "nope"}))


# -- assets and computes ---------------------------------------------------------------------------------


def test_models_register_relative_to_the_working_directory_and_get_latest(ml: Any, tmp_path: Path) -> None:
    scoring_folder(tmp_path)
    first = ml.models.create_or_update(Model(name="clf", path="model/", type=AssetTypes.CUSTOM_MODEL))
    assert isinstance(first, Model) and first.version == "1" and Path(first.path).name == "model"
    (tmp_path / "model" / "w.txt").write_text("2\n")
    ml.models.create_or_update(Model(name="clf", path="model/", description="second"))
    latest = ml.models.get(name="clf", label="latest")
    assert (latest.version, latest.description) == ("2", "second")
    assert ml.models.get("clf", version=1).version == "1"
    assert [m.version for m in ml.models.list(name="clf")] == ["1", "2"]
    assert [m.name for m in ml.models.list()] == ["clf"]
    ml.models.archive("clf", version="2")
    assert ml.models.get("clf", label="latest").version == "1"
    with pytest.raises(ValidationException, match=r"^Model 'gone': path: path not found"):
        ml.models.create_or_update(Model(name="gone", path="missing/"))
    with pytest.raises(ResourceNotFoundError):
        ml.models.get("nope", label="latest")


def test_environment_and_data_assets(ml: Any, tmp_path: Path) -> None:
    (tmp_path / "conda.yaml").write_text("dependencies:\n  - python=3.11\n  - pip:\n    - pandas\n")
    env = ml.environments.create_or_update(Environment(name="env1", conda_file="conda.yaml", image="img:1"))
    assert (env.version, env.image, env.conda_file["dependencies"][0]) == ("1", "img:1", "python=3.11")
    assert ml.environments.get("env1", label="latest").id.endswith("/environments/env1/versions/1")
    with pytest.raises(ValidationException, match="one of image or build is required"):
        ml.environments.create_or_update(Environment(name="env2"))
    make_inputs(tmp_path / "data", 2)
    data = ml.data.create_or_update(Data(name="inputs", path="data", type=AssetTypes.URI_FOLDER))
    assert (data.version, str(data.path)) == ("1", str(tmp_path / "data"))
    assert ml.data.get("inputs", label="latest").type == "uri_folder"


def test_compute_create_list_get_keeps_local_limits(ml: Any) -> None:
    if not any(filter(lambda m: m.name == "batch-cluster", ml.compute.list())):
        ml.compute.begin_create_or_update(AmlCompute(name="batch-cluster", min_instances=0, max_instances=2)).result()
    got = ml.compute.get(name="batch-cluster")
    assert isinstance(got, AmlCompute) and got.provisioning_state == "Succeeded" and got.max_instances == 2
    store = Store.open()
    try:
        store.put_compute("batch-cluster", store.get_compute("batch-cluster") | {"cpus": 1.5})
    finally:
        store.close()
    ml.begin_create_or_update(AmlCompute(name="batch-cluster", max_instances=4)).result()
    store = Store.open()
    try:
        assert store.get_compute("batch-cluster")["cpus"] == 1.5 and store.get_compute("batch-cluster")[
            "max_instances"] == 4
    finally:
        store.close()
    with pytest.raises(ValidationException, match=r"min_instances \(5\) is larger than max_instances \(4\)"):
        ml.compute.begin_create_or_update(AmlCompute(name="bad", min_instances=5, max_instances=4))
    ml.compute.begin_delete("batch-cluster").result()
    assert list(ml.compute.list()) == []


def test_default_datastore_id_is_what_params_override_takes(ml: Any) -> None:
    ds = ml.datastores.get_default()
    assert ds.name == "workspaceblobstore" and "/datastores/workspaceblobstore" in ds.id
    sets, out = invoking.overrides([{"output_dataset.datastore_id": f"azureml:{ds.id}"},
                                    {"output_dataset.path": "/my-ep/"}, {"output_file_name": "p.csv"}])
    assert (sets, out) == (["output_file_name=p.csv"], "azureml://datastores/workspaceblobstore/paths/my-ep")
    assert invoking.overrides([{"mini_batch_size": "20"}, {"compute": {"instance_count": "5"}}]) == (
        ["mini_batch_size=20", "compute.instance_count=5"], None)


# -- deployments, invoke, jobs ---------------------------------------------------------------------------


def test_deployment_create_get_list_and_default(ml: Any, tmp_path: Path, fake_build: list[Any]) -> None:
    dep = deployed(ml, tmp_path, mini_batch_size=3, max_concurrency_per_instance=2)
    (loaded,) = fake_build
    assert loaded.paths["code"] == tmp_path / "code" and loaded.spec.settings.mini_batch_size == 3
    assert isinstance(dep, ModelBatchDeployment) and dep.provisioning_state == "Succeeded"
    assert dep.settings.mini_batch_size == 3 and dep.settings.max_concurrency_per_instance == 2
    assert [d.name for d in ml.batch_deployments.list(endpoint_name=ENDPOINT)] == ["sdk-dpl"]
    assert ml.batch_deployments.get("SDK-DPL", ENDPOINT).name == "sdk-dpl"
    endpoint = ml.batch_endpoints.get(ENDPOINT)
    assert endpoint.defaults.deployment_name == "sdk-dpl"  # the first deployment is the default
    deployed(ml, tmp_path, name="second-dpl")
    endpoint = ml.batch_endpoints.get(ENDPOINT)
    endpoint.defaults.deployment_name = "second-dpl"
    assert ml.batch_endpoints.begin_create_or_update(endpoint).result().defaults.deployment_name == "second-dpl"
    ml.batch_deployments.begin_delete(name="second-dpl", endpoint_name=ENDPOINT).result()
    assert ml.batch_endpoints.get(ENDPOINT).defaults.deployment_name is None


def test_deployment_needs_its_endpoint(ml: Any, tmp_path: Path, fake_build: list[Any]) -> None:
    scoring_folder(tmp_path)
    dep = ModelBatchDeployment(name="orphan", endpoint_name="no-such-ep", model=Model(name="m", path="model"),
                               environment=Environment(name="e", image="img"),
                               code_configuration=CodeConfiguration(code="code", scoring_script="score.py"))
    with pytest.raises(ResourceNotFoundError, match="batch endpoint 'no-such-ep' not found"):
        ml.batch_deployments.begin_create_or_update(dep)


def test_invoke_stream_get_children_download_and_list_jobs(ml: Any, tmp_path: Path, fake_build: list[Any],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from bepbuild import MLClient

    ml = MLClient(backend="process")
    deployed(ml, tmp_path)
    names = make_inputs(tmp_path / "data", 5)
    job = ml.batch_endpoints.invoke(endpoint_name=ENDPOINT, input=Input(path="data", type=AssetTypes.URI_FOLDER))
    assert isinstance(job, BatchJob) and job.name and job.status in ("Queued", "Preparing", "Running")
    ml.jobs.stream(job.name)
    assert "Status: Completed" in capsys.readouterr().out
    got = ml.jobs.get(job.name)
    assert isinstance(got, PipelineJob) and got.status == "Completed" and got.experiment_name == ENDPOINT
    scoring_job = list(ml.jobs.list(parent_job_name=job.name))[0]
    assert scoring_job.status == "Completed"
    assert (scoring_job.creation_context.last_modified_at - scoring_job.creation_context.created_at).days == 0
    ml.jobs.download(name=scoring_job.name, download_path=str(tmp_path / "dl"), output_name="score")
    rows = (tmp_path / "dl" / "named-outputs" / "score" / "predictions.csv").read_text().splitlines()
    assert sorted(r.split()[0] for r in rows) == sorted(names)
    assert [j.name for j in ml.batch_endpoints.list_jobs(endpoint_name=ENDPOINT)] == [job.name]
    assert [j.name for j in ml.batch_deployments.list_jobs(ENDPOINT, name="sdk-dpl")] == [job.name]


def test_invoke_params_override_and_datastore_output(ml: Any, tmp_path: Path, fake_build: list[Any]) -> None:
    from bepbuild import MLClient

    ml = MLClient(backend="process")
    deployed(ml, tmp_path)
    make_inputs(tmp_path / "data", 5)
    job = ml.batch_endpoints.invoke(endpoint_name=ENDPOINT, input=Input(path="data"),
                                    params_override=[{"mini_batch_size": "2"}, {"compute.instance_count": "2"}])
    ml.jobs.stream(job.name)
    props = ml.jobs.get(job.name).properties
    assert props["output_file"].endswith("predictions.csv")
    store = Store.open()
    try:
        record = store.get_job(job.name)
    finally:
        store.close()
    assert record["settings"]["mini_batch_size"] == 2 and record["settings"]["instance_count"] == 2
    batch_ds = ml.datastores.get_default()
    job = ml.batch_endpoints.invoke(
        endpoint_name=ENDPOINT, input=Input(path="data"), job_name="to-datastore",
        params_override=[{"output_dataset.datastore_id": f"azureml:{batch_ds.id}"},
                         {"output_dataset.path": f"/{ENDPOINT}/"}, {"output_file_name": "p.csv"}])
    assert job.name == "to-datastore"
    ml.jobs.stream(job.name)
    out = config.home() / "datastores" / "workspaceblobstore" / ENDPOINT / "p.csv"
    assert len(pd.read_csv(out, header=None, sep=" ")) == 5
    with pytest.raises(ResourceExistsError, match="output file exists"):  # never overwritten
        ml.batch_endpoints.invoke(
            endpoint_name=ENDPOINT, input=Input(path="data"),
            params_override=[{"output_dataset.datastore_id": f"azureml:{batch_ds.id}"},
                             {"output_dataset.path": f"/{ENDPOINT}/"}, {"output_file_name": "p.csv"}])


def test_invoke_refusals_are_one_line(ml: Any, tmp_path: Path, fake_build: list[Any]) -> None:
    from bepbuild import MLClient

    ml = MLClient(backend="process")
    deployed(ml, tmp_path)
    make_inputs(tmp_path / "data", 1)
    with pytest.raises(ValidationException, match=r"^params_override: model cannot be changed per job; one of "):
        ml.batch_endpoints.invoke(endpoint_name=ENDPOINT, input=Input(path="data"), params_override=[{"model": "x"}])
    with pytest.raises(ValidationException, match="literal inputs are for pipeline deployments"):
        ml.batch_endpoints.invoke(endpoint_name=ENDPOINT, inputs={"n": Input(type="integer", default=3)})
    with pytest.raises(ValidationException, match="settings.mini_batch_size|mini_batch_size"):
        ml.batch_endpoints.invoke(endpoint_name=ENDPOINT, input=Input(path="data"),
                                  params_override=[{"mini_batch_size": "0"}])
    with pytest.raises(ResourceNotFoundError):
        ml.batch_endpoints.invoke(endpoint_name="no-such-ep", input=Input(path="data"))
    with pytest.raises(ResourceNotFoundError):
        ml.jobs.get("no-such-job")


def test_outputs_argument_and_cancel(ml: Any, tmp_path: Path, fake_build: list[Any]) -> None:
    from bepbuild import MLClient

    ml = MLClient(backend="process")
    deployed(ml, tmp_path)
    make_inputs(tmp_path / "data", 2)
    job = ml.batch_endpoints.invoke(
        endpoint_name=ENDPOINT, inputs={"heart_dataset": Input(type=AssetTypes.URI_FOLDER, path="data")},
        outputs={"score": Output(type=AssetTypes.URI_FOLDER, path=str(tmp_path / "scores"))})
    ml.jobs.stream(job.name)
    assert (tmp_path / "scores" / "predictions.csv").exists()
    with pytest.raises(ResourceExistsError, match="already ended"):
        ml.jobs.begin_cancel(job.name)


def test_failed_job_stream_raises_job_exception(ml: Any, tmp_path: Path, fake_build: list[Any]) -> None:
    from bepbuild import MLClient

    ml = MLClient(backend="process")
    deployed(ml, tmp_path)
    register("def init():\n    raise RuntimeError('boom')\n\ndef run(b):\n    return b\n", endpoint=ENDPOINT,
             deployment="broken-dpl", default=False, retry_settings={"max_retries": 0, "timeout": 30})
    make_inputs(tmp_path / "data", 1)
    job = ml.batch_endpoints.invoke(endpoint_name=ENDPOINT, deployment_name="broken-dpl", input=Input(path="data"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(JobException, match=f"^job {job.name} Failed: "):
            ml.jobs.stream(job.name)


def test_invoke_a_data_asset_by_its_id(ml: Any, tmp_path: Path, fake_build: list[Any]) -> None:
    from bepbuild import MLClient

    ml = MLClient(backend="process")
    deployed(ml, tmp_path)
    names = make_inputs(tmp_path / "data", 3)
    ml.data.create_or_update(Data(name="heart-dataset-unlabeled", path="data", type=AssetTypes.URI_FOLDER))
    heart_dataset_unlabeled = ml.data.get(name="heart-dataset-unlabeled", label="latest")
    job = ml.batch_endpoints.invoke(endpoint_name=ENDPOINT,  # as Azure's heart-classifier notebook passes it
                                    input=Input(type=AssetTypes.URI_FOLDER, path=heart_dataset_unlabeled.id))
    ml.jobs.stream(job.name)
    out = Path(ml.jobs.get(job.name).properties["output_file"])
    assert sorted(r.split()[0] for r in out.read_text().splitlines()) == names
