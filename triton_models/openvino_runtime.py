"""OpenVINO as the CPU runtime of an exported ONNX graph, behind onnxruntime's `run` signature, so
a Python-backend model switches runtime by a config parameter alone (docs/cpu.md).

Why static shapes: OpenVINO runs the wrapped RVM graph 0.7x as fast as onnxruntime when its
shapes stay dynamic, and faster than onnxruntime once every input shape is fixed (figures in
BENCHMARKS.md, "CPU runtimes"). A video keeps one frame size, so the session compiles the graph
once per set of input shapes (frame size, batch, a sequence's first-frame [1,1,1,1] state or its
running state) and keeps the most recent `cache_size` of them.

A sequence's first frame can run at its own precision (`initial_state_precision`): with no
recurrent state yet, the first frame is RVM's hardest (it cannot lean on the past), and bf16's
~3 significant digits cost IoU 0.900 on one such frame (13_butterfly frame 0) against >= 0.97 on
every later one. Its shapes compile separately anyway, so f32 there costs one frame per video.

bf16 is a hint: on a CPU without native bf16 (no AVX512_BF16 or AMX; "BF16" missing from the
plugin's OPTIMIZATION_CAPABILITIES) OpenVINO 2026.4 compiles the graph in f32 (checked: the
compiled model's INFERENCE_PRECISION_HINT reads f32 on an AVX2-only AMD EPYC), so `cpu-bf16`
there is OpenVINO f32, no emulation. The session says so once in the log (`runs_bf16`).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import openvino as ov

PRECISIONS = ("f32", "bf16")

log = logging.getLogger(__name__)

ShapeKey = tuple[tuple[str, tuple[int, ...]], ...]


class OpenVINOSession:
    """One ONNX file compiled for OpenVINO's CPU plugin, per input shape set.

    `precision`: "f32", or "bf16" (OpenVINO's inference precision hint: bf16 arithmetic where the
    CPU has it natively, AVX512_BF16 or AMX; OpenVINO falls back to f32 elsewhere). `threads`: the
    plugin's inference threads. Raises ValueError on an unknown precision, FileNotFoundError
    when `path` is missing.

    `state_inputs`: the graph's recurrent state inputs; a run where every one of them is the
    empty initial state (shape [N,1,1,1], RVM's documented zeros) is a sequence's first frame
    and runs at `initial_state_precision` (default: `precision`)."""

    def __init__(
        self,
        path: Path,
        threads: int,
        precision: str,
        cache_size: int = 16,
        *,
        state_inputs: Sequence[str] = (),
        initial_state_precision: str | None = None,
    ) -> None:
        first = precision if initial_state_precision is None else initial_state_precision
        for value in (precision, first):
            if value not in PRECISIONS:
                raise ValueError(f"precision must be one of {PRECISIONS}, got {value!r}")
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run `python -m export models` (make models)")
        self._core = ov.Core()
        self._model = self._core.read_model(str(path))
        self.runs_bf16 = "BF16" in self._core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if "bf16" in (precision, first) and not self.runs_bf16:
            log.warning("bf16 asked, but this CPU has no native bf16: OpenVINO runs %s in f32", path.name)
        self._precision, self._first_precision = precision, first
        self._config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
        self._inputs = [i.get_any_name() for i in self._model.inputs]
        missing = set(state_inputs) - set(self._inputs)
        if missing:
            raise ValueError(f"state inputs {sorted(missing)} are not inputs of {path}")
        self._state_inputs = frozenset(state_inputs)
        self._cache: OrderedDict[ShapeKey, ov.CompiledModel] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def precision_for(self, key: ShapeKey) -> str:
        """The precision a run with these input shapes compiles at."""
        first = bool(self._state_inputs) and all(
            shape[1:] == (1, 1, 1) for name, shape in key if name in self._state_inputs
        )
        return self._first_precision if first else self._precision

    def compiled_precision(self, key: ShapeKey) -> str:
        """The precision OpenVINO actually compiled these input shapes at ("f32" or "bf16"):
        `precision_for(key)` where the CPU has it, else f32."""
        return str(self._compiled(key).get_property("INFERENCE_PRECISION_HINT").to_string())

    def _compiled(self, key: ShapeKey) -> ov.CompiledModel:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            model = self._model.clone()
            model.reshape({name: ov.PartialShape(list(shape)) for name, shape in key})
            config = {**self._config, "INFERENCE_PRECISION_HINT": self.precision_for(key)}
            compiled = self._core.compile_model(model, "CPU", config)
            self._cache[key] = compiled
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return compiled

    def run(self, output_names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Like `onnxruntime.InferenceSession.run`: `feeds` by input name (every graph input),
        the arrays of `output_names` in that order (copies: the request's buffers are reused).
        Raises KeyError on a missing input, RuntimeError from OpenVINO on a shape the graph
        rejects."""
        key = tuple((name, tuple(feeds[name].shape)) for name in self._inputs)
        request = self._compiled(key).create_infer_request()
        results = request.infer({name: np.ascontiguousarray(feeds[name]) for name in self._inputs})
        by_name = {port.get_any_name(): value for port, value in results.items()}
        return [np.array(by_name[name], copy=True) for name in output_names]
