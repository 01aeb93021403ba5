"""POST /image/generate/v1: a transparent subject placed on a generated background.

Any accepted format that carries transparency is a subject (PNG with RGBA, LA or a palette with
tRNS, WebP, TIFF, GIF, HEIF, AVIF): decode.py already separates the alpha whatever the mode holds
it in, so what decides is the transparency itself, never the file format.

The background comes from the Triton model `background_generator` (subject RGBA + optional prompt
-> RGB of the same size). The shipped model is a non-AI studio-backdrop synthesiser; see
docs/images.md for swapping in a generative model behind the same contract.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from gateway.images.compose import render
from gateway.images.encode import encode_png
from gateway.images.params import Params
from gateway.triton import InferenceFailed, Triton
from triton_models.decode import Limits, decode

MODEL = "background_generator"
# "Real transparency": at least this share of the canvas is (nearly) fully transparent. A PNG
# with an alpha channel that is opaque everywhere, or one stray clear pixel, has no background
# to replace.
MIN_TRANSPARENT_SHARE = 0.01
TRANSPARENT_BELOW = 16


class NotTransparent(ValueError):
    """The input has no transparent background (no alpha, or too little of it is transparent)."""


def has_real_transparency(alpha: np.ndarray | None) -> bool:
    if alpha is None:
        return False
    return float(np.count_nonzero(alpha < TRANSPARENT_BELOW)) >= MIN_TRANSPARENT_SHARE * alpha.size


async def generate_background(triton: Triton, rgba: np.ndarray, prompt: str) -> np.ndarray:
    inputs = {"subject": np.ascontiguousarray(rgba)}
    if prompt:
        inputs["prompt"] = np.array([prompt.encode("utf-8")], dtype=np.object_)
    out = (await triton.infer(MODEL, inputs, ["background"]))["background"]
    if out.shape != (*rgba.shape[:2], 3) or out.dtype != np.uint8:
        raise InferenceFailed(f"{MODEL}: returned {out.dtype} {list(out.shape)}, not the subject's size")
    return out


async def generate_image(triton: Triton, source: bytes | Path, prompt: str, limits: Limits) -> bytes:
    img = await asyncio.to_thread(decode, source, limits)
    if img.alpha is None or not has_real_transparency(img.alpha):
        raise NotTransparent()
    rgba = np.dstack([img.rgb, img.alpha])
    background = await generate_background(triton, rgba, prompt)
    pixels = await asyncio.to_thread(render, img.rgb, img.alpha, Params(operation="color"), background, True)
    return await asyncio.to_thread(encode_png, pixels)
