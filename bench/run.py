"""Run every benchmark in bench/: each `bench/<name>.py` with a `main()` (this runner and `_*.py` aside).

    .venv/bin/python bench/run.py            # all of them, in name order
    .venv/bin/python bench/run.py build      # only bench/build.py

A benchmark's `main()` is called without arguments (and with an empty command line); it prints its
own table and returns an exit code (None counts as 0). One that fails is reported and the others still
run; the runner exits 1 then.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parent


def discover(names: list[str] | None = None) -> list[Path]:
    files = sorted(p for p in BENCH.glob("*.py") if p.name != "run.py" and not p.name.startswith("_"))
    if names:
        wanted = {n.removesuffix(".py") for n in names}
        unknown = wanted - {p.stem for p in files}
        if unknown:
            raise SystemExit(f"bench/run: no benchmark {', '.join(sorted(unknown))} in {BENCH}")
        files = [p for p in files if p.stem in wanted]
    return files


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    results: list[tuple[str, str, float]] = []
    for path in discover(argv):
        start = time.perf_counter()
        try:
            module = load(path)
            if not callable(getattr(module, "main", None)):
                continue  # a helper module, not a benchmark
            print(f"== bench/{path.name}", flush=True)
            saved, sys.argv = sys.argv, [str(path)]  # a main() that parses sys.argv sees no arguments
            try:
                code = module.main()
            finally:
                sys.argv = saved
            status = "ok" if not code else f"exit {code}"
        except SystemExit as e:
            status = "ok" if not e.code else f"failed: {e.code}"
        except Exception:
            traceback.print_exc()
            status = "crashed"
        results.append((path.name, status, time.perf_counter() - start))
        print(flush=True)
    print("== summary")
    for name, status, seconds in results:
        print(f"{name:<24} {status:<40} {seconds:8.1f} s")
    return 1 if any(status != "ok" for _, status, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())
