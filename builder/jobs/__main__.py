"""`python -m bepbuild.jobs run NAME`: the background process of `invoke --no-wait` and `job resume --no-wait`."""

from __future__ import annotations

import sys

from ..store import Store
from . import service


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "run":
        sys.stderr.write("usage: python -m bepbuild.jobs run JOB_NAME\n")
        return 2
    job = service.run_attached(Store.open(), argv[1])
    return 0 if job["status"] == "Completed" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
