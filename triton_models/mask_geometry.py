"""Small operations on binary masks and boxes, shared by the video trackers (work-size pixels)."""

from __future__ import annotations

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def ellipse(size: int) -> np.ndarray:
    """An elliptic structuring element of radius `size` (at least 1)."""
    size = max(1, size)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * size + 1, 2 * size + 1))


def dilate(mask: np.ndarray, size: int) -> np.ndarray:
    """bool [h,w] grown by `size` pixels."""
    return cv2.dilate(mask.astype(np.uint8), ellipse(size)).astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks; 0 when both are empty."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def bbox(mask: np.ndarray) -> Box:
    """The tight box of a bool mask ((0, 0, 0, 0) when empty)."""
    x, y, bw, bh = cv2.boundingRect(mask.astype(np.uint8))
    return x, y, x + bw, y + bh


def expand(box: Box, margin: float, min_side: int, shape: tuple[int, int]) -> Box:
    """`box` grown by `margin` x its longer side on every side, at least `min_side` wide and
    tall, and never thinner than half its length (U2-Net-p squashes its input to a square, so a
    sliver crop would distort the object), clipped to a frame of `shape` (h, w)."""
    x0, y0, x1, y1 = box
    h, w = shape
    side = max(x1 - x0, y1 - y0)
    pad = margin * side
    cw = max(min_side, x1 - x0 + 2 * pad, 0.5 * (side + 2 * pad))
    ch = max(min_side, y1 - y0 + 2 * pad, 0.5 * (side + 2 * pad))
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    nx0, nx1 = int(max(0, cx - cw / 2)), int(min(w, cx + cw / 2 + 1))
    ny0, ny1 = int(max(0, cy - ch / 2)), int(min(h, cy + ch / 2 + 1))
    return nx0, ny0, nx1, ny1


def groups(mask: np.ndarray, gap: int) -> tuple[int, np.ndarray]:
    """Connected components of `mask` that count parts less than about `gap` px apart as one
    (a fence post in front of a dog cuts its saliency in two): (count incl. 0, int32 labels)."""
    n, labels = cv2.connectedComponents(dilate(mask, gap).astype(np.uint8), connectivity=8)
    labels[~mask] = 0
    return n, labels


def touching(region: np.ndarray, seed: np.ndarray, gap: int) -> np.ndarray:
    """The components of `region` (grouped across `gap`) that touch `seed` grown by 1 px."""
    n, labels = groups(region, gap)
    hit = np.unique(labels[dilate(seed, 1) & region])
    return np.isin(labels, hit[hit != 0])


def off_border(mask: np.ndarray) -> np.ndarray:
    """bool [h,w] -> bool [h,w]: the 8-connected components of `mask` that touch none of the
    image's four edges (a subject whole in the frame rather than scene cut by it)."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    edge = np.unique(np.r_[labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    keep = np.ones(n, bool)
    keep[edge] = False
    keep[0] = False
    return keep[labels]
