"""The default point-prompted tracker: saliency + colour (GrabCut) + dense optical flow (DIS).

Why this shape: a salient-object map alone marks *every* salient thing, and flow alone drifts.
The prompt picks the salient region under the positive points (split from regions nearer the
negative points), GrabCut snaps it to colour edges, and on each following frame the previous mask,
warped by DIS flow, decides which salient pixels still belong to the object; GrabCut then re-fits
the boundary on the new frame, so errors do not accumulate the way pure warping does.
All work happens at a reduced size (`work_long_side`); only the final mask is upsampled.
"""

from __future__ import annotations

import cv2
import numpy as np

from gateway.keypoints.flow import FlowWarper
from gateway.keypoints.prompt import Prompt

GC_BGD, GC_FGD, GC_PR_BGD, GC_PR_FGD = cv2.GC_BGD, cv2.GC_FGD, cv2.GC_PR_BGD, cv2.GC_PR_FGD


def _disc(shape: tuple[int, int], centres: np.ndarray, radius: int) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    for x, y in centres:
        cv2.circle(out, (int(round(x)), int(round(y))), radius, 1, -1)
    return out.astype(bool)


def _ellipse(size: int) -> np.ndarray:
    size = max(1, size)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * size + 1, 2 * size + 1))


def _dilate(mask: np.ndarray, size: int) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), _ellipse(size)).astype(bool)


def _erode(mask: np.ndarray, size: int) -> np.ndarray:
    return cv2.erode(mask.astype(np.uint8), _ellipse(size)).astype(bool)


def _grabcut(image: np.ndarray, trimap: np.ndarray, iterations: int) -> np.ndarray:
    """GrabCut on the trimap's uncertain part only (plus a margin of sure background for the
    colour model): its cost grows with the pixels it sees, and the sure-background rest of the
    frame cannot change anyway. Needs both classes among the seeds, else the trimap is the answer."""
    fg = (trimap == GC_FGD) | (trimap == GC_PR_FGD)
    bg = (trimap == GC_BGD) | (trimap == GC_PR_BGD)
    if fg.sum() < 16 or bg.sum() < 16:
        return fg
    ys, xs = np.nonzero(trimap != GC_BGD)
    h, w = trimap.shape
    margin = max(4, round(0.03 * max(h, w)))
    y0, y1 = max(0, ys.min() - margin), min(h, ys.max() + margin + 1)
    x0, x1 = max(0, xs.min() - margin), min(w, xs.max() + margin + 1)
    gc = np.ascontiguousarray(trimap[y0:y1, x0:x1])
    crop_bg = (gc == GC_BGD) | (gc == GC_PR_BGD)
    if crop_bg.sum() < 16:
        return fg
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    cv2.grabCut(
        np.ascontiguousarray(image[y0:y1, x0:x1]), gc, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK
    )
    out = np.zeros_like(fg)
    out[y0:y1, x0:x1] = (gc == GC_FGD) | (gc == GC_PR_FGD)
    return out


def _core(mask: np.ndarray, depth: float) -> np.ndarray:
    """The interior at least `depth` px from the edge, but never empty for a non-empty mask:
    thin or small objects keep their deepest half."""
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    top = float(dist.max())
    if top <= 0:
        return mask.copy()
    return dist >= min(depth, 0.5 * top)


def _keep_touching(mask: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """Drop islands GrabCut sometimes grows in look-alike background far from the object."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask
    hit = np.unique(labels[anchor & mask])
    hit = hit[hit != 0]
    if hit.size == 0:
        return mask
    return np.isin(labels, hit)


class KeypointTracker:
    """One object through one direction of a video. `start` on the prompt frame, then `step`."""

    def __init__(self, work_long_side: int = 480, grabcut_iterations: int = 2) -> None:
        self.work_long_side = work_long_side
        self.iterations = grabcut_iterations
        self._flow = FlowWarper()
        self._prev_mask: np.ndarray | None = None  # float32 work-size, 0..1
        self._full_size: tuple[int, int] = (0, 0)
        self._work_size: tuple[int, int] = (0, 0)

    # --- geometry -----------------------------------------------------------------------------

    def _set_size(self, height: int, width: int) -> None:
        scale = min(1.0, self.work_long_side / max(height, width))
        self._full_size = (width, height)
        self._work_size = (max(8, round(width * scale)), max(8, round(height * scale)))

    def _to_work(self, frame: np.ndarray, saliency: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if frame.shape[1::-1] != self._full_size:
            raise ValueError(f"frame size {frame.shape[1]}x{frame.shape[0]} differs from the sequence's")
        small = cv2.resize(frame, self._work_size, interpolation=cv2.INTER_AREA)
        if saliency is None:
            sal = np.zeros(small.shape[:2], np.float32)
        else:
            sal = (
                cv2.resize(saliency, self._work_size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
            )
        return np.ascontiguousarray(small), sal

    def _to_full(self, mask: np.ndarray) -> np.ndarray:
        soft = cv2.GaussianBlur(mask.astype(np.float32), (5, 5), 0)
        big = cv2.resize(soft, self._full_size, interpolation=cv2.INTER_LINEAR)
        return np.where(big >= 0.5, 255, 0).astype(np.uint8)

    @property
    def _band(self) -> int:
        return max(3, round(0.04 * max(self._work_size)))

    # --- the prompt frame ---------------------------------------------------------------------

    def start(self, frame: np.ndarray, saliency: np.ndarray | None, prompt: Prompt) -> np.ndarray:
        """frame RGB uint8 [H,W,3], saliency uint8 [H,W] (0..255) or None -> mask uint8 [H,W] 0/255."""
        self._set_size(frame.shape[0], frame.shape[1])
        small, sal = self._to_work(frame, saliency)
        self._flow.reset(small)
        h, w = sal.shape
        sx, sy = w / frame.shape[1], h / frame.shape[0]
        p = prompt.scaled(sx, sy)
        pos, neg = p.positive, p.negative
        radius = max(2, round(0.012 * max(h, w)))

        salient = sal > 0.5
        # Parts of one object (a dog's legs, a rider and bike) often touch only through weaker
        # saliency, so objects are grouped at a low threshold and kept at the normal one.
        loose = sal > 0.15
        _, comps = cv2.connectedComponents(loose.astype(np.uint8), connectivity=8)
        near = _dilate(_disc((h, w), pos, 1), max(3, round(0.03 * max(h, w))))
        hit = np.unique(comps[near & loose])
        hit = hit[hit != 0]
        selected = (np.isin(comps, hit) & salient) if hit.size else np.zeros((h, w), bool)

        if selected.sum() < 0.0005 * h * w:
            # The object is not salient: seed a generous region around the points and let colour
            # decide (slower to converge, so GrabCut gets more iterations here).
            selected = _dilate(_disc((h, w), pos, 1), round(0.08 * min(h, w)))
            trimap = np.full((h, w), GC_BGD, np.uint8)
            trimap[_dilate(selected, 2 * self._band)] = GC_PR_BGD
            trimap[selected] = GC_PR_FGD
            iterations = self.iterations + 3
        else:
            trimap = np.full((h, w), GC_BGD, np.uint8)
            trimap[_dilate(selected, self._band)] = GC_PR_BGD
            trimap[selected] = GC_PR_FGD
            trimap[_core(selected, self._band / 2) & ~_dilate(_disc((h, w), neg, 1), 4 * radius)] = GC_FGD
            others = salient & ~selected
            trimap[others & ~_dilate(selected, self._band)] = GC_BGD
            iterations = self.iterations + 1
        if len(neg):
            # Negative points carve: inside the candidate region, pixels nearer a negative point
            # than any positive one start as background (two people in one salient blob).
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            d_pos = np.min([(xx - x) ** 2 + (yy - y) ** 2 for x, y in pos], axis=0)
            d_neg = np.min([(xx - x) ** 2 + (yy - y) ** 2 for x, y in neg], axis=0)
            carve = (d_neg < d_pos) & (trimap != GC_BGD)
            trimap[carve] = GC_PR_BGD
            trimap[_disc((h, w), neg, 2 * radius)] = GC_BGD
        trimap[_disc((h, w), pos, radius)] = GC_FGD

        mask = _grabcut(small, trimap, iterations)
        mask = _keep_touching(mask, _disc((h, w), pos, radius))
        return self._commit(small, mask)

    # --- following frames ---------------------------------------------------------------------

    def step(self, frame: np.ndarray, saliency: np.ndarray | None) -> np.ndarray:
        if self._prev_mask is None:
            raise RuntimeError("step() before start(): the sequence has no prompt frame")
        small, sal = self._to_work(frame, saliency)
        h, w = sal.shape
        warped, _ = self._flow.warp(small, self._prev_mask)
        prior = warped > 0.5
        if not prior.any():
            return self._commit(small, prior)

        band = self._band
        near = _dilate(prior, band)
        salient = (sal > 0.5) & near
        agree = prior & salient
        union = prior | salient
        trimap = np.full((h, w), GC_BGD, np.uint8)
        trimap[_dilate(union, band)] = GC_PR_BGD
        trimap[union] = GC_PR_FGD
        sure = _core(agree, band / 3)
        if sure.sum() < 0.2 * prior.sum():
            # Saliency does not see this object: trust the flow's interior instead.
            sure = _core(prior, band / 2)
        trimap[sure] = GC_FGD
        mask = _grabcut(small, trimap, self.iterations)
        mask = _keep_touching(mask, sure)
        ratio = mask.sum() / max(1, prior.sum())
        if not 0.5 <= ratio <= 2.0:
            # GrabCut collapsed or leaked (look-alike colours): one frame of plain flow is a
            # smaller error than carrying a broken mask forward.
            mask = prior
        return self._commit(small, mask)

    def _commit(self, small: np.ndarray, mask: np.ndarray) -> np.ndarray:
        mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, _ellipse(1)).astype(bool)
        self._prev_mask = mask.astype(np.float32)
        return self._to_full(mask)
