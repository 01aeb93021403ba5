"""ONNX -> TensorRT plan (FP16, optimisation profiles), with the `tensorrt` package of the gpu extra.

A plan is tied to the GPU model and TensorRT version that built it, so it is a build artefact
(git-ignored like the .onnx files): it is written as model.plan beside the model.onnx it was built
from, and configs/trt.pbtxt points Triton at it (`--model-config-name=trt`). Writing it into the
same version folder keeps the CPU config (Python backend, which needs model.onnx) serving.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import onnx

from export import pbtxt

Dims = tuple[int, ...]


class TrtError(RuntimeError):
    """TensorRT or a GPU is missing, the parser rejected the graph, or the build failed."""


@dataclass(frozen=True)
class Profile:
    min: Dims
    opt: Dims
    max: Dims


# The resolutions the API allows. rvm: 256 px to 4K frames, up to 4 batched sequences; its states
# live at the in-graph working size (long side <= 512, halved per stage: 1/2, 1/4, 1/8, 1/16),
# starting as 1x1x1x1 zeros. u2netp: the image endpoints' sides (IMAGE_MAX_SIDE 2048).
PRESETS: dict[str, dict[str, Profile]] = {
    "rvm": {
        "frame": Profile((1, 256, 256, 3), (1, 720, 1280, 3), (4, 2160, 3840, 3)),
        "r1i": Profile((1, 1, 1, 1), (1, 16, 144, 256), (4, 16, 256, 256)),
        "r2i": Profile((1, 1, 1, 1), (1, 20, 72, 128), (4, 20, 128, 128)),
        "r3i": Profile((1, 1, 1, 1), (1, 40, 36, 64), (4, 40, 64, 64)),
        "r4i": Profile((1, 1, 1, 1), (1, 64, 18, 32), (4, 64, 32, 32)),
    },
    "u2netp": {"image": Profile((32, 32, 3), (720, 1280, 3), (2048, 2048, 3))},
}


def parse_shape(text: str) -> tuple[str, Profile]:
    """NAME=MIN,OPT,MAX with dims joined by x, e.g. frame=1x256x256x3,1x720x1280x3,4x2160x3840x3."""
    try:
        name, ranges = text.split("=", 1)
        lo, opt, hi = (tuple(int(d) for d in part.split("x")) for part in ranges.split(","))
    except ValueError as exc:
        raise TrtError(
            f"--shape {text!r}: expected NAME=MIN,OPT,MAX like x=1x3x64x64,1x3x512x512,4x3x1024x1024"
        ) from exc
    if not len(lo) == len(opt) == len(hi) or any(a > b or b > c for a, b, c in zip(lo, opt, hi, strict=True)):
        raise TrtError(f"--shape {text!r}: MIN <= OPT <= MAX must hold dim by dim, with equal ranks")
    return name, Profile(lo, opt, hi)


def profiles_for(
    model: onnx.ModelProto, preset: dict[str, Profile], overrides: dict[str, Profile]
) -> dict[str, Profile]:
    """A profile for every input with a dynamic dimension; static inputs need none."""
    io = pbtxt.graph_io(model)
    chosen = {**preset, **overrides}
    result = {}
    for tensor in io.inputs:
        if -1 not in tensor.dims:
            continue
        if tensor.name not in chosen:
            raise TrtError(
                f"input {tensor.name!r} has dynamic dims {list(tensor.dims)}: "
                f"give --shape {tensor.name}=MIN,OPT,MAX"
            )
        profile = chosen[tensor.name]
        fixed_ok = all(d == -1 or d == p for d, p in zip(tensor.dims, profile.min, strict=False))
        if len(profile.min) != len(tensor.dims) or not fixed_ok:
            raise TrtError(f"profile for {tensor.name!r} {profile} does not fit its dims {list(tensor.dims)}")
        result[tensor.name] = profile
    return result


def require_tensorrt() -> ModuleType:
    if importlib.util.find_spec("tensorrt") is None:
        raise TrtError(
            "building TensorRT plans needs the tensorrt package and an NVIDIA GPU: "
            "pip install -e '.[gpu]' on a GPU host (or run this inside the NGC TensorRT container)"
        )
    return importlib.import_module("tensorrt")


def build_plan(
    onnx_path: Path, profiles: dict[str, Profile], fp16: bool = True, workspace_gib: float = 4.0
) -> bytes:
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # pybind raises TypeError/RuntimeError when CUDA cannot initialise
        raise TrtError(f"TensorRT could not start a builder (no usable NVIDIA GPU?): {exc}") from exc
    if builder is None:
        raise TrtError("TensorRT could not start a builder (no usable NVIDIA GPU?)")
    # TensorRT 10 networks are always explicit-batch; the flag argument stays 0.
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TrtError(f"TensorRT's ONNX parser rejected {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if fp16:
        if not builder.platform_has_fast_fp16:
            raise TrtError("--fp16 asked for, but this GPU has no fast FP16")
        config.set_flag(trt.BuilderFlag.FP16)
    if profiles:
        profile = builder.create_optimization_profile()
        for name, p in profiles.items():
            profile.set_shape(name, p.min, p.opt, p.max)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TrtError(f"TensorRT failed to build a plan for {onnx_path} (see the messages above)")
    return bytes(serialized)


def trt_config_for(model_dir: Path, model: onnx.ModelProto) -> pbtxt.mc.ModelConfig:
    """configs/gpu.pbtxt with the platform switched when there is one (it carries rvm's sequence
    batcher and implicit state); otherwise a config generated from the graph."""
    gpu = model_dir / "configs" / "gpu.pbtxt"
    if gpu.is_file():
        config = pbtxt.read(gpu)
        config.ClearField("backend")
        config.platform = "tensorrt_plan"
        config.default_model_filename = "model.plan"
        return config
    io = pbtxt.graph_io(model)
    return pbtxt.trt_config(model_dir.name, io, pbtxt.DEFAULT_MAX_BATCH if io.batchable else 0)


def write(model_dir: Path, version: int, plan: bytes, config: pbtxt.mc.ModelConfig) -> Path:
    target = model_dir / str(version) / "model.plan"
    tmp = target.with_name(f".model.plan.{os.getpid()}.tmp")
    tmp.write_bytes(plan)
    os.replace(tmp, target)
    header = f"{model_dir.name} on TensorRT: model.plan built by `python -m export trt` (FP16, profiles)."
    (model_dir / "configs").mkdir(exist_ok=True)
    (model_dir / "configs" / "trt.pbtxt").write_text(pbtxt.render(config, header))
    return target
