"""The `auto` foreground of a video: people by RVM, any other subject by salient-object
segmentation, both where both see the subject, stable from frame to frame.

Why this shape (figures: docs/video.md, `python -m benchmarks.eval_foreground`):
- RVM only knows people, and on a crowd it marks the whole crowd; U2-Net-p marks whatever stands
  out, people included, but with coarse edges. So an RVM component counts as the subject only
  where saliency agrees (`VALIDATED`), and a hysteresis gate on how much of the salient subject
  such people cover decides, per video and as it goes, whether people are the subject.
- U2-Net-p on a crop framed around the subject is much sharper than on the whole frame (the
  subject fills its input): on DAVIS, 0.70 mean J against 0.65 for the whole frame. The crop is
  framed by this frame's main salient components (or by the people and what they are attached
  to); when saliency blinks, by the previous frame's subject moved by optical flow.
- Temporal stability: the salient matte is pulled `CARRY` of the way towards the previous one,
  warped by DIS optical flow, near what the current frame sees; RVM's own recurrent state keeps
  people stable.
- With people as the subject, the salient parts attached to them (a horse under its rider, a
  bike) join them, and so do other main salient subjects that are whole in the frame and move
  against the scene (a dog beside its owner; not the flower pot by a jump), and stay while they
  are salient; small or static things in the crop are someone else's business.
- The matte keeps RVM's own full-resolution alpha for people (its hair and motion blur) and the
  upsampled soft saliency elsewhere.
All analysis happens at a reduced size (`work_long_side`); crops are cut from the full frame.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np

from triton_models.keypoints.flow import FlowWarper
from triton_models.mask_geometry import bbox, dilate, expand, off_border, touching

# RGB uint8 [h,w,3] -> saliency uint8 [h,w] (0..255): U2-Net-p through Triton BLS or onnxruntime.
SaliencyFn = Callable[[np.ndarray], np.ndarray]

if sys.version_info >= (3, 11):
    from enum import StrEnum  # novermin
else:  # the NGC tritonserver 24.10 image's Python 3.10 (triton_models imports no `common`)

    class StrEnum(str, Enum):
        """enum.StrEnum of 3.11: members are str, and str()/format() give the value."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return str(self.value).__format__(spec)


class ForegroundModel(StrEnum):
    """The `model` field of the video endpoints."""

    AUTO = "auto"  # people by RVM, anything else by saliency, decided as the clip goes
    RVM = "rvm"  # Robust Video Matting alone: people only
    SALIENT = "salient"  # salient-object segmentation alone, whatever the subject


@dataclass
class PersonGate:
    """Whether people are the subject, with hysteresis so the choice does not flicker.

    `update(share)` takes this frame's share of the salient subject that validated people cover
    (0 none, ~1 the subject is a person, more when RVM is larger than saliency's blob); an
    exponential average of it must rise above ON to switch on and fall below OFF to switch off.
    """

    ON: float = 0.08
    OFF: float = 0.03
    SMOOTHING: float = 0.8  # weight of the past in the average: about 5 frames
    score: float = 0.0
    active: bool = False

    def update(self, share: float) -> bool:
        self.score = self.SMOOTHING * self.score + (1.0 - self.SMOOTHING) * share
        if self.active and self.score < self.OFF:
            self.active = False
        elif not self.active and self.score > self.ON:
            self.active = True
        return self.active


@dataclass(frozen=True)
class ForegroundFrame:
    """One frame's result: `alpha` uint8 [H,W] (full size) and `person` float32 [H,W] in 0..1,
    the share of each pixel's alpha that comes from RVM (where its foreground colour applies)."""

    alpha: np.ndarray
    person: np.ndarray
    people_are_subject: bool


class ForegroundTracker:
    """One video's foreground, frame by frame: `step(frame, person_alpha)` in display order."""

    MARGIN = 0.5  # crop margin around the subject, share of its longer side (as the key-point tracker)
    MAIN = 0.5  # salient components at least this share of the largest one frame the crop
    VALIDATED = 0.3  # an RVM component is a subject when at least this share of it is salient
    SURE = 0.5  # saliency / alpha above which a pixel belongs to a component
    MAX_CROP_SIDE = 1024  # a crop is reduced to this before U2-Net-p (which works at 320 px)
    MOVING = 0.004  # a subject beside the people moves this share of the long side against the scene
    CARRY = 0.3  # share of the warped previous matte in this frame's salient matte

    def __init__(self, saliency: SaliencyFn, work_long_side: int = 512) -> None:
        self.saliency = saliency
        self.work_long_side = work_long_side
        self.gate = PersonGate()
        self._flow = FlowWarper()
        self._prev: np.ndarray | None = None  # float32 work-size salient matte of the last frame
        self._people_before = False  # whether people were the subject of the last frame

    def step(self, frame: np.ndarray, person_alpha: np.ndarray | None) -> ForegroundFrame:
        """frame RGB uint8 [H,W,3]; person_alpha RVM's alpha uint8 [H,W] for this frame, or None
        for saliency alone. Raises ValueError on a frame smaller than 8 px a side."""
        full_h, full_w = frame.shape[:2]
        if min(full_h, full_w) < 8:
            raise ValueError(f"frame of {full_w}x{full_h} pixels is too small (8 px a side at least)")
        scale = min(1.0, self.work_long_side / max(full_h, full_w))
        size = (max(8, round(full_w * scale)), max(8, round(full_h * scale)))
        small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        h, w = small.shape[:2]
        whole = self.saliency(np.ascontiguousarray(small)).astype(np.float32) / 255.0
        salient = whole > self.SURE
        warped = self._warp_previous(small)
        # The last frame's subject, where people were the subject: it validates people and keeps
        # a subject beside them in place for the frames saliency looks elsewhere.
        carried = warped > self.SURE if self._people_before else np.zeros((h, w), bool)

        people = np.zeros((h, w), bool)
        person_small = np.zeros((h, w), np.float32)
        if person_alpha is not None:
            person_small = cv2.resize(person_alpha, size, interpolation=cv2.INTER_AREA).astype(np.float32)
            person_small /= 255.0
            # Saliency may pick the dog over its owner for a frame: a person who was the subject
            # a frame ago stays validated rather than vanishing from the matte.
            people = self._validated_people(person_small > self.SURE, salient | carried)
        people_subject = self.gate.update(people.sum() / max(1, salient.sum())) and people.any()

        gap = max(2, round(0.006 * max(h, w)))
        main = self._main(salient)
        # With people as the subject the crop frames them, what they are attached to (the horse
        # under a rider: a crop of the rider alone would cut the horse out for good), any other
        # main subject beside them that is whole in the frame and moves against the scene (the
        # dog its owner plays with, not a flower pot or a fence: objects cut by the frame's edge
        # are mostly scene, the boundary prior of Zhu et al., CVPR 2014), and what was the
        # subject a frame ago in person mode (the dog again, when it briefly stands still).
        beside = self._moving(off_border(main) & ~touching(salient, people, gap), salient)
        seeds = people | beside | carried
        framing = people | touching(salient, seeds, gap) if people_subject else main
        if not framing.any():
            framing = warped > self.SURE  # saliency blinked: look where the subject just was
        sal_soft = np.zeros((h, w), np.float32)
        if framing.any():
            box = expand(bbox(framing), self.MARGIN, max(16, round(0.2 * min(h, w))), (h, w))
            crop = self._crop_saliency(frame, box, (h, w)) if framing.sum() < 0.5 * h * w else whole
            if people_subject:
                # Salient parts attached to the people (a horse, a bike) and the other main
                # subjects, where the whole frame also sees them as salient or they were the
                # subject a frame ago: a crop alone makes a wall beside a runner stand out.
                seen = salient | dilate(carried, gap)
                kept = touching(crop > self.SURE, seeds, gap) & seen
                crop = np.where(kept, crop, 0.0)
            sal_soft = self._fuse(crop, warped)
        self._prev = sal_soft
        self._people_before = people_subject
        person_region = dilate(people, 2) if people_subject else np.zeros((h, w), bool)
        return self._compose(sal_soft, person_region, person_alpha, people_subject, (full_h, full_w))

    def _warp_previous(self, small: np.ndarray) -> np.ndarray:
        """The last frame's salient matte moved onto this frame by optical flow (zeros at a start)."""
        if self._prev is None or self._prev.shape != small.shape[:2]:
            self._flow.reset(small)
            return np.zeros(small.shape[:2], np.float32)
        return self._flow.warp(small, self._prev)[0]

    def _fuse(self, cue: np.ndarray, warped: np.ndarray) -> np.ndarray:
        """This frame's saliency pulled `CARRY` of the way towards the warped previous matte, near
        what this frame sees: soft edges and parts that blink for a frame stop flickering, while
        nothing the current frame does not see survives (no trail behind a moving subject)."""
        near = dilate(cue > self.SURE, max(2, round(0.02 * max(cue.shape))))
        return np.where(near, (1.0 - self.CARRY) * cue + self.CARRY * warped, cue).astype(np.float32)

    def _compose(
        self,
        sal_soft: np.ndarray,
        person_region: np.ndarray,
        person_alpha: np.ndarray | None,
        people_subject: bool,
        full: tuple[int, int],
    ) -> ForegroundFrame:
        """The full-size matte: RVM's own alpha over the people, the upsampled soft saliency
        elsewhere (the larger of the two where both reach)."""
        full_h, full_w = full
        alpha = cv2.resize(sal_soft, (full_w, full_h), interpolation=cv2.INTER_LINEAR)
        rvm = np.zeros_like(alpha)
        if people_subject and person_alpha is not None:
            nearest = cv2.INTER_NEAREST
            region = cv2.resize(person_region.astype(np.uint8), (full_w, full_h), interpolation=nearest)
            rvm = np.where(region > 0, person_alpha / np.float32(255.0), np.float32(0.0))
            alpha = np.maximum(alpha, rvm)
        person = np.divide(rvm, alpha, out=np.zeros_like(alpha), where=alpha > 0)
        return ForegroundFrame(np.clip(alpha * 255.0 + 0.5, 0, 255).astype(np.uint8), person, people_subject)

    def _validated_people(self, people: np.ndarray, agreed: np.ndarray) -> np.ndarray:
        """RVM components that saliency (or the last frame's subject) agrees are a subject: not a
        crowd behind a dancer."""
        n, labels = cv2.connectedComponents(people.astype(np.uint8), connectivity=8)
        if n <= 1:
            return np.zeros_like(people)
        area = np.bincount(labels.ravel(), minlength=n)
        seen = np.bincount(labels[agreed], minlength=n)
        keep = seen >= self.VALIDATED * area
        keep[0] = False
        return keep[labels]

    def _moving(self, candidates: np.ndarray, salient: np.ndarray) -> np.ndarray:
        """The components of `candidates` whose median optical flow differs from the scene's
        (the non-salient pixels') by more than MOVING px: a dog running about, not a flower pot
        that only moves with the camera."""
        flow = self._flow.last_flow
        if flow is None or not candidates.any() or salient.all():
            return np.zeros_like(candidates)
        scene = np.median(flow[~salient], axis=0)
        n, labels = cv2.connectedComponents(candidates.astype(np.uint8), connectivity=8)
        keep = np.zeros(n, bool)
        for k in range(1, n):
            own = np.median(flow[labels == k], axis=0)
            keep[k] = float(np.linalg.norm(own - scene)) > self.MOVING * max(candidates.shape)
        return keep[labels]

    def _main(self, salient: np.ndarray) -> np.ndarray:
        """Salient components at least MAIN x the largest one's size: the subject, not its specks."""
        n, labels, stats, _ = cv2.connectedComponentsWithStats(salient.astype(np.uint8), connectivity=8)
        if n <= 2:
            return salient
        areas = stats[1:, cv2.CC_STAT_AREA]
        keep = np.r_[False, areas >= self.MAIN * areas.max()]
        return keep[labels]

    def _crop_saliency(
        self, frame: np.ndarray, box: tuple[int, int, int, int], work: tuple[int, int]
    ) -> np.ndarray:
        """Saliency of the full-resolution crop under `box` (work-size coordinates), as a
        work-size float32 map in 0..1 (0 outside the box)."""
        h, w = work
        out = np.zeros((h, w), np.float32)
        x0, y0, x1, y1 = box
        fy, fx = frame.shape[0] / h, frame.shape[1] / w
        crop = frame[round(y0 * fy) : round(y1 * fy), round(x0 * fx) : round(x1 * fx)]
        if min(crop.shape[:2]) < 8:
            return out
        long_side = max(crop.shape[:2])
        if long_side > self.MAX_CROP_SIDE:
            s = self.MAX_CROP_SIDE / long_side
            crop = cv2.resize(
                crop, (round(crop.shape[1] * s), round(crop.shape[0] * s)), interpolation=cv2.INTER_AREA
            )
        sal = self.saliency(np.ascontiguousarray(crop)).astype(np.float32) / 255.0
        out[y0:y1, x0:x1] = cv2.resize(sal, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
        return out
