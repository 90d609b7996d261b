"""A job's outputs: the files of its output folder, pages of its append_row file read the way
Azure's examples read it, thumbnails of image inputs beside their rows, row counts of parquet files.

Pages of the output file are found through a sparse line index (one offset per page), built only
as far as the page asked and kept while the file is unchanged: page 1 of a million-row file reads
one page, not the file.
"""

from __future__ import annotations

import csv
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..render import MLFLOW_DRIVER
from .paths import IMAGE_SUFFIXES, own_output_folder, relative

PAGE_ROWS = 50
MAX_LISTED_FILES = 1000
PARQUET_SUFFIXES = (".parquet", ".pqt")


def separator(job: dict[str, Any]) -> str:
    """The field separator of the job's output file: Azure's generated MLflow driver writes commas,
    custom scoring scripts' append_row writes spaces (`pd.read_csv(..., sep=" ", header=None)`)."""
    return "," if job.get("scoring_script") == MLFLOW_DRIVER else " "


@dataclass(frozen=True)
class OutputFile:
    """One file of the output folder."""

    rel: str
    size: int
    rows: int | None = None  # parquet: row count from the footer
    note: str | None = None


def list_files(job: dict[str, Any], limit: int = MAX_LISTED_FILES) -> tuple[list[OutputFile], bool]:
    """The files of the job's output folder (recursively, hidden temp files aside), and whether the
    list was cut at `limit`. A folder the user chose (--output-path) may hold anything of theirs:
    of it only the job's output file is listed."""
    root = Path(job.get("output_dir") or "")
    out: list[OutputFile] = []
    if not root.is_dir():
        return out, False
    if not own_output_folder(job):
        path = Path(job.get("output_file") or "")
        rel = relative(root, path) if job.get("output_file") and path.is_file() else None
        return ([OutputFile(rel, path.stat().st_size)] if rel else []), False
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for n in sorted(names):
            if n.startswith("."):
                continue
            p = Path(folder) / n
            rel = relative(root, p)
            try:
                st = p.stat()
            except OSError:
                continue
            if rel is None:
                continue
            if len(out) >= limit:
                return out, True
            rows, note = (None, None)
            if p.suffix.lower() in PARQUET_SUFFIXES:
                rows, note = parquet_rows(p, st)
            out.append(OutputFile(rel, st.st_size, rows, note))
    return out, False


_PARQUET: dict[tuple[str, int, float], tuple[int | None, str | None]] = {}


def parquet_rows(path: Path, st: os.stat_result | None = None) -> tuple[int | None, str | None]:
    """The row count from a parquet file's footer (pyarrow reads only the metadata)."""
    st = st or path.stat()
    key = (str(path), st.st_size, st.st_mtime)
    if key in _PARQUET:
        return _PARQUET[key]
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return None, "row count needs pyarrow (pip install 'bepbuild[dashboard]')"
    try:
        result: tuple[int | None, str | None] = (pq.ParquetFile(path).metadata.num_rows, None)
    except Exception as e:  # a file being written, or not parquet at all
        result = (None, f"unreadable: {type(e).__name__}")
    if len(_PARQUET) > 1000:
        _PARQUET.clear()
    _PARQUET[key] = result
    return result


class _LineIndex:
    """Offsets of every PAGE_ROWS-th line of one file version, extended on demand."""

    def __init__(self, path: Path, size: int) -> None:
        self.path, self.size = path, size
        self.starts = [0]  # byte offset of the first line of each page
        self.scanned = 0  # bytes looked at so far
        self.lines_seen = 0
        self.lock = threading.Lock()
        self._rows: int | None = None

    def rows(self) -> int:
        """Lines in the file (a last line without newline counts)."""
        if self._rows is None:
            n, last = 0, b"\n"
            with open(self.path, "rb") as f:
                while chunk := f.read(1 << 20):
                    n += chunk.count(b"\n")
                    last = chunk[-1:]
            self._rows = n + (1 if last != b"\n" else 0)
        return self._rows

    def page_start(self, page: int) -> int | None:
        """Byte offset of page `page` (0-based), None past the end."""
        with self.lock, open(self.path, "rb") as f:
            f.seek(self.scanned)
            while len(self.starts) <= page and self.scanned < self.size:
                chunk = f.read(min(1 << 20, self.size - self.scanned))
                if not chunk:
                    break
                pos = 0
                while True:
                    nl = chunk.find(b"\n", pos)
                    if nl < 0:
                        break
                    self.lines_seen += 1
                    if self.lines_seen % PAGE_ROWS == 0 and self.scanned + nl + 1 < self.size:
                        self.starts.append(self.scanned + nl + 1)
                    pos = nl + 1
                self.scanned += len(chunk)
        return self.starts[page] if page < len(self.starts) else None


_INDEXES: OrderedDict[tuple[str, int, float], _LineIndex] = OrderedDict()
_INDEX_LOCK = threading.Lock()


def _index(path: Path) -> _LineIndex:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime)
    with _INDEX_LOCK:
        idx = _INDEXES.pop(key, None) or _LineIndex(path, st.st_size)
        _INDEXES[key] = idx
        while len(_INDEXES) > 16:
            _INDEXES.popitem(last=False)
    return idx


@dataclass(frozen=True)
class Page:
    """Rows of the output file, split as Azure's reading splits them."""

    rows: list[list[str]]
    page: int  # 0-based
    pages: int
    total_rows: int
    thumbnails: list[str | None]  # per row: the input file (relative to the input folder), or None


def predictions_page(job: dict[str, Any], page: int = 0) -> Page | None:
    """Page `page` of the job's output file, None when the job has none (yet)."""
    path = Path(job.get("output_file") or "")
    if not job.get("output_file") or not path.is_file():
        return None
    idx = _index(path)
    total = idx.rows()
    pages = max(1, -(-total // PAGE_ROWS))
    page = min(max(0, page), pages - 1)
    start = idx.page_start(page)
    lines: list[str] = []
    if start is not None:
        with open(path, "rb") as f:
            f.seek(start)
            for _ in range(PAGE_ROWS):
                line = f.readline()
                if not line:
                    break
                lines.append(line.decode("utf-8", "replace"))
    sep = separator(job)
    rows = [next(csv.reader([ln.rstrip("\r\n")], delimiter=sep), []) for ln in lines]
    finder = _InputFinder(job)
    thumbs = [finder.find(r) for r in rows]
    return Page(rows, page, pages, total, thumbs)


class _InputFinder:
    """Which input image a prediction row names (its file column), when the inputs are images."""

    def __init__(self, job: dict[str, Any]) -> None:
        root = job.get("input_root")
        self.root = Path(root).resolve() if root else None
        self.single = (job.get("input") or {}).get("type") == "uri_file"
        self._single_item: str | None = None
        self.job = job

    def find(self, row: list[str]) -> str | None:
        if self.root is None:
            return None
        for cell in row:
            cell = cell.strip()
            if not cell.lower().endswith(IMAGE_SUFFIXES):
                continue
            name = _item_name(cell)
            if name and self._is_item(name):
                return name
        return None

    def _is_item(self, name: str) -> bool:
        if self.single:
            if self._single_item is None:
                from .paths import single_item

                self._single_item = single_item(self.job) or ""
            return name == self._single_item
        return (self.root / name).is_file()  # type: ignore[operator]


def _item_name(cell: str) -> str | None:
    """The input item a cell names. Inputs are listed without recursion, so an item is a name in
    the input folder: a cell holding a path (the container's mount point, the folder itself for
    the process backend) names the item by its last part."""
    name = os.path.basename(cell.rstrip("/"))
    return name if name not in ("", ".", "..") else None
