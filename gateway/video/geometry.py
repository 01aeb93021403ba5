"""Frame geometry between the file, the models and the encoder, in one place.

* Orientation: models see frames as a player shows them (the display matrix applied), and every
  output displays as its input does: the rotation tag where the container has one, upright
  pixels where it has none (GIF).
* Sample aspect ratio follows the pixels: a quarter turn swaps it.
* Smallest frames: each model path and encoder has a minimum; frames are padded (edge
  replication, bottom/right so pixel coordinates keep their meaning) up to it and the answer is
  cropped back, or, where an encoder cannot hold the size at all, the request is refused.
* Pixel formats: 4:2:0 needs even sides in H.264/H.265; odd sizes get a format that holds them.

Conventions: `rotation` is the display matrix's counter-clockwise angle in degrees, as PyAV's
`VideoFrame.rotation` and `VideoInfo.rotation` give it (ffmpeg's autorotate turns the stored
frame counter-clockwise by it to show it). Frames are numpy arrays, rows first: [H,W] or [H,W,C].
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from gateway.video.probe import VideoInfo

# Containers without a display matrix: rotated inputs are written as upright pixels there.
NO_ROTATION_TAG = frozenset({"gif"})

# RVM picks its working size in the graph: each side times min(1, 512 / long side), floored
# (export/wrap.py RVM_DOWNSAMPLE_BASE). A side that floors to 0 rows breaks the first convolution
# (measured: 1280x2 fails, 1280x3 runs; 2048x4 runs, 2048x3 fails).
RVM_DOWNSAMPLE_BASE = 512
# The rvm Python backend refuses frames under 2x2 (model_repository/rvm/1/model.py).
RVM_MIN_SIDE = 2
# keypoint_mask refuses frames under 8x8 (model_repository/keypoint_mask/1/model.py).
KEYPOINT_MIN_SIDE = 8
FOREGROUND_MIN_SIDE = 8  # the `foreground` model's tracker works on 8 px a side at least

# Encoders that refuse small frames whatever the pixel format (measured with PyAV: libx265
# opens at 16x16 and 17x17 and refuses 15x15, 8x64 and 1280x8). Nothing else here has one:
# libx264, libvpx-vp9, prores_ks and gif encode 1x1.
ENCODER_MIN_SIDE: dict[str, int] = {"libx265": 16}
# Encoders whose 4:2:0 needs even sides (libvpx-vp9 and prores_ks take odd sizes as they are).
_EVEN_SIDES_AT_420 = frozenset({"libx264", "libx265"})


def quarter_turns(rotation: int) -> int:
    """Counter-clockwise quarter turns (0..3) nearest to `rotation` degrees (any sign)."""
    return round(rotation / 90) % 4


def to_display(frame: np.ndarray, rotation: int) -> np.ndarray:
    """Stored (coded) pixels [H,W,...] -> what a player shows, as ffmpeg's autorotate does.

    Returns `frame` itself when there is nothing to turn, else a new contiguous array (a strided
    view would make every consumer downstream copy it again)."""
    k = quarter_turns(rotation)
    return frame if k == 0 else np.ascontiguousarray(np.rot90(frame, k))


def to_coded(frame: np.ndarray, rotation: int) -> np.ndarray:
    """The inverse of `to_display`: upright pixels -> the stored orientation a tag turns upright."""
    k = quarter_turns(rotation)
    return frame if k == 0 else np.ascontiguousarray(np.rot90(frame, -k))


def display_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    """(width, height) as a player shows a stored width x height frame."""
    return (height, width) if quarter_turns(rotation) % 2 else (width, height)


def display_sar(sar: Fraction, rotation: int) -> Fraction:
    """A pixel's width:height after the turn: a quarter turn swaps them."""
    return 1 / sar if quarter_turns(rotation) % 2 else sar


@dataclass(frozen=True)
class OutputGeometry:
    """How a job's upright result frames are stored in one output file."""

    width: int  # stored frame size, pixels
    height: int
    sample_aspect_ratio: Fraction
    rotation: int  # display-matrix tag to write (counter-clockwise degrees); 0 writes none

    def from_display(self, frame: np.ndarray) -> np.ndarray:
        """Upright result frame [H,W,...] -> the orientation this output stores."""
        return to_coded(frame, self.rotation)


def output_geometry(container_format: str, info: VideoInfo) -> OutputGeometry:
    """The input's own stored size, SAR and rotation tag, so the output shows as the input does
    and its pixels line up with the input's; upright pixels where the container has no tag."""
    if container_format in NO_ROTATION_TAG:
        width, height = display_size(info.width, info.height, info.rotation)
        return OutputGeometry(width, height, display_sar(info.sample_aspect_ratio, info.rotation), 0)
    return OutputGeometry(info.width, info.height, info.sample_aspect_ratio, info.rotation)


def encoder_pix_fmt(codec: str, preset_pix_fmt: str, width: int, height: int, *, mono: bool) -> str:
    """The preset's pixel format, or one that holds a frame size the preset's cannot.

    libx264/libx265 at 4:2:0 need even sides (the chroma planes are half size, and the bitstream
    crops in two-pixel steps). Odd sizes get 4:0:0 for masks (`mono`): H.264 still in the High
    profile the even sizes use, HEVC in the Monochrome range-extension profile, which every
    range-extension decoder must read; colour frames get 4:4:4 (High 4:4:4 Predictive / Main
    4:4:4). Even sizes keep yuv420p: what every player decodes.
    """
    if codec in _EVEN_SIDES_AT_420 and preset_pix_fmt == "yuv420p" and (width % 2 or height % 2):
        return "gray" if mono else "yuv444p"
    return preset_pix_fmt


# libx265 (the build PyAV 18 bundles) corrupts the heap and aborts the whole process on frames
# 33..48 pixels wide (measured at heights 16..720, every preset and chroma format tried) unless
# CU-tree rate control is off; no other width from 16 to 2048 did. Off below 64 for margin: on
# frames that small it saves almost nothing anyway.
X265_CUTREE_MIN_WIDTH = 64
# libx265 stamps garbage decode timestamps (uninitialised, around -2**62) on the packets of a
# one- or two-frame video when B-frames are on, and the muxer then fails (measured: 5 of 12
# runs at 640x360). Without B-frames the timestamps are right; a clip this short loses nothing.
X265_BFRAMES_MIN_FRAMES = 5


def encoder_options(codec: str, options: dict[str, str], width: int, frames: int) -> dict[str, str]:
    """The preset's encoder options plus what this frame width and frame count (an estimate is
    fine) need to encode at all; a new dict."""
    if codec != "libx265":
        return dict(options)
    extra = []
    if width < X265_CUTREE_MIN_WIDTH:
        extra.append("no-cutree=1")
    if frames < X265_BFRAMES_MIN_FRAMES:
        extra.append("bframes=0")
    params = ":".join(p for p in (options.get("x265-params", ""), *extra) if p)
    return {**options, "x265-params": params} if params else dict(options)


def encoder_refuses(codec: str, width: int, height: int) -> int | None:
    """The encoder's minimum side when a width x height frame is under it, else None."""
    minimum = ENCODER_MIN_SIDE.get(codec)
    if minimum is not None and min(width, height) < minimum:
        return minimum
    return None


def rvm_min_size(height: int, width: int) -> tuple[int, int]:
    """The smallest (height, width) >= the frame's that rvm runs on.

    Each side must keep at least one row after the in-graph downsample (side * 512 / long side
    floored), so a side must exceed long/512; `long // 512 + 1` does, with room for the graph's
    float32 arithmetic. Padding the short side leaves the long side, and so the ratio, unchanged.
    """
    long_side = max(height, width)
    least = RVM_MIN_SIDE
    if long_side > RVM_DOWNSAMPLE_BASE:
        least = max(least, long_side // RVM_DOWNSAMPLE_BASE + 1)
    return max(height, least), max(width, least)


def foreground_min_size(model: str, height: int, width: int) -> tuple[int, int]:
    """The smallest (height, width) >= the frame's that the video foreground `model` runs on:
    rvm's own minimum, and for `auto`/`salient` (the `foreground` model) 8 px a side too."""
    h, w = rvm_min_size(height, width)
    if model == "rvm":
        return h, w
    return max(h, FOREGROUND_MIN_SIDE), max(w, FOREGROUND_MIN_SIDE)


def keypoint_min_size(height: int, width: int) -> tuple[int, int]:
    """The smallest (height, width) >= the frame's that keypoint_mask accepts."""
    return max(height, KEYPOINT_MIN_SIDE), max(width, KEYPOINT_MIN_SIDE)


def pad_to(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """[h,w,...] -> [height,width,...] by repeating the last row/column (bottom and right only, so
    (x, y) means the same pixel before and after). `frame` itself when it is already that size."""
    h, w = frame.shape[:2]
    if (h, w) == (height, width):
        return frame
    if height < h or width < w:
        raise ValueError(f"cannot pad {w}x{h} down to {width}x{height}")
    spec = [(0, height - h), (0, width - w)] + [(0, 0)] * (frame.ndim - 2)
    return np.pad(frame, spec, mode="edge")


def crop_to(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """The top-left height x width of a padded model answer (a view)."""
    return frame[:height, :width]
