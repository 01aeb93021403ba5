"""Turn the model's per-frame outputs into the frames a job writes.

Three outputs, one per kind of result: the mask itself (white foreground on black), the
foreground over a solid colour or an image, and RGBA for transparent video. Integer arithmetic
throughout: exact, and several times cheaper than float on a 720p frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import cv2
import numpy as np


def mask_frame(alpha: np.ndarray) -> np.ndarray:
    """HxW uint8 alpha -> HxW uint8 luma: 255 is foreground, 0 background (the encoder's gray)."""
    return np.ascontiguousarray(alpha, dtype=np.uint8)


def over(foreground: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """fg * a + bg * (1 - a), rounded; background is HxWx3 or a broadcastable 1x1x3 colour."""
    a = alpha.astype(np.uint16)[..., None]
    out = foreground.astype(np.uint16) * a + background.astype(np.uint16) * (255 - a) + 127
    return (out // 255).astype(np.uint8)


def rgba(foreground: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return np.dstack([foreground, alpha])


def opaque_background(image_rgba: np.ndarray) -> np.ndarray:
    """HxWx4 uint8 RGBA background image -> HxWx3 RGB over black, rounded. A background's
    transparent parts show the black of an empty video canvas (as in editors and FFmpeg's
    overlay), not whatever colour the file happens to store under them."""
    return over(image_rgba[..., :3], image_rgba[..., 3], np.zeros((1, 1, 3), np.uint8))


def fit_background(image_rgb: np.ndarray, width: int, height: int, sar: Fraction = Fraction(1)) -> np.ndarray:
    """Scale and centre-crop a background image to cover the frame (no letterbox, no distortion).

    `sar` is the frame's pixel width:height: the image (square pixels) covers the frame as it is
    displayed, width * sar by height, and is then stored at width x height pixels.
    """
    h, w = image_rgb.shape[:2]
    shown_width = width * float(sar)
    scale = max(shown_width / w, height / h)
    # the part of the image that shows, centred, then resampled onto the frame's pixels
    crop_w, crop_h = min(w, max(1, round(shown_width / scale))), min(h, max(1, round(height / scale)))
    x, y = (w - crop_w) // 2, (h - crop_h) // 2
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    part = image_rgb[y : y + crop_h, x : x + crop_w]
    return np.ascontiguousarray(cv2.resize(part, (width, height), interpolation=interp))


@dataclass(frozen=True)
class Background:
    """What a matte job puts behind the foreground: a colour, an image, or nothing (RGBA)."""

    color: tuple[int, int, int] | None = None
    image: np.ndarray | None = None  # already fitted to the frame size

    @property
    def transparent(self) -> bool:
        return self.color is None and self.image is None


def composite(foreground: np.ndarray, alpha: np.ndarray, background: Background) -> np.ndarray:
    if background.color is not None:
        return over(foreground, alpha, np.array(background.color, dtype=np.uint8).reshape(1, 1, 3))
    if background.image is not None:
        return over(foreground, alpha, background.image)
    return rgba(foreground, alpha)
