"""Input file names a scoring job must survive, shared by the unit (process backend) and docker tests.

Spaces, unicode, a newline, a tab, shell and glob characters, a very long name, and names that are
not valid UTF-8 at all. The ECHO scoring script answers one row per input: the file's content
(unique per file) and its base name as JSON (always one line, and exact), so a test can check that
every file reached run() under its own name, exactly once.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

WEIRD_NAMES = [
    "with space.txt", "  leading and trailing  ", "ünïcødé ✓.txt", "日本語のファイル.txt", "emoji-😀.txt",
    "line\nbreak.txt", "tab\there.txt", "-rf.txt", "quote'\"s.txt", "back\\slash.txt", "star*?[x].txt",
    "semicolon;ls.txt", "$(id).txt", "%2F..%2F.txt", "x" * 240 + ".txt",
]
WEIRD_BYTES = [b"undecodable-\xff\xfe.txt", b"latin1-caf\xe9.txt"]

# Answers one line per input: its content (unique per file) and its name as JSON (one line, exact).
ECHO = """
import json, os

def run(mini_batch):
    return [open(p, "rb").read().decode() + " " + json.dumps(os.path.basename(p)) for p in mini_batch]
"""


def make_weird_inputs(folder: Path) -> dict[str, str]:
    """Files with hostile names; returns {content: json name} (what each output row must say)."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    names: list[bytes] = [os.fsencode(n) for n in WEIRD_NAMES] + WEIRD_BYTES
    for i, raw in enumerate(names):
        content = f"item-{i:02d}"
        with open(os.path.join(os.fsencode(folder), raw), "wb") as f:
            f.write(content.encode())
        expected[content] = json.dumps(os.fsdecode(raw))
    return expected


def read_echo_rows(output_file: str | Path) -> dict[str, str]:
    """{content: json name} from an ECHO job's output; fails on a row written twice."""
    rows = Path(output_file).read_bytes().decode("utf-8", "surrogateescape").splitlines()
    pairs = [row.split(" ", 1) for row in rows]
    twice = [k for k, n in Counter(k for k, _ in pairs).items() if n > 1]
    assert not twice, f"scored more than once: {twice}"
    return dict(pairs)
