"""The request fields of every endpoint, as pydantic models: what the handlers validate with and
what gateway.openapi publishes (one definition: a limit changed here changes both).

JSON bodies (mask API) are validated in strict mode (no "5" for 5, no 1 for true); form fields
(background API) arrive as text and are parsed in lax mode ("20" -> 20), except that an integer
field takes digits only (lax mode also reads "1_0" as 10 and "20.0" as 20). Unknown fields are
ignored, as they always were. The wire types map to the internal ones (gateway.job_params,
gateway.images.params) in the handlers; defaults shown here are taken from those types.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from gateway.images.params import DIRECTIONS, MODELS, OPERATIONS, RGB, Params
from gateway.video.encode import DEFAULT_PRESET, PRESETS
from triton_models.foreground import ForegroundModel

MAX_KEY_POINTS = 64  # far more than any hand-placed prompt; bounds the model's per-frame work
URL_PATTERN = r"^\s*[Hh][Tt][Tt][Pp][Ss]?://"
# 0..255, three times, comma separated, spaces allowed: a regex JSON Schema tools can use too.
_BYTE = r"\s*(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\s*"
RGB_PATTERN = rf"^{_BYTE},{_BYTE},{_BYTE}$"
RGB_FIELDS = ("bg_color", "gradient_start", "gradient_end")

PresetName = Literal[tuple(PRESETS)]  # type: ignore[valid-type]
ForegroundModelName = Literal[tuple(m.value for m in ForegroundModel)]  # type: ignore[valid-type]
ImageModelName = Literal[MODELS]  # type: ignore[valid-type]
OperationName = Literal[OPERATIONS]  # type: ignore[valid-type]
DirectionName = Literal[DIRECTIONS]  # type: ignore[valid-type]


def _rgb(text: str) -> RGB:
    r, g, b = (int(part) for part in text.split(","))
    return (r, g, b)


def _rgb_text(rgb: RGB) -> str:
    return ",".join(str(v) for v in rgb)


def _folded(value: Any) -> Any:
    # Choices are accepted in any case and with surrounding spaces, as the form always did.
    return value.strip().lower() if isinstance(value, str) else value


def _digits(value: Any) -> Any:
    if isinstance(value, str) and not re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
        raise ValueError("must be a whole number written in digits, such as 20 or -5")
    return value


FormInt = Annotated[int, BeforeValidator(_digits)]  # an integer form field, as the docs write it
RgbText = Annotated[
    str,
    Field(pattern=RGB_PATTERN, examples=["255,0,0"], description="'R,G,B', each 0..255"),
    AfterValidator(_rgb),
]
VideoUrl = Annotated[
    str,
    Field(
        pattern=URL_PATTERN,
        max_length=8192,
        description="Publicly accessible http(s) URL of the input video.",
        examples=["https://example.com/clip.mp4"],
    ),
]


WebhookUrl = Annotated[
    str,
    Field(
        pattern=URL_PATTERN,
        max_length=2048,
        description="Optional: when the job ends, its final document is POSTed here, signed "
        "(docs/webhooks.md). Public http(s) addresses only; redirects are not followed.",
        examples=["https://example.com/hooks/matting"],
    ),
    # kept and called later: surrounding spaces would become part of the path (%20)
    AfterValidator(str.strip),
]


# --- mask API (JSON) ----------------------------------------------------------------------------


class _VideoJobRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    video: VideoUrl
    output_container_and_codec: PresetName | None = Field(
        DEFAULT_PRESET, description="Output container and codec preset (null: the default)."
    )
    webhook_url: WebhookUrl | None = None

    @property
    def preset(self) -> str:
        return self.output_container_and_codec or DEFAULT_PRESET

    @property
    def url(self) -> str:
        return self.video.strip()


class ForegroundMaskRequest(_VideoJobRequest):
    """POST /foreground_mask."""

    model: ForegroundModelName | None = Field(
        ForegroundModel.AUTO.value,
        description="auto: people by RVM, anything else by saliency; rvm: people only; "
        "salient: the salient object whatever it is (docs/video.md).",
    )

    @property
    def foreground_model(self) -> ForegroundModel:
        return ForegroundModel(self.model or ForegroundModel.AUTO.value)


class KeyPointIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    x: int = Field(ge=0, description="Pixels from the left of the frame as displayed.")
    y: int = Field(ge=0, description="Pixels from the top of the frame as displayed.")
    type: Literal["positive", "negative"] = "positive"


class MaskByKeyPointsRequest(_VideoJobRequest):
    """POST /mask_by_key_points."""

    frame_index: int | None = Field(
        0, ge=0, description="The frame (0-based, of the trimmed clip) the key points are on."
    )
    key_points: list[KeyPointIn] = Field(
        min_length=1,
        max_length=MAX_KEY_POINTS,
        description="Hints on the object: at least one positive point.",
        examples=[[{"x": 320, "y": 180, "type": "positive"}]],
    )
    auto_trim: bool | None = Field(False, description="Trim a longer video to the duration limit.")

    @model_validator(mode="after")
    def _one_positive(self) -> MaskByKeyPointsRequest:
        if not any(point.type == "positive" for point in self.key_points):
            raise ValueError("key_points must contain at least one point of type 'positive'")
        return self


class KeyPointPreviewRequest(BaseModel):
    """POST /mask_by_key_points/preview: the job's prompt fields, for one frame, answered at once."""

    model_config = ConfigDict(strict=True, extra="ignore")

    video: VideoUrl
    frame_index: int | None = Field(
        0, ge=0, description="The frame (0-based, of the trimmed clip when auto_trim) to preview."
    )
    key_points: list[KeyPointIn] = Field(
        default_factory=list,
        max_length=MAX_KEY_POINTS,
        description="As in /mask_by_key_points; empty: only the frame comes back (no mask).",
        examples=[[{"x": 320, "y": 180, "type": "positive"}]],
    )
    auto_trim: bool | None = Field(
        False, description="As in /mask_by_key_points: frames past the duration limit do not exist."
    )

    @model_validator(mode="after")
    def _one_positive(self) -> KeyPointPreviewRequest:
        if self.key_points and not any(point.type == "positive" for point in self.key_points):
            raise ValueError("key_points must contain at least one point of type 'positive'")
        return self

    @property
    def url(self) -> str:
        return self.video.strip()


class StudioUploadForm(BaseModel):
    """POST /studio/uploads (multipart/form-data): a `file` part, or this URL field instead."""

    model_config = ConfigDict(extra="ignore")

    video: VideoUrl | None = Field(None, description="Fetch the video from this URL (when no file part).")


# --- background API (multipart/form-data text fields) -------------------------------------------

_DEFAULT = Params()


class ImageForm(BaseModel):
    """The text fields of POST /image/{operation}/v1 (the image comes as `file` or `image_url`)."""

    model_config = ConfigDict(extra="ignore")

    image_url: str | None = Field(
        None, max_length=8192, description="Load the image from this URL instead of a `file` part."
    )
    model: Annotated[ImageModelName, BeforeValidator(_folded)] = _DEFAULT.model
    blur_radius: FormInt = Field(_DEFAULT.blur_radius, ge=0, le=200, description="blur: Gaussian radius, px")
    bg_color: RgbText | None = Field(
        None, description="color: the backdrop (white when absent); shadow: transparent when absent"
    )
    gradient_start: RgbText = _rgb_text(_DEFAULT.gradient_start)
    gradient_end: RgbText = _rgb_text(_DEFAULT.gradient_end)
    gradient_direction: Annotated[DirectionName, BeforeValidator(_folded)] = _DEFAULT.gradient_direction
    shadow_offset_x: FormInt = Field(_DEFAULT.shadow_offset_x, ge=-1000, le=1000, description="px")
    shadow_offset_y: FormInt = Field(_DEFAULT.shadow_offset_y, ge=-1000, le=1000, description="px")
    shadow_blur: FormInt = Field(_DEFAULT.shadow_blur, ge=0, le=200, description="px")
    shadow_opacity: float = Field(_DEFAULT.shadow_opacity, ge=0.0, le=1.0, allow_inf_nan=False)

    def params(self, operation: str) -> Params:
        """The typed Params: fields the caller sent override Params' defaults."""
        wire_only = {"image_url", "operation", "webhook_url"}
        sent = {name: getattr(self, name) for name in self.model_fields_set - wire_only}
        return Params(**{**sent, "operation": operation})


class HdImageForm(ImageForm):
    """The text fields of POST /image/hd/submit/v1."""

    operation: Annotated[OperationName, BeforeValidator(_folded)] = "matte"
    webhook_url: WebhookUrl | None = None


class GenerateForm(BaseModel):
    """The text fields of POST /image/generate/v1."""

    model_config = ConfigDict(extra="ignore")

    image_url: str | None = Field(None, max_length=8192, description="Load the image from this URL.")
    prompt: str = Field("", max_length=1000, description="What the backdrop should show.")


class VideoSubmitForm(BaseModel):
    """The text fields of POST /video/submit/v1 (the video is `file`, an image `bg_image`).

    Background priority: bg_color > bg_image > bg_image_url; none of them: transparent video."""

    model_config = ConfigDict(extra="ignore")

    bg_color: RgbText | None = None
    bg_image_url: str | None = Field(None, max_length=8192, description="http(s) URL of an image")
    output_format: Annotated[Literal["mp4", "webm", "mov"] | None, BeforeValidator(_folded)] = Field(
        None,
        description="Opaque: mp4 (H.264, default), webm (VP9) or mov (ProRes 4444); transparent: "
        "webm (VP9 with alpha, default) or mov (ProRes 4444 with alpha).",
    )
    model: ForegroundModelName | None = Field(
        None, description="auto (default), rvm or salient, as on /foreground_mask."
    )
    webhook_url: WebhookUrl | None = None
