"""onnxruntime sessions for the CPU (Python backend) configs of the ONNX models (rvm, u2netp and
the models `python -m export add` writes). GPU configs run the same files on Triton's native
onnxruntime backend instead."""

from __future__ import annotations

from collections.abc import Mapping

import onnxruntime as ort

from triton_models.config import model_config, parameter, version_folder


def session(args: Mapping[str, str]) -> ort.InferenceSession:
    """The version folder's model.onnx on the CPU, with the thread counts of the config.pbtxt
    parameters `intra_op_threads` / `inter_op_threads` (default 1 each).

    Raises FileNotFoundError when model.onnx has not been exported yet."""
    config = model_config(args)
    path = version_folder(args) / "model.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `python -m export models` (make models)")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(parameter(config, "intra_op_threads", "1"))
    opts.inter_op_num_threads = int(parameter(config, "inter_op_threads", "1"))
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
