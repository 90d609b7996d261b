"""The SQLite registry: versions, labels, deletes, cascades, migrations, two writers at once."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from bepbuild import store as store_mod
from bepbuild.errors import ConflictError, NotFoundError
from bepbuild.store import MIGRATIONS, Store


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "reg" / "registry.db"


@pytest.fixture
def s(db: Path) -> Store:
    st = Store.open(db)
    yield st
    st.close()


def versions(st: Store, kind: str, name: str) -> list[str]:
    return [r["version"] for r in st.list_assets(kind, name)]


# -- versions and labels --------------------------------------------------------------------------


def test_open_creates_the_database_and_its_folder(db: Path) -> None:
    assert not db.parent.exists()
    Store.open(db).close()
    assert db.is_file()


def test_default_path_is_under_bepbuild_home(bepbuild_home: Path) -> None:
    st = Store.open()
    try:
        assert st.path == bepbuild_home / "registry.db"
        assert st.path.is_file()
    finally:
        st.close()


def test_versions_auto_increment(s: Store) -> None:
    assert [s.add_version("model", "m", None, {"i": i}) for i in range(3)] == ["1", "2", "3"]
    assert versions(s, "model", "m") == ["1", "2", "3"]
    assert s.get_version("model", "m", "2")["i"] == 1
    # The record carries its name and version.
    rec = s.get_version("model", "m", "3")
    assert (rec["name"], rec["version"]) == ("m", "3")
    assert rec["created_at"].endswith("Z")


def test_versions_are_per_kind_and_name(s: Store) -> None:
    assert s.add_version("model", "a", None, {}) == "1"
    assert s.add_version("model", "a", None, {}) == "2"
    assert s.add_version("model", "b", None, {}) == "1"
    assert s.add_version("data", "a", None, {}) == "1"
    assert s.add_version("environment", "a", None, {}) == "1"


def test_explicit_version_and_auto_increment_after_it(s: Store) -> None:
    assert s.add_version("model", "m", "7", {}) == "7"
    assert s.add_version("model", "m", None, {}) == "8"
    assert s.add_version("model", "m", "v-beta", {}) == "v-beta"  # non-numeric versions are allowed
    assert s.add_version("model", "m", None, {}) == "9"  # and ignored by auto-increment


def test_explicit_version_conflict(s: Store) -> None:
    s.add_version("model", "m", None, {"first": True})
    with pytest.raises(ConflictError, match="model m version 1 already exists"):
        s.add_version("model", "m", "1", {"first": False})
    assert s.get_version("model", "m", "1")["first"] is True
    assert versions(s, "model", "m") == ["1"]


def test_latest_label_is_the_last_registered(s: Store) -> None:
    s.add_version("model", "m", "10", {})
    s.add_version("model", "m", "2", {})  # registered later, numerically smaller
    assert s.get_version("model", "m")["version"] == "2"
    assert s.get_version("model", "m", label="latest")["version"] == "2"
    s.add_version("model", "m", None, {})
    assert s.get_version("model", "m", label="latest")["version"] == "11"


def test_get_version_errors(s: Store) -> None:
    s.add_version("model", "m", None, {})
    with pytest.raises(NotFoundError, match="model m version 5 not found"):
        s.get_version("model", "m", "5")
    with pytest.raises(NotFoundError, match="unknown label 'prod'"):
        s.get_version("model", "m", label="prod")
    with pytest.raises(NotFoundError, match="model 'other' not found"):
        s.get_version("model", "other")
    with pytest.raises(NotFoundError):
        s.get_version("data", "m")  # another kind


def test_list_latest_per_name(s: Store) -> None:
    for name, n in (("zeta", 3), ("alpha", 2), ("mid", 1)):
        for _ in range(n):
            s.add_version("model", name, None, {})
    s.add_version("data", "other", None, {})
    latest = s.list_assets("model")
    assert [(r["name"], r["version"]) for r in latest] == [("alpha", "2"), ("mid", "1"), ("zeta", "3")]
    assert [r["name"] for r in s.list_assets("data")] == ["other"]
    assert s.list_assets("environment") == []


def test_list_versions_of_one_name(s: Store) -> None:
    for _ in range(3):
        s.add_version("model", "m", None, {})
    assert versions(s, "model", "m") == ["1", "2", "3"]
    with pytest.raises(NotFoundError):
        s.list_assets("model", "nothing")


def test_delete_one_version(s: Store) -> None:
    for _ in range(3):
        s.add_version("model", "m", None, {})
    gone = s.delete_version("model", "m", "3")
    assert [g["version"] for g in gone] == ["3"]
    assert versions(s, "model", "m") == ["1", "2"]
    assert s.get_version("model", "m")["version"] == "2"  # latest moves back
    # Auto-increment continues from what is left (as there is no record of 3 any more).
    assert s.add_version("model", "m", None, {}) == "3"
    with pytest.raises(NotFoundError, match="model m version 9 not found"):
        s.delete_version("model", "m", "9")


def test_delete_all_versions(s: Store) -> None:
    for _ in range(3):
        s.add_version("model", "m", None, {})
    s.add_version("model", "keep", None, {})
    gone = s.delete_version("model", "m")
    assert sorted(g["version"] for g in gone) == ["1", "2", "3"]
    with pytest.raises(NotFoundError):
        s.list_assets("model", "m")
    assert [r["name"] for r in s.list_assets("model")] == ["keep"]
    with pytest.raises(NotFoundError):
        s.delete_version("model", "m")
    assert s.add_version("model", "m", None, {}) == "1"


def test_update_asset_path(s: Store) -> None:
    s.add_version("model", "m", None, {"path": "/src"})
    assert s.update_asset_path("model", "m", "1", "/copy")["path"] == "/copy"
    assert s.get_version("model", "m", "1")["path"] == "/copy"


# -- endpoints, deployments, jobs -------------------------------------------------------------------


def test_endpoint_put_is_an_upsert(s: Store) -> None:
    s.put_endpoint("ep", {"name": "ep", "description": "one"})
    s.put_endpoint("ep", {"name": "ep", "description": "two"})
    assert [e["description"] for e in s.list_endpoints()] == ["two"]
    assert s.has_endpoint("ep") and not s.has_endpoint("other")


def test_deployment_needs_its_endpoint(s: Store) -> None:
    with pytest.raises(NotFoundError, match="batch endpoint 'nope' not found"):
        s.put_deployment("nope", "d", {"name": "d"})
    s.put_endpoint("ep", {"name": "ep"})
    with pytest.raises(NotFoundError, match="Deployment name d not found"):
        s.get_deployment("ep", "d")
    with pytest.raises(NotFoundError, match="batch endpoint 'nope' not found"):
        s.get_deployment("nope", "d")


def test_endpoint_delete_cascades_deployments_and_keeps_jobs(s: Store) -> None:
    s.put_endpoint("ep", {"name": "ep"})
    s.put_endpoint("other", {"name": "other"})
    s.put_deployment("ep", "d1", {"name": "d1"})
    s.put_deployment("ep", "d2", {"name": "d2"})
    s.put_deployment("other", "d1", {"name": "d1", "mine": "other"})
    s.add_job("job-1", {"endpoint": "ep", "deployment": "d1", "status": "Completed"})
    s.add_job("job-2", {"endpoint": "other", "deployment": "d1", "status": "Failed"})

    gone = s.delete_endpoint("ep")
    assert sorted(d["name"] for d in gone) == ["d1", "d2"]
    assert not s.has_endpoint("ep")
    with pytest.raises(NotFoundError):
        s.list_deployments("ep")
    rows = s.conn.execute("SELECT endpoint, name FROM deployments").fetchall()
    assert [tuple(r) for r in rows] == [("other", "d1")]
    # The jobs stay, including the deleted endpoint's.
    assert s.get_job("job-1")["status"] == "Completed"
    assert [j["deployment"] for j in s.list_jobs(endpoint="ep")] == ["d1"]
    assert len(s.list_jobs()) == 2
    # A new endpoint with the same name starts without deployments.
    s.put_endpoint("ep", {"name": "ep"})
    assert s.list_deployments("ep") == []
    with pytest.raises(NotFoundError):
        s.delete_endpoint("missing")


def test_delete_deployment(s: Store) -> None:
    s.put_endpoint("ep", {"name": "ep"})
    s.put_deployment("ep", "d1", {"name": "d1"})
    s.put_deployment("ep", "d2", {"name": "d2"})
    assert s.delete_deployment("ep", "d1")["name"] == "d1"
    assert [d["name"] for d in s.list_deployments("ep")] == ["d2"]
    with pytest.raises(NotFoundError):
        s.delete_deployment("ep", "d1")


def test_jobs(s: Store) -> None:
    s.add_job("j", {"endpoint": "ep", "status": "Queued"})
    with pytest.raises(ConflictError):
        s.add_job("j", {})
    doc = s.update_job("j", status="Running", progress=3)
    assert doc["status"] == "Running" and doc["progress"] == 3
    assert s.conn.execute("SELECT status FROM jobs WHERE name = 'j'").fetchone()[0] == "Running"
    assert s.get_job("j")["endpoint"] == "ep"
    with pytest.raises(NotFoundError):
        s.update_job("nope", status="Failed")
    for i in range(4):
        s.add_job(f"k{i}", {"endpoint": "other"})
    assert len(s.list_jobs(limit=2)) == 2
    assert len(s.list_jobs(endpoint="other")) == 4


def test_computes(s: Store) -> None:
    s.put_compute("c", {"name": "c", "max_instances": 5})
    s.put_compute("c", {"name": "c", "max_instances": 2})
    assert s.get_compute("c")["max_instances"] == 2
    assert [c["name"] for c in s.list_computes()] == ["c"]
    s.delete_compute("c")
    with pytest.raises(NotFoundError):
        s.get_compute("c")
    with pytest.raises(NotFoundError):
        s.delete_compute("c")


def test_failed_transaction_rolls_back(s: Store) -> None:
    with pytest.raises(RuntimeError):
        with s.tx() as c:
            c.execute("INSERT INTO computes VALUES ('x', '{}', 0, 0)")
            raise RuntimeError("boom")
    assert s.list_computes() == []
    assert not s.conn.in_transaction


# -- schema and migrations -------------------------------------------------------------------------


def test_schema_version_table_equals_number_of_migrations(s: Store, db: Path) -> None:
    raw = sqlite3.connect(db)
    try:
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"schema_version", "endpoints", "deployments", "assets", "computes", "jobs"} <= tables
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(len(MIGRATIONS),)]
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()
    assert s.schema_version() == len(MIGRATIONS) >= 1


def test_reopening_does_not_re_migrate(db: Path) -> None:
    st = Store.open(db)
    st.add_version("model", "m", None, {"x": 1})
    st.close()
    for _ in range(2):
        st = Store.open(db)  # re-running the CREATE TABLEs would fail with "already exists"
        assert st.schema_version() == len(MIGRATIONS)
        assert st.get_version("model", "m", "1")["x"] == 1
        assert st.conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 1
        st.close()


def test_a_new_migration_runs_once(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Store.open(db).close()
    monkeypatch.setattr(store_mod, "MIGRATIONS", [*MIGRATIONS, "CREATE TABLE extra (x INTEGER)"])
    st = Store.open(db)
    assert st.schema_version() == len(MIGRATIONS) + 1
    st.conn.execute("INSERT INTO extra VALUES (1)")
    st.close()
    st = Store.open(db)  # would fail if the new migration ran again
    assert st.conn.execute("SELECT COUNT(*) FROM extra").fetchone()[0] == 1
    assert st.conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 1
    st.close()


def test_a_newer_schema_is_refused(db: Path) -> None:
    Store.open(db).close()
    raw = sqlite3.connect(db)
    raw.execute("UPDATE schema_version SET version = 99")
    raw.commit()
    raw.close()
    with pytest.raises(ConflictError, match="newer bepbuild"):
        Store.open(db)


# -- two processes at once ------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from bepbuild.store import Store

    st = Store.open(Path(sys.argv[1]))
    print("ready", flush=True)
    sys.stdin.readline()  # the start gate: both writers begin together
    got = [st.add_version("model", "shared", None, {"writer": sys.argv[2], "i": i}) for i in range(50)]
    st.close()
    print(json.dumps(got), flush=True)
    """
)


def test_two_processes_adding_versions_concurrently(db: Path) -> None:
    Store.open(db).close()  # the schema exists before the race
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), tag],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert err == ""
    got = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    for seq in got:
        assert len(seq) == 50
        assert [int(v) for v in seq] == sorted(int(v) for v in seq)  # each writer sees its versions grow
    everything = got[0] + got[1]
    assert sorted(int(v) for v in everything) == list(range(1, 101))
    st = Store.open(db)
    try:
        rows = st.list_assets("model", "shared")
        assert len(rows) == 100
        assert sorted(int(r["version"]) for r in rows) == list(range(1, 101))
        assert {r["writer"] for r in rows} == {"a", "b"}
        seqs = [r[0] for r in st.conn.execute("SELECT seq FROM assets WHERE name = 'shared'")]
        assert sorted(seqs) == list(range(1, 101))
    finally:
        st.close()


def test_two_cli_processes_creating_models_concurrently(tmp_path: Path, bepbuild_home: Path) -> None:
    """2 x 20 `bepbuild model create` processes of one name, two at a time: versions 1..40, each
    once, each with its own complete copy, and a database that passes SQLite's integrity check."""
    bepbuild = Path(sys.executable).parent / "bepbuild"
    for writer in ("a", "b"):
        for i in range(20):
            folder = tmp_path / writer / str(i)
            folder.mkdir(parents=True)
            (folder / "weights.txt").write_text(f"{writer}-{i}\n")
    failures: list[str] = []

    def write(writer: str) -> None:
        for i in range(20):
            proc = subprocess.run([str(bepbuild), "model", "create", "--name", "raced", "--path",
                                   str(tmp_path / writer / str(i)), "-o", "none"],
                                  capture_output=True, text=True, env=os.environ.copy(), timeout=60)
            if proc.returncode != 0 or proc.stderr:
                failures.append(f"{writer}-{i}: {proc.returncode} {proc.stderr}")

    threads = [threading.Thread(target=write, args=(w,)) for w in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    st = Store.open()
    try:
        rows = st.list_assets("model", "raced")
        assert sorted(int(r["version"]) for r in rows) == list(range(1, 41))
        contents = sorted(Path(r["path"], "weights.txt").read_text().strip() for r in rows)
        assert contents == sorted(f"{w}-{i}" for w in ("a", "b") for i in range(20))
        assert st.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        st.close()
    staging = bepbuild_home / "assets" / ".staging"
    assert not staging.exists() or not any(staging.iterdir())
