"""`python -m bepbuild.web`: the server process `bepbuild job show --web` starts in the background."""

from __future__ import annotations

import argparse
import sys

from ..errors import BepbuildError
from .server import DEFAULT_HOST, DEFAULT_PORT, serve


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bepbuild.web")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--backend", default="docker")
    parser.add_argument("--idle-timeout", type=float, default=None)
    args = parser.parse_args(argv)
    try:
        serve(args.host, args.port, backend=args.backend, idle_timeout=args.idle_timeout)
    except BepbuildError as e:
        sys.stderr.write(f"error: {e.line()}\n")
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
