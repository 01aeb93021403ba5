"""POST /mask_by_key_points (seeds/mask_by_key_points.txt).

Validated in two rounds before anything is queued, so every 4xx comes back on the request: the
body first (no download for a malformed request), then, after fetch + probe, what needs the
video itself (duration vs auto_trim, 750p, frame_index range, points inside the frame, a frame
size the preset's encoder can write). Sizes and points are in display orientation: a phone
video stored 360x640 with a 90-degree rotation tag is a 640x360 frame here, as players show it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid

from aiohttp import web

from common.settings import Settings
from gateway.auth import require_owner
from gateway.errors import REQUEST_ID, MaskApiError
from gateway.job_params import KeyPointMaskParams
from gateway.keypoint_preview import encode_jpeg, encode_mask_png, frame_at, prompt_mask
from gateway.keys import SETTINGS, STORAGE, TRITON
from gateway.limits import check_capacity, check_rate
from gateway.routes.masks import accept_video_job, read_request
from gateway.schemas.requests import KeyPointIn, KeyPointPreviewRequest, MaskByKeyPointsRequest
from gateway.shedding import IMAGE_IN_FLIGHT
from gateway.triton import InferenceFailed
from gateway.video.encode import DEFAULT_PRESET, check_output_size, preset_by_name
from gateway.video.geometry import display_size
from gateway.video.intake import fetch_and_probe
from gateway.video.probe import MediaError, VideoInfo
from gateway.video.run import expected_frames

routes = web.RouteTableDef()
log = logging.getLogger("gateway.keypoints")

LABELS = {"positive": 1, "negative": 0}


def _invalid(details: str) -> MaskApiError:
    return MaskApiError(422, "Invalid request data", details)


def check_video(info: VideoInfo, settings: Settings, params: KeyPointMaskParams) -> float | None:
    """What only the probed video can tell; returns the trim length in seconds (None: not trimmed).

    Raises MaskApiError(422) or MediaError(422) (an output size the preset cannot encode)."""
    max_duration_s = check_prompt(info, settings, params)
    check_output_size(preset_by_name(params.preset), info)
    return max_duration_s


def check_prompt(info: VideoInfo, settings: Settings, params: KeyPointMaskParams) -> float | None:
    """Duration (auto_trim), 750p, frame_index and points against the probed video (the job's
    and the preview's checks); returns the trim length in seconds (None: not trimmed).

    Raises MaskApiError(422)."""
    limit_s = params.limit_s
    max_duration_s = params.trim_length(info.duration_s)
    if max_duration_s is not None and not params.auto_trim:
        raise _invalid(
            f"Input duration {info.duration_s:.2f}s exceeds the {limit_s:g}s limit; "
            f"set auto_trim to true to process the first {limit_s:g}s, "
            "or trim the video and submit it again."
        )
    width, height = display_size(info.width, info.height, info.rotation)
    short_side, limit_px = min(width, height), settings.keypoints_max_short_side
    if short_side > limit_px:
        raise _invalid(
            f"Input resolution {width}x{height} exceeds the {limit_px}p limit "
            f"(the shorter side may be at most {limit_px} pixels)."
        )
    frames = expected_frames(info, max_duration_s)
    if params.frame_index >= frames:
        raise _invalid(
            f"frame_index {params.frame_index} is beyond the last frame of the "
            f"{'trimmed ' if max_duration_s else ''}video (frames 0..{frames - 1})."
        )
    for i, (x, y, _) in enumerate(params.key_points):
        if not (0 <= x < width and 0 <= y < height):
            raise _invalid(
                f"key_points[{i}] ({x}, {y}) lies outside the {width}x{height} frame as displayed "
                f"(x in 0..{width - 1}, y in 0..{height - 1})."
            )
    return max_duration_s


def _params(
    fields: MaskByKeyPointsRequest | KeyPointPreviewRequest,
    settings: Settings,
    preset: str,
    key_points: list[KeyPointIn],
) -> KeyPointMaskParams:
    return KeyPointMaskParams(
        preset=preset,
        source_url=fields.url,
        frame_index=fields.frame_index or 0,
        key_points=tuple((p.x, p.y, LABELS[p.type]) for p in key_points),
        auto_trim=bool(fields.auto_trim),
        limit_s=settings.keypoints_max_duration_s,
    )


@routes.post("/mask_by_key_points")
async def mask_by_key_points(request: web.Request) -> web.Response:
    owner = require_owner(request, "mask")
    await check_rate(request, owner, "mask")
    fields = await read_request(request, MaskByKeyPointsRequest)
    await check_capacity(request, owner, "mask")
    settings = request.app[SETTINGS]
    # The worker re-probes and derives the trim from auto_trim the same way (params.trim_length).
    params = _params(fields, settings, fields.preset, fields.key_points)
    # No duration limit in the probe: over-long input is trimmed or refused by check_video.
    return await accept_video_job(
        request,
        owner,
        params,
        max_duration_s=None,
        check=lambda info: check_video(info, settings, params),
        webhook_url=fields.webhook_url,
    )


@routes.post("/mask_by_key_points/preview")
async def preview(request: web.Request) -> web.Response:
    """The prompt frame and its mask, synchronously (docs/keypoints.md, "Preview"): the same
    checks as the job (a frame or point the job would refuse is refused here, 422), then the
    frame decoded as the job decodes it and one `keypoint_mask` call. Image-like work: admitted
    by gateway/shedding.py's slots (429 at once when full), nothing kept afterwards."""
    owner = require_owner(request, "mask")
    await check_rate(request, owner, "mask")
    with request.app[IMAGE_IN_FLIGHT].admit(owner, "mask"):
        fields = await read_request(request, KeyPointPreviewRequest)
        settings, storage = request.app[SETTINGS], request.app[STORAGE]
        params = _params(fields, settings, DEFAULT_PRESET, fields.key_points)
        scratch = str(uuid.uuid4())
        work = storage.new_temp_dir(scratch)
        try:
            source = work / "input"
            info = await fetch_and_probe(params.source_url, source, settings, max_duration_s=None)
            check_prompt(info, settings, params)
            frame = await asyncio.to_thread(frame_at, source, info, settings, params)
            mask_png, inference_ms = None, 0.0
            if params.key_points:
                started = time.perf_counter()
                mask = await prompt_mask(request.app[TRITON], frame, params.key_points)
                inference_ms = (time.perf_counter() - started) * 1000
                mask_png = base64.b64encode(await asyncio.to_thread(encode_mask_png, mask)).decode()
            frame_jpeg = base64.b64encode(await asyncio.to_thread(encode_jpeg, frame)).decode()
        except MediaError as exc:
            raise MaskApiError(exc.status, exc.message, exc.details) from None
        except InferenceFailed as exc:  # the job records the same failure the same way
            log.warning("preview inference failed", extra={"error": str(exc)})
            raise MaskApiError(
                500, "Inference failed", "The key-point model could not process the frame; retry later."
            ) from None
        finally:
            storage.remove_temp_dir(scratch)
    return web.json_response(
        {
            "request_id": request[REQUEST_ID],
            "frame_index": params.frame_index,
            "width": int(frame.shape[1]),
            "height": int(frame.shape[0]),
            "frame_jpeg": frame_jpeg,
            "mask_png": mask_png,
            "inference_ms": round(inference_ms, 1),
        },
        headers={"Cache-Control": "no-store"},
    )
