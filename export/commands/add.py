"""`python -m export add`: any ONNX file -> a new model (or a new version) in the repository."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from common.settings import Settings

HELP = "add an ONNX file to the model repository as a new model or a new version"
EPILOG = textwrap.dedent(
    """\
    A new model gets config.pbtxt (CPU: Python backend + onnxruntime) and configs/gpu.pbtxt
    (native onnxruntime), with I/O read from the graph: dynamic dims become -1, and a dynamic
    first dim on every tensor turns on max_batch_size and dynamic batching. An existing model
    keeps its configs and gets the next version number (Triton serves the latest).

    examples:
      python -m export add ~/models/modnet.onnx --name modnet
      python -m export add ~/models/modnet_v2.onnx --name modnet --load 127.0.0.1:8001
          (version 2, loaded into the running server; its other models keep serving)
    """
)


def register(sub: Any) -> None:  # argparse's subparsers action has no public type
    p = sub.add_parser(
        "add",
        help=HELP,
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("onnx_file", type=Path, metavar="ONNX_FILE", help="the graph to add")
    p.add_argument("--name", default=None, help="model name (default: the file name without .onnx)")
    p.add_argument(
        "--repository",
        type=Path,
        default=Path(os.environ.get("MODEL_REPOSITORY") or Settings().model_repository),
        help="model repository (default: $MODEL_REPOSITORY or ./model_repository)",
    )
    p.add_argument("--max-batch-size", type=int, default=None, help="for batchable graphs (default 8)")
    p.add_argument(
        "--load",
        metavar="URL",
        default=None,
        help="Triton gRPC address (host:port) to load the model into; needs --model-control-mode=explicit",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from export.adding import AddError, add
    from export.triton_control import ControlError, load

    name = args.name or args.onnx_file.stem
    try:
        added = add(args.onnx_file, args.repository, name, args.max_batch_size)
    except AddError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kind = "new model" if added.new_model else "new version"
    print(f"{added.name}: {kind}, version {added.version} in {added.folder}")
    for direction, tensors in (("input", added.io.inputs), ("output", added.io.outputs)):
        for t in tensors:
            print(f"  {direction:6} {t.name:24} {t.type_name:12} {list(t.dims)}")
    if args.load:
        try:
            load(args.load, added.name)
        except ControlError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{added.name}: loaded and ready at {args.load}")
    return 0
