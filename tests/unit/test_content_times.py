"""Files of a build context (and the registry's) get a time from their content: BuildKit sends a
context file again only when its size or time changed, so two contents of one size must differ."""

from __future__ import annotations

import os
from pathlib import Path

from bepbuild import context_dir, registry
from bepbuild.hashing import FIXED_MTIME, file_sha256, is_stamped
from bepbuild.store import Store


def test_context_files_of_one_size_get_times_from_their_content(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    context_dir.write(a, b"AAAA", 0o644)
    context_dir.write(b, b"BBBB", 0o644)
    context_dir.write(c, b"AAAA", 0o644)
    sa, sb, sc = a.stat(), b.stat(), c.stat()
    assert sa.st_size == sb.st_size and sa.st_mtime_ns != sb.st_mtime_ns
    assert sa.st_mtime_ns == sc.st_mtime_ns  # same content, same time: renders stay byte-identical
    assert all(int(s.st_mtime) == FIXED_MTIME and is_stamped(s) for s in (sa, sb, sc))


def test_a_file_fixed_by_an_earlier_release_is_not_taken_as_settled(tmp_path: Path) -> None:
    old = tmp_path / "old.py"
    old.write_bytes(b"x")
    os.utime(old, (FIXED_MTIME, FIXED_MTIME))
    assert not is_stamped(old.stat())
    context_dir.settle(old, 0o644)
    assert is_stamped(old.stat())


def test_registered_files_are_stamped_with_their_content(tmp_path: Path) -> None:
    src = tmp_path / "m"
    src.mkdir()
    (src / "w1.bin").write_bytes(b"1111")
    (src / "w2.bin").write_bytes(b"2222")
    store = Store.open()
    model = registry.register_model(store, name="stamped", path=src)
    files = sorted(Path(model["path"]).iterdir())
    times = {p.stat().st_mtime_ns for p in files}
    assert len(times) == 2 and all(is_stamped(p.stat()) for p in files)
    assert all(file_sha256(p) for p in files)
