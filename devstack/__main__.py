"""`python -m devstack run|up|down`: the whole stack in the foreground, or in the background.

`make run` is `python -m devstack run` (Ctrl-C stops everything); `make up` returns once the
gateway's /readyz answers 200 and `make down` stops what `make up` started.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from devstack.stack import down, run, up


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "up"):
        p = sub.add_parser(name)
        p.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "1")))
    sub.add_parser("down")
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args.workers)
    if args.command == "up":
        return up(args.workers)
    return down()


if __name__ == "__main__":
    raise SystemExit(main())
