"""What a job carries from the gateway to the worker: its kind, its typed parameters and its files.

A route builds one parameter object per job kind and hands it to `JobStore.create`; the record
stores `to_dict()` as the JSON field `params` (the shapes below are the records' `params` as they
have always been); the worker gets the same type back from `params_from_dict`. The input files
are left in the job's upload dir, at `input_path` and (video matte) `background_image_path`.
No HTTP here: the gateway's routes and the worker's jobs both import this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from common.compat import StrEnum
from gateway.images.params import RGB, Params
from gateway.storage import Storage
from triton_models.foreground import ForegroundModel

INPUT_NAME = "input"
BACKGROUND_IMAGE_NAME = "background"
TRIM_SLACK_S = 1e-3  # a video this much longer than a limit still counts as within it


class JobKind(StrEnum):
    """The `kind` of a job record; also the arq function name the worker registers for it."""

    FOREGROUND_MASK = "foreground_mask"  # POST /foreground_mask
    VIDEO_MATTE = "video_matte"  # POST /video/submit/v1
    MASK_BY_KEY_POINTS = "mask_by_key_points"  # POST /mask_by_key_points
    IMAGE_HD = "image_hd"  # POST /image/hd/submit/v1


@dataclass(frozen=True)
class ForegroundMaskParams:
    """The foreground as a white-on-black mask video.

    `preset`: an output preset name (gateway.video.encode.PRESETS); `source_url`: the video the
    gateway downloaded to `input_path` (kept for the record, never fetched again)."""

    KIND: ClassVar[JobKind] = JobKind.FOREGROUND_MASK

    preset: str
    model: ForegroundModel
    source_url: str

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "model": self.model.value, "source_url": self.source_url}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ForegroundMaskParams:
        """Raises KeyError/ValueError on a record these parameters never wrote."""
        return cls(
            preset=str(data["preset"]),
            model=ForegroundModel(data.get("model", ForegroundModel.AUTO.value)),
            source_url=str(data["source_url"]),
        )


@dataclass(frozen=True)
class VideoMatteParams:
    """The foreground over a colour, over the uploaded image, or on transparency (neither set).

    `bg_color`: (r, g, b), 0..255; `bg_image`: an image waits at `background_image_path`;
    durations in seconds: `original_duration_s` as probed on submit, `max_duration_s` the trim
    (None: the whole video), `trim_s` the endpoint's limit reported in the trim headers."""

    KIND: ClassVar[JobKind] = JobKind.VIDEO_MATTE

    preset: str
    model: ForegroundModel
    bg_color: RGB | None = None
    bg_image: bool = False
    original_duration_s: float | None = None
    max_duration_s: float | None = None
    trim_s: float | None = None

    @property
    def transparent(self) -> bool:
        return self.bg_color is None and not self.bg_image

    def to_dict(self) -> dict[str, Any]:
        background: dict[str, Any] = {}
        if self.bg_color is not None:
            background["bg_color"] = list(self.bg_color)
        elif self.bg_image:
            background["bg_image"] = True
        return {
            **background,
            "preset": self.preset,
            "model": self.model.value,
            "original_duration_s": self.original_duration_s,
            "max_duration_s": self.max_duration_s,
            "trim_s": self.trim_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VideoMatteParams:
        """Raises KeyError/ValueError on a record these parameters never wrote."""
        color = data.get("bg_color")
        return cls(
            preset=str(data["preset"]),
            model=ForegroundModel(data.get("model", ForegroundModel.AUTO.value)),
            bg_color=(int(color[0]), int(color[1]), int(color[2])) if color is not None else None,
            bg_image=bool(data.get("bg_image")),
            original_duration_s=_seconds(data.get("original_duration_s")),
            max_duration_s=_seconds(data.get("max_duration_s")),
            trim_s=_seconds(data.get("trim_s")),
        )


KeyPoint = tuple[int, int, int]  # x, y in display pixels; label 1 positive, 0 negative


@dataclass(frozen=True)
class KeyPointMaskParams:
    """The point-prompted object as a mask video.

    `frame_index`: the prompted frame (0-based, of the trimmed clip); `key_points`: [x, y, label]
    in display pixels of that frame; `limit_s`: the duration limit in seconds when submitted (a
    longer video was accepted only with `auto_trim`, and is trimmed to it)."""

    KIND: ClassVar[JobKind] = JobKind.MASK_BY_KEY_POINTS

    preset: str
    source_url: str
    frame_index: int
    key_points: tuple[KeyPoint, ...]
    auto_trim: bool
    limit_s: float

    def trim_length(self, duration_s: float) -> float | None:
        """Seconds to keep of a `duration_s` video, None when the whole of it fits. The gateway
        refuses a longer video unless auto_trim is set, so the worker trims exactly when this says so."""
        return self.limit_s if duration_s > self.limit_s + TRIM_SLACK_S else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "source_url": self.source_url,
            "frame_index": self.frame_index,
            "key_points": [list(point) for point in self.key_points],
            "auto_trim": self.auto_trim,
            "limit_s": self.limit_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KeyPointMaskParams:
        """Raises KeyError/ValueError on a record these parameters never wrote."""
        return cls(
            preset=str(data["preset"]),
            source_url=str(data["source_url"]),
            frame_index=int(data["frame_index"]),
            key_points=key_points(data["key_points"]),
            auto_trim=bool(data["auto_trim"]),
            limit_s=float(data["limit_s"]),
        )


def key_points(raw: Sequence[Sequence[int]]) -> tuple[KeyPoint, ...]:
    return tuple((int(x), int(y), int(label)) for x, y, label in raw)


@dataclass(frozen=True)
class ImageHdParams:
    """One image operation on an uploaded photo of up to HD_MAX_PIXELS (stored under `params`)."""

    KIND: ClassVar[JobKind] = JobKind.IMAGE_HD

    image: Params

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.image.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageHdParams:
        """Raises KeyError/TypeError on a record these parameters never wrote."""
        return cls(image=Params.from_dict(data["params"]))


JobParams = ForegroundMaskParams | VideoMatteParams | KeyPointMaskParams | ImageHdParams

PARAMS_BY_KIND: dict[JobKind, type[JobParams]] = {
    params.KIND: params
    for params in (ForegroundMaskParams, VideoMatteParams, KeyPointMaskParams, ImageHdParams)
}


def params_from_dict(kind: JobKind, data: Mapping[str, Any]) -> JobParams:
    """The typed parameters of a `kind` job from its record's JSON `params`."""
    return PARAMS_BY_KIND[kind].from_dict(data)


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)


def input_path(storage: Storage, job_id: str) -> Path:
    """Where the gateway leaves a job's input (video or image) for the worker (shared data dir)."""
    return storage.uploads_dir(job_id) / INPUT_NAME


def background_image_path(storage: Storage, job_id: str) -> Path:
    """Where the gateway leaves a video matte job's background image (when `bg_image`)."""
    return storage.uploads_dir(job_id) / BACKGROUND_IMAGE_NAME
