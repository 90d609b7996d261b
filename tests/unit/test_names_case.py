"""Names ignore case and keep the case first given (as Azure Resource Manager names do), through
every verb; a registry written before that is migrated without losing anything."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from test_jobs_process import Cli, make_inputs, register

from bepbuild import config
from bepbuild.store import Store
from bepbuild.store_migrations import INITIAL, run_sql


def test_endpoint_and_deployment_names_ignore_case(tmp_path: Path) -> None:
    cli = Cli()
    register(endpoint="mnist-batch-V9heS", deployment="Torch-Dpl", default=False)
    assert [e["name"] for e in cli.json("batch-endpoint", "list")] == ["mnist-batch-V9heS"]
    shown = cli.json("batch-endpoint", "show", "--name", "MNIST-BATCH-v9hes")
    assert shown["name"] == "mnist-batch-V9heS"
    dep = cli.json("batch-deployment", "show", "--name", "torch-dpl", "--endpoint-name", "mnist-batch-v9hes")
    assert dep["name"] == "Torch-Dpl" and dep["endpoint_name"] == "mnist-batch-V9heS"
    # Creating an endpoint that differs only in case updates the same one (first spelling kept).
    again = cli.json("batch-endpoint", "create", "--name", "MNIST-batch-v9hes", "--set", "description=second")
    assert again["name"] == "mnist-batch-V9heS" and again["description"] == "second"
    assert len(cli.json("batch-endpoint", "list")) == 1
    # Setting the default with another spelling stores the deployment's own spelling.
    ep = cli.json("batch-endpoint", "update", "--name", "mnist-batch-v9hes", "--set",
                  "defaults.deployment_name=TORCH-DPL")
    assert ep["name"] == "mnist-batch-V9heS" and ep["defaults"]["deployment_name"] == "Torch-Dpl"

    make_inputs(tmp_path / "in", 3)
    job = cli.json("batch-endpoint", "invoke", "--name", "MNIST-BATCH-V9HES", "--input", str(tmp_path / "in"),
                   "--backend", "process", "-q", "--job-name", "Job-One")
    assert job["status"] == "Completed" and job["endpoint"] == "mnist-batch-V9heS" and job["deployment"] == "Torch-Dpl"
    assert cli.json("job", "show", "--name", "job-one")["name"] == "Job-One"
    assert [j["name"] for j in cli.json("batch-endpoint", "list-jobs", "--name", "mnist-batch-v9hes")] == ["Job-One"]
    listed = cli.json("batch-deployment", "list-jobs", "-n", "TORCH-dpl", "-e", "Mnist-Batch-V9hes")
    assert [j["name"] for j in listed] == ["Job-One"]
    assert [j["name"] for j in cli.json("job", "list", "--endpoint-name", "MNIST-BATCH-V9HES")] == ["Job-One"]
    res = cli("batch-endpoint", "invoke", "--name", "mnist-batch-v9hes", "--input", str(tmp_path / "in"),
              "--backend", "process", "--job-name", "JOB-ONE", code=2)
    assert "already exists" in res.stderr
    cli("job", "download", "--name", "JOB-one", "--download-path", str(tmp_path / "dl"))
    assert (tmp_path / "dl" / "named-outputs" / "score" / "predictions.csv").exists()

    cli("batch-deployment", "delete", "--name", "TORCH-DPL", "--endpoint-name", "mnist-batch-v9hes", "--yes")
    assert cli.json("batch-endpoint", "show", "--name", "mnist-batch-V9heS")["defaults"] == {}
    cli("batch-endpoint", "delete", "--name", "Mnist-Batch-V9heS", "--yes")
    assert cli.json("batch-endpoint", "list") == []


def test_asset_and_compute_names_ignore_case(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"1")
    (tmp_path / "d").mkdir()
    cli = Cli()
    cli("model", "create", "--name", "Mnist-Classifier", "--path", "m")
    second = cli.json("model", "create", "--name", "mnist-classifier", "--path", "m")
    assert second["name"] == "Mnist-Classifier" and second["version"] == "2"
    assert cli.json("model", "show", "--name", "MNIST-CLASSIFIER", "--version", "1")["name"] == "Mnist-Classifier"
    assert [m["version"] for m in cli.json("model", "list", "--name", "mnist-CLASSIFIER")] == ["1", "2"]
    cli("model", "create", "--name", "mnist-classifier", "--path", "m", "--version", "V3")
    (tmp_path / "m" / "w.bin").write_bytes(b"2")  # other content under the same version, spelled otherwise
    res = cli("model", "create", "--name", "MNIST-classifier", "--path", "m", "--version", "v3", code=2)
    assert "already exists" in res.stderr
    assert cli.json("model", "show", "--name", "mnist-classifier", "--version", "v3")["version"] == "V3"
    cli("model", "archive", "--name", "MNIST-Classifier", "--version", "v3")
    assert cli.json("model", "show", "--name", "mnist-classifier")["version"] == "2"
    cli("model", "delete", "--name", "mnist-CLASSIFIER", "--yes")
    assert cli.json("model", "list") == []

    cli("data", "create", "--name", "Sample-Data", "--path", "d")
    assert cli.json("data", "show", "--name", "sample-data")["name"] == "Sample-Data"
    cli("compute", "create", "-n", "Batch-Cluster", "--max-instances", "3")
    c = cli.json("compute", "create", "-n", "batch-cluster", "--max-instances", "5")
    assert c["name"] == "Batch-Cluster" and c["max_instances"] == 5
    assert len(cli.json("compute", "list")) == 1
    cli("compute", "delete", "-n", "BATCH-CLUSTER", "--yes")
    assert cli.json("compute", "list") == []


def _old_registry(path: Path) -> None:
    """A registry as schema 1 wrote it, with names that differ only in case."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    run_sql(conn, INITIAL)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (1)")

    def put(table: str, values: tuple[object, ...]) -> None:
        conn.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(values))})", values)

    for t, name in ((1.0, "abc"), (2.0, "ABC")):
        put("endpoints", (name, json.dumps({"name": name, "defaults": {"deployment_name": "dep"}}), t, t))
        doc = {"name": "dep", "endpoint_name": name, "image": f"i-{name}"}
        put("deployments", (name, "dep", json.dumps(doc), t, t))
    put("deployments", ("abc", "DEP", json.dumps({"name": "DEP", "endpoint_name": "abc", "image": "i-DEP"}), 3.0, 3.0))
    for seq, (name, version) in enumerate((("m", "1"), ("m", "V1"), ("m", "v1"), ("M", "1")), start=1):
        put("assets", ("model", name, version, json.dumps({"name": name, "version": version}), float(seq), seq))
    put("computes", ("c", json.dumps({"name": "c"}), 1.0, 1.0))
    put("jobs", ("j1", "abc", "dep", "Completed", json.dumps({"name": "j1", "endpoint": "abc"}), 1.0, 1.0))
    conn.execute("COMMIT")
    conn.close()


def test_migration_keeps_every_record_and_renames_case_duplicates() -> None:
    _old_registry(config.db_path())
    store = Store.open()
    assert store.schema_version() == 2
    assert [e["name"] for e in store.list_endpoints()] == ["abc", "ABC-2"]
    assert store.get_endpoint("abc-2")["name"] == "ABC-2"
    moved = store.list_deployments("ABC-2")
    assert [(d["name"], d["endpoint_name"], d["image"]) for d in moved] == [("dep", "ABC-2", "i-ABC")]
    kept = sorted((d["name"], d["image"]) for d in store.list_deployments("ABC"))
    assert kept == [("DEP-2", "i-DEP"), ("dep", "i-abc")]
    models = [(m["name"], m["version"]) for m in store.list_assets("model", "m")]
    assert models == [("m", "1"), ("m", "V1"), ("m", "v1-2")]
    assert [(m["name"], m["version"]) for m in store.list_assets("model", "M-2")] == [("M-2", "1")]
    assert store.get_job("J1")["name"] == "j1" and store.get_compute("C")["name"] == "c"
    assert store.conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # Deleting an endpoint still takes its deployments with it (the foreign key survived the rebuild).
    store.delete_endpoint("ABC-2")
    assert store.conn.execute("SELECT count(*) FROM deployments WHERE endpoint = 'abc-2'").fetchone()[0] == 0
    store.close()
    Store.open().close()  # opening again migrates nothing


def test_azureml_references_ignore_case(tmp_path: Path) -> None:
    cli = Cli()
    register()
    make_inputs(tmp_path / "in", 4)
    cli("data", "create", "--name", "Sample-Data", "--path", str(tmp_path / "in"))
    job = cli.invoke("--input", "azureml:SAMPLE-DATA@latest")
    assert job["status"] == "Completed" and job["counts"]["items_succeeded"] == 4
    job = cli.invoke("--input", "azureml:sample-data:1")
    assert job["status"] == "Completed"
