"""A known background disk load for the benchmarks: a writer that keeps the ext4 journal busy.

    python bench/_disk_load.py FOLDER [--mb-per-s 20] [--chunk-kb 1024] [--files-per-s 200]

Every 1/10 s it writes its share of `--mb-per-s` (in `--chunk-kb` pieces, each followed by an
fsync, over a 64 MiB file rewritten in a ring) and creates and removes its share of
`--files-per-s` small files: the two things a neighbour does to this disk that make a file
creation or a rename in a job folder wait for the journal (data writeback forced by fsync,
metadata commits). It runs until killed (SIGTERM), and removes what it wrote: a folder of its own
inside FOLDER, never FOLDER itself. Use it through `_common.DiskLoad`, which starts it in FOLDER
and stops it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time

RING_BYTES = 64 << 20
TICK = 0.1


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("--mb-per-s", type=float, default=20.0)
    p.add_argument("--chunk-kb", type=int, default=1024)
    p.add_argument("--files-per-s", type=float, default=200.0)
    args = p.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    os.makedirs(args.folder, exist_ok=True)
    own = tempfile.mkdtemp(prefix="disk-load-", dir=args.folder)  # what it removes at the end: its own folder only
    small = os.path.join(own, "small")
    os.makedirs(small)
    chunk = os.urandom(args.chunk_kb << 10)
    fd = os.open(os.path.join(own, "ring.bin"), os.O_WRONLY | os.O_CREAT, 0o644)
    bytes_per_tick = args.mb_per_s * (1 << 20) * TICK
    files_per_tick = args.files_per_s * TICK
    offset, owed_bytes, owed_files, n = 0, 0.0, 0.0, 0
    next_tick = time.monotonic()
    try:
        while not stop:
            owed_bytes += bytes_per_tick
            owed_files += files_per_tick
            while owed_bytes >= len(chunk) and not stop:
                os.pwrite(fd, chunk, offset)
                os.fsync(fd)
                offset = (offset + len(chunk)) % RING_BYTES
                owed_bytes -= len(chunk)
            while owed_files >= 1 and not stop:
                name = os.path.join(small, f"f{n % 1000:04d}")
                if n >= 1000:
                    os.unlink(name)
                with open(name, "wb") as f:
                    f.write(b"x" * 100)
                n += 1
                owed_files -= 1
            next_tick += TICK
            time.sleep(max(0.0, next_tick - time.monotonic()))
    finally:
        os.close(fd)
        shutil.rmtree(own, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
