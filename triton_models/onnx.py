"""onnxruntime sessions for the CPU (Python backend) configs of the ONNX models (rvm, u2netp and
the models `python -m export add` writes). GPU configs run the same files on Triton's native
onnxruntime backend instead."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import onnxruntime as ort

from triton_models.config import model_config, parameter, version_folder


def session(args: Mapping[str, str]) -> ort.InferenceSession:
    """The version folder's model.onnx on the CPU, with the thread counts of the config.pbtxt
    parameters `intra_op_threads` / `inter_op_threads` (default 1 each) and `spin_wait`
    (default "true"; "false" for a model that yields the CPU: see session_at).

    Raises FileNotFoundError when model.onnx has not been exported yet."""
    config = model_config(args)
    return session_at(
        version_folder(args) / "model.onnx",
        int(parameter(config, "intra_op_threads", "1")),
        int(parameter(config, "inter_op_threads", "1")),
        spin_wait=parameter(config, "spin_wait", "true").lower() == "true",
    )


def session_at(
    path: Path, intra_op_threads: int = 1, inter_op_threads: int = 1, *, spin_wait: bool = True
) -> ort.InferenceSession:
    """An onnxruntime CPU session of the file at `path`. Raises FileNotFoundError when it is
    missing (`python -m export models` writes the exported ones).

    `spin_wait=False` makes idle pool threads sleep instead of spinning between operators: a
    little slower alone, but a low-priority model (triton_models/cpu_priority.py) then leaves
    the cores it does not use to the others instead of burning them."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `python -m export models` (make models)")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = inter_op_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin_wait:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
