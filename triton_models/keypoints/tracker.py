"""The default point-prompted tracker: saliency of a crop around the object + DIS optical flow.

Why this shape: a salient-object map of the whole frame marks *every* salient thing and misses
small or busy-background objects; flow alone drifts. So the saliency model is run on a crop
around the object (around the points on the prompt frame, around the flow-warped previous mask
afterwards): inside its crop the object is the salient one. The previous mask, warped by DIS
flow, decides which salient components still belong to the object, and the two are fused with
weights that follow how much they agree, so a frame where saliency grabs the wrong thing costs
little and a frame where flow drifts is pulled back to the object's edges.
All work happens at a reduced size (`work_long_side`); crops are cut from the full frame (small
objects keep their detail) and only the final mask is upsampled.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from triton_models.keypoints.colour import ColourModel, histogram, similarity
from triton_models.keypoints.flow import FlowWarper
from triton_models.keypoints.prompt import Prompt
from triton_models.mask_geometry import Box, bbox, dilate, ellipse, expand, groups, iou

# RGB uint8 [h,w,3] -> saliency uint8 [h,w] (0..255): U2-Net-p through Triton BLS or onnxruntime.
SaliencyFn = Callable[[np.ndarray], np.ndarray]


def _disc(shape: tuple[int, int], centres: np.ndarray, radius: int) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    for x, y in centres:
        cv2.circle(out, (int(round(x)), int(round(y))), radius, 1, -1)
    return out.astype(bool)


def _touches_inner_edge(mask: np.ndarray, box: Box, shape: tuple[int, int]) -> bool:
    """Whether `mask` reaches an edge of `box` that is not also the frame's edge."""
    x0, y0, x1, y1 = box
    h, w = shape
    return bool(
        (x0 > 0 and mask[y0:y1, x0].any())
        or (y0 > 0 and mask[y0, x0:x1].any())
        or (x1 < w and mask[y0:y1, x1 - 1].any())
        or (y1 < h and mask[y1 - 1, x0:x1].any())
    )


def _at_frame_edge(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def _box_mask(box: Box, shape: tuple[int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    out = np.zeros(shape, bool)
    out[y0:y1, x0:x1] = True
    return out


def _nearer_positive(mask: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """`mask` without the pixels nearer a negative point than any positive one (two people in
    one salient blob)."""
    if not len(neg) or not mask.any():
        return mask
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d_pos = np.min([(xx - x) ** 2 + (yy - y) ** 2 for x, y in pos], axis=0)
    d_neg = np.min([(xx - x) ** 2 + (yy - y) ** 2 for x, y in neg], axis=0)
    return mask & (d_pos <= d_neg)


def _means(labels: np.ndarray, n: int, values: np.ndarray) -> np.ndarray:
    """The mean of `values` over each label 0..n-1."""
    sums = np.bincount(labels.ravel(), weights=values.ravel(), minlength=n)
    return sums / np.maximum(np.bincount(labels.ravel(), minlength=n), 1)


class KeypointTracker:
    """One object through one direction of a video. `start` on the prompt frame, then `step`."""

    # Crop margin around the object, as a share of its longer side: enough background for the
    # object to stand out, little enough that neighbours do not become the salient thing. 0.5
    # rather than 0.35: mean J +0.023 from frame 0, +0.004 from the middle on DAVIS (kite-surf's
    # legs come into the crop; libby from the middle loses 0.13 to the pear tree beside it).
    MARGIN = 0.5
    LOOSE, SURE = 0.2, 0.5  # saliency thresholds: grouping parts of one object / its pixels
    FADE = 0.75  # per frame, for mask pixels saliency does not see: gone after about 3 frames
    # The colour model is used only when it tells the object from its surroundings this well
    # (mean P(object|colour) inside minus around, on the prompt frame).
    COLOUR_TRUST = 0.3
    COLOUR_SURE = 0.6  # P(object|colour) above which a pixel attached to the object is taken
    LOST = 0.35  # a mask below this share of the object's recent size is treated as lost
    # How far saliency redraws the warped mask where both look at the object: more when they
    # agree (saliency is sharper at the edges), less when they do not (an occluder, a blur).
    TRUST_AGREE, TRUST_DISAGREE = 0.75, 0.5
    # Re-acquisition of a lost object (it left the frame, or the mask died): a salient component
    # whose colour histogram is this much the prompt frame's object (Bhattacharyya coefficient;
    # 01_dog through H.264: the dog 0.93, the woman beside it 0.58-0.60, a pillar 0.63 that the
    # colour model alone let through), and whose size is plausible (from ENTERING of the object's
    # size at the frame's edge, where it may be coming back in).
    LOOKS_ALIKE = 0.75
    ENTERING = 0.05

    def __init__(self, saliency: SaliencyFn | None, work_long_side: int = 480) -> None:
        self.saliency = saliency
        self.work_long_side = work_long_side
        self._flow = FlowWarper()
        self._prev_mask: np.ndarray | None = None  # float32 work-size, 0..1
        self._negatives = np.zeros((0, 2), np.float32)  # work-size, moved with the flow
        self._box: Box | None = None
        self._full_size: tuple[int, int] = (0, 0)
        self._work_size: tuple[int, int] = (0, 0)
        self._frame: np.ndarray | None = None
        self._colour: ColourModel | None = None
        self._area = 0.0  # the object's recent size (work px), what "lost" is measured against
        self._appearance: np.ndarray | None = None  # the prompt frame's object: colour histogram

    # --- geometry -----------------------------------------------------------------------------

    def _set_size(self, height: int, width: int) -> None:
        scale = min(1.0, self.work_long_side / max(height, width))
        self._full_size = (width, height)
        self._work_size = (max(8, round(width * scale)), max(8, round(height * scale)))

    def _to_work(self, frame: np.ndarray) -> np.ndarray:
        if frame.shape[1::-1] != self._full_size:
            raise ValueError(f"frame size {frame.shape[1]}x{frame.shape[0]} differs from the sequence's")
        self._frame = frame
        return np.ascontiguousarray(cv2.resize(frame, self._work_size, interpolation=cv2.INTER_AREA))

    def _to_full(self, mask: np.ndarray) -> np.ndarray:
        soft = cv2.GaussianBlur(mask.astype(np.float32), (5, 5), 0)
        big = cv2.resize(soft, self._full_size, interpolation=cv2.INTER_LINEAR)
        return np.where(big >= 0.5, 255, 0).astype(np.uint8)

    @property
    def _min_side(self) -> int:
        return max(16, round(0.2 * min(self._work_size)))

    @property
    def _gap(self) -> int:
        return max(2, round(0.012 * max(self._work_size)))

    def _crop_saliency(self, box: Box) -> np.ndarray:
        """Saliency of the full-resolution crop under `box`, as a work-size float map (0 outside)."""
        w, h = self._work_size
        out = np.zeros((h, w), np.float32)
        if self.saliency is None or self._frame is None:
            return out
        x0, y0, x1, y1 = box
        fx, fy = self._full_size[0] / w, self._full_size[1] / h
        crop = self._frame[round(y0 * fy) : round(y1 * fy), round(x0 * fx) : round(x1 * fx)]
        if min(crop.shape[:2]) < 8:
            return out
        sal = self.saliency(np.ascontiguousarray(crop))
        out[y0:y1, x0:x1] = cv2.resize(sal, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA) / 255.0
        return out

    # --- the prompt frame ---------------------------------------------------------------------

    def _select(self, sal: np.ndarray, pos: np.ndarray, neg: np.ndarray, radius: int) -> np.ndarray:
        """The salient region under the positive points: components grouped at a low threshold
        (parts of one object often touch only through weaker saliency), kept at the normal one;
        components holding a negative point go, and inside a shared component the pixels nearer
        a negative point than any positive one go (two people in one salient blob)."""
        h, w = sal.shape
        loose = sal > self.LOOSE
        _, comps = groups(loose, self._gap)
        hit = np.unique(comps[_disc((h, w), pos, radius) & loose])
        hit = hit[hit != 0]
        return _nearer_positive(np.isin(comps, hit) & (sal > self.SURE), pos, neg)

    def _colour_seed(self, small: np.ndarray, pos: np.ndarray, neg: np.ndarray, radius: int) -> np.ndarray:
        """The object by colour alone, for a prompt saliency is blind to: colours under the points
        against those of a square around them (outside a wider disc, which may still be the
        object), the like-coloured region holding the points. Empty when the colours do not
        tell it apart or the region floods the square (the background shares them)."""
        h, w = small.shape[:2]
        seed = _disc((h, w), pos, radius)
        box = expand(bbox(seed), 0.0, round(0.5 * min(h, w)), (h, w))
        near = _box_mask(box, (h, w))
        model = ColourModel(small, seed, near & ~_disc((h, w), pos, 4 * radius))
        like = near & (model.prob(small) > self.COLOUR_SURE)
        like = cv2.morphologyEx(like.astype(np.uint8), cv2.MORPH_OPEN, ellipse(1)).astype(bool)
        _, comps = cv2.connectedComponents(like.astype(np.uint8), connectivity=8)
        hit = np.unique(comps[seed & like])
        found = _nearer_positive(np.isin(comps, hit[hit != 0]), pos, neg)
        if model.separation < self.COLOUR_TRUST or found.sum() > 0.3 * near.sum():
            return np.zeros((h, w), bool)
        return found

    def _prune_by_colour(
        self, small: np.ndarray, mask: np.ndarray, pos: np.ndarray, radius: int
    ) -> np.ndarray:
        """Parts of the selection detached from the one under the points are dropped when their
        colours are the surroundings' rather than that part's: the selection groups parts across
        small gaps (a pole cutting a dog in two), which also joins a salient neighbour reached
        through a faint bridge (the flower pot under a jumping horse). Halves of one object
        share their colours; a neighbour rarely does."""
        h, w = mask.shape
        n, comps = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        if n <= 2:
            return mask
        hit = np.unique(comps[_disc((h, w), pos, radius) & mask])
        core = np.isin(comps, hit[hit != 0])
        if not core.any():
            return mask
        crop = _box_mask(expand(bbox(mask), self.MARGIN, self._min_side, (h, w)), (h, w))
        model = ColourModel(small, core, crop & ~dilate(mask, self._gap))
        if model.separation < self.COLOUR_TRUST:
            return mask  # colours do not tell the object from its surroundings: no evidence
        return core | (mask & (_means(comps, n, model.prob(small))[comps] > 0.5))

    def _fit_colour(self, small: np.ndarray, mask: np.ndarray) -> None:
        """The object's colours against the rest of its crop, kept only if they tell it apart."""
        assert self._box is not None
        bg = _box_mask(self._box, mask.shape) & ~dilate(mask, self._gap)
        model = ColourModel(small, mask, bg)
        self._colour = model if mask.any() and model.separation >= self.COLOUR_TRUST else None

    def start(self, frame: np.ndarray, prompt: Prompt) -> np.ndarray:
        """frame RGB uint8 [H,W,3] -> mask uint8 [H,W] 0/255 of the object under the points."""
        self._set_size(frame.shape[0], frame.shape[1])
        small = self._to_work(frame)
        self._flow.reset(small)
        h, w = small.shape[:2]
        p = prompt.scaled(w / frame.shape[1], h / frame.shape[0])
        pos, neg = p.positive, p.negative
        self._negatives = neg.copy()
        radius = max(2, round(0.015 * max(h, w)))

        # Whole frame first: it says how big the object is, so the crop can frame it.
        whole = self._select(self._crop_saliency((0, 0, w, h)), pos, neg, radius)
        pts_box = bbox(_disc((h, w), pos, radius))
        if whole.any() and whole.sum() < 0.6 * h * w:
            x0, y0, x1, y1 = bbox(whole)
            px0, py0, px1, py1 = pts_box
            box = expand((min(x0, px0), min(y0, py0), max(x1, px1), max(y1, py1)), self.MARGIN,
                          self._min_side, (h, w))  # fmt: skip
            mask = self._select(self._crop_saliency(box), pos, neg, radius)
        else:
            # Not salient in the whole frame (a dog beside a swan, a far car): squares around the
            # points, growing until the object found in one does not touch its inner edges (a
            # crop that cuts the object leaves saliency nothing whole to find).
            mask = np.zeros((h, w), bool)
            for share in (0.5, 0.8, 1.1):
                box = expand(pts_box, 0.0, round(share * min(h, w)), (h, w))
                found = self._select(self._crop_saliency(box), pos, neg, radius)
                if found.any():
                    mask = found
                    if not _touches_inner_edge(found, box, (h, w)):
                        break
        if mask.sum() < 0.3 * whole.sum():
            mask = whole  # the crop cut the object (it was bigger than it looked): keep the frame's
        mask = self._prune_by_colour(small, mask, pos, radius)
        if mask.sum() < np.pi * radius**2:
            # Saliency sees (almost) nothing under the points (a small red car in tyre smoke): the
            # colours under them, else the points themselves, which the next frames can grow from.
            mask = self._colour_seed(small, pos, neg, radius)
            if not mask.any():
                mask = _disc((h, w), pos, 3 * radius)
        self._box = expand(bbox(mask), self.MARGIN, self._min_side, (h, w))
        self._fit_colour(small, mask)
        self._appearance = histogram(small, mask)
        self._area = float(mask.sum())
        return self._commit(mask.astype(np.float32))

    # --- following frames ---------------------------------------------------------------------

    def step(self, frame: np.ndarray) -> np.ndarray:
        if self._prev_mask is None or self._box is None:
            raise RuntimeError("step() before start(): the sequence has no prompt frame")
        small = self._to_work(frame)
        h, w = small.shape[:2]
        warped, moved = self._flow.warp(small, self._prev_mask, self._negatives)
        if moved is not None:
            self._negatives = moved
        prior = warped > 0.5
        if not prior.any():
            return self._reacquire(small)
        box = self._steady(expand(bbox(prior), self.MARGIN, self._min_side, (h, w)))
        sal = self._crop_saliency(box)

        # Salient components that are (mostly) the warped object; the rest of the crop is other
        # things that happen to stand out.
        loose = sal > self.LOOSE
        cand = self._attached(loose, prior, self._gap)
        salient = cand & (sal > self.SURE)

        agree = iou(salient, prior) if prior.any() else 1.0
        # Confidence-weighted update of a soft mask: saliency that agrees with the flow redraws
        # the edges; saliency that disagrees (an occluder, a neighbour, a blurred frame) only
        # nudges the flow; on its own it still adds an attached part it is sure of (legs the
        # previous frames missed). Where saliency sees nothing of the object (an occluder, or a
        # part it misses this frame) the warped mask fades over a few frames instead of at once.
        a = self.TRUST_AGREE if agree >= 0.25 else self.TRUST_DISAGREE
        fused = np.where(cand, np.maximum(sal, a * sal + (1.0 - a) * warped), self.FADE * warped)
        col = self._colour.prob(small) if self._colour is not None else None
        # Most of the object gone, what is left at the frame's edge, and saliency sees none of it:
        # it is leaving the frame. Kept, the remnant would stay stuck at the edge (the scene
        # there does not move) and grow into whatever is salient beside it.
        leaving = _at_frame_edge(prior) and prior.sum() < self.LOST * self._area
        if not salient.any():
            if leaving:
                fused = self.FADE * warped
            elif col is None:
                fused = warped
            else:
                # Saliency is blind to the object here: its colours attached to the warped mask
                # let it grow and keep its edges (a small car coming closer through smoke).
                like = self._attached(col > self.COLOUR_SURE, prior, 1)
                fused = np.where(like, np.maximum(col, warped), self.FADE * warped)
        # Growth per frame is bounded: after flow the object moves little, while a salient thing
        # touching it (a pole in front of the dog) would otherwise be swallowed whole and taken
        # for the object from then on.
        reach = max(2, round(0.1 * np.sqrt(prior.sum())))
        fused[~dilate(prior, reach)] = 0.0
        size = float((fused > 0.5).sum())
        if size < self.LOST * self._area and not leaving:
            # a shrinking mask still has the flow's word for where the object is: there the
            # colour model alone may vouch for a candidate (libby's dog behind the fence)
            found = self._redetect(small, col, box, 0.0 if col is not None else self.LOOKS_ALIKE)
            if found is not None:
                fused, size = np.maximum(fused, found), float((found > 0.5).sum())
        if size == 0 and not leaving:
            fused = warped  # flow says it is still in the frame: a stale mask beats none
        elif size >= self.LOST * self._area and (size > self._area or not _at_frame_edge(prior)):
            # follows an object that nears or recedes; the frame's edge cutting it is no shrinking
            self._area = 0.8 * self._area + 0.2 * size
        self._box = box
        return self._commit(fused)

    def _attached(self, region: np.ndarray, prior: np.ndarray, gap: int) -> np.ndarray:
        """The parts of `region` that are (mostly) the warped object `prior`; components holding
        a (flow-moved) negative point are not."""
        h, w = region.shape
        n, comps = groups(region, gap)
        area = np.bincount(comps.ravel(), minlength=n)
        inside = np.bincount(comps[prior], minlength=n)
        keep = (inside >= 0.3 * area) | (inside >= 0.25 * max(1, prior.sum()))
        keep[0] = False
        if len(self._negatives):
            neg_hit = comps[_disc((h, w), self._negatives, 2)]
            keep[neg_hit[neg_hit != 0]] = False
        return keep[comps] & region

    def _reacquire(self, small: np.ndarray) -> np.ndarray:
        """The step of a frame without a mask to follow (the object left the frame, or the mask
        died): the object is looked for in the whole frame, then around where it was last seen
        (where a small object, or one coming back in, is salient only in a crop). Two saliency
        calls per such frame. Nothing found: an empty mask, and the next frame looks again."""
        h, w = small.shape[:2]
        assert self._box is not None
        col = self._colour.prob(small) if self._colour is not None else None
        found = self._candidate(self._crop_saliency((0, 0, w, h)), small, col, self.LOOKS_ALIKE)
        if found is None:
            found = self._redetect(small, col, self._box, self.LOOKS_ALIKE)
        if found is None:
            return self._commit(np.zeros((h, w), np.float32))
        self._box = expand(bbox(found > 0.5), self.MARGIN, self._min_side, (h, w))
        return self._commit(found)

    def _redetect(
        self, small: np.ndarray, col: np.ndarray | None, box: Box, likeness: float
    ) -> np.ndarray | None:
        """The object found again near `box` after it was lost (occluded, or flow slid off it):
        saliency of a crop twice as wide, and at least three times the object's size across (the
        last box of an object that left the frame is the sliver it left by). One extra saliency
        call, only on lost frames."""
        h, w = small.shape[:2]
        side = max(self._min_side, round(3 * np.sqrt(self._area)))
        return self._candidate(self._crop_saliency(expand(box, 0.5, side, (h, w))), small, col, likeness)

    def _candidate(
        self, sal: np.ndarray, small: np.ndarray, col: np.ndarray | None, likeness: float
    ) -> np.ndarray | None:
        """The salient component (work-size map `sal` > SURE) that is the object, as its soft
        saliency, or None: of a plausible size (0.3x to 3x the object's recent size; from
        ENTERING at the frame's edge, where it may be coming back in), holding no negative point,
        whose colours are the object's (mean P(object|colour) >= COLOUR_SURE where the colour
        model is trusted) and whose colour histogram is the prompt frame object's (Bhattacharyya
        >= `likeness`: LOOKS_ALIKE once the mask is lost, where nothing else vouches for it); the
        most alike."""
        assert self._appearance is not None
        h, w = sal.shape
        n, comps = groups(sal > self.SURE, self._gap)
        held: set[int] = set()
        if len(self._negatives):
            held = set(np.unique(comps[_disc((h, w), self._negatives, 2)]).tolist())
        best, best_score = 0, likeness
        for label in range(1, n):
            part = comps == label
            smallest = (self.ENTERING if _at_frame_edge(part) else 0.3) * self._area
            if label in held or not smallest <= part.sum() <= 3.0 * self._area:
                continue
            if col is not None and float(col[part].mean()) < self.COLOUR_SURE:
                continue
            score = similarity(histogram(small, part), self._appearance)
            if score >= best_score:
                best, best_score = label, score
        return np.where(comps == best, sal, 0.0).astype(np.float32) if best else None

    def _steady(self, box: Box) -> Box:
        """`box` re-centred but shrunk at most 15 % per frame from the last one: a mask that lost
        a part (an occluder cut it) must not lead to a crop that cuts the object, because
        saliency on a cut object fails and the loss would feed itself."""
        if self._box is None:
            return box
        h, w = self._work_size[1], self._work_size[0]
        px0, py0, px1, py1 = self._box
        x0, y0, x1, y1 = box
        side_x = max(x1 - x0, 0.85 * (px1 - px0))
        side_y = max(y1 - y0, 0.85 * (py1 - py0))
        cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        return (
            int(max(0, cx - side_x / 2)),
            int(max(0, cy - side_y / 2)),
            int(min(w, cx + side_x / 2 + 1)),
            int(min(h, cy + side_y / 2 + 1)),
        )

    def _commit(self, soft: np.ndarray) -> np.ndarray:
        """Output the mask (soft > 0.5, specks removed) and keep the soft values under it as the
        state the next frame warps."""
        mask = cv2.morphologyEx((soft > 0.5).astype(np.uint8), cv2.MORPH_OPEN, ellipse(1)).astype(bool)
        self._prev_mask = np.where(mask, soft, 0.0).astype(np.float32)
        return self._to_full(mask)
