"""Options every `az ml` command takes that mean nothing locally: accepted and dropped.

Scripts written for Azure pass the workspace on each line (`-g my-rg -w my-ws`) or tune az's own
output (`--only-show-errors`); stripping them before parsing lets those lines run unchanged.
"""

from __future__ import annotations

# Options followed by a value (`-g X`, `--resource-group=X`) and flags without one.
WITH_VALUE = ("--resource-group", "-g", "--workspace-name", "-w", "--subscription", "--registry-name")
FLAGS = ("--only-show-errors", "--verbose")


def strip(argv: list[str]) -> tuple[list[str], list[str]]:
    """(argv without the Azure-only options, the options dropped). Stops at `--`."""
    kept: list[str] = []
    dropped: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            kept.extend(argv[i:])
            break
        name = arg.split("=", 1)[0]
        if name in WITH_VALUE and arg.startswith("--") and "=" in arg:
            dropped.append(arg)
        elif arg in WITH_VALUE and i + 1 < len(argv):
            dropped.extend(argv[i:i + 2])
            i += 1
        elif arg in FLAGS:
            dropped.append(arg)
        else:
            kept.append(arg)
        i += 1
    return kept, dropped
