"""onnxruntime sessions for the CPU (Python backend) configs of the ONNX models.

Imported by model_repository/{rvm,u2netp}/1/model.py (the stub finds it through PYTHONPATH, which
devstack.tritonserver.triton_env sets to the repository root). It cannot live in model_repository/:
Triton polls every folder there as a model, __pycache__ included, and refuses to start.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnxruntime as ort


def model_config(args: dict[str, str]) -> dict[str, Any]:
    return dict(json.loads(args["model_config"]))


def parameter(config: dict[str, Any], key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return str(value) if value else default


def session(args: dict[str, str]) -> ort.InferenceSession:
    """The version folder's model.onnx with the thread counts the config.pbtxt parameters give."""
    config = model_config(args)
    path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `python -m export models` (make models)")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(parameter(config, "intra_op_threads", "1"))
    opts.inter_op_num_threads = int(parameter(config, "inter_op_threads", "1"))
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
