"""`python -m bepbuild.jobs run NAME [--lock-fd N]`: the background process of `invoke --no-wait` and
`job resume --no-wait`; N is the job's host lock, taken by the parent and handed down."""

from __future__ import annotations

import sys

from ..errors import BepbuildError
from ..store import Store
from . import hostlock, service

USAGE = "usage: python -m bepbuild.jobs run JOB_NAME [--lock-fd N]\n"


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 4) or argv[0] != "run" or (len(argv) == 4 and argv[2] != "--lock-fd"):
        sys.stderr.write(USAGE)
        return 2
    lock_fd = argv[3] if len(argv) == 4 else None
    if lock_fd is not None and not lock_fd.isdigit():
        sys.stderr.write(USAGE)
        return 2
    store = Store.open()
    try:
        if lock_fd is not None:
            hostlock.adopt(service.job_dir_of(store, argv[1]), int(lock_fd))
        job = service.run_attached(store, argv[1])
    except BepbuildError as e:
        sys.stderr.write(f"error: {e.line()}\n")
        return e.exit_code
    return 0 if job["status"] == "Completed" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
