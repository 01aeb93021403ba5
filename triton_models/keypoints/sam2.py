"""The optional SAM 2 backend: a memory-bank video predictor with KeypointTracker's start/step.

Used by the keypoint_mask Triton model when the four graphs of `python -m export onnx sam2`
(I/O in export/families/sam2.py) sit in its version folder. The per-frame algorithm is
SAM2Base.track_step (sam2 package, sam2/modeling/sam2_base.py; SAM 2 paper, Ravi et al. 2024,
section 4) as the package's video predictor runs it for one object, frames in sequence order:

- prompt frame: image encoder -> mask decoder on `no_mem_feat` with the points (scaled to the
  SxS input) -> memory encoder with the binarised mask; this frame is the conditioning memory.
- each following frame: image encoder -> memory attention over the conditioning memory, the
  memories of the last `num_maskmem - 1` frames and the object pointers of the conditioning frame
  and the last `max_obj_ptrs_in_encoder - 1` frames -> mask decoder without points -> memory
  encoder. Older memories are dropped, so a sequence holds at most num_maskmem (7) spatial
  memories and 16 pointers whatever its length.

Differences from the package's predictor, all deliberate: memories stay float32 (upstream stores
them as bfloat16 to save GPU memory), the pointer distances are normalised by
max_obj_ptrs_in_encoder - 1 as for any video of 16 frames or more (the stream's length is not
known in advance), and the small-hole filling of the output (fill_hole_area, which needs the
package's optional CUDA extension) is not done.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from triton_models.keypoints.prompt import Prompt
from triton_models.keypoints.sam import load_sessions

ENCODER = "sam2_image_encoder.onnx"
ATTENTION = "sam2_memory_attention.onnx"
DECODER = "sam2_mask_decoder.onnx"
MEMORY = "sam2_memory_encoder.onnx"
FILES = (ENCODER, ATTENTION, DECODER, MEMORY)


@dataclass(frozen=True)
class Sam2Settings:
    """The model constants the memory bank needs, read from the memory attention graph's metadata."""

    image_size: int
    num_maskmem: int
    max_obj_ptrs: int
    signed_ptr_distance: bool
    multimask_in_sam: bool
    multimask_for_tracking: bool
    multimask_min_points: int
    multimask_max_points: int

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> Sam2Settings:
        try:
            return cls(
                int(meta["image_size"]),
                int(meta["num_maskmem"]),
                int(meta["max_obj_ptrs_in_encoder"]),
                meta["use_signed_tpos_enc_to_obj_ptrs"] == "1",
                meta["multimask_output_in_sam"] == "1",
                meta["multimask_output_for_tracking"] == "1",
                int(meta["multimask_min_pt_num"]),
                int(meta["multimask_max_pt_num"]),
            )
        except KeyError as exc:
            raise ValueError(f"{ATTENTION} lacks the metadata {exc}: export it again") from exc

    def multimask(self, points: int, prompt_frame: bool) -> bool:
        """SAM2Base._use_multimask: 3 candidate masks for 0-1 points (a lone click is ambiguous)."""
        return (
            self.multimask_in_sam
            and (prompt_frame or self.multimask_for_tracking)
            and self.multimask_min_points <= points <= self.multimask_max_points
        )


@dataclass
class Encoded:
    """One frame through the image encoder: float32 arrays, [1,C,E,E] and the two high-res levels."""

    vision_feat: np.ndarray
    vision_pos: np.ndarray
    high_res_feat0: np.ndarray
    high_res_feat1: np.ndarray
    no_mem_feat: np.ndarray


@dataclass
class Decoded:
    """The mask decoder's answer: logits [1,1,4E,4E] and [1,1,S,S], obj_ptr [1,C], score [1,1]."""

    low_res_masks: np.ndarray
    high_res_masks: np.ndarray
    obj_ptr: np.ndarray
    object_score_logits: np.ndarray


@dataclass
class Memory:
    """One frame's entry in the bank: maskmem features/pos [1,Cm,E,E] and its object pointer [1,C]."""

    frame: int
    features: np.ndarray
    pos: np.ndarray
    obj_ptr: np.ndarray


class Sam2Models:
    """The four onnxruntime sessions, loaded once per model instance and shared by its sequences."""

    def __init__(self, folder: Path, providers: list[str] | None = None, threads: int = 2) -> None:
        sessions = dict(zip(FILES, load_sessions(folder, FILES, providers, threads), strict=True))
        self.encoder, self.attention = sessions[ENCODER], sessions[ATTENTION]
        self.decoder, self.memory = sessions[DECODER], sessions[MEMORY]
        self.settings = Sam2Settings.from_metadata(self.attention.get_modelmeta().custom_metadata_map)
        self.variant = self.attention.get_modelmeta().custom_metadata_map.get("sam2_variant", "?")

    @staticmethod
    def present(folder: Path) -> bool:
        return all((folder / name).is_file() for name in FILES)

    def encode(self, rgb: np.ndarray) -> Encoded:
        """rgb uint8 [H,W,3] -> its features; resized to SxS (bicubic, like the package's loader)."""
        size = self.settings.image_size
        square = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        return Encoded(*self.encoder.run(None, {"image": square.transpose(2, 0, 1)[None]}))

    def attend(
        self, frame: Encoded, memories: list[tuple[Memory, int]], ptrs: list[tuple[Memory, int]]
    ) -> np.ndarray:
        """pix_feat [1,C,E,E]: the frame's features conditioned on `memories` (entry, row of
        maskmem_tpos_enc) and `ptrs` (entry, signed frame distance)."""
        t_diff_max = self.settings.max_obj_ptrs - 1
        feed = {
            "vision_feat": frame.vision_feat,
            "vision_pos": frame.vision_pos,
            "memory": np.concatenate([m.features for m, _ in memories]),
            "memory_pos": np.concatenate([m.pos for m, _ in memories]),
            "memory_tpos": np.array([row for _, row in memories], np.int64),
            "obj_ptrs": np.concatenate([m.obj_ptr for m, _ in ptrs]),
            "obj_ptr_tpos": np.array([d / t_diff_max for _, d in ptrs], np.float32),
        }
        return self.attention.run(None, feed)[0]

    def decode(
        self, pix_feat: np.ndarray, frame: Encoded, coords: np.ndarray, labels: np.ndarray, multimask: bool
    ) -> Decoded:
        """coords float32 [N,2] in SxS pixels, labels int32 [N] (-1: padding)."""
        feed = {
            "pix_feat": pix_feat,
            "high_res_feat0": frame.high_res_feat0,
            "high_res_feat1": frame.high_res_feat1,
            "point_coords": coords.astype(np.float32)[None],
            "point_labels": labels.astype(np.int32)[None],
            "multimask": np.array([1.0 if multimask else 0.0], np.float32),
        }
        return Decoded(*self.decoder.run(None, feed))

    def remember(self, index: int, frame: Encoded, decoded: Decoded, from_points: bool) -> Memory:
        features, pos = self.memory.run(
            None,
            {
                "vision_feat": frame.vision_feat,
                "high_res_masks": decoded.high_res_masks,
                "object_score_logits": decoded.object_score_logits,
                "mask_from_points": np.array([1.0 if from_points else 0.0], np.float32),
            },
        )
        return Memory(index, features, pos, decoded.obj_ptr)


class Sam2Tracker:
    """One sequence's memory bank; start() on the prompt frame, step() on each following frame."""

    def __init__(self, models: Sam2Models) -> None:
        self.models = models
        s = models.settings
        self._cond: Memory | None = None
        self._recent: deque[Memory] = deque(maxlen=s.num_maskmem - 1)
        self._ptrs: deque[Memory] = deque(maxlen=s.max_obj_ptrs - 1)
        self._index = 0

    @property
    def newest(self) -> Memory | None:
        """The last frame's bank entry (its object pointer summarises what the decoder saw)."""
        return self._recent[-1] if self._recent else self._cond

    @property
    def memories(self) -> int:
        """Spatial memories held (the conditioning frame's included): at most num_maskmem."""
        return len(self._recent) + (self._cond is not None)

    def _mask(self, decoded: Decoded, shape: tuple[int, int]) -> np.ndarray:
        # SAM2VideoPredictor._get_orig_video_res_output: low-res logits, bilinear to the frame
        logits = cv2.resize(decoded.low_res_masks[0, 0], (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
        return np.where(logits > 0.0, 255, 0).astype(np.uint8)

    def start(self, frame: np.ndarray, prompt: Prompt) -> np.ndarray:
        """frame uint8 [H,W,3] RGB, prompt in its pixels -> mask uint8 [H,W] 0/255."""
        h, w = frame.shape[:2]
        size = self.models.settings.image_size
        # add_new_points_or_box(normalize_coords=True): x / W * S, y / H * S
        coords = prompt.points / np.array([w, h], np.float32) * size
        encoded = self.models.encode(frame)
        multimask = self.models.settings.multimask(len(prompt.labels), prompt_frame=True)
        decoded = self.models.decode(encoded.no_mem_feat, encoded, coords, prompt.labels, multimask)
        self._cond = self.models.remember(0, encoded, decoded, from_points=True)
        self._recent.clear()
        self._ptrs.clear()
        self._index = 0
        return self._mask(decoded, (h, w))

    def step(self, frame: np.ndarray) -> np.ndarray:
        """The next frame of the sequence, uint8 [H,W,3] RGB -> mask uint8 [H,W] 0/255."""
        if self._cond is None:
            raise RuntimeError("step() before start(): the sequence has no prompt frame")
        self._index += 1
        now, s = self._index, self.models.settings
        encoded = self.models.encode(frame)
        # _prepare_memory_conditioned_features: conditioning frame at tpos row num_maskmem-1, the
        # frame t_rel back at row t_rel-1 (only the last num_maskmem-1 frames), oldest first
        memories = [(self._cond, s.num_maskmem - 1)]
        memories += [(m, now - m.frame - 1) for m in self._recent if now - m.frame < s.num_maskmem]
        # frames only go forward within a sequence, so signed and unsigned distances agree
        ptrs = [(self._cond, now - self._cond.frame)]
        ptrs += [(m, now - m.frame) for m in reversed(self._ptrs) if now - m.frame < s.max_obj_ptrs]
        pix_feat = self.models.attend(encoded, memories, ptrs)
        multimask = s.multimask(0, prompt_frame=False)
        none = np.zeros((1, 2), np.float32), np.array([-1], np.int32)  # upstream's "no points"
        decoded = self.models.decode(pix_feat, encoded, *none, multimask)
        memory = self.models.remember(now, encoded, decoded, from_points=False)
        self._recent.append(memory)
        self._ptrs.append(memory)
        return self._mask(decoded, frame.shape[:2])
