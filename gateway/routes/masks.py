"""POST /foreground_mask and GET /status/{request_id} (seeds/foreground_mask.txt).

The gateway downloads and probes the video before answering, so an unsupported, too large or too
long input gets its documented 413/415/422 on the request itself; the accepted file waits in the
job's upload dir (shared with the workers, or published to the object store) and the job is queued.
`status_body` renders a job record for the Status Service; /mask_by_key_points uses it too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from common.compat import UTC
from gateway.auth import require_owner
from gateway.bounded import BodyTooLarge, JsonLimits, read_json
from gateway.errors import MaskApiError, job_id_for
from gateway.fetch import url_refusal
from gateway.job_params import ForegroundMaskParams, JobKind, KeyPointMaskParams, input_path
from gateway.jobs import JobRecord, JobStatus
from gateway.keys import JOBS, SETTINGS, STORAGE
from gateway.limits import check_capacity, check_poll_rate, check_rate, start_job
from gateway.schemas.requests import ForegroundMaskRequest
from gateway.storage import Storage
from gateway.video.encode import PRESETS, check_output_size
from gateway.video.intake import fetch_and_probe
from gateway.video.probe import MediaError, VideoInfo

routes = web.RouteTableDef()
RequestT = TypeVar("RequestT", bound=BaseModel)


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z") if ts is not None else None


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


async def status_body(record: JobRecord, storage: Storage) -> dict[str, Any]:
    """The Status Service document for any mask job (foreground_mask, mask_by_key_points)."""
    body: dict[str, Any] = {
        "request_id": record.id,
        "status": record.status,
        "current_frame": record.current_frame,
        "total_frames": record.total_frames,
        "progress_percentage": record.progress_percentage,
        "created_at": _iso(record.created_at),
        "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
    }
    if record.status == JobStatus.COMPLETED and record.result is not None:
        url, expires = await storage.result_link(record.id, record.result)
        body["mask_url"] = record.result.upload_link or url
        body["mask_url_expires_at"] = expires.isoformat().replace("+00:00", "Z")
        if record.warning:
            body["warning"] = record.warning
        if record.warning and record.trimmed:
            # This document's one duration format: seconds as a number, to the millisecond.
            body["original_duration"] = _seconds(record.original_duration)
            body["processed_duration"] = _seconds(record.processed_duration)
    if record.status == JobStatus.FAILED and record.error is not None:
        body["error"] = {
            "code": record.error.code,
            "message": record.error.message,
            "details": record.error.details,
        }
    return body


def _invalid(details: str) -> MaskApiError:
    return MaskApiError(422, "Invalid request data", details)


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object: 400 when it is not JSON, 422 when it is not an object, 413 past
    the bounds of gateway/bounded.py (size `JSON_MAX_BYTES`, depth, elements, integer digits)."""
    try:
        body = await read_json(request, JsonLimits(max_bytes=request.app[SETTINGS].json_max_bytes))
    except BodyTooLarge as exc:
        raise MaskApiError(413, "Payload Too Large", str(exc)) from None
    except ValueError:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise MaskApiError(400, "Malformed JSON", "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object.")
    return body


def require_json(request: web.Request) -> None:
    """415 for a body declared as anything but JSON (no Content-Type at all is read as JSON)."""
    declared = request.headers.get("Content-Type")
    if declared is not None and not (
        request.content_type == "application/json" or request.content_type.endswith("+json")
    ):
        raise MaskApiError(
            415, "Unsupported Media Type", "Send the request body as JSON (Content-Type: application/json)."
        )


async def read_request(request: web.Request, model: type[RequestT]) -> RequestT:
    """The endpoint's request model from a JSON body: 415, then 400 (not JSON), then 422."""
    require_json(request)
    return mask_request(model, await json_object(request))


def mask_request(model: type[RequestT], body: dict[str, Any]) -> RequestT:
    """`body` validated by the endpoint's request model; raises MaskApiError(422) naming the field."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise _invalid(_describe(exc.errors()[0])) from None


def _describe(error: ErrorDetails) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".")
    if error["type"] == "missing":
        return f"Field '{where}' is required."
    if error["type"] == "string_pattern_mismatch":
        return f"Field '{where}' must be an http(s) URL."
    message = error["msg"].removeprefix("Value error, ")
    return f"Field '{where}': {message}." if where else f"{message}."


@routes.post("/foreground_mask")
async def foreground_mask(request: web.Request) -> web.Response:
    owner = require_owner(request, "mask")
    await check_rate(request, owner, "mask")
    fields = await read_request(request, ForegroundMaskRequest)
    params = ForegroundMaskParams(source_url=fields.url, preset=fields.preset, model=fields.foreground_model)
    await check_capacity(request, owner, "mask")
    settings = request.app[SETTINGS]
    return await accept_video_job(
        request,
        owner,
        params,
        max_duration_s=settings.video_max_duration_s,
        check=lambda info: check_output_size(PRESETS[params.preset], info),
        webhook_url=fields.webhook_url,
    )


async def accept_video_job(
    request: web.Request,
    owner: str,
    params: ForegroundMaskParams | KeyPointMaskParams,
    *,
    max_duration_s: float | None,
    check: Callable[[VideoInfo], None] | None = None,
    webhook_url: str | None = None,
) -> web.Response:
    """The mask endpoints' common intake: download `params.source_url` and probe it before
    answering (so 413/415/422 come back on the request), run the endpoint's own `check`, enqueue,
    answer 202. Whatever refuses the job removes its record and input: nothing is left behind.
    `max_duration_s`: longer videos are refused (422); None: no limit in the probe."""
    settings, storage, jobs = request.app[SETTINGS], request.app[STORAGE], request.app[JOBS]
    if webhook_url is not None and (reason := await url_refusal(webhook_url, settings)):
        raise _invalid(f"Field 'webhook_url': {reason}")
    record = await jobs.create(owner, params, job_id_for(request), webhook_url)
    try:
        info = await fetch_and_probe(
            params.source_url, input_path(storage, record.id), settings, max_duration_s=max_duration_s
        )
        if check is not None:
            check(info)
        await storage.publish_inputs(record.id)
        await start_job(request, "mask", record)
    except MediaError as exc:
        await storage.remove_uploads(record.id)
        await jobs.delete(record.id)
        raise MaskApiError(exc.status, exc.message, exc.details) from None
    except BaseException:
        await storage.remove_uploads(record.id)
        await jobs.delete(record.id)
        raise
    return web.json_response(
        {"request_id": record.id, "status_url": f"{settings.base_url}/status/{record.id}"}, status=202
    )


@routes.get("/status/{request_id}")
async def status(request: web.Request) -> web.Response:
    owner = require_owner(request, "mask")
    await check_poll_rate(request, owner, "mask")
    record = await request.app[JOBS].get(request.match_info["request_id"], owner)
    if record is None or record.kind not in (JobKind.FOREGROUND_MASK, JobKind.MASK_BY_KEY_POINTS):
        raise MaskApiError(404, "Not Found", "No job with this request_id exists for this api_token.")
    body = await status_body(record, request.app[STORAGE])
    if record.webhook_url:
        delivery = await request.app[JOBS].webhook_delivery(record.id)
        body["webhook"] = asdict(delivery) if delivery else {"state": "waiting", "attempts": 0}
    return web.json_response(body)
