"""A worker's log lines are written whole even when the kernel takes fewer bytes than asked (a
signal, a file-size limit): the rest is written after it instead of being dropped."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from bepbuild_runtime import layout, reports


@pytest.fixture
def short_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """os.write takes at most 7 bytes per call; returns the sizes it was asked to write."""
    real, asked = os.write, []

    def write(fd: int, data: bytes | memoryview) -> int:
        asked.append(len(data))
        return real(fd, bytes(data[:7]))

    monkeypatch.setattr(os, "write", write)
    return asked


def test_lines_are_whole_after_short_writes(tmp_path: Path, short_writes: list[int]) -> None:
    logs = reports.WorkerLogs(str(tmp_path), "instance-0.0")
    batch = {"id": "000000007", "items": ["a.png", "b,c.png"], "attempt": 1}
    logs.note("worker started")
    logs.attempt(batch, layout.STATUS_DONE, start=0.0, elapsed=0.5, succeeded=2)
    logs.close()
    reports.append_text(str(tmp_path / "extra.txt"), "one line of text\n")
    assert max(short_writes) > 7  # the writes were cut
    node = (tmp_path / layout.LOG_SYS_NODE / "instance-0" / "instance-0.0.txt").read_text().splitlines()
    assert node[0].endswith("instance-0.0 worker started")
    assert "mini-batch 000000007 try 2: " + layout.STATUS_DONE in node[1] and node[1].endswith("run=0.0000s")
    with open(tmp_path / layout.LOG_ATTEMPTS_DIR / "instance-0.0.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(layout.PROCESSED_COLUMNS)
    assert rows[1][:3] == ["000000007", "2", "instance-0.0"] and '"b,c.png"' in rows[1][-1]
    assert (tmp_path / "extra.txt").read_text() == "one line of text\n"
