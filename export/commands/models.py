"""`python -m export models`: verify the shipped weights, wrap them, write them into the model
repository when anything changed, then prove Triton serves what raw onnxruntime computes."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from common.settings import Settings

HELP = "export the shipped models (rvm, u2netp) into the Triton model repository"


def register(sub: Any) -> None:  # argparse's subparsers action has no public type
    p = sub.add_parser("models", help=HELP, description=HELP)
    p.add_argument(
        "--repository",
        type=Path,
        default=Path(os.environ.get("MODEL_REPOSITORY") or Settings().model_repository),
        help="model repository to write (default: $MODEL_REPOSITORY or ./model_repository)",
    )
    p.add_argument(
        "--sources-dir",
        type=Path,
        default=None,
        help="read the source .onnx files from this folder instead of the installed packages",
    )
    p.add_argument(
        "--downsample-base",
        type=float,
        default=None,
        help="rvm works at most at this many pixels on the long side (default 512, RVM's own rule)",
    )
    p.add_argument("--check", action="store_true", help="run the Triton parity check even if nothing changed")
    p.add_argument("--no-parity", action="store_true", help="skip the Triton parity check")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so `python -m export --help` stays instant.
    from export import build, sources

    started = time.monotonic()
    options = build.Options(downsample_base=args.downsample_base)
    try:
        results = build.export_all(args.repository.resolve(), args.sources_dir, options)
    except sources.SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for result in results:
        print(f"{result.model}: {'written' if result.changed else 'up to date'} ({result.target.onnx_path})")
    pending = [r for r in results if r.changed or args.check or not build.parity_passed(r.target)]
    if pending and not args.no_parity:
        from export import parity

        ok = parity.verify(args.repository.resolve(), results)
        if not ok:
            return 1
    print(f"done in {time.monotonic() - started:.2f} s")
    return 0
