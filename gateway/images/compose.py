"""Pure compositing: (sRGB photo, alpha, Params) -> output pixels. No I/O, no models.

Why it looks clean at the edges:
* Edge pixels of a photo mix subject and old background. Pasting them as they are onto a new
  background leaves a halo of the old one (the "dark fringe" on light backgrounds). We first
  estimate the subject's own colour there (gateway/images/foreground.py: blur-fusion foreground
  estimation, Forte & Pitie 2021) and composite that.
* The matte (straight alpha over nothing) needs no compositing at all: it is that colour and the
  model's alpha, in uint8, without a full-size float image.
* Every layer is composited premultiplied, in linear light, then encoded back to sRGB: averaging
  sRGB values darkens soft edges.
* The blurred background is a normalised convolution that ignores the subject, so the subject
  does not bleed into the blur around itself.
The soft alpha from the model is kept as it is (no thresholding).
"""

from __future__ import annotations

import cv2
import numpy as np

from gateway.images.foreground import foreground_srgb
from gateway.images.params import RGB, Params
from gateway.images.srgb import to_linear, to_srgb


def _gaussian(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with cost independent of sigma: shrink, blur a little, grow back."""
    if sigma <= 0:
        return img
    h, w = img.shape[:2]
    factor = max(1.0, sigma / 4.0)
    if factor > 1.0:
        size = (max(1, round(w / factor)), max(1, round(h / factor)))
        small = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma / factor, borderType=cv2.BORDER_REFLECT)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def blurred_background(image: np.ndarray, alpha: np.ndarray, sigma: float) -> np.ndarray:
    """The photo's background, blurred, with the subject's pixels left out of every average."""
    weight = 1.0 - alpha
    num = _gaussian(image * weight[..., None], sigma)
    den = _gaussian(weight, sigma)[..., None]
    plain = _gaussian(image, sigma)
    # Deep inside a large subject no background is near; it is hidden there anyway, so fall back
    # to the plain blur rather than dividing by almost nothing.
    return np.where(den > 1e-3, num / np.maximum(den, 1e-3), plain)


def solid(shape: tuple[int, int], color: RGB) -> np.ndarray:
    return np.broadcast_to(to_linear(np.array(color, dtype=np.uint8)), (*shape, 3))


def gradient(shape: tuple[int, int], start: RGB, end: RGB, direction: str) -> np.ndarray:
    """Interpolated in sRGB (as CSS does), returned linear."""
    h, w = shape
    ys = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    if direction == "horizontal":
        t = np.broadcast_to(xs, (h, w))
    elif direction == "diagonal":
        t = (xs + ys) / 2.0
    elif direction == "radial":
        t = np.clip(np.hypot(xs - 0.5, ys - 0.5) / np.hypot(0.5, 0.5), 0.0, 1.0)
    else:
        t = np.broadcast_to(ys, (h, w))
    s = np.array(start, dtype=np.float32)
    e = np.array(end, dtype=np.float32)
    srgb = s + (e - s) * t[..., None]
    return to_linear(np.clip(srgb + 0.5, 0, 255).astype(np.uint8))


def shadow_alpha(alpha: np.ndarray, dx: int, dy: int, blur: int, opacity: float) -> np.ndarray:
    """The subject's silhouette moved by (dx, dy), softened, scaled by opacity; cropped to frame."""
    h, w = alpha.shape
    moved = np.zeros_like(alpha)
    src = alpha[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    if src.size:
        moved[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return np.clip(_gaussian(moved, blur / 2.0), 0.0, 1.0) * opacity


def _rgba(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8 [H,W,3] + [H,W] -> [H,W,4] (cv2.merge: several times faster than np.dstack)."""
    return cv2.merge([np.ascontiguousarray(colour), np.ascontiguousarray(alpha)])


def render(
    rgb: np.ndarray,
    alpha: np.ndarray,
    params: Params,
    background: np.ndarray | None = None,
    cutout: bool = False,
) -> np.ndarray:
    """sRGB uint8 [H,W,3] + alpha uint8 [H,W] -> uint8 [H,W,4] (transparent) or [H,W,3] (opaque).

    `background` (sRGB uint8 [H,W,3]) replaces the operation's own background; `cutout` says rgb
    already is the subject's colour (a transparent PNG), so no foreground estimate is needed.
    """
    if params.operation == "matte" and background is None:
        # Straight alpha over nothing: the colour is the subject's own and the coverage is the
        # matte, so nothing needs compositing in float (same pixels as the general path below).
        return _rgba(rgb if cutout else foreground_srgb(rgb, alpha), alpha)
    shape = rgb.shape[:2]
    image = to_linear(rgb)
    a = alpha.astype(np.float32) / 255.0
    fg = image if cutout else to_linear(foreground_srgb(rgb, alpha))

    # Background layer, premultiplied: (colour * coverage, coverage).
    op = params.operation
    bg: np.ndarray | None
    if background is not None:
        bg = to_linear(background)
    elif op == "blur":
        bg = blurred_background(image, a, float(params.blur_radius))
    elif op == "color":
        bg = solid(shape, params.bg_color or (255, 255, 255))
    elif op == "gradient":
        bg = gradient(shape, params.gradient_start, params.gradient_end, params.gradient_direction)
    elif op == "shadow" and params.bg_color is not None:
        bg = solid(shape, params.bg_color)
    else:
        bg = None  # matte, or shadow on transparency

    if bg is not None:
        out = bg
        coverage = None
    else:
        out = np.zeros((*shape, 3), dtype=np.float32)
        coverage = np.zeros(shape, dtype=np.float32)

    if op == "shadow":
        sa = shadow_alpha(
            a, params.shadow_offset_x, params.shadow_offset_y, params.shadow_blur, params.shadow_opacity
        )
        out = out * (1.0 - sa[..., None])  # a black shadow adds no colour, only covers
        if coverage is not None:
            coverage = sa + coverage * (1.0 - sa)

    out = fg * a[..., None] + out * (1.0 - a[..., None])
    if coverage is None:
        return to_srgb(out)
    coverage = a + coverage * (1.0 - a)
    # Un-premultiply for PNG. Fully transparent pixels carry the estimated subject colour, not
    # black, so viewers that resample straight alpha show no dark rim.
    covered = coverage[..., None] > 1e-6
    colour = np.where(covered, out / np.maximum(coverage, 1e-6)[..., None], fg)
    result = np.empty((*shape, 4), dtype=np.uint8)
    result[..., :3] = to_srgb(colour)
    result[..., 3] = np.clip(coverage * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return result
