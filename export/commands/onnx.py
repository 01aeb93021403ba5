"""`python -m export onnx`: PyTorch checkpoint -> ONNX for the supported model families."""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
from pathlib import Path
from typing import Any

from export.families import FAMILIES, UNSUPPORTED

HELP = "export a PyTorch checkpoint (sam, sam2, rvm) to ONNX"
EPILOG = textwrap.dedent(
    """\
    families:
    {families}
    not supported: {unsupported}

    examples:
      python -m export onnx sam --checkpoint sam_vit_b_01ec64.pth
          writes model_repository/keypoint_mask/1/sam_encoder.onnx and sam_decoder.onnx
      python -m export onnx sam2 --checkpoint sam2.1_hiera_tiny.pt
          writes model_repository/keypoint_mask/1/sam2_{{image_encoder,memory_attention,
          mask_decoder,memory_encoder}}.onnx (the memory-bank video predictor)
      python -m export onnx rvm --checkpoint rvm_mobilenetv3.pth --code-path ~/src/RobustVideoMatting \\
          --output exported/ --opset 17 --fp16
    """
)
DEFAULT_OUTPUT = {
    "sam": Path("model_repository/keypoint_mask/1"),
    "sam2": Path("model_repository/keypoint_mask/1"),
    "rvm": Path("exported"),
}


def register(sub: Any) -> None:  # argparse's subparsers action has no public type
    from export.onnx_export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET

    epilog = EPILOG.format(
        families="\n".join(f"  {name:6} {note}" for name, note in FAMILIES.items()),
        unsupported="; ".join(f"{name} ({why})" for name, why in UNSUPPORTED.items()),
    )
    p = sub.add_parser(
        "onnx",
        help=HELP,
        description=HELP,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "family", choices=[*FAMILIES, *UNSUPPORTED], metavar="FAMILY", help=f"one of {', '.join(FAMILIES)}"
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="PyTorch state dict (.pth / .pt)")
    p.add_argument(
        "--output", type=Path, default=None, help="folder for the .onnx files (default per family)"
    )
    p.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})",
    )
    p.add_argument(
        "--no-simplify", action="store_true", help="skip onnxslim/onnxsim (constant folding still runs)"
    )
    p.add_argument(
        "--fp16", action="store_true", help="convert weights and activations to float16 (onnxslim)"
    )
    p.add_argument(
        "--variant",
        default="auto",
        help="sam: vit_h, vit_l, vit_b or tiny; sam2: sam2.1_hiera_t, sam2.1_hiera_s, sam2.1_hiera_b+, "
        "sam2.1_hiera_l or tiny (default: read from the checkpoint)",
    )
    p.add_argument(
        "--code-path", type=Path, default=None, help="rvm: RobustVideoMatting checkout to import from"
    )
    p.add_argument(
        "--rvm-variant", choices=("mobilenetv3", "resnet50"), default="mobilenetv3", help="rvm backbone"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from export.families import FamilyError
    from export.onnx_export import ExportError, check_opset, export

    if args.family in UNSUPPORTED:
        print(f"error: family {args.family} is not supported: {UNSUPPORTED[args.family]}", file=sys.stderr)
        return 2
    try:
        check_opset(args.opset)  # before the (slow) torch import and checkpoint load
        family = importlib.import_module(f"export.families.{args.family}")
        artifacts = family.build(args)
        output = args.output or DEFAULT_OUTPUT[args.family]
        for artifact in artifacts:
            path = export(artifact, output / artifact.filename, args.opset, not args.no_simplify, args.fp16)
            print(f"{args.family}: wrote {path} ({path.stat().st_size / 1e6:.1f} MB, opset {args.opset})")
    except (FamilyError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
