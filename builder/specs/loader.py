"""YAML loading with file:line error messages, and pydantic errors turned into one line."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import SpecError


class Located:
    """A parsed YAML document plus the line of every key path in it."""

    def __init__(self, data: Any, lines: dict[tuple[str, ...], int], source: str):
        self.data = data
        self.lines = lines
        self.source = source

    def where(self, loc: Sequence[Any]) -> str:
        """`file:line` of the deepest known key along `loc`, or just `file`."""
        key = tuple(str(p) for p in loc)
        while key:
            if key in self.lines:
                return f"{self.source}:{self.lines[key]}"
            key = key[:-1]
        return self.source


# Spec files are small. These bounds stop hostile YAML before anything walks it: aliases that expand
# a few lines into billions of values ("billion laughs"), recursive aliases, and deep nesting.
MAX_DEPTH = 64
MAX_VALUES = 100_000


def _check_shape(node: yaml.Node, source: str) -> None:
    memo: dict[int, int] = {}

    def size(n: yaml.Node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise SpecError(f"nested more than {MAX_DEPTH} levels deep (or a recursive alias)", source=source)
        known = memo.get(id(n))
        if known is not None:
            return known
        total = 1
        if isinstance(n, yaml.MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in n.value)
        elif isinstance(n, yaml.SequenceNode):
            total += sum(size(v, depth + 1) for v in n.value)
        if total > MAX_VALUES:
            raise SpecError(f"more than {MAX_VALUES} values once its aliases are expanded", source=source)
        memo[id(n)] = total
        return total

    size(node, 0)


class _DuplicateKey(Exception):
    def __init__(self, path: tuple[str, ...], line: int, first: int):
        super().__init__(path)
        self.path, self.line, self.first = path, line, first


def _index_lines(node: yaml.Node, prefix: tuple[str, ...], out: dict[tuple[str, ...], int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            path = prefix + (str(k.value),)
            if path in out and isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                # YAML readers keep the last of two equal keys silently: a typo'd copy would win.
                raise _DuplicateKey(path, k.start_mark.line + 1, out[path])
            out[path] = k.start_mark.line + 1
            _index_lines(v, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            path = prefix + (str(i),)
            out[path] = v.start_mark.line + 1
            _index_lines(v, path, out)


def display_name(path: Path) -> str:
    """The name used for a file in messages: relative to the working dir when below it."""
    absolute = Path(os.path.abspath(path))
    cwd = Path.cwd()
    if absolute == cwd or cwd in absolute.parents:
        return os.path.relpath(absolute, cwd)
    return str(absolute)


def load_yaml(path: str | os.PathLike[str], *, what: str = "file") -> Located:
    """Read a YAML mapping; any problem is one SpecError naming the file (and line when known)."""
    p = Path(path)
    source = display_name(p)
    if not p.exists():
        raise SpecError(f"{what} not found", source=source)
    if p.is_dir():
        raise SpecError(f"{what} is a folder, expected a YAML file", source=source)
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"not a text file (invalid UTF-8 at byte {e.start})", source=source) from e
    except OSError as e:
        raise SpecError(f"cannot read: {e.strerror}", source=source) from e
    return parse_yaml(text, source)


def parse_yaml(text: str, source: str) -> Located:
    """Parse YAML text that must hold one mapping."""
    if "\x00" in text:
        raise SpecError("not a text file (contains NUL bytes)", source=source)
    if not text.strip():  # PyYAML trips over a line holding only a tab
        raise SpecError("file is empty", source=source)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            _check_shape(node, source)
        data = yaml.safe_load(text)
    except RecursionError:
        raise SpecError("invalid YAML: nested too deeply", source=source) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        raise SpecError(f"invalid YAML: {e.problem}", source=where) from e
    except yaml.YAMLError as e:
        raise SpecError(f"invalid YAML: {e}", source=source) from e
    if data is None:
        raise SpecError("file is empty", source=source)
    if not isinstance(data, dict):
        raise SpecError(f"must be a YAML mapping, got {_kind(data)}", source=source)
    lines: dict[tuple[str, ...], int] = {}
    if node is not None:
        try:
            _index_lines(node, (), lines)
        except _DuplicateKey as e:
            raise SpecError(f"duplicate key (first on line {e.first})", source=f"{source}:{e.line}",
                            field=".".join(e.path)) from None
    return Located(data, lines, source)


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _message(err: dict[str, Any]) -> str:
    kind = err["type"]
    given = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be an integer, got {given!r}"
    if kind in ("greater_than_equal", "greater_than"):
        limit = ctx.get("ge", ctx.get("gt"))
        if kind == "greater_than" or limit == 1:
            return f"must be a positive integer, got {given!r}" if limit in (0, 1) else (
                f"must be greater than {limit}, got {given!r}")
        return f"must be >= {limit}, got {given!r}"
    if kind == "less_than_equal":
        return f"must be <= {ctx.get('le')}, got {given!r}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {given!r}"
    if kind in ("string_type",):
        return f"must be a string, got {_kind(given)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping, got {_kind(given)}"
    if kind == "list_type":
        return f"must be a list, got {_kind(given)}"
    if kind == "bool_parsing" or kind == "bool_type":
        return f"must be true or false, got {given!r}"
    if kind == "value_error":
        msg = str(ctx.get("error", err.get("msg", "")))
        return msg
    msg = err.get("msg", kind)
    return msg[0].lower() + msg[1:] if msg else kind


def _field(loc: Sequence[Any]) -> str:
    # pydantic adds union-branch names (e.g. 'str', 'InlineModel') into loc; drop them.
    return ".".join(str(p) for p in _clean_loc(list(loc)))


_UNION_TAGS = {"str", "int", "constrained-str", "dict[str,str]", "function-after[_coerce(), dict[str,str]]"}


def _is_union_tag(part: Any) -> bool:
    # Branch names are a model class name, a type name, or a validator wrapper such as
    # 'function-after[_one_source(), EnvironmentSpec]'. User keys (e.g. an unknown 'Foo') are kept.
    return isinstance(part, str) and (part in _UNION_TAGS or "[" in part or part in _model_names())


def _model_names() -> set[str]:
    from .common import Spec

    names: set[str] = set()
    todo: list[type] = [Spec]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


def validate(model: type[BaseModel], doc: Located, *, context: dict[str, Any] | None = None) -> Any:
    """Validate a located document against a pydantic model; the first problem becomes one line."""
    try:
        return model.model_validate(doc.data, context=context)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        # Prefer the most specific error: unions report one error per branch.
        err = _best(errors)
        loc = [p for p in err["loc"]]
        field = _field(loc) or None
        raise SpecError(_message(err), source=doc.where(_clean_loc(loc)), field=field) from e


def _clean_loc(loc: list[Any]) -> list[Any]:
    return [p for p in loc if not _is_union_tag(p)]


def _best(errors: list[dict[str, Any]]) -> dict[str, Any]:
    # Union branches: a "must be a string" from the str branch is less useful than the mapping
    # branch's specific complaint, so pick the deepest location, preferring non-type errors.
    def score(err: dict[str, Any]) -> tuple[int, int]:
        generic = err["type"] in ("string_type", "dict_type", "model_type", "model_attributes_type")
        return (0 if generic else 1, len(_clean_loc(list(err["loc"]))))

    return max(errors, key=score)
