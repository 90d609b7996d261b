"""The command line imports what a command needs when it runs: building the command tree imports
neither pydantic, the docker SDK, jinja2 nor pandas (they were half a second of every call)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("pydantic", "docker", "jinja2", "pandas", "starlette", "azure")


def test_building_the_command_tree_imports_nothing_heavy() -> None:
    code = ("import sys, bepbuild.cli; from typer.main import get_command; get_command(bepbuild.cli.app); "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"imported at start: {out}"
