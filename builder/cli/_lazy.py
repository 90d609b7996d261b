"""Modules the CLI imports only when a command uses them.

Every command module is imported to build the command tree, but one run uses one command: importing
pydantic, the docker SDK and jinja2 up front cost about half a second of every `bepbuild` call (an
unchanged redeploy is mostly that). A module made here is executed at its first attribute access.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def module(name: str) -> ModuleType:
    """`name` (absolute, e.g. "bepbuild.deploy"), executed when one of its attributes is first read."""
    if name in sys.modules:
        return sys.modules[name]
    parent, _, child = name.rpartition(".")
    if parent:
        importlib.import_module(parent)  # packages here are light: their __init__ imports nothing heavy
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {name!r}")
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    loader.exec_module(mod)
    if parent and child:
        setattr(sys.modules[parent], child, mod)
    return mod
