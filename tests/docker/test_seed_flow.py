"""The seed documents' whole flow, every command line in order, `az ml` replaced by `bepbuild`.

The Azure storage URL of the sample data is replaced by the bundled folder of PNG digits. Each
step checks its result the way a person following the documents would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
BEPBUILD = [str(Path(sys.executable).with_name("bepbuild"))]

pytestmark = pytest.mark.docker


def bep(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*BEPBUILD, *args], cwd=cwd, capture_output=True, text=True, env=os.environ.copy())
    if ok:
        assert proc.returncode == 0, f"bepbuild {' '.join(args)} failed:\n{proc.stderr[-3000:]}"
    return proc


def read_predictions(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, header=None, names=["file", "class", "probability"], sep=" ")


def test_seed_flow(tmp_path: Path) -> None:
    work = tmp_path / "mnist"
    shutil.copytree(REPO / "examples" / "mnist", work, ignore=shutil.ignore_patterns("train"))
    sample = work / "sample"
    n_files = len(list(sample.glob("*.png")))
    labels = pd.read_csv(work / "sample-labels.csv")

    # 1. compute
    out = bep(
        "compute",
        "create",
        "-n",
        "batch-cluster",
        "--type",
        "amlcompute",
        "--min-instances",
        "0",
        "--max-instances",
        "5",
        cwd=work,
    )
    assert json.loads(out.stdout)["max_instances"] == 5
    # 2. endpoint
    endpoint = "mnist-batch"
    bep("batch-endpoint", "create", "--file", "endpoint.yml", "--name", endpoint, cwd=work)
    assert (
        bep("batch-endpoint", "show", "--name", endpoint, "--query", "name", "-o", "tsv", cwd=work).stdout.strip()
        == endpoint
    )
    # 3. model
    out = bep(
        "model",
        "create",
        "--name",
        "mnist-classifier-torch",
        "--type",
        "custom_model",
        "--path",
        "deployment-torch/model",
        cwd=work,
    )
    assert json.loads(out.stdout)["version"] == "1"
    # 4. torch deployment, default
    out = bep(
        "batch-deployment",
        "create",
        "--file",
        "deployment-torch/deployment.yml",
        "--endpoint-name",
        endpoint,
        "--set-default",
        "-q",
        cwd=work,
    )
    torch_dep = json.loads(out.stdout)
    assert torch_dep["image"].startswith("bepbuild/mnist-batch/mnist-torch-dpl:")
    ep = json.loads(bep("batch-endpoint", "show", "--name", endpoint, cwd=work).stdout)
    assert ep["defaults"]["deployment_name"] == "mnist-torch-dpl"
    # 5. show
    shown = json.loads(
        bep("batch-deployment", "show", "--name", "mnist-torch-dpl", "--endpoint-name", endpoint, cwd=work).stdout
    )
    assert shown["settings"]["max_concurrency_per_instance"] == 2 and shown["image"] == torch_dep["image"]
    # 6. invoke, name only
    job = bep(
        "batch-endpoint",
        "invoke",
        "--name",
        endpoint,
        "--input",
        "sample",
        "--input-type",
        "uri_folder",
        "--query",
        "name",
        "-o",
        "tsv",
        "-q",
        cwd=work,
    ).stdout.strip()
    assert len(job) == 36 and job.count("-") == 4  # a GUID
    # 7. job show --web
    proc = bep("job", "show", "-n", job, "--web", cwd=work)
    shown_job = json.loads(proc.stdout)
    assert shown_job["status"] == "Completed" and shown_job["job_dir"] in proc.stderr
    pred = read_predictions(Path(shown_job["output_file"]))
    assert sorted(pred["file"]) == sorted(p.name for p in sample.glob("*.png"))
    merged = pred.merge(labels, on="file")
    assert (merged["class"] == merged["label"]).mean() >= 0.9
    # 8. output path + file name; the same file again is refused and left as it was
    out_dir = tmp_path / "scores"
    args = [
        "batch-endpoint",
        "invoke",
        "--name",
        endpoint,
        "--input",
        "sample",
        "--output-path",
        str(out_dir),
        "--set",
        "output_file_name=predictions_1.csv",
        "--query",
        "name",
        "-o",
        "tsv",
        "-q",
    ]
    bep(*args, cwd=work)
    target = out_dir / "predictions_1.csv"
    assert len(read_predictions(target)) == n_files
    before = target.read_bytes()
    refused = bep(*args, cwd=work, ok=False)
    assert refused.returncode == 2 and "predictions_1.csv" in refused.stderr
    assert target.read_bytes() == before
    # 9. per-job overrides
    job9 = bep(
        "batch-endpoint",
        "invoke",
        "--name",
        endpoint,
        "--input",
        "sample",
        "--mini-batch-size",
        "20",
        "--instance-count",
        "5",
        "--query",
        "name",
        "-o",
        "tsv",
        "-q",
        cwd=work,
    ).stdout.strip()
    j9 = json.loads(bep("job", "show", "-n", job9, cwd=work).stdout)
    assert j9["settings"]["mini_batch_size"] == 20 and j9["settings"]["instance_count"] == 5
    assert j9["counts"]["mini_batches"] == -(-n_files // 20)
    assert len(read_predictions(Path(j9["output_file"]))) == n_files
    # 10. keras deployment, not default
    bep(
        "batch-deployment",
        "create",
        "--file",
        "deployment-keras/deployment.yml",
        "--endpoint-name",
        endpoint,
        "-q",
        cwd=work,
    )
    ep = json.loads(bep("batch-endpoint", "show", "--name", endpoint, cwd=work).stdout)
    assert ep["defaults"]["deployment_name"] == "mnist-torch-dpl"
    # 11. invoke the non-default deployment
    job11 = bep(
        "batch-endpoint",
        "invoke",
        "--name",
        endpoint,
        "--deployment-name",
        "mnist-keras-dpl",
        "--input",
        "sample",
        "--input-type",
        "uri_folder",
        "--query",
        "name",
        "-o",
        "tsv",
        "-q",
        cwd=work,
    ).stdout.strip()
    j11 = json.loads(bep("job", "show", "-n", job11, cwd=work).stdout)
    assert j11["deployment"] == "mnist-keras-dpl" and j11["status"] == "Completed"
    keras_pred = read_predictions(Path(j11["output_file"])).merge(labels, on="file")
    assert len(keras_pred) == n_files and (keras_pred["class"] == keras_pred["label"]).mean() >= 0.9
    # 12. change the default
    bep("batch-endpoint", "update", "--name", endpoint, "--set", "defaults.deployment_name=mnist-keras-dpl", cwd=work)
    assert (
        bep(
            "batch-endpoint", "show", "--name", endpoint, "--query", "defaults.deployment_name", "-o", "tsv", cwd=work
        ).stdout.strip()
        == "mnist-keras-dpl"
    )
    # 13. delete the torch deployment
    bep("batch-deployment", "delete", "--name", "mnist-torch-dpl", "--endpoint-name", endpoint, "--yes", cwd=work)
    names = json.loads(bep("batch-deployment", "list", "--endpoint-name", endpoint, cwd=work).stdout)
    assert [d["name"] for d in names] == ["mnist-keras-dpl"]
    # 14. delete the endpoint; the jobs stay
    bep("batch-endpoint", "delete", "--name", endpoint, "--yes", cwd=work)
    assert bep("batch-endpoint", "show", "--name", endpoint, cwd=work, ok=False).returncode == 2
    jobs = json.loads(bep("job", "list", cwd=work).stdout)
    assert {job, job9, job11} <= {j["name"] for j in jobs}
