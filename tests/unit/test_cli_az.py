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
    other = cli.json("batch-deployment", "list-jobs", "-n", "other-dpl", "-e", ENDPOINT)
    assert [j["name"] for j in other] == ["job-b"]
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


def test_update_verbs_change_only_what_may_change(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"1")
    cli = Cli()
    created = cli.json("model", "create", "--name", "mu", "--path", "m")
    up = cli.json("model", "update", "--name", "mu", "--set", "description=better", "--set", "tags.stage=prod")
    assert up["description"] == "better" and up["tags"] == {"stage": "prod"} and up["sha256"] == created["sha256"]
    res = cli("model", "update", "--name", "mu", "--set", "path=/etc", code=2)
    assert "path of a model cannot be changed" in res.stderr
    assert cli.json("model", "show", "--name", "mu")["path"] == created["path"]
    cli("model", "update", "--name", "mu", code=2)

    cli("compute", "create", "-n", "cc", "--max-instances", "2")
    assert cli.json("compute", "update", "-n", "cc", "--max-instances", "4")["max_instances"] == 4
    cli("compute", "update", "-n", "cc", "--set", "max_instances=0", code=2)
    assert cli.json("compute", "show", "-n", "cc")["max_instances"] == 4


def test_job_update_archive_restore(tmp_path: Path) -> None:
    cli = Cli()
    register()
    make_inputs(tmp_path / "in", 2)
    cli.invoke("--input", str(tmp_path / "in"), "--job-name", "job-u")
    assert cli.json("job", "update", "--name", "job-u", "--set", "tags.team=ml")["tags"] == {"team": "ml"}
    cli("job", "update", "--name", "job-u", "--set", "status=Completed", code=2)
    cli("job", "archive", "--name", "job-u")
    assert cli.json("job", "list") == []
    assert [j["name"] for j in cli.json("job", "list", "--archived-only")] == ["job-u"]
    cli("job", "restore", "--name", "job-u")
    assert [j["name"] for j in cli.json("job", "list")] == ["job-u"]


def test_verbs_without_a_local_meaning_say_why_in_one_line() -> None:
    cli = Cli()
    for args in (("job", "create", "--file", "job.yml"), ("job", "connect-ssh", "-n", "x"),
                 ("model", "share", "--name", "m", "--registry-name", "r"), ("data", "mount", "--path", "x"),
                 ("compute", "list-sizes"), ("compute", "attach", "--file", "c.yml"), ("environment", "share")):
        res = cli(*args, code=2)
        assert res.stderr.startswith(f"error: bepbuild {args[0]} {args[1]}: "), res.stderr


def test_invoke_takes_inputs_yml_json_inputs_and_an_experiment_name(tmp_path: Path) -> None:
    cli = Cli()
    register()
    make_inputs(tmp_path / "in", 3)
    (tmp_path / "inputs.yml").write_text(
        f"inputs:\n  heart_data:\n    type: uri_folder\n    path: {tmp_path / 'in'}\n"
        f"outputs:\n  scores:\n    type: uri_folder\n    path: {tmp_path / 'out'}\n")
    job = cli.invoke("--file", str(tmp_path / "inputs.yml"), "--experiment-name", "exp-1")
    assert job["status"] == "Completed" and job["experiment_name"] == "exp-1"
    assert Path(job["output_file"]) == tmp_path / "out" / "predictions.csv"
    job2 = cli.invoke("--inputs", '{"x": {"type": "uri_folder", "path": "%s"}}' % (tmp_path / "in"))
    assert job2["status"] == "Completed" and job2["experiment_name"] == job2["endpoint"]
    (tmp_path / "literal.yml").write_text(f"inputs:\n  d:\n    path: {tmp_path / 'in'}\n  mode:\n    type: string\n"
                                          "    default: append\n")
    def refused(*args: str) -> str:
        return cli("batch-endpoint", "invoke", "--name", ENDPOINT, "--backend", "process", *args, code=2).stderr

    res = refused("--file", str(tmp_path / "literal.yml"))
    assert "literal inputs are for pipeline deployments" in res
    assert "exactly one" in refused("--inputs", '{"a": {"path": "x"}, "b": {"path": "y"}}')
    assert "not valid JSON" in refused("--inputs", "{oops")
    assert "give the input once" in refused("--input", "x", "--file", str(tmp_path / "inputs.yml"))
    assert "required" in refused()


def test_endpoint_update_add_and_remove_are_refused_in_one_line() -> None:
    cli = Cli()
    cli("batch-endpoint", "create", "--name", "upd-ep")
    assert "--set" in cli("batch-endpoint", "update", "-n", "upd-ep", "--add", "tags.a=b", code=2).stderr
    cli("batch-endpoint", "update", "-n", "upd-ep", "--remove", "tags.a", code=2)
    assert cli.json("batch-endpoint", "update", "-n", "upd-ep", "--set", "description=seven",
                    "--force-string")["description"] == "seven"


def test_instance_count_is_capped_by_the_computes_max_instances(tmp_path: Path) -> None:
    from bepbuild.store import Store

    cli = Cli()
    register()
    cli("compute", "create", "-n", "small-cluster", "--max-instances", "2")
    store = Store.open()
    dep = store.get_deployment(ENDPOINT, DEPLOYMENT)
    store.put_deployment(ENDPOINT, DEPLOYMENT, {**dep, "compute": "small-cluster"})
    store.close()
    make_inputs(tmp_path / "in", 6)
    res = cli("batch-endpoint", "invoke", "--name", ENDPOINT, "--backend", "process", "--input", str(tmp_path / "in"),
              "--instance-count", "5", "--mini-batch-size", "1")
    assert "instance_count 5 is more than compute small-cluster's max_instances: running 2 instances" in res.stderr
    job = cli.json("job", "list")[0]
    assert job["status"] == "Completed" and job["settings"]["instance_count"] == 2
    assert job["counts"]["items_succeeded"] == 6
