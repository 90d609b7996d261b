"""`--set key.sub=value` overrides, applied to the raw document before validation (as az does)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from ..errors import SpecError


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """``a.b=3`` -> (["a", "b"], 3). Values are read as YAML scalars (numbers, booleans, null)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(f"--set {text!r}: expected key=value")
    parts = key.split(".")
    if any(not p for p in parts):
        raise SpecError(f"--set {text!r}: empty part in key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, (dict, list)) and not raw.strip().startswith(("{", "[")):
        value = raw
    return parts, value


def apply(doc: dict[str, Any], assignments: Iterable[str]) -> dict[str, Any]:
    """Return a copy of `doc` with every assignment applied; lists are indexed by number."""
    import copy

    out = copy.deepcopy(doc)
    for text in assignments:
        parts, value = parse_assignment(text)
        node: Any = out
        for i, part in enumerate(parts[:-1]):
            nxt = _get(node, part, text)
            if nxt is None:
                nxt = {}
                _put(node, part, nxt, text)
            elif not isinstance(nxt, (dict, list)):
                raise SpecError(f"--set {text!r}: {'.'.join(parts[: i + 1])} is not a mapping")
            node = nxt
        _put(node, parts[-1], value, text)
    return out


def _get(node: Any, part: str, text: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, text)]
    return node.get(part)


def _put(node: Any, part: str, value: Any, text: str) -> None:
    if isinstance(node, list):
        node[_index(node, part, text)] = value
    else:
        node[part] = value


def _index(node: list[Any], part: str, text: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise SpecError(f"--set {text!r}: {part!r} is not an index of a list of {len(node)}")
    return int(part)
