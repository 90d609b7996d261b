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
from itertools import accumulate
from pathlib import Path

from bepbuild_runtime import layout

COLUMNS = layout.PROCESSED_COLUMNS
_ID, _PICKED, _PROCESS, _START, _TOTAL, _SUCCEEDED = range(6)
_ELAPSED, _STATUS = 7, 10
HEADER = COLUMNS[0]
HEADER_BYTES = HEADER.encode()


def parse_time(text: str) -> float:
    """A log timestamp (`2024-01-02T03:04:05.678Z`) as epoch seconds."""
    stamp = datetime.fromisoformat(text.rstrip("Z"))
    return stamp.replace(tzinfo=timezone.utc).timestamp()


_SECONDS: dict[bytes, float] = {}


def _stamp(text: bytes) -> float:
    """parse_time of a CSV field: the whole seconds are parsed once per distinct second (attempts
    of one second share them), the milliseconds added."""
    whole = text[:19]
    base = _SECONDS.get(whole)
    if base is None:
        if len(_SECONDS) > 100_000:
            _SECONDS.clear()
        base = _SECONDS[whole] = parse_time(whole.decode("ascii"))
    frac = text[19:].rstrip(b"Z")
    return base + float(frac) if frac else base


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
        self._worker_ids: dict[bytes, int] = {}
        self.statuses: list[str] = []
        self._status_ids: dict[bytes, int] = {}
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
        if path not in self._consumed:
            self.files.append(path)
        file_no = self.files.index(path)
        lines = chunk.split(b"\n")[:-1]  # the last part has no newline yet: still being written
        ends = list(accumulate(len(line) + 1 for line in lines))
        if any(line.count(b'"') & 1 for line in lines):
            records, offsets, consumed = _join_quoted(lines, ends, start)
        else:  # no quoted newline (the usual case): one line, one record
            records, consumed = lines, start + (ends[-1] if ends else 0)
            offsets = [start + e for e in [0, *ends[:-1]]] if lines else []
        # The first eleven fields (ids, counts, times, the status) never hold a comma or a quote.
        fields = [r.split(b",", _STATUS + 1) for r in records]
        keep = [i for i, f in enumerate(fields) if len(f) > _STATUS and f[_ID] != HEADER_BYTES]
        fields, offsets = [fields[i] for i in keep], [offsets[i] for i in keep]
        self._consumed[path] = consumed
        self._order = None
        try:
            self._extend(fields, offsets, file_no)
        except ValueError:  # a row that is not an attempt: add the others one by one
            for f, offset in zip(fields, offsets, strict=True):
                try:
                    self._extend([f], [offset], file_no)
                except ValueError:
                    continue

    def _extend(self, fields: list[list[bytes]], offsets: list[int], file_no: int) -> None:
        """Append parsed rows column by column (ValueError, and nothing appended, for a bad row)."""
        columns = (
            array("q", [int(f[_ID]) for f in fields]), array("i", [int(f[_PICKED]) for f in fields]),
            array("d", [_stamp(f[_START]) for f in fields]), array("d", [float(f[_ELAPSED]) for f in fields]),
            array("i", [int(f[_TOTAL]) for f in fields]), array("i", [int(f[_SUCCEEDED]) for f in fields]),
            array("i", [self._id(self._worker_ids, self.workers, f[_PROCESS]) for f in fields]),
            array("i", [self._id(self._status_ids, self.statuses, f[_STATUS]) for f in fields]),
        )
        for target, values in zip((self.batch, self.picked, self.start, self.elapsed, self.total, self.succeeded,
                                   self.worker, self.status), columns, strict=True):
            target.extend(values)
        self.file.extend(array("i", [file_no]) * len(fields))
        self.offset.extend(array("q", offsets))

    @staticmethod
    def _id(ids: dict[bytes, int], names: list[str], name: bytes) -> int:
        found = ids.get(name)
        if found is None:
            found = ids[name] = len(names)
            names.append(name.decode("utf-8", "replace"))
        return found

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
        done = self._status_ids.get(layout.STATUS_DONE.encode(), -1)
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


def _join_quoted(lines: list[bytes], ends: list[int], start: int) -> tuple[list[bytes], list[int], int]:
    """Records from lines where a quoted field (an error message) holds newlines: a record goes on
    until its quotes balance. Returns the records, their offsets, and the bytes consumed (a record
    whose quotes never balance is still being written: it is left for the next read)."""
    records: list[bytes] = []
    offsets: list[int] = []
    i, consumed = 0, start
    while i < len(lines):
        first, quotes = i, lines[i].count(b'"')
        i += 1
        while quotes & 1 and i < len(lines):
            quotes += lines[i].count(b'"')
            i += 1
        if quotes & 1:
            break
        records.append(b"\n".join(lines[first:i]))
        offsets.append(consumed)
        consumed = start + ends[i - 1]
    return records, offsets, consumed


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
