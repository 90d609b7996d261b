"""A finished mini-batch's record: one file holding the claim, its counts and timings, then its rows.

`queue/done/<id>.json` is the claim file itself, grown and renamed (queue.complete)::

    {"id":...,"items":[...],"attempt":0}            line 1: the claim, byte for byte as it was claimed
    {"status":"done","worker":...,"succeeded":...}  line 2: counts and timings
    <rows>                                          append_row text, to the end of the file

Rows live in the record because the rename that publishes the record publishes them too: no file is
created per mini-batch (creating one cost 0.01-0.4 ms on a busy disk, the dearest step of a
mini-batch), and there is exactly one copy of a mini-batch's rows wherever a done record is.

Every writer of a claim writes one line of compact JSON without a newline (`_fs.dumps` escapes the
newlines of odd file names), so line 1 of a claim ends at its first newline. A worker killed while
growing its claim leaves line 1 whole; readers of claims take line 1 only, and the next claimer
cuts the rest off (`head`).

Records written before this format (single-line JSON, rows in `results/<id>.csv`) and failed/
records (single-line JSON) read the same way: a file without a newline is one JSON object and has
no rows of its own (`legacy_rows` names where they are). Stdlib only.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict

from . import layout
from ._fs import dumps

NL = b"\n"
CHUNK = 1 << 16
Record = Dict[str, Any]  # typing's: a builtin subscripted at run time needs 3.9


def head(raw: bytes) -> bytes:
    """Line 1 of a claim file's bytes: the claim (what a killed worker may have added is cut off)."""
    end = raw.find(NL)
    return raw if end < 0 else raw[:end]


def tail(stats: Record, rows: bytes | None) -> bytes:
    """What complete() adds after the claim: a newline, line 2 (`stats`), then the rows."""
    return NL + dumps(stats).encode("ascii") + NL + (rows or b"")


def whole(claim: Record, stats: Record, rows: bytes | None) -> bytes:
    """A record written from scratch (when the claim file cannot be grown)."""
    return dumps(claim).encode("ascii") + tail(stats, rows)


def _read_to_newlines(fd: int, wanted: int) -> tuple[bytes, list[int]]:
    """(the bytes read, where their first `wanted` newlines are): reads in chunks until it has seen
    `wanted` newlines or the end, joining once (a long line 1, 10,000 items, is read in linear time)."""
    chunks: list[bytes] = []
    found: list[int] = []
    size = 0
    while len(found) < wanted:
        chunk = os.read(fd, CHUNK)
        if not chunk:
            break
        at = chunk.find(NL)
        while at >= 0 and len(found) < wanted:
            found.append(size + at)
            at = chunk.find(NL, at + 1)
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), found


def _lines(fd: int) -> tuple[bytes, int]:
    """(the bytes read, the offset of the rows): reads until two newlines are seen, or to the end
    (-1: no second newline, a record without rows of its own)."""
    buf, found = _read_to_newlines(fd, 2)
    return buf, (found[1] + 1 if len(found) == 2 else -1)


def read_head(fd: int) -> tuple[bytes, bool]:
    """(line 1 of an open claim file, whether the file holds more than that line): what a worker
    killed while growing it added is read no further than its first newline."""
    buf, found = _read_to_newlines(fd, 1)
    return (buf[:found[0]], True) if found else (buf, False)


def parse(buf: bytes, rows_at: int) -> Record:
    """The record in `buf` (from _lines): line 1 and line 2 merged, or the one JSON object of a
    single-line record. ValueError when it is not (yet) a record."""
    if rows_at < 0:
        first = buf.find(NL)
        if first >= 0:  # line 2 not whole yet: only a claim being grown looks like this
            raise ValueError("an unfinished record")
        rec = json.loads(buf)
    else:
        first = buf.find(NL)
        rec = json.loads(buf[:first])
        if isinstance(rec, dict):
            rec.update(json.loads(buf[first + 1:rows_at - 1]))
    if not isinstance(rec, dict):
        raise ValueError("a record is a JSON object")
    return rec


def read_fd(fd: int) -> tuple[Record, int]:
    """(the record, the offset of its rows or -1) of an open record file, read from its start."""
    buf, rows_at = _lines(fd)
    return parse(buf, rows_at), rows_at


def read(path: str) -> Record:
    """The record at `path` (done or failed). OSError when it cannot be opened, ValueError when it
    is not a record."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        return read_fd(fd)[0]
    finally:
        os.close(fd)


def rows_offset(fd: int) -> int:
    """Where the rows of an open done record start (-1: none of its own, see legacy_rows)."""
    return _lines(fd)[1]


def legacy_rows(job_dir: str, bid: str) -> str:
    """Where an older runtime put the rows of mini-batch `bid` (a record without rows of its own)."""
    return layout.path(job_dir, layout.RESULTS_DIR, bid + layout.RESULT_SUFFIX)
