"""`python -m export validate`: served models vs their references on real images."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common.settings import REPO_ROOT, Settings

HELP = "check served models against their references (max/mean abs error, mask IoU)"
IMAGES = REPO_ROOT.parent / "shared" / "data" / "images" / "sod_bsds300" / "images"
EPILOG = textwrap.dedent(
    """\
    Without --url a tritonserver is started on free loopback ports for the occasion.
    Exit status: 0 all within tolerance, 1 some above it, 2 usage or set-up error.

    examples:
      python -m export validate --url 127.0.0.1:8001
      python -m export validate u2netp rvm --images 8
    """
)


def register(sub: Any) -> None:  # argparse's subparsers action has no public type
    p = sub.add_parser(
        "validate",
        help=HELP,
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("models", nargs="*", help="models to check (default: every model that has a reference)")
    p.add_argument("--url", default=None, help="gRPC address of a running tritonserver (host:port)")
    p.add_argument(
        "--repository",
        type=Path,
        default=Path(os.environ.get("MODEL_REPOSITORY") or Settings().model_repository),
        help="model repository (default: $MODEL_REPOSITORY or ./model_repository)",
    )
    p.add_argument("--images", type=int, default=4, help="how many real images to use (default 4)")
    p.add_argument("--image-dir", type=Path, default=IMAGES, help=f"images to use (default {IMAGES})")
    p.add_argument(
        "--sources-dir", type=Path, default=None, help="original .onnx files (default: their packages)"
    )
    p.set_defaults(run=run)


@contextlib.contextmanager
def _server(url: str | None, repository: Path) -> Iterator[str]:
    if url:
        yield url
        return
    from devstack.tritonserver import private_triton

    with tempfile.TemporaryDirectory(prefix="export-validate-") as tmp:
        print(f"starting tritonserver (log {Path(tmp) / 'tritonserver.log'})", file=sys.stderr)
        with private_triton(repository.resolve(), Path(tmp)) as settings:
            yield settings.triton_grpc_url


def run(args: argparse.Namespace) -> int:
    from tritonclient.utils import InferenceServerException

    from devstack.processes import StackError
    from export import parity
    from export.progress import bar
    from export.sources import SourceError
    from export.triton_control import client

    images = sorted(args.image_dir.glob("*.jpg"))[: args.images]
    if not images:
        print(f"error: no .jpg images in {args.image_dir}", file=sys.stderr)
        return 2
    added = [p.name for p in sorted(args.repository.iterdir()) if parity.is_added(p)]
    known = [*parity.VALIDATED, *added]
    names = args.models or [m for m in known if (args.repository / m / "config.pbtxt").is_file()]
    unknown = [m for m in names if m not in known]
    if unknown:
        print(
            f"error: no reference for {', '.join(unknown)} (checkable: {', '.join(known)})", file=sys.stderr
        )
        return 2
    rows: list[parity.Agreement] = []
    try:
        with _server(args.url, args.repository) as url:
            triton = client(url)
            for name in bar(names, len(names), "validating"):
                if name in parity.VALIDATED:
                    rows.extend(parity.validate(triton, name, images, args.sources_dir))
                else:
                    rows.extend(parity.check_added(triton, args.repository / name))
    except (SourceError, InferenceServerException, StackError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(parity.encode_table(rows))
    failed = [r for r in rows if not r.passed]
    print(f"{len(rows) - len(failed)}/{len(rows)} within tolerance")
    return 1 if failed else 0
