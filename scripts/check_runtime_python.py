"""Check that the runtime (`runtime/`, copied into images whose Python the user picks) keeps to its
minimum Python, `bepbuild_runtime.layout.MIN_PYTHON`.

Two parts: `vermin` finds syntax, standard-library members and arguments newer than the minimum
(``functools.cache``, ``zip(strict=)``, ``match``...). It does not look at what is evaluated at run
time outside annotations: subscripted builtins and ABCs (``dict[str, Any]``,
``collections.abc.Iterable[str]``: 3.9) and ``X | Y`` of types (3.10); nor at newer methods of values
whose type it cannot infer (``name.removeprefix(...)``). This script finds those on the AST;
annotations count only in a module without ``from __future__ import annotations``.

Usage: python scripts/check_runtime_python.py [PATH ...]   (default: the runtime). Exit 1 on a finding.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[1] / "runtime"


def _min_python() -> tuple[int, ...]:
    """`layout.MIN_PYTHON`, read from the file itself (stdlib only: no install needed)."""
    spec = importlib.util.spec_from_file_location("_runtime_layout", RUNTIME / "layout.py")
    assert spec is not None and spec.loader is not None
    layout = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layout)
    return tuple(layout.MIN_PYTHON)

# Subscriptable at run time only from Python 3.9 (PEP 585), and `|` of types from 3.10 (PEP 604).
GENERIC_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "type"}
GENERIC_DOTTED = {"os.PathLike", "subprocess.Popen", "subprocess.CompletedProcess", "queue.Queue", "re.Pattern",
                  "re.Match", "contextlib.AbstractContextManager"}
GENERIC_MODULES = {"collections", "collections.abc"}
TYPE_NAMES = GENERIC_BUILTINS | {"int", "float", "complex", "str", "bytes", "bool", "object"}
# Methods of str/bytes, pathlib.Path and int that no older type has under that name.
NEWER_METHODS = {"removeprefix": "3.9", "removesuffix": "3.9", "is_relative_to": "3.9", "with_stem": "3.9",
                 "hardlink_to": "3.10", "bit_count": "3.10"}


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


class _RuntimeTypeExpressions(ast.NodeVisitor):
    """Subscripted builtins/ABCs and `X | Y` of types where Python evaluates them."""

    def __init__(self, annotations_evaluated: bool) -> None:
        self.annotations_evaluated = annotations_evaluated
        self.abc_names: set[str] = set()  # names imported from collections(.abc)
        self.found: list[tuple[int, str]] = []

    def _annotation(self, node: ast.expr | None) -> None:
        if node is not None and self.annotations_evaluated:
            self.visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module in GENERIC_MODULES:
            self.abc_names |= {a.asname or a.name for a in node.names}

    def visit_arg(self, node: ast.arg) -> None:
        self._annotation(node.annotation)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for child in (*node.decorator_list, node.args, *node.body):
            self.visit(child)
        self._annotation(node.returns)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit(node.target)
        if node.value is not None:
            self.visit(node.value)
        self._annotation(node.annotation)

    def _generic(self, node: ast.expr) -> str | None:
        if not isinstance(node, ast.Subscript):
            return None
        name = _dotted(node.value)
        if name is None:
            return None
        if (name in GENERIC_BUILTINS or name in GENERIC_DOTTED or name in self.abc_names
                or name.rpartition(".")[0] in GENERIC_MODULES):
            return name
        return None

    def _is_type(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Constant):
            return node.value is None
        if isinstance(node, ast.BinOp):
            return isinstance(node.op, ast.BitOr) and self._is_type(node.left) and self._is_type(node.right)
        return self._generic(node) is not None or _dotted(node) in TYPE_NAMES

    def visit_Subscript(self, node: ast.Subscript) -> None:
        name = self._generic(node)
        if name is not None:
            self.found.append((node.lineno, f"{name}[...] evaluated at run time needs Python 3.9"))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Attribute) and node.func.attr in NEWER_METHODS:
            self.found.append((node.lineno, f".{node.func.attr}() needs Python {NEWER_METHODS[node.func.attr]}"))
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, ast.BitOr) and (self._is_type(node.left) or self._is_type(node.right)):
            if self._is_type(node.left) and self._is_type(node.right):
                self.found.append((node.lineno, "X | Y of types evaluated at run time needs Python 3.10"))
                return
        self.generic_visit(node)


def runtime_type_expressions(path: Path) -> list[str]:
    """`path:line: what` for each type expression that the minimum Python cannot evaluate."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and
                 any(a.name == "annotations" for a in n.names) for n in tree.body)
    finder = _RuntimeTypeExpressions(annotations_evaluated=not future)
    finder.visit(tree)
    return [f"{path}:{line}: {what}" for line, what in sorted(finder.found)]


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or [RUNTIME]
    files = sorted(f for p in paths for f in ([p] if p.is_file() else p.rglob("*.py")))
    minimum = ".".join(map(str, _min_python()))
    found = [line for f in files for line in runtime_type_expressions(f)]
    for line in found:
        print(line)
    vermin = subprocess.run(
        [sys.executable, "-c", "import sys, vermin; sys.argv[0] = 'vermin'; vermin.main()", "--no-config-file",
         f"--target={minimum}-", "--violations", "--no-tips", "--quiet", *map(str, files)],
    )
    if found or vermin.returncode != 0:
        print(f"the runtime must run on Python {minimum} (bepbuild_runtime.layout.MIN_PYTHON)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
