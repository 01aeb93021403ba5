"""A studio backdrop synthesised from the subject itself. NOT a generative (AI) model.

The look of a product/portrait studio: a softly lit wall tinted from the subject's own palette, a
floor that fades in below the subject's base, and a contact shadow where the subject stands. It is
deterministic (same input, same output), needs no weights, and runs in a few vectorised passes.

The prompt is honoured only through a small vocabulary: a colour word (red, orange, yellow, green,
teal, blue, purple, pink, brown, grey, white, black) sets the wall's hue, and "dark" / "light"
its brightness; every other word is ignored.
"""

from __future__ import annotations

import colorsys
import re

import cv2
import numpy as np

_HUES: dict[str, tuple[float, float]] = {  # word -> (hue 0..1, saturation)
    "red": (0.0, 0.45),
    "orange": (0.08, 0.45),
    "yellow": (0.14, 0.4),
    "green": (0.33, 0.35),
    "teal": (0.48, 0.35),
    "blue": (0.6, 0.4),
    "purple": (0.77, 0.35),
    "pink": (0.92, 0.3),
    "brown": (0.07, 0.45),
    "grey": (0.0, 0.0),
    "gray": (0.0, 0.0),
    "white": (0.0, 0.0),
    "black": (0.0, 0.0),
}


def _wall_colour(rgb: np.ndarray, alpha: np.ndarray, prompt: str) -> np.ndarray:
    """RGB 0..1 of the lit wall: the subject's average hue, strongly desaturated and lightened."""
    weight = alpha.sum()
    if weight > 0:
        mean = (rgb * alpha[..., None]).sum(axis=(0, 1)) / (255.0 * weight)
        hue, sat, _ = colorsys.rgb_to_hsv(*(float(c) for c in mean))
        sat = min(0.22, sat * 0.35)  # a hint of the palette, never competing with the subject
    else:
        hue, sat = 0.0, 0.0
    value = 0.88
    words = set(re.findall(r"[a-z]+", prompt.lower()))
    for word in words:
        if word in _HUES:
            hue, sat = _HUES[word]
    if words & {"dark", "black", "night"}:
        value = 0.28
    elif words & {"light", "white", "bright"}:
        value = 0.95
    if "brown" in words:
        value = min(value, 0.55)
    return np.array(colorsys.hsv_to_rgb(hue, sat, value), dtype=np.float32)


def _base_and_centre(alpha: np.ndarray) -> tuple[int, float, float]:
    """Lowest row of the subject, its centre column and its width there (pixels)."""
    h, w = alpha.shape
    rows = np.flatnonzero(alpha.max(axis=1) > 0.5)
    cols = np.flatnonzero(alpha.max(axis=0) > 0.5)
    if rows.size == 0:
        return int(h * 0.8), w / 2.0, w / 3.0
    bottom = int(rows[-1])
    band = alpha[max(0, bottom - max(2, h // 20)) : bottom + 1]
    band_cols = np.flatnonzero(band.max(axis=0) > 0.5)
    span = band_cols if band_cols.size else cols
    centre = float(span.mean())
    width = float(max(span[-1] - span[0], w * 0.05))
    return bottom, centre, width


_FIELD_SIDE = 256  # lighting and shadows are smooth: computed this small, then scaled up


def _lighting(alpha: np.ndarray) -> np.ndarray:
    """Brightness multiplier [h,w] (0..1): key light, floor falloff, contact shadow."""
    h, w = alpha.shape
    bottom, cx, base_w = _base_and_centre(alpha)
    ys = (np.arange(h, dtype=np.float32) + 0.5)[:, None]
    xs = (np.arange(w, dtype=np.float32) + 0.5)[None, :]
    diag = float(np.hypot(h, w))

    # Key light behind the subject: brighter around it, falling off towards the corners.
    rows = np.flatnonzero(alpha.max(axis=1) > 0.5)
    cy = float(rows.mean()) if rows.size else h / 2.0
    glow = 1.0 - 0.35 * np.clip(np.hypot(xs - cx, ys - cy) / (0.75 * diag), 0.0, 1.0) ** 1.5

    # The floor fades in across a soft horizon a little above the base, then darkens towards us.
    horizon = float(np.clip(bottom - 0.06 * h, 0.45 * h, 0.92 * h))
    softness = max(1.0, 0.04 * h)
    floor = 1.0 / (1.0 + np.exp(-(ys - horizon) / softness))
    depth = np.clip((ys - horizon) / max(1.0, h - horizon), 0.0, 1.0)
    shade = (1.0 - 0.12 * floor) * (1.0 - 0.18 * depth * floor) * glow

    # Contact shadow: a blurred ellipse under the base, then a wider, fainter ambient one.
    shadow = np.zeros((h, w), dtype=np.float32)
    axes = (max(1, int(base_w * 0.55)), max(1, int(0.025 * h)))
    cv2.ellipse(shadow, (int(cx), min(h - 1, bottom)), axes, 0, 0, 360, 1.0, -1)
    contact = cv2.GaussianBlur(shadow, (0, 0), max(0.5, 0.012 * diag))
    ambient = cv2.GaussianBlur(shadow, (0, 0), max(0.5, 0.05 * diag))
    occlusion = 1.0 - np.clip(0.55 * contact + 0.25 * ambient / max(float(ambient.max()), 1e-6), 0.0, 0.8)
    return (shade * occlusion).astype(np.float32)


def generate(subject: np.ndarray, prompt: str = "") -> np.ndarray:
    """uint8 [H,W,4] RGBA -> uint8 [H,W,3] RGB backdrop of the same size."""
    h, w = subject.shape[:2]
    alpha = subject[..., 3].astype(np.float32) / 255.0
    wall = _wall_colour(subject[..., :3].astype(np.float32), alpha, prompt)

    scale = min(1.0, _FIELD_SIDE / max(h, w))
    small = (max(1, round(w * scale)), max(1, round(h * scale)))
    # Lighting multiplies linear light; raising it to 1/2.2 once on the small field applies it to
    # the sRGB wall colour directly, so the full-size work is one multiply per channel.
    light = _lighting(cv2.resize(alpha, small, interpolation=cv2.INTER_AREA)) ** (1.0 / 2.2)
    light = cv2.resize(light, (w, h), interpolation=cv2.INTER_LINEAR)
    # Ordered dither: a smooth 8-bit gradient would otherwise show bands.
    checker = (np.add.outer(np.arange(h), np.arange(w)) % 2).astype(np.float32) - 0.5
    out = np.empty((h, w, 3), dtype=np.uint8)
    for c in range(3):
        out[..., c] = np.clip(light * (wall[c] * 255.0) + checker * 0.5 + 0.5, 0, 255)
    return out
