"""Render results as table, json, yaml or tsv, after an optional JMESPath `--query` (as az does)."""

from __future__ import annotations

import io
import json
from typing import Any

import jmespath
import yaml
from rich.console import Console
from rich.table import Table

from .errors import UserError

FORMATS = ("table", "json", "yaml", "tsv", "jsonc", "none")

# `-o table` without --query: the columns a person reads, per kind of record (header, JMESPath),
# as az shows them; other records get their scalar fields.
TABLES: dict[str, list[tuple[str, str]]] = {
    "endpoint": [("Name", "name"), ("Description", "description"), ("Default deployment", "defaults.deployment_name"),
                 ("Auth mode", "auth_mode"), ("Scoring URI", "scoring_uri"), ("Created", "created_at")],
    "deployment": [("Name", "name"), ("Endpoint", "endpoint_name"), ("Model", "model"), ("Compute", "compute"),
                   ("Instances", "resources.instance_count"), ("Image", "image"), ("State", "provisioning_state"),
                   ("Updated", "updated_at")],
    "job": [("Name", "name"), ("Endpoint", "endpoint"), ("Deployment", "deployment"), ("Status", "status"),
            ("Mini-batches", "counts.mini_batches"), ("Items ok", "counts.items_succeeded"),
            ("Items failed", "counts.items_failed"), ("Created", "created_at"), ("Ended", "ended_at")],
    "model": [("Name", "name"), ("Version", "version"), ("Type", "type"), ("Description", "description"),
              ("Created", "created_at")],
    "environment": [("Name", "name"), ("Version", "version"), ("Image", "image"), ("Description", "description"),
                    ("Created", "created_at")],
    "environment-image": [("Image", "image"), ("Python", "python"), ("Strategy", "strategy"),
                          ("Packages", "packages"), ("Size", "size"), ("Environment size", "environment_size"),
                          ("Deployments", "deployments"), ("Images", "images"), ("Created", "created")],
    "data": [("Name", "name"), ("Version", "version"), ("Type", "type"), ("Path", "path"), ("Created", "created_at")],
    "compute": [("Name", "name"), ("Type", "type"), ("Min instances", "min_instances"),
                ("Max instances", "max_instances"), ("CPUs", "cpus"), ("Memory", "memory"), ("GPUs", "gpus")],
    "deployment-test": [("Deployment", "deployment"), ("Image", "image"), ("Env check", "env_check"),
                        ("Init s", "init_s"), ("Run s", "run_s"), ("Items ok", "items_ok")],
}


def query(data: Any, expression: str | None) -> Any:
    if not expression:
        return data
    try:
        return jmespath.search(expression, data)
    except jmespath.exceptions.JMESPathError as e:
        # jmespath's parse errors add the expression and a caret on further lines: keep one line.
        detail = str(e).splitlines()[0].rstrip(" :")
        raise UserError(f"--query {expression!r}: {detail}") from e


def render(data: Any, fmt: str = "json", expression: str | None = None, kind: str | None = None) -> str:
    """The text to print for `data` in format `fmt` (no trailing newline).

    `kind` (endpoint, deployment, job, ...) picks the columns of `-o table` when no query is given.
    """
    if fmt == "table" and not expression and kind in TABLES:
        data = _columns(data, TABLES[kind])
    data = query(data, expression)
    if fmt in ("json", "jsonc"):
        return json.dumps(data, indent=2, default=str)
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip("\n")
    if fmt == "tsv":
        return _tsv(data)
    if fmt == "table":
        return _table(data)
    if fmt == "none":
        return ""
    raise UserError(f"--output must be one of {', '.join(FORMATS)}, got {fmt!r}")


def _columns(data: Any, columns: list[tuple[str, str]]) -> Any:
    rows = data if isinstance(data, list) else [data]
    out = [{header: jmespath.search(path, row) for header, path in columns} for row in rows if isinstance(row, dict)]
    # A column nobody has a value for (e.g. no scoring URI while no server runs) is left out.
    keep = [h for h, _ in columns if any(r[h] not in (None, "") for r in out)] or [columns[0][0]]
    out = [{h: r[h] for h in keep} for r in out]
    return out if isinstance(data, list) else out[0]


def human_size(n: int) -> str:
    """A byte count as people read it: ``512 B``, ``3.4 MB``, ``1.2 GB`` (powers of 1000, as docker shows sizes)."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def _scalar(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "True" if v else "False"
    return str(v)


def _tsv(data: Any) -> str:
    # az's tsv: scalars as they are; a mapping's scalar values in order; one line per list item.
    rows = data if isinstance(data, list) else [data]
    lines = []
    for row in rows:
        if isinstance(row, dict):
            lines.append("\t".join(_scalar(v) for v in row.values() if not isinstance(v, (dict, list))))
        elif isinstance(row, list):
            lines.append("\t".join(_scalar(v) for v in row if not isinstance(v, (dict, list))))
        else:
            lines.append(_scalar(row))
    return "\n".join(lines)


def _table(data: Any) -> str:
    rows = data if isinstance(data, list) else [data]
    if not rows:
        return ""
    if not all(isinstance(r, dict) for r in rows):
        return "\n".join(_scalar(r) if not isinstance(r, (dict, list)) else json.dumps(r) for r in rows)
    columns: list[str] = []
    for r in rows:
        for k, v in r.items():
            if not isinstance(v, (dict, list)) and k not in columns:
                columns.append(k)
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for c in columns:
        table.add_column(c if " " in c or c[:1].isupper() else c.replace("_", " ").title())
    for r in rows:
        table.add_row(*(_scalar(r.get(c)) for c in columns))
    buf = io.StringIO()
    Console(file=buf, width=200, color_system=None, soft_wrap=True).print(table)
    return buf.getvalue().rstrip("\n")
