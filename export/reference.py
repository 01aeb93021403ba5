"""The raw models run the way their own packages run them: onnxruntime on the ORIGINAL .onnx files
with numpy/Pillow pre- and postprocessing. Parity checks and tests compare Triton against these."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from export.wrap import ALPHA_HI, ALPHA_LO, IMAGENET_MEAN, IMAGENET_STD, RVM_DOWNSAMPLE_BASE, U2NET_SIZE


def raw_session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def alpha_levels(alpha: np.ndarray) -> np.ndarray:
    """The exported graphs' alpha levels curve (export.wrap.ALPHA_LO/HI) in their float32 arithmetic.

    alpha: float32 in 0..1, any shape -> float32 in 0..1, same shape.
    """
    lo, span = np.float32(ALPHA_LO), np.float32(ALPHA_HI - ALPHA_LO)
    return np.clip((alpha.astype(np.float32) - lo) / span, np.float32(0), np.float32(1))


def u2netp_alpha(session: ort.InferenceSession, rgb: np.ndarray, levels: bool = True) -> np.ndarray:
    """rembg's SimpleSession.predict, step for step (rembg/session_simple.py, session_base.py),
    plus the exported graph's alpha levels curve unless `levels` is False (rembg's own output).

    rgb: uint8 [H,W,3] -> alpha uint8 [H,W]."""
    image = Image.fromarray(rgb, "RGB")
    small = np.array(image.resize((U2NET_SIZE, U2NET_SIZE), Image.LANCZOS))
    unit = small / max(float(np.max(small)), 1e-6)
    net_in = (unit - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    feed = {session.get_inputs()[0].name: net_in.transpose(2, 0, 1)[None].astype(np.float32)}
    pred = session.run(None, feed)[0][:, 0, :, :]
    lo, hi = float(np.min(pred)), float(np.max(pred))
    pred = np.squeeze((pred - lo) / max(hi - lo, 1e-6))
    if levels:
        pred = alpha_levels(pred)
    mask = Image.fromarray((pred * 255).astype(np.uint8), "L").resize(image.size, Image.LANCZOS)
    return np.asarray(mask)


def rvm_downsample_ratio(height: int, width: int, base: float = RVM_DOWNSAMPLE_BASE) -> np.ndarray:
    return np.array([min(1.0, np.float32(base) / np.float32(max(height, width)))], np.float32)


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * np.float32(255)), 0, 255).astype(np.uint8)


def rvm_sequence(
    session: ort.InferenceSession,
    frames: Iterable[np.ndarray],
    base: float = RVM_DOWNSAMPLE_BASE,
    levels: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """RVM's recurrent loop over uint8 [H,W,3] frames: yields (alpha [H,W], foreground [H,W,3]) uint8;
    alpha through the exported graph's levels curve unless `levels` is False (RVM's own output)."""
    state = [np.zeros((1, 1, 1, 1), np.float32)] * 4
    for frame in frames:
        src = (frame.astype(np.float32) / np.float32(255)).transpose(2, 0, 1)[None]
        ratio = rvm_downsample_ratio(frame.shape[0], frame.shape[1], base)
        feed = {"src": src, "downsample_ratio": ratio, **{f"r{k + 1}i": s for k, s in enumerate(state)}}
        fgr, pha, *state = session.run(["fgr", "pha", "r1o", "r2o", "r3o", "r4o"], feed)
        alpha = alpha_levels(pha[0, 0]) if levels else pha[0, 0]
        yield _to_u8(alpha), _to_u8(fgr[0].transpose(1, 2, 0))
