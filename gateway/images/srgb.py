"""sRGB <-> linear light through lookup tables (IEC 61966-2-1 transfer curve).

to_linear: uint8 sRGB (any shape) -> float32 linear in 0..1, one table entry per level.
to_srgb: float linear (any shape; clipped to 0..1) -> uint8 sRGB, through a 4096-step table that is
exact to well under one 8-bit step (to_srgb(to_linear(x)) == x for every level).
"""

from __future__ import annotations

import numpy as np

_SRGB_TO_LINEAR = np.array(
    [(c / 255.0) / 12.92 if c <= 10 else ((c / 255.0 + 0.055) / 1.055) ** 2.4 for c in range(256)],
    dtype=np.float32,
)
_LUT_STEPS = 4096
_LINEAR_TO_SRGB = np.array(
    [
        round(255.0 * (x * 12.92 if x <= 0.0031308 else 1.055 * x ** (1 / 2.4) - 0.055))
        for x in np.linspace(0.0, 1.0, _LUT_STEPS + 1)
    ],
    dtype=np.uint8,
)


def to_linear(srgb: np.ndarray) -> np.ndarray:
    return _SRGB_TO_LINEAR[srgb]


def to_srgb(linear: np.ndarray) -> np.ndarray:
    idx = np.clip(linear, 0.0, 1.0) * _LUT_STEPS + 0.5
    return _LINEAR_TO_SRGB[idx.astype(np.int32)]
