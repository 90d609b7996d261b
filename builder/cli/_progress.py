"""Build progress on stderr: a one-line live status, or nothing with --quiet."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape


@contextmanager
def build_status(quiet: bool, title: str) -> Iterator[Callable[[str], None]]:
    """Yields a line sink: each build/pip line updates the status (never printed as markup)."""
    if quiet:
        yield lambda line: None
        return
    console = Console(stderr=True)
    if not console.is_terminal:
        # Logs and CI: plain lines, so the build can be followed in a file.
        def plain(line: str) -> None:
            sys.stderr.write(line.rstrip("\n") + "\n")

        yield plain
        return
    with console.status(escape(title)) as status:
        def update(line: str) -> None:
            text = line.strip()
            if text:
                status.update(f"{escape(title)}  [dim]{escape(text[:100])}[/dim]")

        yield update
