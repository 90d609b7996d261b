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


def query(data: Any, expression: str | None) -> Any:
    if not expression:
        return data
    try:
        return jmespath.search(expression, data)
    except jmespath.exceptions.JMESPathError as e:
        # jmespath's parse errors add the expression and a caret on further lines: keep one line.
        detail = str(e).splitlines()[0].rstrip(" :")
        raise UserError(f"--query {expression!r}: {detail}") from e


def render(data: Any, fmt: str = "json", expression: str | None = None) -> str:
    """The text to print for `data` in format `fmt` (no trailing newline)."""
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
        table.add_column(c.replace("_", " ").title())
    for r in rows:
        table.add_row(*(_scalar(r.get(c)) for c in columns))
    buf = io.StringIO()
    Console(file=buf, width=200, color_system=None, soft_wrap=True).print(table)
    return buf.getvalue().rstrip("\n")
