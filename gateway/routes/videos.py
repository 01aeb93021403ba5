"""POST /video/submit/v1 and GET /video/result/{uuid} (video part of seeds/background_api.txt).

Bodies and strings are the document's, word for word. The upload streams to disk within
MAX_UPLOAD_BYTES; the video is probed before the job is queued so an unusable file is a 400 on
the request. Videos longer than VIDEO_SUBMIT_TRIM_S are trimmed, with the documented warnings.
No background (bg_color, bg_image, bg_image_url) gives a transparent video: WebM VP9 with alpha,
or ProRes 4444 MOV when output_format=mov. A result file is removed after a complete download.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage
from PIL import Image, UnidentifiedImageError

from common.settings import Settings
from gateway.auth import require_owner
from gateway.bounded import BodyTooLarge, FormBudget
from gateway.departures import client_gone
from gateway.errors import ApiError, BgApiError, job_id_for, result_removed
from gateway.fetch import FetchError, fetch_to_file, url_refusal
from gateway.images.params import RGB, hd_limits
from gateway.job_params import TRIM_SLACK_S, VideoMatteParams, background_image_path, input_path
from gateway.jobs import JobRecord, JobStatus
from gateway.keys import JOBS, SETTINGS, STORAGE
from gateway.limits import check_capacity, check_poll_rate, check_rate, start_job
from gateway.result_download import send_result
from gateway.schemas.forms import validate_form
from gateway.schemas.requests import VideoSubmitForm
from gateway.unavailable import ServiceUnavailable
from gateway.video.encode import TRANSPARENT_PRESETS
from gateway.video.probe import MediaError, probe
from triton_models.decode import ImageTooLarge, InvalidImage, Limits
from triton_models.decode import probe as image_header
from triton_models.foreground import ForegroundModel

log = logging.getLogger("gateway.videos")
routes = web.RouteTableDef()

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".webm", ".avi", ".gif", ".mkv", ".m4v"})
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
_CHUNK = 256 * 1024


def _detail(status: int, detail: str) -> BgApiError:
    return BgApiError(status, {"detail": detail})


def _looks_like_video(part: BodyPartReader) -> bool:
    content_type = (part.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    if content_type.startswith("video/") or content_type == "image/gif":
        return True
    suffix = Path(part.filename or "").suffix.lower()
    return content_type in ("", "application/octet-stream") and suffix in VIDEO_EXTENSIONS


async def _save_part(part: BodyPartReader, dest: Path, limit: int, what: str) -> int:
    size = 0
    with dest.open("wb") as out:
        while chunk := await part.read_chunk(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise _detail(413, f"{what} is too large: the limit is {limit} bytes")
            await asyncio.to_thread(out.write, chunk)
    return size


@dataclass
class _Form:
    video: Path | None = None
    video_is_video: bool = True
    bg_image: Path | None = None
    text: dict[str, str] = field(default_factory=dict)  # the text fields, checked by VideoSubmitForm


async def _read_form(request: web.Request, staging: Path, settings: Settings) -> _Form:
    # aiohttp raises ValueError/BadHttpMessage on a malformed multipart body (boundary, part headers):
    # the client's mistake, a 400, not a 500
    try:
        return await _read_parts(request, staging, settings)
    except BodyTooLarge as exc:  # too many parts, a text field or all of them too long
        raise _detail(413, str(exc)) from None
    except (ValueError, BadHttpMessage) as exc:
        if client_gone(request, exc):
            raise  # the error middleware logs the departure as 499
        raise _detail(400, "Malformed multipart body") from None


async def _read_parts(request: web.Request, staging: Path, settings: Settings) -> _Form:
    if request.content_type == "application/x-www-form-urlencoded":  # a form, but no file in it
        raise _detail(400, "File must be a video")
    if not request.content_type.startswith("multipart/"):
        raise _detail(
            415,
            "Send multipart/form-data with the video in a 'file' part (JSON bodies are not accepted here).",
        )
    form = _Form()
    budget = FormBudget(settings.form_max_parts, settings.form_max_text_bytes)
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        budget.part()
        if not isinstance(part, BodyPartReader):
            continue
        name = part.name or ""
        if name == "file" and form.video is None:
            form.video_is_video = _looks_like_video(part)
            if not form.video_is_video:
                await part.release()
                continue
            form.video = staging / "video"
            await _save_part(part, form.video, settings.max_upload_bytes, "File")
        elif name == "bg_image" and part.filename and form.bg_image is None:
            form.bg_image = staging / "bg_image"
            await _save_part(part, form.bg_image, settings.max_request_bytes, "bg_image")
        elif name in VideoSubmitForm.model_fields:
            value = (await budget.text(part, settings.form_max_field_bytes)).strip()
            # An empty field means "not given", except `model`, which must name a model when sent.
            if value or name == "model":
                form.text[name] = value
        else:
            await part.release()
    return form


def _check_image(path: Path, limits: Limits) -> bool:
    """True for a whole image file; raises BgApiError(413) when its header declares more pixels
    than the image API's HD limit (read from the header: nothing is decoded before the check)."""
    try:
        image_header(path, limits)
    except ImageTooLarge as exc:
        raise _detail(
            413,
            f"Background image {exc.size_text}exceeds the {limits.max_pixels}-pixel limit",
        ) from None
    except InvalidImage:
        return False
    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return False


async def _background(
    form: _Form, fields: VideoSubmitForm, staging: Path, settings: Settings
) -> tuple[RGB | None, bool]:
    """-> (bg_color, bg_image): priority bg_color > bg_image > bg_image_url; the chosen image ends
    at staging/bg_image; neither: transparent. Raises BgApiError(400) for an unusable background,
    413 for an image over the HD pixel limit."""
    if fields.bg_color is not None:
        return fields.bg_color, False  # type: ignore[return-value]  # an RGB once validated
    if form.bg_image is not None:
        if not await asyncio.to_thread(_check_image, form.bg_image, hd_limits(settings)):
            raise _detail(400, "bg_image must be an image file")
        return None, True
    if fields.bg_image_url is not None:
        url = fields.bg_image_url
        if not url.lower().startswith(("http://", "https://")):
            raise _detail(400, "URL must point to an image file")
        dest = staging / "bg_image"
        try:
            fetched = await fetch_to_file(url, dest, settings, max_bytes=settings.max_request_bytes)
        except FetchError as exc:
            raise _detail(400, f"Failed to download background image: {exc.reason}") from None
        declared_image = fetched.content_type.startswith("image/") or Path(
            url.split("?")[0]
        ).suffix.lower() in (IMAGE_EXTENSIONS)
        if not declared_image or not await asyncio.to_thread(_check_image, dest, hd_limits(settings)):
            raise _detail(400, "URL must point to an image file")
        return None, True
    return None, False


def _preset_for(fields: VideoSubmitForm, transparent: bool) -> str:
    """Opaque: MP4 H.264 unless webm/mov is asked for; transparent: WebM VP9 alpha unless mov
    (MP4 has no alpha-capable codec here, so it falls back to WebM)."""
    fmt = fields.output_format
    if transparent:
        return TRANSPARENT_PRESETS["mov" if fmt == "mov" else "webm"].name
    return {"webm": "webm_vp9", "mov": "mov_proresks"}.get(fmt or "", "mp4_h264")


def _seconds(value: float) -> str:
    return f"{value:.2f}s"


@routes.post("/video/submit/v1")
async def submit_video(request: web.Request) -> web.Response:
    owner = require_owner(request, "bg")
    await check_rate(request, owner, "bg")
    await check_capacity(request, owner, "bg")
    settings, storage, jobs = request.app[SETTINGS], request.app[STORAGE], request.app[JOBS]
    staging = settings.tmp_dir / f"upload-{uuid.uuid4()}"
    staging.mkdir(parents=True)
    record: JobRecord | None = None
    try:
        form = await _read_form(request, staging, settings)
        if form.video is None:
            raise _detail(400, "File must be a video")
        fields = validate_form(VideoSubmitForm, form.text, key="detail")
        model = ForegroundModel(fields.model or ForegroundModel.AUTO.value)
        try:
            info = await asyncio.to_thread(probe, form.video, max_side=settings.video_max_side)
        except MediaError as exc:
            raise _detail(400, exc.details) from None
        if fields.webhook_url is not None and (reason := await url_refusal(fields.webhook_url, settings)):
            raise _detail(400, f"webhook_url: {reason}")
        bg_color, bg_image = await _background(form, fields, staging, settings)
        trim_s = settings.video_submit_trim_s
        trimmed = info.duration_s > trim_s + TRIM_SLACK_S
        params = VideoMatteParams(
            preset=_preset_for(fields, transparent=bg_color is None and not bg_image),
            model=model,
            bg_color=bg_color,
            bg_image=bg_image,
            original_duration_s=info.duration_s,
            max_duration_s=trim_s if trimmed else None,
            trim_s=trim_s,
        )
        record = await jobs.create(owner, params, job_id_for(request), fields.webhook_url)
        os.replace(form.video, input_path(storage, record.id))
        if params.bg_image:
            os.replace(staging / "bg_image", background_image_path(storage, record.id))
        await storage.publish_inputs(record.id)
        await start_job(request, "bg", record)
    except (ApiError, ServiceUnavailable):  # documented errors; an outage answers 503
        if record is not None:
            await storage.remove_uploads(record.id)
            await jobs.delete(record.id)
        raise
    except Exception as exc:
        if not client_gone(request, exc):
            log.exception("video submit failed")
        if record is not None:
            await storage.remove_uploads(record.id)
            await jobs.delete(record.id)
        if client_gone(request, exc):
            raise
        raise _detail(500, "Failed to submit video") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    body: dict[str, Any] = {
        "message": "Video submitted for processing",
        "uuid": record.id,
        "status": "processing",
        "duration": _seconds(info.duration_s),
    }
    if trimmed:
        body["warning"] = (
            f"Video duration ({_seconds(info.duration_s)}) exceeds {trim_s:g}s limit. "
            f"Only the first {trim_s:g}s will be processed."
        )
        body["processed_duration"] = f"{trim_s:g}s"
    return web.json_response(body, status=202)


def _not_found() -> BgApiError:
    return BgApiError(404, {"message": "Task not found", "status": "not_found"})


def _warning_fields(record: JobRecord, params: VideoMatteParams) -> tuple[dict[str, str], dict[str, str]]:
    """(JSON fields, headers) for the result's warning: a trim (the document's fields and
    headers) and what the decoder changed about the frames' timing (the warning's text, and
    `X-Video-Warning` alone when nothing was trimmed); both empty without a warning."""
    if not record.warning or record.original_duration is None or record.processed_duration is None:
        return {}, {}
    original, processed = _seconds(record.original_duration), _seconds(record.processed_duration)
    if not record.trimmed:  # kept whole: a timing note only
        return {"warning": record.warning}, {"X-Video-Warning": record.warning}
    trim_s = float(params.trim_s or record.processed_duration)
    fields = {"warning": record.warning, "original_duration": original, "processed_duration": processed}
    headers = {
        "X-Video-Warning": f"Original video ({original}) was trimmed to {trim_s:g} seconds",
        "X-Original-Duration": original,
        "X-Processed-Duration": processed,
    }
    return fields, headers


@routes.get("/video/result/{uuid}")
async def video_result(request: web.Request) -> web.StreamResponse:
    owner = require_owner(request, "bg")
    await check_poll_rate(request, owner, "bg")
    job_id = request.match_info["uuid"]
    record = await request.app[JOBS].get(job_id, owner)
    if record is None or not isinstance(record.params, VideoMatteParams):
        raise _not_found()
    if not record.done:
        body: dict[str, Any] = {
            "message": "Video is still processing",
            "uuid": record.id,
            "status": "processing",
        }
        if record.current_frame is not None and record.total_frames:
            body["current_frame"] = record.current_frame
            body["total_frames"] = record.total_frames
            body["progress_percentage"] = record.progress_percentage
        return web.json_response(body, status=202)
    if record.status == JobStatus.FAILED or record.result is None:
        return web.json_response(
            {"message": "Video processing failed", "uuid": record.id, "status": "failed"}, status=500
        )
    fields, warning_headers = _warning_fields(record, record.params)
    storage = request.app[STORAGE]
    link = record.result.upload_link
    if link is None and storage.settings.s3_presigned_links and record.result.key is not None:
        link, _ = await storage.result_link(record.id, record.result)
    if link:
        return web.json_response(
            {
                "message": "Video processing completed successfully",
                "uuid": record.id,
                "status": "success",
                "upload_link": link,
                **fields,
            }
        )
    headers = {
        "Content-Type": record.result.media_type,
        "Cache-Control": "no-cache",
        "Content-Disposition": f"attachment; filename={record.result.filename}",
        **warning_headers,
    }
    return await send_result(
        request,
        storage,
        record.id,
        record.result,
        headers,
        gone=lambda: result_removed("Processed video file not found"),
        delete_after=True,
    )
