"""`python -m export trt`: TensorRT plans from the repository's ONNX models (GPU hosts only)."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from common.settings import Settings

HELP = "build TensorRT plans (FP16, optimisation profiles) from the repository's ONNX models"
EPILOG = textwrap.dedent(
    """\
    Needs an NVIDIA GPU and the gpu extra (pip install -e '.[gpu]'). Writes <model>/<version>/model.plan
    beside the model.onnx it was built from and <model>/configs/trt.pbtxt; serve it with
    tritonserver --model-config-name=trt. rvm and u2netp have built-in profiles made from the graph
    and the settings (rvm: one frame of 2 px to VIDEO_MAX_SIDE a side, either orientation; u2netp:
    2 px to IMAGE_MAX_SIDE); other models need --shape for each input with dynamic dims.

    examples:
      python -m export trt rvm
      python -m export trt mymodel --shape x=1x3x256x256,4x3x512x512,8x3x1024x1024 --no-fp16
    """
)


def register(sub: Any) -> None:  # argparse's subparsers action has no public type
    p = sub.add_parser(
        "trt",
        help=HELP,
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("models", nargs="+", help="models whose latest model.onnx to build")
    p.add_argument(
        "--repository",
        type=Path,
        default=Path(os.environ.get("MODEL_REPOSITORY") or Settings().model_repository),
        help="model repository (default: $MODEL_REPOSITORY or ./model_repository)",
    )
    p.add_argument(
        "--shape", action="append", default=[], help="NAME=MIN,OPT,MAX (dims joined by x); repeatable"
    )
    p.add_argument("--no-fp16", action="store_true", help="build in FP32")
    p.add_argument("--workspace-gib", type=float, default=4.0, help="builder workspace (default 4 GiB)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import onnx

    from export.adding import versions
    from export.progress import Steps
    from export.tensorrt_build import (
        TrtError,
        build_plan,
        dim_ranges,
        parse_shape,
        preset,
        profiles_for,
        require_tensorrt,
        trt_config_for,
        write,
    )

    try:
        require_tensorrt()  # fail before any work on hosts without it
        overrides = dict(parse_shape(s) for s in args.shape)
        for name in args.models:
            model_dir = args.repository / name
            found = versions(model_dir)
            onnx_path = model_dir / str(found[-1]) / "model.onnx" if found else None
            if onnx_path is None or not onnx_path.is_file():
                raise TrtError(f"{name}: no <version>/model.onnx in {model_dir}")
            model = onnx.load(str(onnx_path), load_external_data=False)
            config = trt_config_for(model_dir, model)
            ranges = dim_ranges(name, model, config.max_batch_size, Settings.from_env())
            with Steps(name, 2) as steps:
                steps.next("building the plan (minutes for large models)")
                profiles = profiles_for(model, preset(model, ranges), overrides)
                plan = build_plan(
                    onnx_path, profiles, fp16=not args.no_fp16, workspace_gib=args.workspace_gib
                )
                steps.next("writing model.plan and configs/trt.pbtxt")
                target = write(model_dir, found[-1], plan, config)
            print(f"{name}: wrote {target} ({len(plan) / 1e6:.1f} MB)")
    except TrtError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
