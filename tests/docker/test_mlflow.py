"""MLflow deployments on the real engine, through the CLI as a user runs them.

- heart-classifier-mlflow/deployment-simple (no code, no environment): the environment comes from
  the model's requirements.txt and the generated driver scores every row of every CSV. Expected
  predictions come from two independent places: the training script's own in-process predictions
  committed in sample-labels.csv (training venv, no bepbuild involved), and `model.predict()` called
  directly inside the built image (`docker run --entrypoint python3`) on the same rows.
- the driver's file handling in the image: parquet / pqt (pyarrow is in the generated environment),
  an unsupported extension and a cell that does not parse fail their file only.
- deployment-custom (a scoring script over the MLflow model) and custom-outputs-parquet
  (summary_only: one parquet per input, no predictions.csv).
- `model create --type mlflow_model` refusals, and pins that cannot install: one error line with the way out.
- examples/mlflow-py38: a model saved with Python 3.8 whose pins have no wheels for Python 3.11
  (scikit-learn 1.1.2) deploys with no environment, on a base with Python 3.8, and scores.

One BEPBUILD_HOME for the module, so the lock, wheelhouse and images are made once.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
HEART = REPO / "examples" / "heart-classifier-mlflow"
PARQUET = REPO / "examples" / "custom-outputs-parquet"
PY38 = REPO / "examples" / "mlflow-py38"
BEPBUILD = str(Path(sys.executable).with_name("bepbuild"))
DOCKER = "/usr/bin/docker"
ENDPOINT = "heart-classifier-batch"
PY38_ENDPOINT = "tumour-classifier-py38"

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("mlflow-home")
    yield home
    environments: set[str] = set()
    for endpoint in (ENDPOINT, PY38_ENDPOINT):
        listed = bep(home, "batch-deployment", "list", "--endpoint-name", endpoint, "-o", "json", ok=False)
        if listed.returncode == 0:
            environments |= {d["environment_image"] for d in json.loads(listed.stdout) if d.get("environment_image")}
    images = subprocess.run([DOCKER, "images", "-q", "--filter", f"reference=bepbuild/{ENDPOINT.lower()}/*",
                             "--filter", f"reference=bepbuild/{PY38_ENDPOINT}/*"],
                            capture_output=True, text=True).stdout.split()
    if images:
        subprocess.run([DOCKER, "rmi", "-f", *sorted(set(images))], capture_output=True)
    # Their environment images too, unless a deployment image (of a session running now) was built from one.
    for tag in sorted(environments):
        users = subprocess.run([DOCKER, "images", "-q", "--filter", f"label=io.bepbuild.environment-image={tag}"],
                               capture_output=True, text=True).stdout.split()
        if not users:
            subprocess.run([DOCKER, "rmi", tag], capture_output=True)


def bep(home: Path, *args: str, cwd: Path = HEART, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"BEPBUILD_HOME": str(home)}
    proc = subprocess.run([BEPBUILD, *args], cwd=cwd, capture_output=True, text=True, env=env)
    if ok:
        assert proc.returncode == 0, f"bepbuild {' '.join(args)} failed:\n{proc.stderr[-3000:]}"
    return proc


def invoke(home: Path, deployment: str, data: Path, cwd: Path = HEART) -> dict:
    name = bep(home, "batch-endpoint", "invoke", "--name", ENDPOINT, "--deployment-name", deployment,
               "--input", str(data), "--query", "name", "-o", "tsv", "-q", cwd=cwd).stdout.strip()
    return json.loads(bep(home, "job", "show", "-n", name).stdout)


def labels() -> pd.DataFrame:
    return pd.read_csv(HEART / "sample-labels.csv")


def run_in_image(image: str, script: str, *mounts: str) -> str:
    cmd = [DOCKER, "run", "--rm", "--network", "none", "--entrypoint", "python3"]
    for m in mounts:
        cmd += ["-v", m]
    proc = subprocess.run([*cmd, image, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def simple(home: Path) -> dict:
    """The registered MLflow model and the no-code deployment, as Azure's walkthrough does it."""
    bep(home, "model", "create", "--name", "heart-classifier-mlflow", "--type", "mlflow_model", "--path", "model")
    return json.loads(bep(home, "deploy", "deployment-simple/deployment.yml", "--set-default", "-q").stdout)


def test_generated_environment_and_driver(simple: dict) -> None:
    assert simple["code_configuration"] == {"code": None, "scoring_script": "mlflow_driver.py", "generated": True}
    assert simple["environment"] == "azureml:heart-classifier-mlflow-env:1" and simple["strategy"] == "pip"
    assert any("installing mlflow-skinny==3.17.2 instead" in n for n in simple["notices"])
    # mlflow-skinny, not mlflow: none of the tracking server's stack is in the image.
    found = run_in_image(simple["image"], (
        "import importlib.util as u, importlib.metadata as m; "
        "print(m.version('mlflow-skinny'), [n for n in ('flask', 'sqlalchemy', 'matplotlib', 'alembic') "
        "if u.find_spec(n)], bool(u.find_spec('pyarrow')), bool(u.find_spec('PIL')))"))
    assert found.split(" ", 1) == ["3.17.2", "[] True True\n"]


def test_every_row_of_every_csv_is_scored(home: Path, simple: dict) -> None:
    job = invoke(home, "classifier-sklearn-mlflow", HEART / "data")
    assert job["status"] == "Completed"
    assert job["summary"] == "2 mini-batches (0 failed); items: 4 succeeded, 0 failed"
    got = pd.read_csv(job["output_file"], names=["row", "prediction", "file"])  # as Azure's notebooks read it
    want = labels()
    assert len(got) == len(want) == 171 and not got.duplicated(["file", "row"]).any()
    merged = want.merge(got, on=["file", "row"], suffixes=("", "_job"), validate="one_to_one")
    assert len(merged) == 171
    # 1. the training script's in-process predictions (committed when the model was trained)
    assert (merged["prediction_job"] == merged["prediction"]).all()
    # 2. the model called directly in the same image, on the same rows
    direct = json.loads(run_in_image(simple["image"], (
        "import glob, json, os, mlflow.pyfunc, pandas as pd; "
        "m = mlflow.pyfunc.load_model('/opt/bepbuild/model/model'); "
        "print(json.dumps({os.path.basename(f): m.predict(pd.read_csv(f)).tolist() "
        "for f in sorted(glob.glob('/data/*.csv'))}))"), f"{HEART / 'data'}:/data:ro"))
    for name, predictions in direct.items():
        from_job = got[got["file"] == name].sort_values("row")["prediction"].tolist()
        assert from_job == predictions, name
    assert (merged["prediction_job"] == merged["label"]).mean() > 0.9


def test_file_types_and_failed_files(home: Path, simple: dict, tmp_path: Path) -> None:
    data = tmp_path / "mixed"
    data.mkdir()
    shutil.copy(HEART / "data" / "unlabeled-3.csv", data / "a.csv")
    bad = pd.read_csv(HEART / "data" / "unlabeled-3.csv", dtype=str)
    bad.iloc[4, 0] = "abc"
    bad.to_csv(data / "bad.csv", index=False)
    (data / "events.avro").write_bytes(b"Obj\x01not really avro")
    # parquet needs pyarrow: the test venv has none, the generated environment has it.
    data.chmod(0o777)
    run_in_image(simple["image"], (
        "import pandas as pd; df = pd.read_csv('/d/a.csv'); "
        "df.to_parquet('/d/b.parquet'); df.head(5).to_parquet('/d/c.pqt')"), f"{data}:/d")
    job = invoke(home, "classifier-sklearn-mlflow", data)
    assert job["status"] == "Completed"  # error_threshold -1: failed files do not fail the job
    assert job["summary"].endswith("items: 3 succeeded, 2 failed")
    got = pd.read_csv(job["output_file"], names=["row", "prediction", "file"])
    assert got.groupby("file").size().to_dict() == {"a.csv": 21, "b.parquet": 21, "c.pqt": 5}
    want = labels().query("file == 'unlabeled-3.csv'")["prediction"].tolist()
    for name in ("a.csv", "b.parquet"):
        assert got[got["file"] == name].sort_values("row")["prediction"].tolist() == want
    logs = "".join(p.read_text() for p in (Path(job["job_dir"]) / "logs" / "user" / "stderr").rglob("*.txt"))
    assert "Error processing input file: '/mnt/bepbuild/inputs/events.avro'. File type 'avro' is not supported" in logs
    assert "Error processing input file: '/mnt/bepbuild/inputs/bad.csv'. ValueError: could not convert string " \
           "to float: 'abc'" in logs


def test_custom_scoring_script_over_the_mlflow_model(home: Path, simple: dict) -> None:
    dep = json.loads(bep(home, "deploy", "deployment-custom/deployment.yml", "-q").stdout)
    assert dep["code_configuration"]["scoring_script"] == "batch_driver.py"
    job = invoke(home, "classifier-sklearn-custom", HEART / "data")
    assert job["status"] == "Completed"
    # One row per input row, space-separated: the 30 inputs, filename, prediction.
    out = pd.read_csv(job["output_file"], header=None, sep=" ")
    assert out.shape == (171, 32)
    got = out.rename(columns={30: "file", 31: "prediction"})
    got["row"] = got.groupby("file").cumcount()  # each file's rows come out in order
    merged = labels().merge(got[["file", "row", "prediction"]], on=["file", "row"], suffixes=("", "_job"))
    assert len(merged) == 171 and (merged["prediction_job"] == merged["prediction"]).all()


def test_custom_outputs_parquet(home: Path) -> None:
    bep(home, "model", "create", "--name", "heart-classifier-sklpipe", "--type", "custom_model", "--path", "model",
        cwd=PARQUET)
    dep = json.loads(bep(home, "deploy", "deployment.yml", "-q", cwd=PARQUET).stdout)
    assert dep["settings"]["output_action"] == "summary_only"
    job = invoke(home, "classifier-sklearn-parquet", PARQUET / "data", cwd=PARQUET)
    assert job["status"] == "Completed" and job["output_file"] is None
    assert job["summary"].endswith("items: 4 succeeded, 0 failed")
    out_dir = Path(job["output_dir"])
    assert sorted(p.name for p in out_dir.iterdir()) == [f"unlabeled-{i}.parquet" for i in range(4)]
    predictions = json.loads(run_in_image(dep["image"], (
        "import glob, json, os, pandas as pd; "
        "print(json.dumps({os.path.basename(f): pd.read_parquet(f).to_dict(orient='list') "
        "for f in sorted(glob.glob('/out/*.parquet'))}))"), f"{out_dir}:/out:ro"))
    want = pd.read_csv(PARQUET / "sample-labels.csv")
    for i in range(4):
        frame = predictions[f"unlabeled-{i}.parquet"]
        source = pd.read_csv(PARQUET / "data" / f"unlabeled-{i}.csv")
        assert list(frame) == [*source.columns, "prediction"]
        assert frame["mean radius"] == source["mean radius"].tolist()
        assert frame["prediction"] == want[want["file"] == f"unlabeled-{i}.csv"]["prediction"].tolist()


def test_model_create_mlflow_refusals(home: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "model.pkl").write_bytes(b"x")
    proc = bep(home, "model", "create", "--name", "nope", "--type", "mlflow_model", "--path", str(plain), ok=False)
    assert proc.returncode == 2
    assert proc.stderr == f"error: {plain}: an mlflow_model must be a folder with an MLmodel file\n"
    flavorless = tmp_path / "flavorless"
    shutil.copytree(HEART / "model", flavorless)
    mlmodel = flavorless / "MLmodel"
    mlmodel.write_text(mlmodel.read_text().replace("python_function:", "not_pyfunc:"))
    proc = bep(home, "model", "create", "--name", "nope", "--type", "mlflow_model", "--path", str(flavorless),
               ok=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: ") and "only MLflow models with the python_function flavor" in proc.stderr
    assert "flavors: not_pyfunc, sklearn" in proc.stderr


def test_pins_that_cannot_install_are_one_error_line_and_can_be_overridden(home: Path, simple: dict,
                                                                          tmp_path: Path) -> None:
    work = tmp_path / "old"
    shutil.copytree(HEART, work, ignore=shutil.ignore_patterns("data", "train"))
    # Saved with Python 3.8, pinning a scikit-learn that needs 3.10 or newer: nothing installs it on 3.8.
    (work / "model" / "requirements.txt").write_text("mlflow\ncloudpickle==3.1.2\nscikit-learn==1.9.1\n")
    (work / "model" / "python_env.yaml").write_text("python: 3.8.10\ndependencies:\n- -r requirements.txt\n")
    bep(home, "model", "create", "--name", "heart-old-pins", "--type", "mlflow_model", "--path", "model", cwd=work)
    sets = ["--set", "model=azureml:heart-old-pins@latest", "--set", "name=old-pins"]
    proc = bep(home, "deploy", "deployment-simple/deployment.yml", *sets, "-q", cwd=work, ok=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == proc.stderr.splitlines()[-1]
    assert "the MLflow model's requirements.txt cannot be installed on Python 3.8." in errors[0]
    assert "of local/debian-py:3.8" in errors[0]  # the Python it was saved with
    assert "No matching distribution found for scikit-learn==1.9.1" in errors[0]
    assert "--set environment.conda_file=FILE" in errors[0]
    # The way out it names: a conda file of pins that install (the custom deployment's here).
    dep = json.loads(bep(home, "deploy", "deployment-simple/deployment.yml", *sets,
                         "--set", "environment.conda_file=../deployment-custom/environment/conda.yaml", "-q",
                         cwd=work).stdout)
    assert dep["code_configuration"]["generated"] is True
    job = invoke(home, "old-pins", HEART / "data", cwd=work)
    assert job["status"] == "Completed"
    got = pd.read_csv(io.StringIO(Path(job["output_file"]).read_text()), names=["row", "prediction", "file"])
    assert len(got) == 171


def test_a_model_saved_with_python_3_8_deploys_with_no_environment_and_scores(home: Path) -> None:
    # scikit-learn 1.1.2 has no wheel for Python 3.11: its environment needs the Python it was saved with.
    assert "scikit-learn==1.1.2" in (PY38 / "model" / "requirements.txt").read_text()
    dep = json.loads(bep(home, "deploy", "deployment.yml", "-q", cwd=PY38).stdout)
    assert dep["code_configuration"]["generated"] is True
    found = run_in_image(dep["image"], (
        "import sys, sklearn, importlib.metadata as m; "
        "print('%d.%d' % sys.version_info[:2], sklearn.__version__, m.version('mlflow-skinny'), sys.executable)"))
    assert found.split() == ["3.8", "1.1.2", "2.17.2", "/opt/bepbuild/venv/bin/python3"]
    env_python = json.loads(bep(home, "environment", "list", "--images", "-o", "json").stdout)
    assert [r["python"] for r in env_python if r["image"] == dep["environment_image"]] == ["3.8.18"]
    name = bep(home, "batch-endpoint", "invoke", "--name", PY38_ENDPOINT, "--input", str(PY38 / "data"),
               "--query", "name", "-o", "tsv", "-q", cwd=PY38).stdout.strip()
    job = json.loads(bep(home, "job", "show", "-n", name).stdout)
    assert job["status"] == "Completed" and job["summary"].endswith("items: 2 succeeded, 0 failed")
    got = pd.read_csv(job["output_file"], names=["row", "prediction", "file"])
    want = pd.read_csv(PY38 / "sample-labels.csv")
    merged = want.merge(got, on=["file", "row"], suffixes=("", "_job"), validate="one_to_one")
    assert len(merged) == len(want) == 33
    assert (merged["prediction_job"] == merged["prediction"]).all()  # the training process's own predictions
