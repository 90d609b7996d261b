"""MLflow deployments without an environment: the environment read from the model's own files, the
mlflow -> mlflow-skinny mapping, the one-line error for pins that cannot install, and the
`environment.conda_file`-only override. No engine: base images and pip resolution are faked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bepbuild import deploy, locking, mlflow_models
from bepbuild.environments import BaseInfo, plan
from bepbuild.errors import BuildError, SpecError, UserError
from bepbuild.mlflow_models import MLFLOW_BASE_IMAGE, ModelEnvironment, mlflow_environment
from bepbuild.specs import load_deployment

HEART_MODEL = Path(__file__).resolve().parents[2] / "examples" / "heart-classifier-mlflow" / "model"
DEBIAN = BaseInfo(image="local/debian-py:bookworm", image_id="sha256:" + "0" * 64, python="3.11.2", conda=None)


def model_dir(tmp_path: Path, **files: str) -> Path:
    d = tmp_path / "model"
    d.mkdir(parents=True)
    (d / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n"
                               "    python_version: 3.11.7\n")
    for name, text in files.items():
        (d / name.replace("_dot_", ".")).write_text(text)
    return d


def pip_section(env: ModelEnvironment) -> list[str]:
    return next(d["pip"] for d in env.conda_file["dependencies"] if isinstance(d, dict))


def test_example_model_environment() -> None:
    env = mlflow_environment(HEART_MODEL)
    assert env.source == "requirements.txt" and env.python == "3.11.7"
    assert env.conda_file["dependencies"][:2] == ["python=3.11.7", "pip"]
    assert pip_section(env) == ["--only-binary=:all:", "mlflow-skinny==3.17.2", "cloudpickle==3.1.2",
                                "pandas==3.1.1", "scikit-learn==1.9.1", "pyarrow", "pillow"]
    assert env.fallbacks == {"mlflow-skinny==3.17.2": "mlflow==3.17.2"}
    assert any("installing mlflow-skinny==3.17.2 instead" in n for n in env.notices)
    assert "added for the generated scoring driver: pyarrow, pillow" in env.notices
    p = plan({"name": "e", "version": "1", "image": MLFLOW_BASE_IMAGE, "conda_file": env.conda_file}, DEBIAN)
    assert p.strategy == "pip" and p.pip_options == ["--only-binary=:all:"]
    assert p.requirements[0] == "mlflow-skinny==3.17.2" and "pyarrow" in p.requirements


@pytest.mark.parametrize(("req", "mapped"), [
    ("mlflow", "mlflow-skinny"),
    ("mlflow==2.9.2", "mlflow-skinny==2.9.2"),
    ("MLflow>=2,<3", "mlflow-skinny>=2,<3"),
    ("mlflow ; python_version >= '3.9'", "mlflow-skinny ; python_version >= '3.9'"),
    ("mlflow[gateway]==2.9.2", "mlflow[gateway]==2.9.2"),  # extras need the full package
    ("mlflow-skinny==2.9.2", "mlflow-skinny==2.9.2"),
    ("MLflow_Skinny==2.9.2", "MLflow_Skinny==2.9.2"),  # already the skinny one, however spelled
])
def test_mlflow_becomes_mlflow_skinny_of_the_same_version(tmp_path: Path, req: str, mapped: str) -> None:
    env = mlflow_environment(model_dir(tmp_path, requirements_dot_txt=f"{req}\npandas\npyarrow\npillow\n"))
    assert pip_section(env)[1] == mapped
    assert "mlflow-skinny" not in pip_section(env)[2:]  # nothing added: the model names an mlflow
    assert env.fallbacks == ({mapped: req} if mapped != req else {})


def test_requirements_txt_wins_and_includes_are_read(tmp_path: Path) -> None:
    d = model_dir(tmp_path, requirements_dot_txt="# pinned\n-r extra.txt\nscikit-learn==1.9.1  # the model\n\n",
                  extra_dot_txt="numpy<3\n", conda_dot_yaml="dependencies: [python=3.8, pip, {pip: [six]}]\n")
    env = mlflow_environment(d)
    assert env.source == "requirements.txt"
    assert pip_section(env)[1:3] == ["numpy<3", "scikit-learn==1.9.1"]
    assert env.python == "3.8"  # the conda file still says which Python the model was saved with


def test_conda_yaml_then_python_env_yaml(tmp_path: Path) -> None:
    conda = "dependencies:\n- python=3.10.4\n- scikit-learn=1.3\n- pip\n- pip:\n  - mlflow==2.9.2\n"
    env = mlflow_environment(model_dir(tmp_path / "a", conda_dot_yaml=conda))
    assert env.source == "conda.yaml" and env.python == "3.10.4"
    assert pip_section(env)[1:3] == ["scikit-learn==1.3.*", "mlflow-skinny==2.9.2"]
    pyenv = "python: 3.9.1\nbuild_dependencies: [pip]\ndependencies:\n- -r reqs.txt\n- six\n"
    env = mlflow_environment(model_dir(tmp_path / "b", python_env_dot_yaml=pyenv, reqs_dot_txt="mlflow\n"))
    assert env.source == "python_env.yaml" and env.python == "3.9.1"
    assert pip_section(env)[1:3] == ["mlflow-skinny", "six"]


def test_no_requirements_at_all_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no requirements.txt, conda.yaml or python_env.yaml"):
        mlflow_environment(model_dir(tmp_path))


def test_constraint_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="constraint files"):
        mlflow_environment(model_dir(tmp_path, requirements_dot_txt="mlflow\n-c constraints.txt\n"))


def test_missing_mlflow_and_driver_needs_are_added(tmp_path: Path) -> None:
    env = mlflow_environment(model_dir(tmp_path, requirements_dot_txt="scikit-learn\n"))
    assert pip_section(env) == ["--only-binary=:all:", "scikit-learn", "mlflow-skinny", "pandas", "pyarrow", "pillow"]


# --- the lock: fallback to mlflow itself, and one error line for pins that cannot install ----------


def _wanted(tmp_path: Path, requirements: str) -> tuple[ModelEnvironment, Any]:
    wanted = mlflow_environment(model_dir(tmp_path, requirements_dot_txt=requirements))
    p = plan({"name": "e", "version": "1", "image": MLFLOW_BASE_IMAGE, "conda_file": wanted.conda_file}, DEBIAN)
    return wanted, p


def test_mlflow_skinny_missing_in_that_version_falls_back_to_mlflow(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    wanted, p = _wanted(tmp_path, "mlflow==1.0.0\npandas\n")
    calls: list[list[str]] = []

    def resolve(requirements: list[str], **_: Any) -> locking.Lock:
        calls.append(list(requirements))
        if "mlflow-skinny==1.0.0" in requirements:
            raise BuildError("pip install failed: ERROR: No matching distribution found for mlflow-skinny==1.0.0")
        return locking.Lock("k", "3.11", requirements, [])

    monkeypatch.setattr(locking, "resolve", resolve)
    notices = list(wanted.notices)
    deploy._lock(p, DEBIAN, deploy.DeployOptions(), lambda line: None, wanted, notices)
    assert calls[0][0] == "mlflow-skinny==1.0.0" and calls[1][0] == "mlflow==1.0.0"
    assert notices[-1] == "mlflow-skinny==1.0.0 is not available: installing mlflow==1.0.0 as the model asks"
    assert not any("instead" in n for n in notices)


def test_pins_that_cannot_install_are_one_line_with_the_way_out(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    wanted, p = _wanted(tmp_path, "mlflow\nscikit-learn==1.1.2\n")
    wanted.python = "3.8.10"

    def resolve(requirements: list[str], **_: Any) -> locking.Lock:
        raise BuildError("pip install failed: ERROR: No matching distribution found for scikit-learn==1.1.2")

    monkeypatch.setattr(locking, "resolve", resolve)
    with pytest.raises(UserError) as info:
        deploy._lock(p, DEBIAN, deploy.DeployOptions(), lambda line: None, wanted, [])
    line = info.value.line()
    assert "\n" not in line
    assert line == (
        "the MLflow model's requirements.txt cannot be installed on Python 3.11.2 of local/debian-py:bookworm, "
        "the model was saved with Python 3.8.10: No matching distribution found for scikit-learn==1.1.2; "
        "override its pins with --set environment.conda_file=FILE (a conda file, relative to the deployment file) "
        "or give the deployment an environment"
    )


# --- specs: the conda_file-only override, and scoring scripts over MLflow models --------------------


def _deployment(tmp_path: Path, extra: str) -> Path:
    (tmp_path / "env.yaml").write_text("dependencies: [pip, {pip: [mlflow-skinny, pandas]}]\n")
    f = tmp_path / "deployment.yml"
    f.write_text("name: dpl\nendpoint_name: tiny-ep\nmodel: {path: model, type: mlflow_model}\ncompute: c\n" + extra)
    (tmp_path / "model").mkdir()
    return f


def test_conda_file_alone_overrides_the_model_environment(tmp_path: Path) -> None:
    f = _deployment(tmp_path, "")
    loaded = load_deployment(f, sets=["environment.conda_file=env.yaml"])
    assert loaded.spec.environment.image == MLFLOW_BASE_IMAGE
    assert loaded.conda is not None and loaded.conda.pip_packages() == ["mlflow-skinny", "pandas"]


def test_a_scoring_script_over_an_mlflow_model_still_needs_a_full_environment(tmp_path: Path) -> None:
    f = _deployment(tmp_path, "")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "score.py").write_text("def run(b):\n    return b\n")
    sets = ["code_configuration.code=code", "code_configuration.scoring_script=score.py"]
    with pytest.raises(SpecError, match="required when a scoring script is given"):
        load_deployment(f, sets=sets)
    with pytest.raises(SpecError, match="one of image or build is required"):
        load_deployment(f, sets=[*sets, "environment.conda_file=env.yaml"])


def test_custom_model_without_code_is_refused_at_deploy(tmp_path: Path) -> None:
    f = _deployment(tmp_path, "")
    loaded = load_deployment(f)
    with pytest.raises(SpecError, match="required unless the model is an MLflow model"):
        mlflow_models.is_generated(loaded, {"name": "m", "version": "1", "type": "custom_model", "path": str(tmp_path)})


# --- render: the generated driver is the code folder, and the code layer stays last ----------------


def test_render_puts_the_generated_driver_in_the_code_folder(tmp_path: Path) -> None:
    import bepbuild_runtime.mlflow_driver as driver
    from bepbuild.environments import EnvPlan
    from bepbuild.mlflow_models import MLFLOW_DRIVER
    from bepbuild.render import RenderInput, render

    inp = RenderInput(endpoint="tiny-ep", deployment="tiny-dpl", code_dir=None, scoring_script=MLFLOW_DRIVER,
                      model_path=HEART_MODEL, plan=EnvPlan(strategy="image"), base=DEBIAN,
                      base_image=DEBIAN.image)
    out = render(inp, tmp_path / "ctx")
    assert [f for f in out.files if f.startswith("code/")] == ["code/mlflow_driver.py"]
    assert (out.context / "code" / "mlflow_driver.py").read_bytes() == Path(driver.__file__).read_bytes()
    text = (out.context / "Dockerfile").read_text()
    assert 'BEPBUILD_SCORING_SCRIPT="mlflow_driver.py"' in text
    copies = [line.split()[1] for line in text.splitlines() if line.startswith("COPY ")]
    assert copies == ["runtime/", "model/", "code/"]
    assert render(inp, tmp_path / "again").content_hash == out.content_hash


def test_registered_mlflow_model_with_a_script_needs_an_environment(tmp_path: Path) -> None:
    f = _deployment(tmp_path, "")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "score.py").write_text("def run(b):\n    return b\n")
    sets = ["model=azureml:heart@latest", "code_configuration.code=code", "code_configuration.scoring_script=score.py"]
    loaded = load_deployment(f, sets=sets)  # a registered model: its type is known only at deploy
    model = {"name": "heart", "version": "1", "type": "mlflow_model", "path": str(HEART_MODEL)}
    assert mlflow_models.is_generated(loaded, model) is False
    with pytest.raises(SpecError, match="environment: required when a scoring script is given for an MLflow model"):
        deploy._resolve_environment(None, loaded, model)  # type: ignore[arg-type]
