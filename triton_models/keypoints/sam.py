"""The optional SAM-family backend: same start/step interface as KeypointTracker.

Used by the keypoint_mask Triton model when `sam_encoder.onnx` and `sam_decoder.onnx` (written by
`python -m export onnx sam`, I/O described in export/families/sam.py) sit in its version folder.
SAM has no memory across frames, so the video part is ours: the previous mask, carried by DIS
flow, becomes the next frame's prompt (its box, its deepest interior point, the negative points
moved by the flow, and SAM's own low-resolution logits as `mask_input`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from triton_models.keypoints.flow import FlowWarper
from triton_models.keypoints.prompt import Prompt

if TYPE_CHECKING:  # imported when a SAM backend loads: hosts without one never need it
    import onnxruntime as ort

BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = 2.0, 3.0  # SamOnnxModel's label codes for a box prompt


def load_sessions(
    folder: Path, names: tuple[str, ...], providers: list[str] | None, threads: int
) -> list[ort.InferenceSession]:
    """One onnxruntime session per file of `names` in `folder`, on `providers` (default: the CPU)
    with `threads` intra-op threads: the SAM backends' graphs (sam.py, sam2.py). Idle pool
    threads sleep rather than spin, as in the other video models: a video job's model must leave
    the cores it does not use to the photo requests."""
    import onnxruntime as ort

    from triton_models.onnx import session_options

    opts = session_options(threads, spin_wait=False)
    providers = providers or ["CPUExecutionProvider"]
    return [ort.InferenceSession(str(folder / name), opts, providers=providers) for name in names]


class SamModels:
    """The two onnxruntime sessions, loaded once per model instance and shared by its sequences."""

    def __init__(self, folder: Path, providers: list[str] | None = None, threads: int = 2) -> None:
        files = ("sam_encoder.onnx", "sam_decoder.onnx")
        self.encoder, self.decoder = load_sessions(folder, files, providers, threads)
        low_res = self.decoder.get_inputs()[[i.name for i in self.decoder.get_inputs()].index("mask_input")]
        self.low_res_side = int(low_res.shape[-1])
        self.image_size = 4 * self.low_res_side  # mask_input is 4x the embedding, which is S/16

    @staticmethod
    def present(folder: Path) -> bool:
        return (folder / "sam_encoder.onnx").is_file() and (folder / "sam_decoder.onnx").is_file()

    def embed(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        h, w = rgb.shape[:2]
        scale = self.image_size / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        resized = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR).astype(np.float32)
        return self.encoder.run(None, {"image": resized.transpose(2, 0, 1)[None]})[0], scale

    def decode(
        self,
        embedding: np.ndarray,
        scale: float,
        coords: np.ndarray,
        labels: np.ndarray,
        low_res: np.ndarray | None,
        size: tuple[int, int],
    ) -> tuple[np.ndarray, np.ndarray]:
        feed = {
            "image_embeddings": embedding,
            "point_coords": (coords * scale).astype(np.float32)[None],
            "point_labels": labels.astype(np.float32)[None],
            "mask_input": (
                low_res
                if low_res is not None
                else np.zeros((1, 1, self.low_res_side, self.low_res_side), np.float32)
            ),
            "has_mask_input": np.array([0.0 if low_res is None else 1.0], np.float32),
            "orig_im_size": np.array(size, np.float32),
        }
        masks, _, low = self.decoder.run(None, feed)
        return masks[0, 0] > 0.0, low


class SamTracker:
    def __init__(self, models: SamModels, work_long_side: int = 480) -> None:
        self.models = models
        self.work_long_side = work_long_side
        self._flow = FlowWarper()
        self._prev: np.ndarray | None = None  # float32 work-size mask
        self._low_res: np.ndarray | None = None
        self._negatives = np.zeros((0, 2), np.float32)  # work-size coordinates
        self._scale = 1.0

    def _small(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        self._scale = min(1.0, self.work_long_side / max(h, w))
        return cv2.resize(
            frame,
            (max(8, round(w * self._scale)), max(8, round(h * self._scale))),
            interpolation=cv2.INTER_AREA,
        )

    def _segment(
        self, frame: np.ndarray, coords: np.ndarray, labels: np.ndarray, small: np.ndarray
    ) -> np.ndarray:
        embedding, scale = self.models.embed(frame)
        mask, self._low_res = self.models.decode(
            embedding, scale, coords, labels, self._low_res, (frame.shape[0], frame.shape[1])
        )
        self._prev = cv2.resize(mask.astype(np.float32), small.shape[1::-1], interpolation=cv2.INTER_AREA)
        return np.where(mask, 255, 0).astype(np.uint8)

    def start(self, frame: np.ndarray, prompt: Prompt) -> np.ndarray:
        small = self._small(frame)
        self._flow.reset(small)
        self._low_res = None
        self._negatives = prompt.negative * self._scale
        return self._segment(frame, prompt.points, prompt.labels.astype(np.float32), small)

    def step(self, frame: np.ndarray) -> np.ndarray:
        if self._prev is None:
            raise RuntimeError("step() before start(): the sequence has no prompt frame")
        small = self._small(frame)
        warped, moved = self._flow.warp(small, self._prev, self._negatives)
        if moved is not None:
            self._negatives = moved
        prior = (warped > 0.5).astype(np.uint8)
        if not prior.any():
            self._prev = warped
            return np.zeros(frame.shape[:2], np.uint8)
        depth = cv2.distanceTransform(prior, cv2.DIST_L2, 5)
        y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
        bx, by, bw, bh = cv2.boundingRect(prior)
        coords = np.array([[x, y], [bx, by], [bx + bw, by + bh], *self._negatives], np.float32) / self._scale
        labels = np.array([1.0, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT] + [0.0] * len(self._negatives), np.float32)
        return self._segment(frame, coords, labels, small)
