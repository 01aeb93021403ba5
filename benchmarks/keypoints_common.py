"""Shared by the key-point benchmark: DAVIS loading, prompts from ground truth, U²-Net-p, J."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from gateway.settings import REPO_ROOT

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


class U2NetP:
    """The raw rembg U²-Net-p with onnxruntime: the unprompted baseline and the in-process cue."""

    MEAN = np.array([0.485, 0.456, 0.406], np.float32)
    STD = np.array([0.229, 0.224, 0.225], np.float32)

    def __init__(self, path: Path | None = None) -> None:
        import onnxruntime as ort
        import rembg

        model = path or Path(rembg.__file__).parent / "u2netp.onnx"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        self.session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        x = cv2.resize(rgb, (320, 320), interpolation=cv2.INTER_LANCZOS4).astype(np.float32)
        x = (x / max(float(x.max()), 1e-6) - self.MEAN) / self.STD
        out = self.session.run(None, {self.input: x.transpose(2, 0, 1)[None]})[0][0, 0]
        out = (out - out.min()) / max(float(out.max() - out.min()), 1e-6)
        big = cv2.resize(out, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
        return np.clip(big * 255 + 0.5, 0, 255).astype(np.uint8)
