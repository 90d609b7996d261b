"""Schema migrations of the registry database, one entry per schema version.

Never edit an entry once released: each upgrades a registry from the version before it. An entry
is SQL (statements separated by ';') or a function given the connection, inside the migration's
write transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

INITIAL = """
    CREATE TABLE endpoints (
        name TEXT PRIMARY KEY, doc TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
    CREATE TABLE deployments (
        endpoint TEXT NOT NULL REFERENCES endpoints(name) ON DELETE CASCADE,
        name TEXT NOT NULL, doc TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
        PRIMARY KEY (endpoint, name));
    CREATE TABLE assets (
        kind TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, doc TEXT NOT NULL,
        created REAL NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (kind, name, version));
    CREATE TABLE computes (
        name TEXT PRIMARY KEY, doc TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
    CREATE TABLE jobs (
        name TEXT PRIMARY KEY, endpoint TEXT, deployment TEXT, status TEXT NOT NULL,
        doc TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
    CREATE INDEX jobs_endpoint ON jobs(endpoint, created);
"""

# Names compare without case and keep the case they were first given, as Azure Resource Manager
# names do: every name column gets COLLATE NOCASE (names are ASCII, which NOCASE folds).
NOCASE_TABLES = """
    CREATE TABLE endpoints_v2 (
        name TEXT COLLATE NOCASE PRIMARY KEY, doc TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
    CREATE TABLE deployments_v2 (
        endpoint TEXT COLLATE NOCASE NOT NULL REFERENCES endpoints_v2(name) ON DELETE CASCADE,
        name TEXT COLLATE NOCASE NOT NULL, doc TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
        PRIMARY KEY (endpoint, name));
    CREATE TABLE assets_v2 (
        kind TEXT NOT NULL, name TEXT COLLATE NOCASE NOT NULL, version TEXT COLLATE NOCASE NOT NULL,
        doc TEXT NOT NULL, created REAL NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (kind, name, version));
    CREATE TABLE computes_v2 (
        name TEXT COLLATE NOCASE PRIMARY KEY, doc TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
    CREATE TABLE jobs_v2 (
        name TEXT COLLATE NOCASE PRIMARY KEY, endpoint TEXT COLLATE NOCASE, deployment TEXT COLLATE NOCASE,
        status TEXT NOT NULL, doc TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
    INSERT INTO endpoints_v2 SELECT * FROM endpoints;
    INSERT INTO deployments_v2 SELECT * FROM deployments;
    INSERT INTO assets_v2 SELECT * FROM assets;
    INSERT INTO computes_v2 SELECT * FROM computes;
    INSERT INTO jobs_v2 SELECT * FROM jobs;
    DROP TABLE deployments;
    DROP TABLE endpoints;
    DROP TABLE assets;
    DROP TABLE computes;
    DROP TABLE jobs;
    ALTER TABLE endpoints_v2 RENAME TO endpoints;
    ALTER TABLE deployments_v2 RENAME TO deployments;
    ALTER TABLE assets_v2 RENAME TO assets;
    ALTER TABLE computes_v2 RENAME TO computes;
    ALTER TABLE jobs_v2 RENAME TO jobs;
    CREATE INDEX jobs_endpoint ON jobs(endpoint, created);
"""


def run_sql(c: sqlite3.Connection, script: str) -> None:
    """Run `;`-separated statements in the current transaction (executescript would commit)."""
    for statement in script.split(";"):
        if statement.strip():
            c.execute(statement)


def _free_name(taken: set[str], name: str) -> str:
    """`name-2`, `name-3`, ...: the first that no other name takes, ignoring case."""
    n = 2
    while f"{name}-{n}".lower() in taken:
        n += 1
    return f"{name}-{n}"


def _rename(c: sqlite3.Connection, table: str, where: str, args: tuple[object, ...], column: str, new: str,
            doc_keys: tuple[str, ...]) -> None:
    rows = c.execute(f"SELECT rowid, doc FROM {table} WHERE {where}", args).fetchall()
    for rowid, raw in rows:
        doc = json.loads(raw)
        for key in doc_keys:
            if key in doc:
                doc[key] = new
        doc.setdefault("renamed_by_migration", True)
        c.execute(f"UPDATE {table} SET {column} = ?, doc = ? WHERE rowid = ?",
                  (new, json.dumps(doc, sort_keys=True, default=str), rowid))


def _dedupe_case(c: sqlite3.Connection) -> None:
    """Registries written before names ignored case may hold `abc` and `ABC`: keep the first one
    created as it is and rename the others (`ABC-2`), so that nothing is lost by the migration."""
    c.execute("PRAGMA defer_foreign_keys = ON")  # deployments follow their endpoint's new name below
    for table, doc_keys in (("endpoints", ("name",)), ("computes", ("name",)), ("jobs", ("name",))):
        rows = c.execute(f"SELECT name FROM {table} ORDER BY created, name").fetchall()
        taken: set[str] = set()
        for (name,) in rows:
            if name.lower() not in taken:
                taken.add(name.lower())
                continue
            new = _free_name(taken, name)
            taken.add(new.lower())
            _rename(c, table, "name = ?", (name,), "name", new, doc_keys)
            if table == "endpoints":
                _rename(c, "deployments", "endpoint = ?", (name,), "endpoint", new, ("endpoint_name",))
                c.execute("UPDATE jobs SET endpoint = ? WHERE endpoint = ?", (new, name))
    for (endpoint,) in c.execute("SELECT DISTINCT lower(endpoint) FROM deployments").fetchall():
        rows = c.execute("SELECT endpoint, name FROM deployments WHERE lower(endpoint) = ? ORDER BY created, name",
                         (endpoint,)).fetchall()
        taken = set()
        for ep, name in rows:
            if name.lower() in taken:
                new = _free_name(taken, name)
                _rename(c, "deployments", "endpoint = ? AND name = ?", (ep, name), "name", new, ("name",))
                name = new
            taken.add(name.lower())
    for kind, lowered in c.execute("SELECT DISTINCT kind, lower(name) FROM assets").fetchall():
        names = [r[0] for r in c.execute(
            "SELECT name FROM assets WHERE kind = ? AND lower(name) = ? GROUP BY name ORDER BY min(seq)",
            (kind, lowered))]
        all_names = {r[0].lower() for r in c.execute("SELECT DISTINCT name FROM assets WHERE kind = ?", (kind,))}
        for name in names[1:]:  # another spelling of an asset already there: a separate asset, renamed
            new = _free_name(all_names, name)
            all_names.add(new.lower())
            _rename(c, "assets", "kind = ? AND name = ?", (kind, name), "name", new, ("name",))
    for kind, name in c.execute("SELECT DISTINCT kind, name FROM assets").fetchall():
        rows = c.execute("SELECT version FROM assets WHERE kind = ? AND name = ? ORDER BY seq", (kind, name)).fetchall()
        taken = set()
        for (version,) in rows:
            if version.lower() in taken:
                new = _free_name(taken, version)
                _rename(c, "assets", "kind = ? AND name = ? AND version = ?", (kind, name, version), "version",
                        new, ("version",))
                version = new
            taken.add(version.lower())


def names_ignore_case(c: sqlite3.Connection) -> None:
    """Schema 2: every name compares without case (see NOCASE_TABLES)."""
    _dedupe_case(c)
    run_sql(c, NOCASE_TABLES)


Migration = str | Callable[[sqlite3.Connection], None]

MIGRATIONS: list[Migration] = [INITIAL, names_ignore_case]
