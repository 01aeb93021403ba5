"""Robust Video Matting -> rvm_<variant>.onnx with the I/O of the released ONNX files.

The RVM code is not on PyPI: `--code-path` points at a checkout of PeterL1n/RobustVideoMatting,
whose `model.MattingNetwork` is imported from there. The graph has the same inputs and outputs as
rvm_mobilenetv3_fp32.onnx (export/sources.py), so `python -m export models` can wrap it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from export.families import Artifact, FamilyError, load_checkpoint, load_into

VARIANTS = ("mobilenetv3", "resnet50")

_FRAME = {0: "batch", 2: "height", 3: "width"}
# Every dim of a state input is dynamic, the channels too: a sequence starts with [1,1,1,1]
# zeros and feeds back r1o..r4o ([B,16|20|40|64,h,w]) afterwards; traced with the [1,1,1,1]
# example, a static channel dim would refuse the second frame. Each state names its dims apart
# from the frame's (its sides follow the working resolution, not the frame): TensorRT ties equal
# names to equal sizes. Only the batch dim is shared, as Triton batches a state with its frame.
DYNAMIC_AXES: dict[str, dict[int, str]] = {
    "src": _FRAME,
    "fgr": _FRAME,
    "pha": _FRAME,
    **{
        f"r{k}i": {0: "batch", 1: f"r{k}i_channels", 2: f"r{k}i_height", 3: f"r{k}i_width"}
        for k in range(1, 5)
    },
    **{f"r{k}o": {0: "batch", 2: f"r{k}o_height", 3: f"r{k}o_width"} for k in range(1, 5)},
}


def matting_network(code_path: Path | None) -> Any:
    if code_path is None:
        raise FamilyError(
            "family rvm needs --code-path: a checkout of https://github.com/PeterL1n/RobustVideoMatting "
            "(its code is not installable from PyPI)"
        )
    if not (code_path / "model" / "__init__.py").is_file():
        raise FamilyError(
            f"--code-path {code_path} is not a RobustVideoMatting checkout (no model/__init__.py)"
        )
    sys.path.insert(0, str(code_path.resolve()))
    try:
        module = importlib.import_module("model")
    except ModuleNotFoundError as exc:
        raise FamilyError(
            f"importing model.MattingNetwork from {code_path} failed: {exc}. RVM's backbones need "
            "torchvision, which has no CPU-only build for this torch: export RVM on a host with it"
        ) from exc
    finally:
        sys.path.remove(str(code_path.resolve()))
    network = getattr(module, "MattingNetwork", None)
    if network is None:
        raise FamilyError(f"{code_path}/model has no MattingNetwork: not a RobustVideoMatting checkout?")
    return network


def build(args: argparse.Namespace) -> list[Artifact]:
    import torch

    network = matting_network(args.code_path)
    state = load_checkpoint(args.checkpoint)
    model = network(args.rvm_variant).eval()
    load_into(model, state, f"rvm {args.rvm_variant}", args.checkpoint)
    src = torch.rand(1, 3, 288, 512)
    states = [torch.zeros(1, 1, 1, 1)] * 4
    ratio = torch.tensor([0.5])
    return [
        Artifact(
            f"rvm_{args.rvm_variant}.onnx",
            model,
            (src, *states, ratio),
            ["src", "r1i", "r2i", "r3i", "r4i", "downsample_ratio"],
            ["fgr", "pha", "r1o", "r2o", "r3o", "r4o"],
            DYNAMIC_AXES,
            doc=f"Robust Video Matting ({args.rvm_variant}), raw float I/O",
        )
    ]
