"""The one image pipeline: decode -> alpha (Triton) -> compose -> PNG. Sync endpoints and the HD
job differ only in their Limits; every operation differs only in its Params.

CPU-heavy steps run in threads so the event loop keeps serving other requests meanwhile.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from gateway.images.compose import render
from gateway.images.encode import encode_png
from gateway.images.matte import predict_alpha
from gateway.images.params import Params
from gateway.triton import Triton
from triton_models.decode import Decoded, Limits, decode


def _model_input(img: Decoded) -> np.ndarray:
    """Pixels the model sees: transparent areas of the input shown over white, as a viewer would."""
    if img.alpha is None:
        return img.rgb
    a = img.alpha.astype(np.float32)[..., None] / 255.0
    return (img.rgb * a + 255.0 * (1.0 - a) + 0.5).astype(np.uint8)


async def alpha_for(triton: Triton, img: Decoded, params: Params) -> np.ndarray:
    alpha = await predict_alpha(triton, _model_input(img), params.model)
    if img.alpha is not None:  # what the input already made transparent stays transparent
        alpha = ((alpha.astype(np.uint16) * img.alpha + 127) // 255).astype(np.uint8)
    return alpha


async def process_image(triton: Triton, source: bytes | Path, params: Params, limits: Limits) -> bytes:
    """Raises decode.InvalidImage / ImageTooLarge for bad input, triton errors for the backend."""
    img = await asyncio.to_thread(decode, source, limits)
    alpha = await alpha_for(triton, img, params)
    pixels = await asyncio.to_thread(render, img.rgb, alpha, params)
    return await asyncio.to_thread(encode_png, pixels)
