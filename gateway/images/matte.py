"""Photo -> alpha through the Triton models, for the `model` form field (auto|u2netp|rvm|blend).

* u2netp: salient-object segmentation; works on any subject (animals, products, people).
* rvm: a human video-matting model run as a one-frame sequence; fine hair, but only for people.
* blend: the per-pixel mean of both.
* auto (default): u2netp. On the salient-object ground truth in ../shared/data/images it scores
  the raw model's IoU (RVM scores far lower there: most subjects are not people), see
  benchmarks/eval_images.py and docs/images.md for the figures.

Large photos (HD) are matted on a copy whose long side is at most MODEL_MAX_SIDE: both models
resize to a few hundred pixels inside their graphs anyway, so sending 100 MP over gRPC would buy
nothing. The alpha is scaled back up and then follows the photo's edges (guided filter).

Thin photos (2048x2, 1x1) work with every model: u2netp always sees 320x320; rvm sees the photo
padded to the smallest size its graph runs on (gateway.video.geometry.rvm_min_size) and the
alpha is cropped back, in `_rvm`, the one place this path calls it.
"""

from __future__ import annotations

import asyncio

import cv2
import numpy as np
from PIL import Image

from gateway.images.params import ModelChoice
from gateway.triton import Triton
from gateway.video.geometry import crop_to, pad_to, rvm_min_size

MODEL_MAX_SIDE = 2048


# u2netp sees 320x320 whatever the photo. Its graph reproduces rembg's Pillow-Lanczos resizes as
# dense matrix products, whose cost grows with the photo (2048 px: ~1.2 s of a 1.6 s request).
# Pillow's own Lanczos, before and after, is the same arithmetic (Lanczos at scale 1 is the
# identity, so the graph's resizes become no-ops) in milliseconds, and sends 0.3 MB over gRPC
# instead of 12 MB.
U2NETP_SIZE = 320


def _lanczos(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    mode = "RGB" if pixels.ndim == 3 else "L"
    return np.asarray(Image.fromarray(pixels, mode).resize(size, Image.Resampling.LANCZOS))


async def _u2netp(triton: Triton, rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    if (h, w) == (U2NETP_SIZE, U2NETP_SIZE):
        return await triton.u2netp(rgb)
    small = await asyncio.to_thread(_lanczos, rgb, (U2NETP_SIZE, U2NETP_SIZE))
    alpha = await triton.u2netp(small)
    return await asyncio.to_thread(_lanczos, alpha, (w, h))


async def _rvm(triton: Triton, rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    padded = pad_to(rgb, *rvm_min_size(h, w))
    # A still photo is a sequence of one frame: start and end together reset and free the state.
    out = await triton.rvm_frame(padded, triton.new_sequence_id(), True, True, ("alpha",))
    return np.ascontiguousarray(crop_to(out["alpha"].reshape(padded.shape[:2]), h, w))


async def _model_alpha(triton: Triton, rgb: np.ndarray, model: ModelChoice) -> np.ndarray:
    if model == "rvm":
        return await _rvm(triton, rgb)
    if model == "blend":
        a, b = await asyncio.gather(_u2netp(triton, rgb), _rvm(triton, rgb))
        return ((a.astype(np.uint16) + b.astype(np.uint16) + 1) // 2).astype(np.uint8)
    return await _u2netp(triton, rgb)


def _shrink(rgb: np.ndarray, max_side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = max_side / max(h, w)
    size = (max(2, round(w * scale)), max(2, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def guided_upsample(alpha_small: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Scale alpha up to rgb's size; a grey-guide guided filter (He et al.) snaps it to edges."""
    h, w = rgb.shape[:2]
    alpha = cv2.resize(alpha_small, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    guide = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    r = max(2, round(max(h, w) / alpha_small.shape[1 if w >= h else 0]))
    eps = 1e-3

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = box(guide), box(alpha)
    cov = box(guide * alpha) - mean_i * mean_p
    var = box(guide * guide) - mean_i * mean_i
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    out = box(a) * guide + box(b)
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


async def predict_alpha(triton: Triton, rgb: np.ndarray, model: ModelChoice) -> np.ndarray:
    """uint8 [H,W,3] sRGB -> uint8 [H,W] alpha at the photo's own size."""
    if max(rgb.shape[:2]) <= MODEL_MAX_SIDE:
        return await _model_alpha(triton, rgb, model)
    small = await asyncio.to_thread(_shrink, rgb, MODEL_MAX_SIDE)
    alpha = await _model_alpha(triton, small, model)
    return await asyncio.to_thread(guided_upsample, alpha, rgb)
