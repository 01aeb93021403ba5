"""`python -m export list`: the models in the repository, as a table or JSON."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from common.settings import Settings

HELP = "list the repository's models: versions, source, checksum, backend per config"
EPILOG = textwrap.dedent(
    """\
    examples:
      python -m export list
      python -m export list --json | jq '.[] | select(.source == "added") | .name'
    """
)


def register(sub: Any) -> None:  # argparse's subparsers action has no public type
    p = sub.add_parser(
        "list",
        help=HELP,
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--repository",
        type=Path,
        default=Path(os.environ.get("MODEL_REPOSITORY") or Settings().model_repository),
        help="model repository (default: $MODEL_REPOSITORY or ./model_repository)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output (full checksums)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from export.listing import as_json, as_table, scan

    if not args.repository.is_dir():
        print(f"error: {args.repository} is not a directory", file=sys.stderr)
        return 2
    entries = scan(args.repository)
    print(as_json(entries) if args.json else as_table(entries))
    return 0
