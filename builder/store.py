"""The local registry: one SQLite file under BEPBUILD_HOME.

Endpoints, deployments, versioned assets (models, environments, data), computes and jobs.
Records are JSON documents plus the few columns queries need. WAL and a busy timeout make two
bepbuild processes at once safe; writes that read-then-write (new versions) take the write lock
first (BEGIN IMMEDIATE) so two processes never hand out the same version.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import config
from .errors import ConflictError, NotFoundError
from .store_migrations import MIGRATIONS, run_sql

VERSIONED = ("model", "environment", "data")


class Store:
    """A connection to the registry database; create it with `Store.open()`."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path | None = None) -> Store:
        path = path or config.db_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA foreign_keys=ON")
        store = cls(conn, path)
        store._migrate()
        return store

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the write lock from its start."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def schema_version(self) -> int:
        row = self.conn.execute("SELECT version FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        with self.tx() as c:
            c.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = c.execute("SELECT version FROM schema_version").fetchone()
            current = int(row[0]) if row else 0
            if current > len(MIGRATIONS):
                raise ConflictError(
                    f"the registry at {self.path} was written by a newer bepbuild (schema {current})"
                )
            for step in MIGRATIONS[current:]:
                if isinstance(step, str):
                    run_sql(c, step)
                else:
                    step(c)
            if row is None:
                c.execute("INSERT INTO schema_version VALUES (?)", (len(MIGRATIONS),))
            else:
                c.execute("UPDATE schema_version SET version = ?", (len(MIGRATIONS),))

    # -- endpoints -----------------------------------------------------------------------------
    def put_endpoint(self, name: str, doc: dict[str, Any]) -> None:
        """Create or replace an endpoint; a name differing only in case replaces it, keeping the first case."""
        now = time.time()
        with self.tx() as c:
            name = _stored(c, "SELECT name FROM endpoints WHERE name = ?", (name,), name)
            doc = {**doc, "name": name}
            c.execute(
                "INSERT INTO endpoints VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET doc = excluded.doc, updated = excluded.updated",
                (name, _dump(doc), now, now),
            )

    def get_endpoint(self, name: str) -> dict[str, Any]:
        row = self.conn.execute("SELECT * FROM endpoints WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"batch endpoint {name!r} not found")
        return _record(row)

    def has_endpoint(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM endpoints WHERE name = ?", (name,)).fetchone() is not None

    def list_endpoints(self) -> list[dict[str, Any]]:
        return [_record(r) for r in self.conn.execute("SELECT * FROM endpoints ORDER BY name")]

    def delete_endpoint(self, name: str) -> list[dict[str, Any]]:
        """Delete the endpoint and its deployments (jobs stay); return the deleted deployments."""
        with self.tx() as c:
            if c.execute("SELECT 1 FROM endpoints WHERE name = ?", (name,)).fetchone() is None:
                raise NotFoundError(f"batch endpoint {name!r} not found")
            gone = [_record(r) for r in c.execute("SELECT * FROM deployments WHERE endpoint = ?", (name,))]
            c.execute("DELETE FROM deployments WHERE endpoint = ?", (name,))
            c.execute("DELETE FROM endpoints WHERE name = ?", (name,))
        return gone

    # -- deployments ---------------------------------------------------------------------------
    def put_deployment(self, endpoint: str, name: str, doc: dict[str, Any]) -> None:
        """Create or replace a deployment (names ignore case and keep the case first given)."""
        now = time.time()
        with self.tx() as c:
            row = c.execute("SELECT name FROM endpoints WHERE name = ?", (endpoint,)).fetchone()
            if row is None:
                raise NotFoundError(f"batch endpoint {endpoint!r} not found")
            endpoint = row["name"]
            name = _stored(c, "SELECT name FROM deployments WHERE endpoint = ? AND name = ?", (endpoint, name), name)
            doc = {**doc, "name": name, "endpoint_name": endpoint}
            c.execute(
                "INSERT INTO deployments VALUES (?, ?, ?, ?, ?) ON CONFLICT(endpoint, name) "
                "DO UPDATE SET doc = excluded.doc, updated = excluded.updated",
                (endpoint, name, _dump(doc), now, now),
            )

    def get_deployment(self, endpoint: str, name: str) -> dict[str, Any]:
        row = self.conn.execute(
            "SELECT * FROM deployments WHERE endpoint = ? AND name = ?", (endpoint, name)
        ).fetchone()
        if row is None:
            self.get_endpoint(endpoint)
            raise NotFoundError(f"Deployment name {name} not found for endpoint {endpoint!r}")
        return _record(row)

    def list_deployments(self, endpoint: str) -> list[dict[str, Any]]:
        self.get_endpoint(endpoint)
        rows = self.conn.execute("SELECT * FROM deployments WHERE endpoint = ? ORDER BY name", (endpoint,))
        return [_record(r) for r in rows]

    def delete_deployment(self, endpoint: str, name: str) -> dict[str, Any]:
        with self.tx() as c:
            row = c.execute(
                "SELECT * FROM deployments WHERE endpoint = ? AND name = ?", (endpoint, name)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"Deployment name {name} not found for endpoint {endpoint!r}")
            c.execute("DELETE FROM deployments WHERE endpoint = ? AND name = ?", (endpoint, name))
        return _record(row)

    # -- versioned assets ----------------------------------------------------------------------
    def add_version(self, kind: str, name: str, version: str | None, doc: dict[str, Any]) -> str:
        """Register a new version; `None` picks the next integer. Returns the version."""
        assert kind in VERSIONED
        now = time.time()
        with self.tx() as c:
            rows = c.execute("SELECT name, version, seq FROM assets WHERE kind = ? AND name = ?",
                             (kind, name)).fetchall()
            if rows:  # another spelling of a name already registered: the same asset, first spelling kept
                name = rows[0]["name"]
            seq = max((r["seq"] for r in rows), default=0) + 1
            if version is None:
                numeric = [int(r["version"]) for r in rows if r["version"].isdigit()]
                version = str(max(numeric, default=0) + 1)
            elif any(r["version"].lower() == version.lower() for r in rows):
                raise ConflictError(f"{kind} {name} version {version} already exists")
            doc = {**doc, "name": name, "version": version}
            c.execute("INSERT INTO assets VALUES (?, ?, ?, ?, ?, ?)", (kind, name, version, _dump(doc), now, seq))
        return version

    def register_version(
        self, kind: str, name: str, version: str | None, doc: dict[str, Any], *,
        same: Callable[[dict[str, Any]], bool], reuse_latest: bool = False,
        place: Callable[[str, str], str | None] | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Reuse an identical version or add a new one, decided and written in one write transaction.

        Versions never change once registered (as in Azure): an explicit `version` that exists is
        returned when `same(record)` holds and is a conflict otherwise. Without one, `reuse_latest`
        returns the latest version when `same` holds for it, else the next integer is added.
        `place(name, version)` runs inside the transaction, before the row is written: the registry
        moves the new version's files into place there and returns the path to record. Concurrent
        registrations of one content therefore give one version. Returns (record, created).
        """
        assert kind in VERSIONED
        with self.tx() as c:
            found, name, version, seq = _pick_version(c, kind, name, version, same, reuse_latest)
            if found is not None:
                return found, False
            new = {**doc, "name": name, "version": version}
            if place is not None:
                path = place(name, version)
                if path is not None:
                    new["path"] = path
            c.execute("INSERT INTO assets VALUES (?, ?, ?, ?, ?, ?)",
                      (kind, name, version, _dump(new), time.time(), seq))
        return self.get_version(kind, name, version), True

    def find_version(self, kind: str, name: str, version: str | None, *,
                     same: Callable[[dict[str, Any]], bool], reuse_latest: bool = False) -> dict[str, Any] | None:
        """The version `register_version` would return without adding one (a read, no lock), or None.

        Lets the registry skip copying files that are registered already; `register_version` decides
        again under the lock.
        """
        return _pick_version(self.conn, kind, name, version, same, reuse_latest)[0]

    def preview_version(self, kind: str, name: str, version: str | None, *, same: Callable[[dict[str, Any]], bool],
                        reuse_latest: bool = False) -> tuple[dict[str, Any] | None, str, str]:
        """What `register_version` would do now, writing nothing: (the version it would return or None,
        the name it would record, the version it would add)."""
        found, name, version, _seq = _pick_version(self.conn, kind, name, version, same, reuse_latest)
        return found, name, version

    def get_version(self, kind: str, name: str, version: str | None = None, label: str | None = None) -> dict[str, Any]:
        """One version, or the one a label names (`latest` = the last one registered)."""
        if version is not None:
            row = self.conn.execute(
                "SELECT * FROM assets WHERE kind = ? AND name = ? AND version = ?", (kind, name, version)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"{kind} {name} version {version} not found")
            return _record(row)
        label = label or "latest"
        if label != "latest":
            raise NotFoundError(f"{kind} {name}: unknown label {label!r} (only 'latest' is defined)")
        # `latest` is the last version registered that is not archived (an archived version is still
        # there by its number, as in Azure).
        row = self.conn.execute(
            f"SELECT * FROM assets WHERE kind = ? AND name = ? AND {_NOT_ARCHIVED} ORDER BY seq DESC LIMIT 1",
            (kind, name),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"{kind} {name!r} not found")
        return _record(row)

    def update_asset_path(self, kind: str, name: str, version: str, path: str) -> dict[str, Any]:
        """Record where a registered asset's files were copied to."""
        with self.tx() as c:
            row = c.execute(
                "SELECT doc FROM assets WHERE kind = ? AND name = ? AND version = ?", (kind, name, version)
            ).fetchone()
            doc = {**json.loads(row["doc"]), "path": path}
            c.execute(
                "UPDATE assets SET doc = ? WHERE kind = ? AND name = ? AND version = ?",
                (_dump(doc), kind, name, version),
            )
        return self.get_version(kind, name, version)

    def list_assets(self, kind: str, name: str | None = None, archived: str = "exclude") -> list[dict[str, Any]]:
        """Every version of one asset, or the latest version of each asset of a kind.

        `archived`: "exclude" (the default, as az lists), "include", or "only".
        """
        where = {"exclude": _NOT_ARCHIVED, "include": "1", "only": f"NOT {_NOT_ARCHIVED}"}[archived]
        if name is not None:
            if not self.conn.execute("SELECT 1 FROM assets WHERE kind = ? AND name = ?", (kind, name)).fetchone():
                raise NotFoundError(f"{kind} {name!r} not found")
            rows = self.conn.execute(
                f"SELECT * FROM assets WHERE kind = ? AND name = ? AND {where} ORDER BY seq", (kind, name)
            ).fetchall()
        else:
            rows = self.conn.execute(
                f"SELECT a.* FROM assets a JOIN (SELECT name, MAX(seq) AS s FROM assets WHERE kind = ? AND {where} "
                "GROUP BY name) l ON a.name = l.name AND a.seq = l.s WHERE a.kind = ? ORDER BY a.name",
                (kind, kind),
            ).fetchall()
        return [_record(r) for r in rows]

    def set_archived(self, kind: str, name: str, version: str | None, archived: bool) -> list[dict[str, Any]]:
        """Archive (hide from lists and from `latest`) or restore one version, or every version."""
        return self.update_versions(kind, name, version, {"archived": archived})

    def update_versions(self, kind: str, name: str, version: str | None, changes: dict[str, Any]
                        ) -> list[dict[str, Any]]:
        """Merge `changes` into the record of one version, or of every version; returns them.

        Only for what may change on a registered version (description, tags, archived): its files
        and content hash never change.
        """
        with self.tx() as c:
            sql, args = "SELECT * FROM assets WHERE kind = ? AND name = ?", [kind, name]
            if version is not None:
                sql, args = sql + " AND version = ?", args + [version]
            rows = c.execute(sql, args).fetchall()
            if not rows:
                raise NotFoundError(f"{kind} {name}" + (f" version {version}" if version else "") + " not found")
            for r in rows:
                doc = {**json.loads(r["doc"]), **changes}
                c.execute("UPDATE assets SET doc = ? WHERE kind = ? AND name = ? AND version = ?",
                          (_dump(doc), kind, r["name"], r["version"]))
        return [self.get_version(kind, r["name"], r["version"]) for r in rows]

    def delete_version(self, kind: str, name: str, version: str | None = None) -> list[dict[str, Any]]:
        """Delete one version, or every version when `version` is None; returns what was deleted."""
        with self.tx() as c:
            if version is None:
                rows = c.execute("SELECT * FROM assets WHERE kind = ? AND name = ?", (kind, name)).fetchall()
            else:
                rows = c.execute(
                    "SELECT * FROM assets WHERE kind = ? AND name = ? AND version = ?", (kind, name, version)
                ).fetchall()
            if not rows:
                what = f"{kind} {name}" + (f" version {version}" if version else "")
                raise NotFoundError(f"{what} not found")
            for r in rows:
                c.execute(
                    "DELETE FROM assets WHERE kind = ? AND name = ? AND version = ?", (kind, name, r["version"])
                )
        return [_record(r) for r in rows]

    # -- computes ------------------------------------------------------------------------------
    def put_compute(self, name: str, doc: dict[str, Any]) -> None:
        now = time.time()
        with self.tx() as c:
            name = _stored(c, "SELECT name FROM computes WHERE name = ?", (name,), name)
            doc = {**doc, "name": name}
            c.execute(
                "INSERT INTO computes VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET doc = excluded.doc, updated = excluded.updated",
                (name, _dump(doc), now, now),
            )

    def get_compute(self, name: str) -> dict[str, Any]:
        row = self.conn.execute("SELECT * FROM computes WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"compute {name!r} not found")
        return _record(row)

    def list_computes(self) -> list[dict[str, Any]]:
        return [_record(r) for r in self.conn.execute("SELECT * FROM computes ORDER BY name")]

    def delete_compute(self, name: str) -> None:
        with self.tx() as c:
            if c.execute("DELETE FROM computes WHERE name = ?", (name,)).rowcount == 0:
                raise NotFoundError(f"compute {name!r} not found")

    # -- jobs ----------------------------------------------------------------------------------
    def add_job(self, name: str, doc: dict[str, Any]) -> None:
        now = time.time()
        with self.tx() as c:
            if c.execute("SELECT 1 FROM jobs WHERE name = ?", (name,)).fetchone():
                raise ConflictError(f"job {name!r} already exists")
            c.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, doc.get("endpoint"), doc.get("deployment"), doc.get("status", "Queued"), _dump(doc), now, now),
            )

    def update_job(self, name: str, **changes: Any) -> dict[str, Any]:
        with self.tx() as c:
            row = c.execute("SELECT * FROM jobs WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFoundError(f"job {name!r} not found")
            doc = {**json.loads(row["doc"]), **changes}
            c.execute(
                "UPDATE jobs SET doc = ?, status = ?, updated = ? WHERE name = ?",
                (_dump(doc), doc.get("status", row["status"]), time.time(), name),
            )
        return doc

    def get_job(self, name: str) -> dict[str, Any]:
        row = self.conn.execute("SELECT * FROM jobs WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"job {name!r} not found")
        return _record(row)

    def delete_job(self, name: str) -> None:
        """Forget job `name` (its folder is the caller's business)."""
        with self.tx() as c:
            if c.execute("DELETE FROM jobs WHERE name = ?", (name,)).rowcount == 0:
                raise NotFoundError(f"job {name!r} not found")

    def list_jobs(self, endpoint: str | None = None, limit: int | None = None, deployment: str | None = None,
                  status: str | None = None, archived: str = "exclude") -> list[dict[str, Any]]:
        """Jobs, newest first, optionally of one endpoint (and deployment) or with one status.

        `archived`: "exclude" (the default, as az lists), "include", or "only".
        """
        where: list[str] = [{"exclude": _NOT_ARCHIVED, "include": "1", "only": f"NOT {_NOT_ARCHIVED}"}[archived]]
        args: list[Any] = []
        for column, value in (("endpoint", endpoint), ("deployment", deployment), ("status", status)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT * FROM jobs WHERE " + " AND ".join(where) + " ORDER BY created DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [_record(r) for r in self.conn.execute(sql, args)]


def _stored(c: sqlite3.Connection, sql: str, args: tuple[Any, ...], default: str) -> str:
    """The name as first stored (names compare without case), or `default` for a new record."""
    row = c.execute(sql, args).fetchone()
    return str(row[0]) if row else default


_NOT_ARCHIVED = "coalesce(json_extract(doc, '$.archived'), 0) = 0"


def _pick_version(c: sqlite3.Connection, kind: str, name: str, version: str | None,
                  same: Callable[[dict[str, Any]], bool], reuse_latest: bool
                  ) -> tuple[dict[str, Any] | None, str, str, int]:
    """(the existing version to return or None, the stored name, the version, the next seq)."""
    rows = c.execute("SELECT * FROM assets WHERE kind = ? AND name = ? ORDER BY seq", (kind, name)).fetchall()
    if rows:  # the spelling the asset was first registered with
        name = rows[0]["name"]
    seq = max((r["seq"] for r in rows), default=0) + 1
    if version is not None:
        hit = next((r for r in rows if r["version"].lower() == version.lower()), None)
        if hit is None:
            return None, name, version, seq
        if same(_record(hit)):
            return _record(hit), name, hit["version"], seq
        raise ConflictError(f"{kind} {name} version {hit['version']} already exists with different content")
    if reuse_latest:
        live = [r for r in rows if not json.loads(r["doc"]).get("archived")]
        if live and same(_record(live[-1])):
            return _record(live[-1]), name, live[-1]["version"], seq
    numeric = [int(r["version"]) for r in rows if r["version"].isdigit()]
    return None, name, str(max(numeric, default=0) + 1), seq


def _dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, default=str)


def _record(row: sqlite3.Row) -> dict[str, Any]:
    doc = json.loads(row["doc"])
    keys = row.keys()
    doc.setdefault("created_at", _iso(row["created"]))
    if "updated" in keys:
        doc["updated_at"] = _iso(row["updated"])
    return doc


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))

