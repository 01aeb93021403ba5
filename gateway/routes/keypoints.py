"""POST /mask_by_key_points (seeds/mask_by_key_points.txt).

Validated in two rounds before anything is queued, so every 4xx comes back on the request: the
body first (no download for a malformed request), then, after fetch + probe, what needs the
video itself (duration vs auto_trim, 750p, frame_index range, points inside the frame, a frame
size the preset's encoder can write). Sizes and points are in display orientation: a phone
video stored 360x640 with a 90-degree rotation tag is a 640x360 frame here, as players show it.
"""

from __future__ import annotations

from aiohttp import web

from common.settings import Settings
from gateway.auth import require_owner
from gateway.errors import MaskApiError
from gateway.job_params import KeyPointMaskParams
from gateway.keys import SETTINGS
from gateway.limits import check_capacity, check_rate
from gateway.routes.masks import accept_video_job, read_request
from gateway.schemas.requests import MaskByKeyPointsRequest
from gateway.video.encode import check_output_size, preset_by_name
from gateway.video.geometry import display_size
from gateway.video.probe import VideoInfo
from gateway.video.run import expected_frames

routes = web.RouteTableDef()

LABELS = {"positive": 1, "negative": 0}


def _invalid(details: str) -> MaskApiError:
    return MaskApiError(422, "Invalid request data", details)


def check_video(info: VideoInfo, settings: Settings, params: KeyPointMaskParams) -> float | None:
    """What only the probed video can tell; returns the trim length in seconds (None: not trimmed).

    Raises MaskApiError(422) or MediaError(422) (an output size the preset cannot encode)."""
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
    check_output_size(preset_by_name(params.preset), info)
    return max_duration_s


@routes.post("/mask_by_key_points")
async def mask_by_key_points(request: web.Request) -> web.Response:
    owner = require_owner(request, "mask")
    await check_rate(request, owner, "mask")
    fields = await read_request(request, MaskByKeyPointsRequest)
    await check_capacity(request, owner, "mask")
    settings = request.app[SETTINGS]
    # The worker re-probes and derives the trim from auto_trim the same way (params.trim_length).
    params = KeyPointMaskParams(
        preset=fields.preset,
        source_url=fields.url,
        frame_index=fields.frame_index or 0,
        key_points=tuple((p.x, p.y, LABELS[p.type]) for p in fields.key_points),
        auto_trim=bool(fields.auto_trim),
        limit_s=settings.keypoints_max_duration_s,
    )
    # No duration limit in the probe: over-long input is trimmed or refused by check_video.
    return await accept_video_job(
        request,
        owner,
        params,
        max_duration_s=None,
        check=lambda info: check_video(info, settings, params),
        webhook_url=fields.webhook_url,
    )
