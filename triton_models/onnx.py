"""CPU sessions for the Python-backend configs of the ONNX models (rvm, u2netp, the trackers'
in-process saliency and the models `python -m export add` writes): onnxruntime, or OpenVINO for a
config that asks for it (docs/cpu.md). GPU configs run the same files on Triton's native
onnxruntime backend instead."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from triton_models.config import model_config, parameter, version_folder

RUNTIMES = ("onnxruntime", "openvino")


class Session(Protocol):
    """What the models call: onnxruntime's `InferenceSession.run` signature."""

    def run(self, output_names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]: ...


def session(args: Mapping[str, str], state_inputs: Sequence[str] = ()) -> Session:
    """The version folder's model.onnx on the CPU, with the config.pbtxt parameters:
    `runtime` ("onnxruntime", default, or "openvino"), `intra_op_threads` / `inter_op_threads`
    (default 1 each; OpenVINO uses `intra_op_threads` as its inference threads), for onnxruntime
    `spin_wait` (default "true"; "false" for a model that yields the CPU: see session_at) and, for
    OpenVINO, `precision` ("f32", default, or "bf16": triton_models.openvino_runtime) and
    `initial_state_precision` (default: `precision`), the precision of runs whose recurrent
    `state_inputs` are all the empty initial state (a sequence's first frame).

    Raises FileNotFoundError when model.onnx has not been exported yet, ValueError on an unknown
    runtime or precision."""
    config = model_config(args)
    path = version_folder(args) / "model.onnx"
    runtime = parameter(config, "runtime", "onnxruntime")
    intra = int(parameter(config, "intra_op_threads", "1"))
    if runtime == "openvino":
        _require(path)
        # imported here: hosts that keep onnxruntime need not load OpenVINO's plugins
        from triton_models.openvino_runtime import OpenVINOSession

        precision = parameter(config, "precision", "f32")
        return OpenVINOSession(
            path,
            intra,
            precision,
            state_inputs=state_inputs,
            initial_state_precision=parameter(config, "initial_state_precision", precision),
        )
    if runtime != "onnxruntime":
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    return session_at(
        path,
        intra,
        int(parameter(config, "inter_op_threads", "1")),
        spin_wait=parameter(config, "spin_wait", "true").lower() == "true",
    )


def session_at(
    path: Path, intra_op_threads: int = 1, inter_op_threads: int = 1, *, spin_wait: bool = True
) -> ort.InferenceSession:
    """An onnxruntime CPU session of the file at `path` with `session_options`. Raises
    FileNotFoundError when it is missing (`python -m export models` writes the exported ones)."""
    _require(path)
    opts = session_options(intra_op_threads, inter_op_threads, spin_wait=spin_wait)
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def session_options(
    intra_op_threads: int = 1, inter_op_threads: int = 1, *, spin_wait: bool = True
) -> ort.SessionOptions:
    """onnxruntime options of the project's sessions: sequential execution, every graph
    optimisation, the given thread counts.

    `spin_wait=False` makes idle pool threads sleep instead of spinning between operators: a
    little slower alone, but a low-priority model (triton_models/cpu_priority.py) then leaves
    the cores it does not use to the others instead of burning them."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = inter_op_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin_wait:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def _require(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `python -m export models` (make models)")
