"""The az verbs and options Azure's scripts use: list-jobs, job list filters, job stream, -o table."""

from __future__ import annotations

from pathlib import Path

from test_jobs_process import DEPLOYMENT, ENDPOINT, Cli, make_inputs, register


def test_deployment_list_jobs_and_job_list_filters(tmp_path: Path) -> None:
    cli = Cli()
    register()
    register(deployment="other-dpl", default=False)
    make_inputs(tmp_path / "in", 3)
    a = cli.invoke("--input", str(tmp_path / "in"), "--job-name", "job-a")
    b = cli.invoke("--input", str(tmp_path / "in"), "--job-name", "job-b", "--deployment-name", "other-dpl")
    assert a["status"] == b["status"] == "Completed"
    names = cli("batch-deployment", "list-jobs", "--name", DEPLOYMENT, "--endpoint-name", ENDPOINT,
                "--query", "[].name", "-o", "tsv").stdout.split()
    assert names == ["job-a"]
    assert [j["name"] for j in cli.json("batch-deployment", "list-jobs", "-n", "other-dpl", "-e", ENDPOINT)] == ["job-b"]
    cli("batch-deployment", "list-jobs", "--name", "nope-dpl", "--endpoint-name", ENDPOINT, code=2)
    assert [j["name"] for j in cli.json("job", "list", "--deployment-name", "other-dpl")] == ["job-b"]
    assert [j["name"] for j in cli.json("job", "list", "--status", "Completed")] == ["job-b", "job-a"]
    assert cli.json("job", "list", "--status", "Failed") == []
    assert [j["name"] for j in cli.json("job", "list", "--parent-job-name", "job-a")] == ["job-a"]


def test_table_output_shows_readable_columns(tmp_path: Path) -> None:
    cli = Cli()
    register()
    make_inputs(tmp_path / "in", 3)
    cli.invoke("--input", str(tmp_path / "in"), "--job-name", "job-t")
    header, row = cli("batch-endpoint", "list", "-o", "table").stdout.splitlines()
    assert header.split()[:4] == ["Name", "Default", "deployment", "Auth"], header
    assert "$Schema" not in header and ENDPOINT in row and DEPLOYMENT in row
    jobs = cli("job", "list", "-o", "table").stdout.splitlines()
    assert jobs[0].split()[:4] == ["Name", "Endpoint", "Deployment", "Status"]
    assert "job-t" in jobs[1] and "Completed" in jobs[1]
    # With --query, the query's own shape is shown, as az does.
    assert cli("job", "list", "-o", "table", "--query", "[].{N:name}").stdout.splitlines()[0].strip() == "N"


def test_job_stream_prints_progress_then_a_summary(tmp_path: Path) -> None:
    cli = Cli()
    register()
    make_inputs(tmp_path / "in", 9)
    job = cli.invoke("--input", str(tmp_path / "in"), "--job-name", "job-s")
    out = cli("job", "stream", "--name", "job-s").stdout
    lines = out.splitlines()
    assert lines[0] == "RunId: job-s" and lines[1].startswith("Web View: ")
    assert "Execution Summary" in lines and "Status: Completed" in lines
    assert f"Outputs: {job['output_file']}" in lines
    assert "{" not in out  # never a Python dict
    assert any(line.startswith("Processed mini batches: 3") for line in lines), out


def test_job_stream_of_a_failed_job_exits_1(tmp_path: Path) -> None:
    cli = Cli()
    register("def run(mini_batch):\n    raise ValueError('bad input')\n",
             retry_settings={"max_retries": 1, "timeout": 30})
    make_inputs(tmp_path / "in", 2)
    cli.invoke("--input", str(tmp_path / "in"), "--job-name", "job-f", code=1)
    res = cli("job", "stream", "--name", "job-f", code=1)
    assert "Status: Failed" in res.stdout and "Error: " in res.stdout


def test_deployment_create_refuses_a_missing_endpoint(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from seedtree import make_seed_tree

    monkeypatch.chdir(make_seed_tree(tmp_path / "seed"))
    cli = Cli()
    res = cli("batch-deployment", "create", "--file", "deployment-torch/deployment.yml",
              "--endpoint-name", "ghost-Ep1", "--set-default", code=2)
    assert "batch endpoint 'ghost-ep1' not found" in res.stderr.lower() and "batch-endpoint create" in res.stderr
    assert cli.json("batch-endpoint", "list") == []
    assert cli.json("model", "list") == []  # refused before anything was registered


def test_model_archive_restore_and_download(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from seedtree import make_seed_tree

    root = make_seed_tree(tmp_path / "seed")
    monkeypatch.chdir(root)
    cli = Cli()
    cli("model", "create", "--name", "mm", "--path", "deployment-torch/model")
    cli("model", "create", "--name", "mm", "--path", "deployment-torch/model")
    cli("model", "archive", "--name", "mm", "--version", "2")
    assert cli.json("model", "show", "--name", "mm")["version"] == "1"  # latest skips the archived one
    assert cli.json("model", "show", "--name", "mm", "--version", "2")["archived"] is True  # still there by number
    assert [m["version"] for m in cli.json("model", "list", "--name", "mm")] == ["1"]
    assert [m["version"] for m in cli.json("model", "list", "--name", "mm", "--include-archived")] == ["1", "2"]
    assert [m["version"] for m in cli.json("model", "list", "--name", "mm", "--archived-only")] == ["2"]
    cli("model", "archive", "--name", "mm")
    assert cli.json("model", "list") == []
    cli("model", "show", "--name", "mm", code=2)
    cli("model", "restore", "--name", "mm")
    assert cli.json("model", "show", "--name", "mm")["version"] == "2"
    cli("model", "archive", "--name", "mm", "--version", "9", code=2)

    out = cli("model", "download", "--name", "mm", "--version", "1", "--download-path", str(tmp_path / "dl"))
    got = Path(out.stdout.strip())
    assert got == tmp_path / "dl" / "mm" / "model"
    src = root / "deployment-torch" / "model"
    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in src.iterdir())
    assert all((got / p.name).read_bytes() == p.read_bytes() for p in src.iterdir() if p.is_file())
    res = cli("model", "download", "--name", "mm", "--download-path", str(tmp_path / "dl"), code=2)
    assert "exists" in res.stderr  # never overwrites
    (tmp_path / "afile").write_text("x")
    cli("model", "download", "--name", "mm", "--download-path", str(tmp_path / "afile"), code=2)
    assert (tmp_path / "afile").read_text() == "x"
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["mm"]  # no staging left


def test_environment_and_data_archive(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    cli = Cli()
    cli("data", "create", "--name", "dd", "--path", "d")
    cli("data", "archive", "--name", "dd")
    assert cli.json("data", "list") == []
    cli("data", "restore", "--name", "dd", "--version", "1")
    assert [d["name"] for d in cli.json("data", "list")] == ["dd"]
    assert "archive" in cli("environment", "--help").stdout


def test_azure_workspace_options_are_accepted_and_ignored(tmp_path: Path) -> None:
    import subprocess
    import sys

    from bepbuild.cli._azure_args import strip

    assert strip(["batch-endpoint", "show", "-n", "x", "-g", "rg", "--workspace-name=ws", "--only-show-errors"]) \
        == (["batch-endpoint", "show", "-n", "x"], ["-g", "rg", "--workspace-name=ws", "--only-show-errors"])
    assert strip(["job", "show", "-n", "j", "--", "-g"])[0] == ["job", "show", "-n", "j", "--", "-g"]
    exe = Path(sys.executable).with_name("bepbuild")
    proc = subprocess.run([str(exe), "batch-endpoint", "create", "--name", "ws-ep", "--resource-group", "my-rg",
                           "-w", "my-ws", "--subscription", "0000", "--query", "name", "-o", "tsv"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "ws-ep\n", proc.stderr
