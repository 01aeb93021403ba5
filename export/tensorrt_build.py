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

from common.settings import Settings
from export import pbtxt

Dims = tuple[int, ...]


class TrtError(RuntimeError):
    """TensorRT or a GPU is missing, the parser rejected the graph, or the build failed."""


@dataclass(frozen=True)
class Profile:
    min: Dims
    opt: Dims
    max: Dims


@dataclass(frozen=True)
class DimRange:
    """MIN <= OPT <= MAX of one named graph dim."""

    min: int
    opt: int
    max: int


# The smallest side a frame or image may have (model_repository/README.md: sides >= 2; the
# gateway pads thinner frames). The largest follow the settings: every frame the API admits
# (VIDEO_MAX_SIDE, both orientations: portrait 4K too) and every image (IMAGE_MAX_SIDE).
MIN_SIDE = 2
OPT_HEIGHT, OPT_WIDTH = 720, 1280
# RVM's recurrent states live at the working resolution (long side at most the graph's
# downsample_base), at 1/2, 1/4, 1/8 and 1/16 of it, and start as [1,1,1,1].
RVM_STATE_STRIDE = {"r1i": 2, "r2i": 4, "r3i": 8, "r4i": 16}


def _initializer(model: onnx.ModelProto, name: str) -> float:
    from onnx import numpy_helper

    for tensor in model.graph.initializer:
        if tensor.name == name:
            return float(numpy_helper.to_array(tensor).reshape(-1)[0])
    raise TrtError(f"the graph has no initializer {name!r}: not the wrapped rvm graph?")


def _rvm_ranges(model: onnx.ModelProto, max_batch: int, max_side: int) -> dict[str, DimRange]:
    base = _initializer(model, "downsample_base")
    ratio = min(1.0, base / max(OPT_HEIGHT, OPT_WIDTH))
    work_h, work_w = int(OPT_HEIGHT * ratio), int(OPT_WIDTH * ratio)
    ranges = {
        "batch": DimRange(1, 1, max_batch),
        "height": DimRange(MIN_SIDE, OPT_HEIGHT, max_side),
        "width": DimRange(MIN_SIDE, OPT_WIDTH, max_side),
    }
    channels = {o.name[:-1] + "i": o.type.tensor_type.shape.dim[1].dim_value for o in model.graph.output}
    for state, stride in RVM_STATE_STRIDE.items():
        longest = -(-int(base) // stride)  # ceil: the encoder's stride-2 convolutions round up
        ranges[f"{state}_channels"] = DimRange(1, channels[state], channels[state])
        ranges[f"{state}_height"] = DimRange(1, -(-work_h // stride), longest)
        ranges[f"{state}_width"] = DimRange(1, -(-work_w // stride), longest)
    return ranges


def dim_ranges(
    model_name: str, model: onnx.ModelProto, max_batch: int, settings: Settings
) -> dict[str, DimRange]:
    """The range of every named dim of a shipped model's graph inputs. rvm: `max_batch` frames
    (its GPU config's max_batch_size), sides MIN_SIDE..VIDEO_MAX_SIDE; u2netp: sides
    MIN_SIDE..IMAGE_MAX_SIDE (the gateway sends 320x320, the trackers crops up to 512).
    Other models: {} (give --shape)."""
    if model_name == "rvm":
        return _rvm_ranges(model, max_batch, max(settings.video_max_side, OPT_WIDTH))
    if model_name == "u2netp":
        side = max(settings.image_max_side, OPT_WIDTH)
        return {"height": DimRange(MIN_SIDE, OPT_HEIGHT, side), "width": DimRange(MIN_SIDE, OPT_WIDTH, side)}
    return {}


def preset(model: onnx.ModelProto, ranges: dict[str, DimRange]) -> dict[str, Profile]:
    """A profile for every graph input with a dimension named in `ranges` (fixed dims stay)."""
    result = {}
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if not any(d.dim_param in ranges for d in dims):
            continue
        picked = [
            DimRange(d.dim_value, d.dim_value, d.dim_value)
            if d.HasField("dim_value")
            else ranges[d.dim_param]
            for d in dims
        ]
        result[value.name] = Profile(
            tuple(r.min for r in picked), tuple(r.opt for r in picked), tuple(r.max for r in picked)
        )
    return result


def buildable_problems(model: onnx.ModelProto, profiles: dict[str, Profile]) -> list[str]:
    """What TensorRT would refuse in one optimisation profile, checked without TensorRT: every
    dynamic input has a profile of its rank with its fixed dims, MIN <= OPT <= MAX dim by dim, and
    dims that share a name (TensorRT ties them equal) have overlapping ranges whose MIN, OPT and
    MAX shapes agree."""
    found: list[str] = []
    by_name: dict[str, list[tuple[str, int, DimRange]]] = {}
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        dynamic = [not d.HasField("dim_value") for d in dims]
        if not any(dynamic):
            continue
        profile = profiles.get(value.name)
        if profile is None:
            found.append(f"input {value.name!r} has dynamic dims and no profile")
            continue
        if not len(profile.min) == len(profile.opt) == len(profile.max) == len(dims):
            found.append(f"profile of {value.name!r} does not have the input's rank {len(dims)}")
            continue
        for i, d in enumerate(dims):
            r = DimRange(profile.min[i], profile.opt[i], profile.max[i])
            if not 1 <= r.min <= r.opt <= r.max:
                found.append(f"{value.name!r} dim {i}: MIN <= OPT <= MAX does not hold ({r})")
            if d.HasField("dim_value") and r != DimRange(d.dim_value, d.dim_value, d.dim_value):
                found.append(f"{value.name!r} dim {i} is fixed at {d.dim_value}, the profile says {r}")
            if d.dim_param:
                by_name.setdefault(d.dim_param, []).append((value.name, i, r))
    for name, uses in by_name.items():
        ranges = {r for _, _, r in uses}
        if len(ranges) > 1:
            where = ", ".join(f"{t}[{i}]={r.min}..{r.max}" for t, i, r in uses)
            overlap = max(r.min for r in ranges) <= min(r.max for r in ranges)
            found.append(
                f"dim {name!r} is shared by {where}: TensorRT ties them equal, so their ranges must "
                f"agree{'' if overlap else ' (they do not even overlap)'}"
            )
    return found


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
    model: onnx.ModelProto, presets: dict[str, Profile], overrides: dict[str, Profile]
) -> dict[str, Profile]:
    """A profile for every input with a dynamic dimension; static inputs need none.

    Raises TrtError for an input without one, a profile that does not fit its input, or a set
    TensorRT could not build (buildable_problems)."""
    io = pbtxt.graph_io(model)
    chosen = {**presets, **overrides}
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
    found = buildable_problems(model, result)
    if found:
        raise TrtError("the profiles cannot be built: " + "; ".join(found))
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
