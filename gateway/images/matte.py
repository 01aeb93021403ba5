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
"""

from __future__ import annotations

import asyncio

import cv2
import numpy as np

from gateway.images.params import ModelChoice
from gateway.triton import Triton

MODEL_MAX_SIDE = 2048


async def _u2netp(triton: Triton, rgb: np.ndarray) -> np.ndarray:
    return await triton.u2netp(rgb)


async def _rvm(triton: Triton, rgb: np.ndarray) -> np.ndarray:
    # A still photo is a sequence of one frame: start and end together reset and free the state.
    out = await triton.rvm_frame(rgb, triton.new_sequence_id(), True, True, ("alpha",))
    return out["alpha"].reshape(rgb.shape[:2])


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
