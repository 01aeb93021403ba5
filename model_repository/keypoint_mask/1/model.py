"""keypoint_mask: point-prompted object masks through a video, one Triton sequence per direction.

START request: the prompt frame with `points` [1,N,2] (x, y pixels) and `labels` [1,N] (1/0);
following requests: the next frames in the walking direction. Output `mask` [1,H,W] 0/255.
The algorithm lives in triton_models.keypoints; this file only adapts Triton's sequence protocol
to it. The backend is chosen by the files in this folder, first match: the four sam2_*.onnx graphs
(`python -m export onnx sam2`: SAM 2 memory-bank video predictor), sam_encoder.onnx +
sam_decoder.onnx (SAM, previous mask as prompt), else the default saliency tracker. The public I/O
is the same for all three; the log names the one loaded.
"""

from __future__ import annotations

import time

import triton_python_backend_utils as pb_utils

from triton_models.config import model_config, parameter, version_folder
from triton_models.cpu_priority import lower_cpu_priority
from triton_models.keypoints import KeypointTracker, Prompt, PromptError
from triton_models.keypoints.sam import SamModels, SamTracker
from triton_models.keypoints.sam2 import Sam2Models, Sam2Tracker
from triton_models.saliency import saliency_source
from triton_models.serving import (
    Request,
    Response,
    input_array,
    optional_array,
    output_response,
    respond_each,
    sequence_control,
)

# Triton drops an idle sequence after max_sequence_idle_microseconds without telling the model,
# so trackers of abandoned sequences are pruned here after a little longer.
STALE_AFTER_S = 120.0

Tracker = KeypointTracker | SamTracker | Sam2Tracker


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = model_config(args)
        lower_cpu_priority(config)
        self.work_long_side = int(parameter(config, "work_long_side", "480"))
        folder = version_folder(args)
        providers = [p for p in parameter(config, "sam_providers", "CPUExecutionProvider").split(",") if p]
        threads = int(parameter(config, "intra_op_threads", "2"))
        self.sam: SamModels | None = None
        self.sam2: Sam2Models | None = None
        if Sam2Models.present(folder):
            self.sam2 = Sam2Models(folder, providers, threads)
            self.backend = f"sam2 ({self.sam2.variant})"
        elif SamModels.present(folder):
            self.sam = SamModels(folder, providers, threads)
            self.backend = "sam"
        else:
            self.backend = "default"
        # only the default tracker looks at saliency: the SAM backends do not load its graph
        self.saliency = saliency_source("keypoint_mask", config, args) if self.backend == "default" else None
        self.sequences: dict[int, tuple[Tracker, float]] = {}
        pb_utils.Logger.log_info(f"keypoint_mask: {self.backend} backend")

    def _tracker(self) -> Tracker:
        if self.sam2 is not None:
            return Sam2Tracker(self.sam2)
        if self.sam is not None:
            return SamTracker(self.sam, self.work_long_side)
        assert self.saliency is not None  # the default backend's (initialize)
        return KeypointTracker(self.saliency, self.work_long_side)

    def _one(self, request: Request) -> Response:
        frame = input_array(request, "frame")[0]
        control = sequence_control(request)
        start, end, corrid = control.start, control.end, control.corrid
        if frame.ndim != 3 or frame.shape[2] != 3 or min(frame.shape[:2]) < 8:
            raise PromptError(f"frame must be [1,H,W,3] with H,W >= 8, got {list(frame.shape)}")
        try:
            if start:
                points = optional_array(request, "points")
                labels = optional_array(request, "labels")
                if points is None or labels is None:
                    raise PromptError("the START request needs `points` and `labels`")
                prompt = Prompt.from_arrays(points[0], labels[0], frame.shape[1], frame.shape[0])
                tracker = self._tracker()
                mask = tracker.start(frame, prompt)
                self.sequences[corrid] = (tracker, time.monotonic())
            else:
                entry = self.sequences.get(corrid)
                if entry is None:
                    raise PromptError(f"sequence {corrid} has no START (or expired)")
                tracker = entry[0]
                mask = tracker.step(frame)
                self.sequences[corrid] = (tracker, time.monotonic())
        except Exception:
            self.sequences.pop(corrid, None)
            raise
        if end:
            self.sequences.pop(corrid, None)
        return output_response({"mask": mask[None]})

    def execute(self, requests: list[Request]) -> list[Response]:
        now = time.monotonic()
        for corrid in [c for c, (_, used) in self.sequences.items() if now - used > STALE_AFTER_S]:
            del self.sequences[corrid]
        # PromptError is a ValueError; RuntimeError: the saliency model behind it failed
        return respond_each(requests, self._one, refused=(ValueError, RuntimeError))

    def finalize(self) -> None:
        self.sequences.clear()
