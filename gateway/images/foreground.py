"""The subject's own colour under soft edges: blur-fusion foreground estimation (Forte & Pitie
2021, "Approximate fast foreground colour estimation"), computed where it is visible only.

The estimate is fg = F + a * (I - a * F - (1 - a) * B), with F and B the alpha-weighted box
averages of the subject's and the background's colour around the pixel (two passes: a wide one
seeds the background, a narrow one refines). Where it matters, and where not:

* a = 1 (opaque): fg = I exactly, the photo's own pixel;
* 0 < a < 1 (soft edge, a few percent of a photo): the formula above, at full resolution, with the
  photo's own pixel I and alpha a;
* a = 0: fg = F; invisible, carried only so viewers that resample straight alpha show no rim.

F and B are box averages over radii that scale with the photo (6 and 90 px per 1000 px of long
side), so they are smooth fields: they are computed on a copy whose long side is at most
WORK_SIDE and sampled bilinearly at the pixels that need them. Below that size the copy is the
photo itself and the result is the full-resolution estimate. At 2048 px this is ~15x less work
than the same two passes on every full-size float pixel, and the composites stay within a
fraction of a level (docs/images.md, "Foreground colour").
"""

from __future__ import annotations

import cv2
import numpy as np

from gateway.images.srgb import to_linear, to_srgb

# Long side of the copy F and B are computed on. 512 px keeps the narrow pass's box at 3 px
# (6 px per 1000) and costs a few milliseconds.
WORK_SIDE = 512
_NARROW_PER_1000 = 6.0
_WIDE_PER_1000 = 90.0
_MIN_BOX = 3
_EPS = 1e-5
_MAP_WIDTH = 4096
_BAND_BLOCKS = 64  # rows of blocks per band of the linear-light area resize
_LINEAR_LUT3 = np.repeat(to_linear(np.arange(256, dtype=np.uint8))[:, None], 3, axis=1).reshape(1, 256, 3)


def _reduced(n: int, k: int) -> int:
    """A side of n pixels shrunk k times: at least 1 (a 2048x2 photo has a 2-pixel side, k = 4)."""
    return max(1, round(n / k))


def _linear_area(rgb: np.ndarray, k: int) -> np.ndarray:
    """Block means of k x k pixels in linear light: float32 [~H/k, ~W/k, 3] (each side at least 1).

    In bands of whole blocks, so a 100 MP HD photo never holds a full-size float copy (1.2 GB);
    cv2.LUT is the to_linear table at about twice numpy's speed."""
    rows = k * _BAND_BLOCKS
    width = _reduced(rgb.shape[1], k)
    bands = []
    for y in range(0, rgb.shape[0], rows):
        band = rgb[y : y + rows]
        size = (width, _reduced(band.shape[0], k))
        bands.append(cv2.resize(cv2.LUT(band, _LINEAR_LUT3), size, interpolation=cv2.INTER_AREA))
    return np.concatenate(bands) if len(bands) > 1 else bands[0]


def _box(img: np.ndarray, size: int) -> np.ndarray:
    return cv2.blur(img, (size, size), borderType=cv2.BORDER_REFLECT)


def _estimate(image: np.ndarray, a: np.ndarray, f: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The blur-fusion formula fg = F + a (I - a F - (1 - a) B), linear light, not clipped; `a`
    broadcasts against the [..., 3] colours."""
    return f + a * (image - a * f - (1.0 - a) * b)


def _fusion_pass(
    image: np.ndarray, fg: np.ndarray, bg: np.ndarray, a: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One blur-fusion pass; returns (fg estimate, F, B), all linear float32 [h,w,3]."""
    blurred_a = _box(a, size)[..., None]
    a3 = a[..., None]
    f = _box(fg * a3, size) / (blurred_a + _EPS)
    b = _box(bg * (1.0 - a3), size) / ((1.0 - blurred_a) + _EPS)
    return np.clip(_estimate(image, a3, f, b), 0.0, 1.0), f, b


def _fields(rgb: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F, B) of the narrow pass on the working copy: linear float32 [h,w,3] each."""
    long_side = max(alpha.shape)
    # An integer factor keeps cv2's area resize on its fast path (block means).
    k = -(-long_side // WORK_SIDE)
    if k > 1:
        image = _linear_area(rgb, k)
        a = cv2.resize(alpha, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_AREA)
        a = a.astype(np.float32) / 255.0
    else:
        image = to_linear(rgb)
        a = alpha.astype(np.float32) / 255.0
    # Radii follow the full photo's size, in the copy's pixels.
    per_pixel = long_side / 1000.0 / k
    wide = max(_MIN_BOX, round(_WIDE_PER_1000 * per_pixel))
    narrow = max(_MIN_BOX, round(_NARROW_PER_1000 * per_pixel))
    fg, _, bg = _fusion_pass(image, image, image, a, wide)
    _, f, b = _fusion_pass(image, fg, bg, a, narrow)
    return f, b


def _sample(field: np.ndarray, ys: np.ndarray, xs: np.ndarray, full: tuple[int, int]) -> np.ndarray:
    """Bilinear samples of `field` at full-resolution pixel centres (ys, xs): float32 [N,3]."""
    h, w = field.shape[:2]
    if (h, w) == full:
        return field[ys, xs]
    n = len(xs)
    rows = -(-n // _MAP_WIDTH)  # remap wants a 2-D map under 32767 per side: fold the list
    map_x = np.zeros(rows * _MAP_WIDTH, np.float32)
    map_y = np.zeros(rows * _MAP_WIDTH, np.float32)
    # cv2.resize's centre convention: source x = (x + 0.5) * w / W - 0.5.
    map_x[:n] = (xs + 0.5) * (w / full[1]) - 0.5
    map_y[:n] = (ys + 0.5) * (h / full[0]) - 0.5
    out = cv2.remap(
        field,
        map_x.reshape(rows, _MAP_WIDTH),
        map_y.reshape(rows, _MAP_WIDTH),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return out.reshape(-1, 3)[:n]


def foreground_srgb(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Subject colour: sRGB uint8 [H,W,3] photo + uint8 [H,W] alpha -> sRGB uint8 [H,W,3].

    Opaque pixels are the photo's own; soft ones the blur-fusion estimate in linear light at full
    resolution; fully transparent ones the local subject colour F, smooth and invisible.
    """
    h, w = alpha.shape
    if rgb.shape[:2] != (h, w):
        raise ValueError(f"rgb {rgb.shape} and alpha {alpha.shape} differ in size")
    f, b = _fields(rgb, alpha)
    hidden = to_srgb(f)
    out = hidden if hidden.shape[:2] == (h, w) else cv2.resize(hidden, (w, h), interpolation=cv2.INTER_LINEAR)
    out = np.ascontiguousarray(out)
    out = cv2.copyTo(rgb, (alpha == 255).view(np.uint8), out)
    soft = np.flatnonzero(cv2.inRange(alpha, 1, 254))
    if soft.size:
        ys, xs = np.divmod(soft, w)
        a = (alpha.reshape(-1)[soft].astype(np.float32) / 255.0)[:, None]
        image = to_linear(rgb.reshape(-1, 3)[soft])
        fs, bs = _sample(f, ys, xs, (h, w)), _sample(b, ys, xs, (h, w))
        out.reshape(-1, 3)[soft] = to_srgb(_estimate(image, a, fs, bs))  # to_srgb clips
    return out
