"""The prompted object's colours against its surroundings: a cue that does not depend on saliency.

Why: U2-Net-p is blind to some objects that a person clicks without hesitation (a small red car
in tyre smoke, a brown dog in grass behind a fence); their colours still tell them from what is
around them. The model is fitted once, on the prompt frame, so it also says whether a salient
thing found later is *the* object (re-detection) rather than whatever stands out there.
"""

from __future__ import annotations

import numpy as np

BITS = 3  # levels per channel = 2**BITS: coarse enough that a few hundred pixels fill it
LEVELS = 1 << BITS


def _bins(rgb: np.ndarray) -> np.ndarray:
    q = (rgb >> (8 - BITS)).astype(np.int32)
    return (q[..., 0] * LEVELS + q[..., 1]) * LEVELS + q[..., 2]


class ColourModel:
    """P(object | colour) from a joint RGB histogram of object pixels against nearby background.

    `separation` (mean probability over the object minus over its surroundings, 0..1) says how
    far the cue can be trusted: an object dressed like its background gets a model that is
    never used.
    """

    def __init__(self, rgb: np.ndarray, fg: np.ndarray, bg: np.ndarray) -> None:
        bins = _bins(rgb)
        n = LEVELS**3
        # +0.5: a colour seen on neither side says nothing (0.5), instead of 0/0.
        hf = np.bincount(bins[fg], minlength=n) / max(1, int(fg.sum())) + 0.5 / n
        hb = np.bincount(bins[bg], minlength=n) / max(1, int(bg.sum())) + 0.5 / n
        self._table = (hf / (hf + hb)).astype(np.float32)
        p = self._table[bins]
        self.separation = float(p[fg].mean() - p[bg].mean()) if fg.any() and bg.any() else 0.0

    def prob(self, rgb: np.ndarray) -> np.ndarray:
        """float32 [h,w] 0..1: how much more the pixel's colour is the object's than the
        surroundings' (0.5 = either)."""
        return self._table[_bins(rgb)]


def histogram(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """float64 [LEVELS**3]: the normalised joint RGB histogram of `rgb` [h,w,3] uint8 under the
    bool `mask` [h,w] (all zeros for an empty mask)."""
    counts = np.bincount(_bins(rgb)[mask], minlength=LEVELS**3).astype(np.float64)
    return counts / max(1.0, counts.sum())


def similarity(p: np.ndarray, q: np.ndarray) -> float:
    """Bhattacharyya coefficient of two normalised histograms: 1 same colours, 0 none shared
    (Bhattacharyya, 1943; the usual appearance measure of histogram trackers, Comaniciu et al.,
    "Kernel-based object tracking", TPAMI 2003)."""
    return float(np.sqrt(p * q).sum())
