"""Azure's batch-endpoint notebooks, written with the SDK's classes, run against the engine with
`bepbuild.MLClient`: one test per example (MNIST torch and keras, MLflow no-code, parquet outputs).

Each test is the notebook's cells in order, with the client line changed and Azure's sample URLs
replaced by the example's bundled folder. The examples' images are built in one BEPBUILD_HOME per
module (the wheelhouse is filled once) and removed at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from azure.ai.ml import Input
from azure.ai.ml.constants import AssetTypes, BatchDeploymentOutputAction
from azure.ai.ml.entities import (
    AmlCompute,
    BatchEndpoint,
    BatchRetrySettings,
    CodeConfiguration,
    Data,
    Environment,
    Model,
    ModelBatchDeployment,
    ModelBatchDeploymentSettings,
)
from azure.identity import DefaultAzureCredential

from bepbuild import MLClient  # the one line that differs from Azure's notebooks

REPO = Path(__file__).resolve().parents[2]
DOCKER = "/usr/bin/docker"

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def examples_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One registry for the module; the images its deployments built are removed afterwards."""
    home = tmp_path_factory.mktemp("sdk-home")
    yield home
    for endpoint in _endpoints:
        ids = subprocess.run([DOCKER, "images", "-q", "--filter", f"label=io.bepbuild.endpoint={endpoint}"],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run([DOCKER, "rmi", "-f", *sorted(set(ids))], capture_output=True)


_endpoints: list[str] = []


@pytest.fixture
def notebook(examples_home: Path, bepbuild_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Run in a copy of an example folder, as a notebook beside it would."""

    def enter(example: str) -> Path:
        monkeypatch.setenv("BEPBUILD_HOME", str(examples_home))
        work = tmp_path / example
        shutil.copytree(REPO / "examples" / example, work, ignore=shutil.ignore_patterns("train"))
        monkeypatch.chdir(work)
        return work

    return enter


def endpoint_name_for(prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:5]}"
    _endpoints.append(name)
    return name


def read_predictions(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, names=["file", "class", "probabilities"], sep=" ")


def test_mnist_torch_notebook(notebook, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    work = notebook("mnist")
    labels = pd.read_csv(work / "sample-labels.csv")

    ml_client = MLClient.from_config(DefaultAzureCredential())
    endpoint_name = endpoint_name_for("mnist-batch")
    endpoint = BatchEndpoint(name=endpoint_name,
                             description="A batch endpoint for scoring images from the MNIST dataset.",
                             tags={"type": "deep-learning"})
    ml_client.begin_create_or_update(endpoint).result()

    model_name = "mnist-classifier-torch"
    model = ml_client.models.create_or_update(
        Model(name=model_name, path="deployment-torch/model/", type=AssetTypes.CUSTOM_MODEL))
    model = ml_client.models.get(name=model_name, label="latest")

    compute_name = "batch-cluster"
    if not any(filter(lambda m: m.name == compute_name, ml_client.compute.list())):
        compute_cluster = AmlCompute(name=compute_name, description="CPU cluster compute", min_instances=0,
                                     max_instances=5)
        ml_client.compute.begin_create_or_update(compute_cluster).result()
    while ml_client.compute.get(name=compute_name).provisioning_state == "Creating":
        time.sleep(1)

    env = Environment(name="batch-torch-py38", conda_file="deployment-torch/environment/conda.yaml",
                      image="mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest")
    deployment = ModelBatchDeployment(
        name="mnist-torch-dpl", description="A deployment using Torch to solve the MNIST classification dataset.",
        endpoint_name=endpoint.name, model=model,
        code_configuration=CodeConfiguration(code="deployment-torch/code/", scoring_script="batch_driver.py"),
        environment=env, compute=compute_name,
        settings=ModelBatchDeploymentSettings(
            max_concurrency_per_instance=2, mini_batch_size=10, instance_count=2,
            output_action=BatchDeploymentOutputAction.APPEND_ROW, output_file_name="predictions.csv",
            retry_settings=BatchRetrySettings(max_retries=3, timeout=30), logging_level="info"),
    )
    ml_client.begin_create_or_update(deployment).result()

    endpoint = ml_client.batch_endpoints.get(endpoint_name)
    endpoint.defaults.deployment_name = deployment.name
    ml_client.batch_endpoints.begin_create_or_update(endpoint).result()
    assert ml_client.batch_endpoints.get(endpoint_name).defaults.deployment_name == "mnist-torch-dpl"

    input = Input(path="sample", type=AssetTypes.URI_FOLDER)  # Azure: https://azuremlexampledata.../mnist/sample
    job = ml_client.batch_endpoints.invoke(endpoint_name=endpoint.name, input=input)
    ml_client.jobs.get(job.name)
    ml_client.jobs.stream(job.name)
    assert "Status: Completed" in capsys.readouterr().out

    scoring_job = list(ml_client.jobs.list(parent_job_name=job.name))[0]
    assert scoring_job.status == "Completed"
    assert (scoring_job.creation_context.last_modified_at - scoring_job.creation_context.created_at).total_seconds() > 0
    ml_client.jobs.download(name=scoring_job.name, download_path=".", output_name="score")
    score = read_predictions("named-outputs/score/predictions.csv")
    assert sorted(score["file"]) == sorted(labels["file"])
    assert (score.merge(labels, on="file").eval("`class` == label")).mean() >= 0.9

    # The output in a datastore, under a named file.
    batch_ds = ml_client.datastores.get_default()
    job = ml_client.batch_endpoints.invoke(
        endpoint_name=endpoint.name, input=input,
        params_override=[{"output_dataset.datastore_id": f"azureml:{batch_ds.id}"},
                         {"output_dataset.path": f"/{endpoint.name}/"}, {"output_file_name": "predictions_1.csv"}])
    ml_client.jobs.stream(job.name)
    written = Path(os.environ["BEPBUILD_HOME"]) / "datastores" / batch_ds.name / endpoint.name / "predictions_1.csv"
    assert len(read_predictions(written)) == len(labels)

    # Per-job settings.
    job = ml_client.batch_endpoints.invoke(endpoint_name=endpoint.name, input=input,
                                           params_override=[{"mini_batch_size": "20"}, {"compute.instance_count": "5"}])
    ml_client.jobs.stream(job.name)
    got = ml_client.jobs.get(job.name)
    assert got.status == "Completed" and got.properties["mini_batches"] == str(-(-len(labels) // 20))

    jobs = ml_client.batch_endpoints.list_jobs(endpoint_name=endpoint.name)
    assert [j.status for j in jobs] == ["Completed"] * 3
    ml_client.batch_endpoints.begin_delete(name=endpoint.name).result()
    assert endpoint.name not in [e.name for e in ml_client.batch_endpoints.list()]


def test_mnist_keras_notebook(notebook, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    work = notebook("mnist")
    labels = pd.read_csv(work / "sample-labels.csv")
    ml_client = MLClient.from_config(DefaultAzureCredential())
    endpoint_name = endpoint_name_for("mnist-keras")
    ml_client.batch_endpoints.begin_create_or_update(BatchEndpoint(name=endpoint_name)).result()

    model = ml_client.models.create_or_update(
        Model(name="mnist-classifier-keras", path="deployment-keras/model/", type=AssetTypes.CUSTOM_MODEL))
    env = Environment(name="batch-tensorflow-py38", conda_file="deployment-keras/environment/conda.yaml",
                      image="mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest")
    deployment = ModelBatchDeployment(
        name="mnist-keras-dpl", description="A deployment using Keras with TensorFlow to solve the MNIST problem.",
        endpoint_name=endpoint_name, model=model,
        code_configuration=CodeConfiguration(code="deployment-keras/code/", scoring_script="batch_driver.py"),
        environment=env,
        settings=ModelBatchDeploymentSettings(
            max_concurrency_per_instance=2, mini_batch_size=10, instance_count=1,
            output_action=BatchDeploymentOutputAction.APPEND_ROW, output_file_name="predictions.csv",
            retry_settings=BatchRetrySettings(max_retries=3, timeout=30), logging_level="info"),
    )
    ml_client.batch_deployments.begin_create_or_update(deployment).result()
    assert [d.name for d in ml_client.batch_deployments.list(endpoint_name=endpoint_name)] == ["mnist-keras-dpl"]

    job = ml_client.batch_endpoints.invoke(endpoint_name=endpoint_name, deployment_name=deployment.name,
                                           input=Input(path="sample", type=AssetTypes.URI_FOLDER))
    ml_client.jobs.stream(job.name)
    assert "Status: Completed" in capsys.readouterr().out
    ml_client.jobs.download(name=job.name, download_path=".", output_name="score")
    score = read_predictions("named-outputs/score/predictions.csv")
    assert (score.merge(labels, on="file").eval("`class` == label")).mean() >= 0.9
    assert [j.name for j in ml_client.batch_deployments.list_jobs(endpoint_name, name=deployment.name)] == [job.name]
    ml_client.batch_endpoints.begin_delete(name=endpoint_name).result()


def test_heart_classifier_mlflow_no_code_notebook(notebook) -> None:  # noqa: ANN001
    work = notebook("heart-classifier-mlflow")
    ml_client = MLClient.from_config(DefaultAzureCredential())
    endpoint_name = endpoint_name_for("heart-classifier")
    endpoint = BatchEndpoint(name=endpoint_name, description="A heart condition classifier for batch inference")
    ml_client.batch_endpoints.begin_create_or_update(endpoint).result()

    model_name = "heart-classifier-mlflow"
    model = ml_client.models.create_or_update(Model(name=model_name, type=AssetTypes.MLFLOW_MODEL, path="model"))
    # No scoring script and no environment: bepbuild's generated MLflow driver and the model's own requirements.
    deployment = ModelBatchDeployment(
        name="classifier-sklearn-mlflow", description="A heart condition classifier based on an MLflow model",
        endpoint_name=endpoint.name, model=model,
        settings=ModelBatchDeploymentSettings(
            instance_count=2, max_concurrency_per_instance=2, mini_batch_size=2,
            output_action=BatchDeploymentOutputAction.APPEND_ROW, output_file_name="predictions.csv",
            retry_settings=BatchRetrySettings(max_retries=3, timeout=300), logging_level="info"),
    )
    ml_client.batch_deployments.begin_create_or_update(deployment).result()
    assert ml_client.batch_endpoints.get(endpoint.name).defaults.deployment_name == deployment.name

    dataset_name = "heart-dataset-unlabeled"
    ml_client.data.create_or_update(Data(path="data", type=AssetTypes.URI_FOLDER, name=dataset_name,
                                         description="An unlabeled dataset for heart classification"))
    heart_dataset_unlabeled = ml_client.data.get(name=dataset_name, label="latest")
    input = Input(type=AssetTypes.URI_FOLDER, path=heart_dataset_unlabeled.id)
    job = ml_client.batch_endpoints.invoke(endpoint_name=endpoint.name, input=input)
    ml_client.jobs.stream(job.name)
    scoring_job = list(ml_client.jobs.list(parent_job_name=job.name))[0]
    ml_client.jobs.download(name=scoring_job.name, download_path=".", output_name="score")
    score = pd.read_csv("named-outputs/score/predictions.csv", names=["row", "prediction", "file"])
    want = pd.read_csv(work / "sample-labels.csv")
    merged = want.merge(score, on=["file", "row"], suffixes=("", "_job"), validate="one_to_one")
    assert len(merged) == len(want) == 171 and (merged["prediction_job"] == merged["prediction"]).all()
    ml_client.batch_endpoints.begin_delete(name=endpoint.name).result()


def test_custom_outputs_parquet_notebook(notebook) -> None:  # noqa: ANN001
    work = notebook("custom-outputs-parquet")
    ml_client = MLClient.from_config(DefaultAzureCredential())
    endpoint_name = endpoint_name_for("heart-parquet")
    ml_client.batch_endpoints.begin_create_or_update(
        BatchEndpoint(name=endpoint_name, description="A heart condition classifier for batch inference")).result()
    model = ml_client.models.create_or_update(
        Model(name="heart-classifier-sklpipe", type=AssetTypes.CUSTOM_MODEL, path="model"))
    environment = Environment(name="batch-sklearn-parquet", conda_file="environment/conda.yaml",
                              image="mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest")
    deployment = ModelBatchDeployment(
        name="classifier-sklearn-parquet", description="Writes one parquet file per input.",
        endpoint_name=endpoint_name, model=model, environment=environment,
        code_configuration=CodeConfiguration(code="code", scoring_script="batch_driver.py"),
        settings=ModelBatchDeploymentSettings(
            instance_count=2, max_concurrency_per_instance=2, mini_batch_size=2,
            output_action=BatchDeploymentOutputAction.SUMMARY_ONLY,
            retry_settings=BatchRetrySettings(max_retries=3, timeout=300), logging_level="info"),
    )
    ml_client.batch_deployments.begin_create_or_update(deployment).result()
    job = ml_client.batch_endpoints.invoke(endpoint_name=endpoint_name, deployment_name=deployment.name,
                                           input=Input(type=AssetTypes.URI_FOLDER, path="data"))
    ml_client.jobs.stream(job.name)
    assert ml_client.jobs.get(job.name).properties["summary"].endswith("items: 4 succeeded, 0 failed")
    ml_client.jobs.download(name=job.name, download_path=".", output_name="score")
    folder = work / "named-outputs" / "score"
    assert sorted(p.name for p in folder.iterdir()) == [f"unlabeled-{i}.parquet" for i in range(4)]
    want = pd.read_csv(work / "sample-labels.csv")
    for i in range(4):
        frame = pd.read_parquet(folder / f"unlabeled-{i}.parquet")
        assert frame["prediction"].tolist() == want[want["file"] == f"unlabeled-{i}.csv"]["prediction"].tolist()
    ml_client.batch_endpoints.begin_delete(name=endpoint_name).result()


def test_mnist_sdk_notebook_runs(notebook) -> None:  # noqa: ANN001
    """examples/mnist/sdk-notebook.ipynb, executed as Jupyter would (a fresh kernel, in its folder)."""
    import nbclient
    import nbformat

    work = notebook("mnist")
    nb = nbformat.read(work / "sdk-notebook.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": work}})
    try:
        client.execute()
    finally:
        for cell in nb.cells:  # the endpoint it made, for the images' removal
            for out in cell.get("outputs", []):
                text = out.get("text", "")
                if text.startswith("Endpoint name: "):
                    _endpoints.append(text.split(": ", 1)[1].strip())
    printed = "".join(out.get("text", "") for cell in nb.cells for out in cell.get("outputs", []))
    assert "100 images scored" in printed and "Status: Completed" in printed
    assert (work / "named-outputs" / "score" / "predictions.csv").exists()
