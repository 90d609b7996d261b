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
