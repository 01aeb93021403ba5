"""keypoint_mask: point-prompted object masks through a video, one Triton sequence per direction.

START request: the prompt frame with `points` [1,N,2] (x, y pixels) and `labels` [1,N] (1/0);
following requests: the next frames in the walking direction. Output `mask` [1,H,W] 0/255.
The algorithm lives in gateway.keypoints (PYTHONPATH = repo root, see devstack.tritonserver.triton_env);
this file only adapts Triton's sequence protocol to it. With sam_encoder.onnx and
sam_decoder.onnx in this folder the SAM backend replaces the default; the public I/O is the same.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from gateway.keypoints import KeypointTracker, Prompt, PromptError
from gateway.keypoints.sam import SamModels, SamTracker

# Triton drops an idle sequence after max_sequence_idle_microseconds without telling the model,
# so trackers of abandoned sequences are pruned here after a little longer.
STALE_AFTER_S = 120.0


def _param(config: dict[str, Any], key: str, default: str) -> str:
    return str(config.get("parameters", {}).get(key, {}).get("string_value", default))


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.work_long_side = int(_param(config, "work_long_side", "480"))
        self.saliency_model = _param(config, "saliency_model", "u2netp")
        folder = Path(args["model_repository"]) / args["model_version"]
        self.sam: SamModels | None = None
        if SamModels.present(folder):
            providers = [p for p in _param(config, "sam_providers", "CPUExecutionProvider").split(",") if p]
            self.sam = SamModels(folder, providers, int(_param(config, "intra_op_threads", "2")))
        self.backend = "sam" if self.sam else "default"
        self.sequences: dict[int, tuple[KeypointTracker | SamTracker, float]] = {}
        pb_utils.Logger.log_info(f"keypoint_mask: {self.backend} backend")

    def _tracker(self) -> KeypointTracker | SamTracker:
        if self.sam is not None:
            return SamTracker(self.sam, self.work_long_side)
        return KeypointTracker(self._saliency, self.work_long_side)

    def _saliency(self, image: np.ndarray) -> np.ndarray:
        """The salient-object cue via BLS, for the crop the tracker asks about (u2netp resizes it
        to its own input size, so a crop costs what a whole frame costs)."""
        request = pb_utils.InferenceRequest(
            model_name=self.saliency_model,
            requested_output_names=["alpha"],
            inputs=[pb_utils.Tensor("image", np.ascontiguousarray(image))],
        )
        response = request.exec()
        if response.has_error():
            # Without its cue the tracker cannot tell the object from the rest: a request error
            # says so, where a silent fallback would hand back a plausible-looking wrong mask.
            raise RuntimeError(f"keypoint_mask: {self.saliency_model} failed: {response.error().message()}")
        return pb_utils.get_output_tensor_by_name(response, "alpha").as_numpy()

    def _one(self, request: Any) -> np.ndarray:
        frame = pb_utils.get_input_tensor_by_name(request, "frame").as_numpy()[0]
        start = bool(pb_utils.get_input_tensor_by_name(request, "START").as_numpy().reshape(-1)[0])
        end = bool(pb_utils.get_input_tensor_by_name(request, "END").as_numpy().reshape(-1)[0])
        corrid = int(pb_utils.get_input_tensor_by_name(request, "CORRID").as_numpy().reshape(-1)[0])
        if frame.ndim != 3 or frame.shape[2] != 3 or min(frame.shape[:2]) < 8:
            raise PromptError(f"frame must be [1,H,W,3] with H,W >= 8, got {list(frame.shape)}")
        try:
            if start:
                points = pb_utils.get_input_tensor_by_name(request, "points")
                labels = pb_utils.get_input_tensor_by_name(request, "labels")
                if points is None or labels is None:
                    raise PromptError("the START request needs `points` and `labels`")
                prompt = Prompt.from_arrays(
                    points.as_numpy()[0], labels.as_numpy()[0], frame.shape[1], frame.shape[0]
                )
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
        return mask

    def execute(self, requests: list[Any]) -> list[Any]:
        now = time.monotonic()
        for corrid in [c for c, (_, used) in self.sequences.items() if now - used > STALE_AFTER_S]:
            del self.sequences[corrid]
        responses = []
        for request in requests:
            try:
                mask = self._one(request)
                out = pb_utils.Tensor("mask", mask[None])
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            except (PromptError, ValueError, RuntimeError) as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses

    def finalize(self) -> None:
        self.sequences.clear()
