"""One frame of a video and the `keypoint_mask` model's answer on it: the job's prompt frame, at once.

POST /mask_by_key_points/preview (gateway/routes/keypoints.py) and the mask_by_key_points job
(worker/keypoint_mask.py) prompt the model the same way (`prompt_arrays`, `prompt_mask`): a
sequence started on the frame with the points, so the preview's mask is the job's mask on that
frame. The preview decodes with the job's limits (trim or refusal) up to the frame it needs.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from common.settings import Settings
from gateway.job_params import KeyPoint, KeyPointMaskParams
from gateway.triton import Triton
from gateway.video.decode import frame_limits, iter_frames
from gateway.video.geometry import crop_to, keypoint_min_size, pad_to
from gateway.video.probe import MediaError, VideoInfo

MODEL = "keypoint_mask"
_JPEG_QUALITY = 90


def prompt_arrays(key_points: Sequence[KeyPoint]) -> tuple[np.ndarray, np.ndarray]:
    """((x, y, label), ...) (as in the job params) -> points [1,N,2] fp32, labels [1,N] int32."""
    arr = np.asarray(key_points, dtype=np.float32).reshape(-1, 3)
    return arr[None, :, :2].copy(), arr[None, :, 2].astype(np.int32)


def frame_at(path: Path, info: VideoInfo, settings: Settings, params: KeyPointMaskParams) -> np.ndarray:
    """uint8 [H,W,3] RGB, upright: frame `params.frame_index` as the job decodes it.

    Raises MediaError(422) when the video ends (or its trim cuts it) before that frame, or where
    the job's decoding would refuse the video."""
    limits = frame_limits(
        info,
        max_fps=settings.video_max_fps,
        trim_s=params.limit_s if params.auto_trim else None,
        max_s=None if params.auto_trim else params.limit_s,
    )
    last = -1
    with iter_frames(path, limits=limits) as reader:
        for index, frame in enumerate(reader):
            if index == params.frame_index:
                return np.ascontiguousarray(frame.rgb, dtype=np.uint8)
            last = index
    raise MediaError(
        422,
        "Invalid request data",
        f"frame_index {params.frame_index} is beyond the last frame of the video (frames 0..{last} decode).",
    )


async def prompt_mask(triton: Triton, frame: np.ndarray, key_points: Sequence[KeyPoint]) -> np.ndarray:
    """uint8 [H,W] 0/255: the model's mask on `frame` (uint8 [H,W,3]) for `key_points` (display
    pixels, at least one positive), as the first step of a job's sequence; the sequence ends here.

    Raises TritonUnavailable (503) or InferenceFailed (gateway.triton)."""
    height, width = frame.shape[:2]
    padded = pad_to(frame, *keypoint_min_size(height, width))
    points, labels = prompt_arrays(key_points)
    out = await triton.infer(
        MODEL,
        {"frame": padded[None], "points": points, "labels": labels},
        ["mask"],
        sequence_id=triton.new_sequence_id(),
        start=True,
        end=True,
    )
    return np.ascontiguousarray(crop_to(out["mask"][0], height, width))


def encode_jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, "JPEG", quality=_JPEG_QUALITY)
    return buf.getvalue()


def encode_mask_png(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mask, "L").save(buf, "PNG", compress_level=3)
    return buf.getvalue()
