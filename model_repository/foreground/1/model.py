"""foreground: the video foreground of any subject, one Triton sequence per video.

Every request: `frame` [1,H,W,3] RGB; the START request may carry `model` [1,1] (auto, rvm,
salient; default auto). Outputs `alpha` [1,H,W] and `foreground` [1,H,W,3] uint8. The algorithm
lives in triton_models.foreground; this file adapts Triton's sequence protocol to it and reaches the
two networks by BLS: `rvm` in a sequence of its own under the same correlation id, `u2netp` per
call.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from triton_models.foreground import ForegroundModel, ForegroundTracker

# Triton drops an idle sequence after max_sequence_idle_microseconds without telling the model.
STALE_AFTER_S = 120.0


def _param(config: dict[str, Any], key: str, default: str) -> str:
    return str(config.get("parameters", {}).get(key, {}).get("string_value", default))


def _control(request: Any, name: str) -> int:
    return int(pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)[0])


@dataclass
class Sequence:
    model: ForegroundModel
    tracker: ForegroundTracker | None
    used: float
    shape: tuple[int, ...] = ()  # the first frame's; a sequence is one video, one size


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.matting_model = _param(config, "matting_model", "rvm")
        self.saliency_model = _param(config, "saliency_model", "u2netp")
        self.work_long_side = int(_param(config, "work_long_side", "512"))
        self.sequences: dict[int, Sequence] = {}

    def _bls(self, model: str, inputs: list[Any], outputs: list[str], corrid: int = 0, flags: int = 0) -> Any:
        response = pb_utils.InferenceRequest(
            model_name=model,
            inputs=inputs,
            requested_output_names=outputs,
            correlation_id=corrid,
            flags=flags,
        ).exec()
        if response.has_error():
            raise RuntimeError(f"foreground: {model} failed: {response.error().message()}")
        return response

    def _saliency(self, image: np.ndarray) -> np.ndarray:
        response = self._bls(self.saliency_model, [pb_utils.Tensor("image", image)], ["alpha"])
        return pb_utils.get_output_tensor_by_name(response, "alpha").as_numpy()

    def _people(
        self, frame: np.ndarray, corrid: int, start: bool, end: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        flags = (pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START if start else 0) | (
            pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END if end else 0
        )
        response = self._bls(
            self.matting_model, [pb_utils.Tensor("frame", frame)], ["alpha", "foreground"], corrid, flags
        )
        alpha = pb_utils.get_output_tensor_by_name(response, "alpha").as_numpy()
        return alpha[0], pb_utils.get_output_tensor_by_name(response, "foreground").as_numpy()[0]

    def _open(self, request: Any) -> Sequence:
        tensor = pb_utils.get_input_tensor_by_name(request, "model")
        name = "auto" if tensor is None else tensor.as_numpy().reshape(-1)[0]
        name = name.decode() if isinstance(name, bytes) else str(name)
        try:
            model = ForegroundModel(name)
        except ValueError:
            raise ValueError(
                f"model must be one of {', '.join(m.value for m in ForegroundModel)}, got {name!r}"
            ) from None
        tracker = (
            None if model is ForegroundModel.RVM else ForegroundTracker(self._saliency, self.work_long_side)
        )
        return Sequence(model, tracker, time.monotonic())

    def _one(self, request: Any) -> Any:
        frame = pb_utils.get_input_tensor_by_name(request, "frame").as_numpy()
        if frame.ndim != 4 or frame.shape[0] != 1 or frame.shape[3] != 3 or min(frame.shape[1:3]) < 8:
            raise ValueError(f"frame must be uint8 [1,H,W,3] RGB with H,W >= 8, got {list(frame.shape)}")
        start, end, corrid = (
            bool(_control(request, "START")),
            bool(_control(request, "END")),
            _control(request, "CORRID"),
        )
        if start:
            self.sequences[corrid] = self._open(request)
        seq = self.sequences.get(corrid)
        if seq is None:
            raise ValueError(f"sequence {corrid} has no START (or expired)")
        seq.used = time.monotonic()
        if seq.shape and frame.shape != seq.shape:
            self.sequences.pop(corrid, None)
            raise ValueError(
                f"frame size {frame.shape[2]}x{frame.shape[1]} differs from the sequence's "
                f"{seq.shape[2]}x{seq.shape[1]}: one sequence is one video; start a new one"
            )
        seq.shape = frame.shape
        try:
            people, rvm_colour = None, None
            if seq.model is not ForegroundModel.SALIENT:
                people, rvm_colour = self._people(frame, corrid, start, end)
            if seq.tracker is None:  # model=rvm: RVM's answer as it is
                alpha, colour = people, rvm_colour
            else:
                result = seq.tracker.step(frame[0], people)
                alpha, colour = result.alpha, frame[0]
                if rvm_colour is not None:  # RVM's colour where its alpha makes the matte
                    colour = np.where(result.person[..., None] > 0.5, rvm_colour, frame[0])
        except Exception:
            self.sequences.pop(corrid, None)
            raise
        if end:
            self.sequences.pop(corrid, None)
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("alpha", np.ascontiguousarray(alpha)[None]),
                pb_utils.Tensor("foreground", np.ascontiguousarray(colour)[None]),
            ]
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        now = time.monotonic()
        for corrid in [c for c, s in self.sequences.items() if now - s.used > STALE_AFTER_S]:
            del self.sequences[corrid]
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except ValueError as exc:  # the caller's request: INVALID_ARGUMENT over gRPC
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            except RuntimeError as exc:  # a network behind it failed
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses

    def finalize(self) -> None:
        self.sequences.clear()
