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


class JobProgress:
    """One live progress bar for a whole job on stderr: mini-batches, items, rate, ETA, instances."""

    def __init__(self, name: str, quiet: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.quiet = quiet
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("mini-batches"),
            TextColumn("{task.fields[items]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            TextColumn("{task.fields[instances]}"), console=self.console, transient=False,
            disable=quiet or not self.console.is_terminal,
        )
        self.task = self.progress.add_task(escape(name[:12]), total=None, items="", instances="")
        self._last_plain = ""

    def __enter__(self) -> JobProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, counts: object, instances: list[str], job: dict[str, object]) -> None:
        c = counts
        finished = c.done + c.failed  # type: ignore[attr-defined]
        items = f"items ok {c.items_succeeded} failed {c.items_failed}"  # type: ignore[attr-defined]
        inst = f"{len(instances)} instance(s) running"
        self.progress.update(self.task, total=c.total, completed=finished, items=items, instances=inst)  # type: ignore[attr-defined]
        if not self.quiet and not self.console.is_terminal:
            line = f"{job.get('status')}: {finished}/{c.total} mini-batches, {items}, {inst}"  # type: ignore[attr-defined]
            if line != self._last_plain and finished != getattr(self, "_last_finished", -1):
                self._last_finished = finished
                if finished == c.total or finished % max(1, (c.total or 1) // 10) == 0:  # type: ignore[attr-defined]
                    sys.stderr.write(line + "\n")
                self._last_plain = line
