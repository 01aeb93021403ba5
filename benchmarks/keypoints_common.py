"""Shared by the key-point benchmark: DAVIS loading, prompts from ground truth, U²-Net-p, J."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from common.settings import REPO_ROOT

VIDEO_MASKS = (REPO_ROOT.parent / "shared" / "data" / "video_masks").resolve()


def load_sequence(seq: str, limit: int | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """RGB frames and boolean ground-truth masks of one DAVIS sequence."""
    root = VIDEO_MASKS / seq
    names = sorted(p.stem for p in (root / "frames").glob("*.jpg"))[:limit]
    frames = [cv2.cvtColor(cv2.imread(str(root / "frames" / f"{n}.jpg")), cv2.COLOR_BGR2RGB) for n in names]
    masks = [cv2.imread(str(root / "masks" / f"{n}.png"), cv2.IMREAD_GRAYSCALE) > 127 for n in names]
    return frames, masks


def sequences() -> list[str]:
    return sorted(p.name for p in VIDEO_MASKS.iterdir() if (p / "frames").is_dir())


def prompt_from_mask(mask: np.ndarray, negative: bool = True) -> list[dict[str, object]]:
    """The deepest interior point as positive; the deepest background point as negative."""
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(inside)), inside.shape)
    points: list[dict[str, object]] = [{"x": int(x), "y": int(y), "type": "positive"}]
    if negative:
        outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
        y, x = np.unravel_index(int(np.argmax(outside)), outside.shape)
        points.append({"x": int(x), "y": int(y), "type": "negative"})
    return points


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def presence_recall(masks: list[np.ndarray], gts: list[np.ndarray], bar: float = 0.3) -> float:
    """Share of the frames where the object is visible in the ground truth on which the mask
    overlaps it with IoU > `bar` (issue 16's measure of a lost object; J hides a long loss behind
    good frames). masks uint8 0..255 or bool [H,W]; 1.0 when the object is never visible."""
    seen = [(m > 127 if m.dtype == np.uint8 else m, g) for m, g in zip(masks, gts, strict=True) if g.any()]
    if not seen:
        return 1.0
    return float(np.mean([iou(m, g) > bar for m, g in seen]))


class U2NetP:
    """The exported U²-Net-p (model_repository/u2netp/1/model.onnx, the graph Triton serves:
    uint8 HxWx3 -> uint8 HxW, pre/post inside) under onnxruntime: the unprompted baseline and the
    in-process saliency cue. Counts calls and their time, so trackers' own cost can be told apart."""

    def __init__(self, path: Path | None = None, threads: int = 1) -> None:
        import onnxruntime as ort

        model = path or REPO_ROOT / "model_repository" / "u2netp" / "1" / "model.onnx"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # the graph has an unused initializer; its warning is noise
        self.session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        (alpha,) = self.session.run(["alpha"], {"image": np.ascontiguousarray(rgb, dtype=np.uint8)})
        self.calls += 1
        self.seconds += time.perf_counter() - t0
        return alpha
