"""The JSON bodies the endpoints answer with, as pydantic models (published by gateway.openapi;
the contract test checks every answer of the live service against them).

Shapes and strings are the seeds' (../shared/seeds): the mask family's error object, the
background family's `{"message"}` / `{"detail"}` bodies, the 202/200 documents of each endpoint.
Every model forbids extra fields, so the document says exactly what comes back.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

_EXAMPLE_ID = "550e8400-e29b-41d4-a716-446655440000"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- errors --------------------------------------------------------------------------------------


class MaskErrorObject(_Body):
    code: int = Field(description="The HTTP status, repeated.", examples=[422])
    message: str = Field(examples=["Invalid request data"])
    details: str = Field(examples=["Field 'video' is required."])


class MaskError(_Body):
    """The mask API's error (foreground_mask.txt, mask_by_key_points.txt)."""

    error: MaskErrorObject
    request_id: str = Field(
        description="This request's id, the same as the X-Request-ID response header: quote it "
        "to find the request's log lines. Not a job id."
    )


class BgMessage(_Body):
    """The background API's generic error (background_api.txt, 'Common HTTP Status Codes')."""

    message: str = Field(examples=["Invalid request data"])


class BgDetail(_Body):
    """The background API's detailed error."""

    detail: str = Field(examples=["Invalid image file"])


class VideoTaskNotFound(_Body):
    message: Literal["Task not found"]
    status: Literal["not_found"]


class VideoFailed(_Body):
    message: Literal["Video processing failed"]
    uuid: str
    status: Literal["failed"]


# --- mask API ------------------------------------------------------------------------------------


class MaskJobAccepted(_Body):
    request_id: str = Field(description="The job's id: what /status/{request_id} takes.")
    status_url: str = Field(description="Where to poll the job's status.")


class JobErrorBody(_Body):
    code: int
    message: str
    details: str


class WebhookState(_Body):
    state: Literal["waiting", "pending", "delivered", "failed"] = Field(
        description="waiting: the job has not ended; pending: being delivered (retrying); "
        "delivered: a 2xx came back; failed: given up after WEBHOOK_GIVE_UP_S."
    )
    attempts: int
    last_status: int | None = Field(None, description="The receiver's last HTTP status.")
    last_error: str | None = None


class StatusDocument(_Body):
    """GET /status/{request_id}: a mask job's state; mask_url once completed."""

    request_id: str = Field(description="The job's id (as in the 202 of the submit).")
    status: Literal["queued", "processing", "completed", "failed"]
    current_frame: int | None = None
    total_frames: int | None = None
    progress_percentage: float | None = Field(None, ge=0, le=100)
    created_at: str | None = Field(None, description="ISO 8601, UTC")
    started_at: str | None = None
    finished_at: str | None = None
    mask_url: str | None = Field(
        None,
        description="Signed link to the result: may be fetched any number of times until "
        "mask_url_expires_at (unlike the background API's results, removed after one download).",
    )
    mask_url_expires_at: str | None = None
    warning: str | None = None
    original_duration: float | None = Field(None, description="seconds")
    processed_duration: float | None = Field(None, description="seconds")
    error: JobErrorBody | None = None
    webhook: WebhookState | None = Field(None, description="Only for jobs submitted with webhook_url.")


# --- background API ------------------------------------------------------------------------------


class HdAccepted(_Body):
    message: Literal["Image submitted for processing"]
    uuid: str = Field(examples=[_EXAMPLE_ID])
    status: Literal["processing"]


class HdProcessing(_Body):
    message: Literal["Task is still processing"]
    uuid: str
    status: Literal["processing"]
    progress_percentage: float | None = Field(
        None, ge=0, le=100, description="By pipeline step, once a worker has started the job."
    )


class VideoAccepted(_Body):
    message: Literal["Video submitted for processing"]
    uuid: str = Field(examples=[_EXAMPLE_ID])
    status: Literal["processing"]
    duration: str = Field(description="The input's duration, e.g. '3.50s'", examples=["3.50s"])
    warning: str | None = None
    processed_duration: str | None = Field(None, examples=["4s"])


class VideoProcessing(_Body):
    message: Literal["Video is still processing"]
    uuid: str
    status: Literal["processing"]
    current_frame: int | None = None
    total_frames: int | None = None
    progress_percentage: float | None = Field(None, ge=0, le=100)


class VideoUploaded(_Body):
    message: Literal["Video processing completed successfully"]
    uuid: str
    status: Literal["success"]
    upload_link: str
    warning: str | None = None
    original_duration: str | None = None
    processed_duration: str | None = None


# --- operations ----------------------------------------------------------------------------------


class Health(_Body):
    status: Literal["ok"]


class TritonServers(_Body):
    configured: int = Field(description="tritonservers in TRITON_URLS")
    ready: int = Field(description="of them, those with every model the gateway calls ready")


class Readiness(_Body):
    status: Literal["ready", "not_ready"]
    checks: dict[str, bool] = Field(
        description="triton_server, model_<name> (of the most complete tritonserver: all true when one"
        " server has every model), redis, object_store (STORAGE=s3)"
    )
    failed: list[str]
    triton_servers: TritonServers


# --- studio (key-point preview, uploads) ---------------------------------------------------------


class VideoFacts(_Body):
    width: int = Field(description="Frame width as displayed (rotation applied), pixels.")
    height: int = Field(description="Frame height as displayed, pixels.")
    fps: float = Field(description="Average frame rate, frames per second.")
    duration_s: float = Field(description="Duration of the whole video, seconds.")
    frame_count: int = Field(
        description="Frames /mask_by_key_points works on: the whole video, or the first "
        "KEYPOINTS_MAX_DURATION_S seconds of a longer one (auto_trim). From the container: a "
        "damaged file may decode fewer."
    )
    needs_auto_trim: bool = Field(description="Longer than the key-point limit: send auto_trim true.")


class StudioUpload(VideoFacts):
    video: str = Field(
        description="Signed, expiring link to the stored video: a URL for the mask "
        "endpoints and the preview, playable by a browser without a token."
    )
    video_expires_at: str = Field(description="When the link expires (ISO 8601, UTC).")


class KeyPointPreview(_Body):
    request_id: str = Field(description="This request's id (X-Request-ID).")
    frame_index: int
    width: int = Field(description="Frame width as displayed, pixels (the mask's width).")
    height: int = Field(description="Frame height as displayed, pixels.")
    frame_jpeg: str = Field(description="The frame the job would prompt on, JPEG (quality 90), base64.")
    mask_png: str | None = Field(
        description="Grey PNG, base64, the frame's size: 255 = the object the key points select, "
        "0 elsewhere (the mask video's prompt frame); null when no key point was sent."
    )
    inference_ms: float = Field(description="Time spent in the keypoint_mask model, milliseconds.")
