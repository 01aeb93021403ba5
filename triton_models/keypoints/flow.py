"""Dense optical flow (DIS) to carry a mask and points from one frame to the next."""

from __future__ import annotations

import cv2
import numpy as np

# OpenCV's DIS fails on thin images (an assertion under 16 rows) and can crash the process
# (24x512 segfaults in OpenCV 4.11, measured): flow is computed on grey frames padded to at
# least this many pixels a side (edges repeated), and cropped back.
MIN_FLOW_SIDE = 64


def _grey(rgb: np.ndarray) -> np.ndarray:
    """uint8 [h,w] grey of `rgb`, padded at the bottom and right to MIN_FLOW_SIDE a side."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    if min(h, w) >= MIN_FLOW_SIDE:
        return gray
    return cv2.copyMakeBorder(
        gray, 0, max(0, MIN_FLOW_SIDE - h), 0, max(0, MIN_FLOW_SIDE - w), cv2.BORDER_REPLICATE
    )


class FlowWarper:
    """Holds the previous grey frame; `warp` moves the previous mask onto the new frame."""

    def __init__(self) -> None:
        # FAST rather than ULTRAFAST: at ~480 px the difference is a few ms and the masks of
        # thin, fast parts (legs, wheels) follow noticeably better.
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        self.prev_gray: np.ndarray | None = None
        # float32 [h,w,2]: where each pixel of the last warped frame came from, in px (x, y)
        self.last_flow: np.ndarray | None = None

    def reset(self, rgb: np.ndarray) -> None:
        self.prev_gray = _grey(rgb)
        self.last_flow = None

    def warp(
        self, rgb: np.ndarray, prev_mask: np.ndarray, points: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """prev_mask float32 [h,w] in the previous frame -> the same mask in `rgb`'s frame.

        Backward flow (new -> previous) so every new pixel looks up where it came from; points
        move with the forward flow sampled at their own position.
        """
        if self.prev_gray is None:
            raise RuntimeError("warp() before reset(): no previous frame")
        gray = _grey(rgb)
        h, w = rgb.shape[:2]
        back = self._dis.calc(gray, self.prev_gray, None)[:h, :w]
        self.last_flow = back.copy()
        inside = prev_mask > 0.5
        if inside.sum() >= 16:
            # Flow vectors that disagree with the object's own median motion (by more than a few
            # pixels) are mostly an occluder sweeping across it (a pole in front of a dog, close
            # to a panning camera): there the object moves with its median, not with the pole.
            med = np.median(back[inside], axis=0)
            off = np.linalg.norm(back - med, axis=2) > max(2.0, 0.02 * max(h, w))
            back[off] = med
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        warped = cv2.remap(
            prev_mask,
            gx + back[..., 0],
            gy + back[..., 1],
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        moved = None
        if points is not None and len(points):
            fwd = self._dis.calc(self.prev_gray, gray, None)[:h, :w]
            xi = np.clip(points[:, 0].round().astype(int), 0, w - 1)
            yi = np.clip(points[:, 1].round().astype(int), 0, h - 1)
            moved = points + fwd[yi, xi]
            moved[:, 0] = np.clip(moved[:, 0], 0, w - 1)
            moved[:, 1] = np.clip(moved[:, 1], 0, h - 1)
        self.prev_gray = gray
        return warped, moved
