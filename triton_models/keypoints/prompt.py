"""Key points as the model sees them: validated arrays in the frame's pixel space."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POSITIVE = 1
NEGATIVE = 0


class PromptError(ValueError):
    """The points cannot select anything in this frame (none positive, or outside the frame)."""


@dataclass(frozen=True)
class Prompt:
    points: np.ndarray  # float32 [N, 2], (x, y) pixels
    labels: np.ndarray  # int32 [N], 1 positive / 0 negative

    @classmethod
    def from_arrays(cls, points: np.ndarray, labels: np.ndarray, width: int, height: int) -> Prompt:
        pts = np.asarray(points, dtype=np.float32).reshape(-1, 2)
        lab = np.asarray(labels, dtype=np.int32).reshape(-1)
        if pts.shape[0] != lab.shape[0] or pts.shape[0] == 0:
            raise PromptError(
                f"need one label per point, got {pts.shape[0]} points and {lab.shape[0]} labels"
            )
        if not np.all(np.isin(lab, (POSITIVE, NEGATIVE))):
            raise PromptError("labels must be 1 (positive) or 0 (negative)")
        if not np.any(lab == POSITIVE):
            raise PromptError("at least one positive point is required")
        inside = (pts[:, 0] >= 0) & (pts[:, 0] <= width - 1) & (pts[:, 1] >= 0) & (pts[:, 1] <= height - 1)
        if not np.all(inside):
            raise PromptError(f"points must lie inside the {width}x{height} frame")
        return cls(pts, lab)

    @property
    def positive(self) -> np.ndarray:
        return self.points[self.labels == POSITIVE]

    @property
    def negative(self) -> np.ndarray:
        return self.points[self.labels == NEGATIVE]

    def scaled(self, sx: float, sy: float) -> Prompt:
        return Prompt(self.points * np.array([sx, sy], dtype=np.float32), self.labels)
