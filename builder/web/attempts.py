"""Every mini-batch attempt of a job, read incrementally from the workers' attempts CSVs.

`logs/sys/job_report/attempts/<worker>.csv` gets one row per attempt (appended in one write), and
`processed_mini-batches.csv` is their concatenation at the end. The index reads each file from
where it stopped last time, and keeps per attempt only numbers in compact arrays plus the row's
byte offset: 100,000 attempts take a few MB, a page of the table re-reads just its rows, and
charts and timelines are drawn from the arrays.
"""

from __future__ import annotations

import csv
import io
import os
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bepbuild_runtime import layout

COLUMNS = layout.PROCESSED_COLUMNS
_ID, _PICKED, _PROCESS, _START, _TOTAL, _SUCCEEDED = range(6)
_ELAPSED, _STATUS = 7, 10
HEADER = COLUMNS[0]


def parse_time(text: str) -> float:
    """A log timestamp (`2024-01-02T03:04:05.678Z`) as epoch seconds."""
    stamp = datetime.fromisoformat(text.rstrip("Z"))
    return stamp.replace(tzinfo=timezone.utc).timestamp()


@dataclass(frozen=True)
class Attempt:
    """One attempt, as the charts need it."""

    index: int
    batch: int
    picked: int
    worker: str
    start: float
    elapsed: float
    total: int
    succeeded: int
    status: str

    @property
    def end(self) -> float:
        return self.start + self.elapsed


class AttemptIndex:
    """The attempts of one job folder; `refresh()` reads only what was appended since."""

    def __init__(self, job_dir: Path) -> None:
        self.job_dir = Path(job_dir)
        self.lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.files: list[Path] = []
        self._consumed: dict[Path, int] = {}
        self.workers: list[str] = []
        self._worker_ids: dict[str, int] = {}
        self.statuses: list[str] = []
        self._status_ids: dict[str, int] = {}
        self.batch = array("q")
        self.picked = array("i")
        self.worker = array("i")
        self.status = array("i")
        self.total = array("i")
        self.succeeded = array("i")
        self.start = array("d")
        self.elapsed = array("d")
        self.file = array("i")
        self.offset = array("q")
        self._order: list[int] | None = None

    def __len__(self) -> int:
        return len(self.batch)

    def _sources(self) -> list[Path]:
        folder = self.job_dir / layout.LOG_ATTEMPTS_DIR
        try:
            names = sorted(n for n in os.listdir(folder) if n.endswith(".csv") and not n.startswith("."))
        except FileNotFoundError:
            merged = self.job_dir / layout.LOG_PROCESSED_MINI_BATCHES
            return [merged] if merged.is_file() else []
        return [folder / n for n in names]

    def refresh(self) -> None:
        """Read the rows appended since the last call (a file that shrank is read again)."""
        for path in self._sources():
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            done = self._consumed.get(path, 0)
            if size < done:  # rewritten: start over
                self._reset()
                return self.refresh()
            if size > done:
                self._read(path, done, size)

    def _read(self, path: Path, start: int, size: int) -> None:
        with open(path, "rb") as f:
            f.seek(start)
            chunk = f.read(size - start)
        end = chunk.rfind(b"\n")
        if end < 0:
            return  # not one whole line yet
        chunk = chunk[: end + 1]
        if path not in self._consumed:
            self.files.append(path)
        file_no = self.files.index(path)
        after = [start]  # byte offset after the last line handed to csv

        def lines() -> Iterator[str]:
            pos = 0
            while pos < len(chunk):
                nl = chunk.index(b"\n", pos)
                after[0] = start + nl + 1
                yield chunk[pos: nl + 1].decode("utf-8", "replace")
                pos = nl + 1

        consumed = start
        reader = csv.reader(lines())
        try:
            for row in reader:
                row_start, consumed = consumed, after[0]
                if len(row) < len(COLUMNS) - 1 or row[0] == HEADER:
                    continue
                self._add(row, file_no, row_start)
        except csv.Error:
            pass  # a row still being written: read it next time
        except ValueError:
            pass  # a malformed row: skip the rest of this chunk, keep what was good
        self._consumed[path] = consumed
        self._order = None

    def _add(self, row: list[str], file_no: int, offset: int) -> None:
        try:
            values = (int(row[_ID]), int(row[_PICKED]), parse_time(row[_START]), float(row[_ELAPSED]),
                      int(row[_TOTAL]), int(row[_SUCCEEDED]))
        except ValueError:
            return
        worker = self._worker_ids.setdefault(row[_PROCESS], len(self.workers))
        if worker == len(self.workers):
            self.workers.append(row[_PROCESS])
        status = self._status_ids.setdefault(row[_STATUS], len(self.statuses))
        if status == len(self.statuses):
            self.statuses.append(row[_STATUS])
        self.batch.append(values[0])
        self.picked.append(values[1])
        self.start.append(values[2])
        self.elapsed.append(values[3])
        self.total.append(values[4])
        self.succeeded.append(values[5])
        self.worker.append(worker)
        self.status.append(status)
        self.file.append(file_no)
        self.offset.append(offset)

    def attempt(self, i: int) -> Attempt:
        return Attempt(i, self.batch[i], self.picked[i], self.workers[self.worker[i]], self.start[i],
                       self.elapsed[i], self.total[i], self.succeeded[i], self.statuses[self.status[i]])

    def order(self) -> list[int]:
        """Attempt indexes by start time (cached until new rows arrive)."""
        if self._order is None:
            start = self.start
            self._order = sorted(range(len(start)), key=start.__getitem__)
        return self._order

    def failed_indexes(self) -> list[int]:
        """Attempts that did not end RUN_DONE, by start time."""
        done = self._status_ids.get(layout.STATUS_DONE, -1)
        status = self.status
        return [i for i in self.order() if status[i] != done]

    def rows(self, indexes: list[int]) -> list[list[str]]:
        """The full CSV rows of the given attempts, re-read from their files."""
        out: list[list[str]] = []
        handles: dict[int, io.BufferedReader] = {}
        try:
            for i in indexes:
                f = handles.get(self.file[i])
                if f is None:
                    f = handles[self.file[i]] = open(self.files[self.file[i]], "rb")  # noqa: SIM115
                f.seek(self.offset[i])
                out.append(_one_row(f))
        finally:
            for f in handles.values():
                f.close()
        return out


def _one_row(f: io.BufferedReader) -> list[str]:
    def lines() -> Iterator[str]:
        while line := f.readline():
            yield line.decode("utf-8", "replace")

    return next(csv.reader(lines()), [])


class _Cache:
    """A few job indexes kept between requests (a page polls its job every second)."""

    def __init__(self, size: int = 16, min_interval: float = 0.5) -> None:
        self.size = size
        self.min_interval = min_interval
        self._items: OrderedDict[Path, tuple[AttemptIndex, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, job_dir: Path) -> AttemptIndex:
        """The index of `job_dir`, refreshed unless it was moments ago; hold `index.lock` to read it."""
        key = Path(job_dir)
        with self._lock:
            index, at = self._items.pop(key, (None, 0.0))
            if index is None:
                index = AttemptIndex(key)
            self._items[key] = (index, at)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        now = time.monotonic()
        if now - at >= self.min_interval:
            with index.lock:
                index.refresh()
            with self._lock:
                if key in self._items:
                    self._items[key] = (index, now)
        return index


CACHE = _Cache()
