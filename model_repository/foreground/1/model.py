"""foreground: the video foreground of any subject, one Triton sequence per video.

Every request: `frame` [1,H,W,3] RGB; the START request may carry `model` [1,1] (auto, rvm,
salient; default auto). Outputs `alpha` [1,H,W] and `foreground` [1,H,W,3] uint8. The algorithm
lives in triton_models.foreground; this file adapts Triton's sequence protocol to it and reaches the
two networks by BLS: `rvm` in a sequence of its own under the same correlation id, `u2netp` per
call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from triton_models.config import model_config, parameter
from triton_models.cpu_priority import lower_cpu_priority
from triton_models.foreground import ForegroundModel, ForegroundTracker
from triton_models.saliency import saliency_source
from triton_models.serving import (
    Request,
    Response,
    call_model,
    input_array,
    optional_array,
    output_response,
    respond_each,
    sequence_control,
)

# Triton drops an idle sequence after max_sequence_idle_microseconds without telling the model.
STALE_AFTER_S = 120.0


@dataclass
class Sequence:
    model: ForegroundModel
    tracker: ForegroundTracker | None
    used: float
    shape: tuple[int, ...] = ()  # the first frame's; a sequence is one video, one size


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = model_config(args)
        lower_cpu_priority(config)
        self.matting_model = parameter(config, "matting_model", "rvm")
        self.saliency = saliency_source("foreground", config, args)
        self.work_long_side = int(parameter(config, "work_long_side", "512"))
        self.sequences: dict[int, Sequence] = {}

    def _people(
        self, frame: np.ndarray, corrid: int, start: bool, end: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        out = call_model(
            "foreground",
            self.matting_model,
            {"frame": frame},
            ["alpha", "foreground"],
            corrid=corrid,
            start=start,
            end=end,
        )
        return out["alpha"][0], out["foreground"][0]

    def _open(self, request: Request) -> Sequence:
        tensor = optional_array(request, "model")
        name = "auto" if tensor is None else tensor.reshape(-1)[0]
        name = name.decode() if isinstance(name, bytes) else str(name)
        try:
            model = ForegroundModel(name)
        except ValueError:
            raise ValueError(
                f"model must be one of {', '.join(m.value for m in ForegroundModel)}, got {name!r}"
            ) from None
        tracker = (
            None if model is ForegroundModel.RVM else ForegroundTracker(self.saliency, self.work_long_side)
        )
        return Sequence(model, tracker, time.monotonic())

    def _one(self, request: Request) -> Response:
        frame = input_array(request, "frame")
        if frame.ndim != 4 or frame.shape[0] != 1 or frame.shape[3] != 3 or min(frame.shape[1:3]) < 8:
            raise ValueError(f"frame must be uint8 [1,H,W,3] RGB with H,W >= 8, got {list(frame.shape)}")
        control = sequence_control(request)
        start, end, corrid = control.start, control.end, control.corrid
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
        return output_response(
            {"alpha": np.ascontiguousarray(alpha)[None], "foreground": np.ascontiguousarray(colour)[None]}
        )

    def execute(self, requests: list[Request]) -> list[Response]:
        now = time.monotonic()
        for corrid in [c for c, s in self.sequences.items() if now - s.used > STALE_AFTER_S]:
            del self.sequences[corrid]
        # ValueError: the caller's request (INVALID_ARGUMENT); RuntimeError: a network behind it failed
        return respond_each(requests, self._one, invalid=(ValueError,), refused=(RuntimeError,))

    def finalize(self) -> None:
        self.sequences.clear()
