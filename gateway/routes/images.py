"""Image background API (seeds/background_api.txt): matte, blur, color, gradient, shadow, HD
submit/result and generate. Bodies and messages are the document's, word for word.

Every endpoint takes multipart/form-data with the image in `file`, or an `image_url` field (loaded
by gateway.fetch). The request body is streamed into a private staging dir under the temp dir and
that dir is removed when the request ends, whatever happens; an HD upload is moved into the job's
uploads dir first. Staging dirs are named like job ids, so the worker's janitor also sweeps any
left by a killed gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage

from common.settings import Settings
from gateway.auth import require_owner
from gateway.bounded import BodyTooLarge, FieldTooLarge, FormBudget, field_label, read_body
from gateway.departures import client_gone
from gateway.errors import ApiError, BgApiError, job_id_for, result_removed
from gateway.fetch import DownloadTooLarge, FetchError, fetch_to_file, url_refusal
from gateway.images.generate import NotTransparent, generate_image
from gateway.images.params import OPERATIONS, hd_limits
from gateway.images.process import process_image
from gateway.job_params import ImageHdParams, JobKind, input_path
from gateway.jobs import JobStatus
from gateway.keys import JOBS, SETTINGS, STORAGE, TRITON
from gateway.limits import check_capacity, check_poll_rate, check_rate, start_job
from gateway.result_download import send_result
from gateway.schemas.forms import INVALID_REQUEST, parse_params, validate_form
from gateway.schemas.requests import GenerateForm, HdImageForm
from gateway.shedding import IMAGE_IN_FLIGHT
from gateway.unavailable import ServiceUnavailable
from triton_models.decode import ImageTooLarge, InvalidImage, Limits, check_whole

routes = web.RouteTableDef()

TOO_LARGE = {"message": "Image too large for regular processing. Use HD endpoint."}
INVALID_IMAGE = {"detail": "Invalid image file"}
NOT_TRANSPARENT = {"message": "The input image must have a transparent background."}
TASK_NOT_FOUND = {"detail": "Task not found"}
PNG_HEADERS = {"Cache-Control": "no-cache"}
BOTH_SOURCES = {"message": "Send the image either in 'file' or as 'image_url', not both."}
ONE_IMAGE = {"message": "Send one image in the 'file' part, not several."}
SEND_A_FORM = {
    "message": "Send multipart/form-data with the image in a 'file' part or an 'image_url' field "
    "(JSON bodies are not accepted here)."
}

_CHUNK = 256 * 1024


class _BodyTooLarge(Exception):
    pass


def _regular_limits(settings: Settings) -> Limits:
    side = settings.image_max_side
    return Limits(max_side=side, max_pixels=side * side)


def _staging(settings: Settings) -> Path:
    path = settings.tmp_dir / str(uuid.uuid4())
    path.mkdir(parents=True)
    return path


async def _write_part(part: BodyPartReader, dest: Path, limit: int) -> None:
    size = 0
    with dest.open("wb") as out:
        while chunk := await part.read_chunk(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise _BodyTooLarge()
            await asyncio.to_thread(out.write, chunk)


async def _read_multipart(request: web.Request, fields: dict[str, str], image: Path, limit: int) -> bool:
    """Text parts into `fields`, the `file` part onto `image`; True when a file part came."""
    have_file = False
    settings = request.app[SETTINGS]
    budget = FormBudget(settings.form_max_parts, settings.form_max_text_bytes)
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            budget.part()
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "file":
                if have_file:
                    raise BgApiError(400, ONE_IMAGE)
                await _write_part(part, image, limit)
                have_file = True
            elif part.filename is not None:  # an upload under another name is no text field
                where = field_label(part.name)
                raise BgApiError(400, {"message": f"Send the image in the 'file' part, not in {where}."})
            elif part.name:
                fields[part.name] = await budget.text(part, settings.form_max_field_bytes)
    except FieldTooLarge as exc:  # the family's 400 with a specific message, as other field errors
        raise BgApiError(400, {"message": str(exc)}) from None
    except BodyTooLarge as exc:
        raise BgApiError(413, {"detail": str(exc)}) from None
    except (ValueError, AssertionError, BadHttpMessage) as exc:  # malformed framing or headers
        if client_gone(request, exc):
            raise  # the error middleware logs the departure as 499
        raise BgApiError(422, INVALID_REQUEST) from None
    return have_file


async def _urlencoded(request: web.Request) -> dict[str, str]:
    """A url-encoded form (image_url and options), read within the form bounds (text bytes, parts)."""
    settings = request.app[SETTINGS]
    try:
        raw = await read_body(request, settings.form_max_text_bytes)
        pairs = parse_qsl(raw.decode("utf-8", errors="replace"), max_num_fields=settings.form_max_parts)
    except BodyTooLarge as exc:
        raise BgApiError(413, {"detail": str(exc)}) from None
    except ValueError:  # more fields than max_num_fields
        detail = f"The form has more than {settings.form_max_parts} parts."
        raise BgApiError(413, {"detail": detail}) from None
    return dict(pairs)


async def _receive(request: web.Request, staging: Path, limit: int) -> tuple[dict[str, str], Path]:
    """Form fields and the image, on disk under `staging`; raises _BodyTooLarge past `limit`."""
    fields: dict[str, str] = {}
    image = staging / "upload"
    have_file = False
    if request.content_type == "application/x-www-form-urlencoded":  # image_url without a file
        fields = await _urlencoded(request)
    elif not request.content_type.startswith("multipart/"):
        raise BgApiError(415, SEND_A_FORM)
    else:
        have_file = await _read_multipart(request, fields, image, limit)
    url = fields.get("image_url", "").strip()
    if have_file:
        if url:  # silently preferring one would hide the caller's mistake
            raise BgApiError(400, BOTH_SOURCES)
        return fields, image
    if not url:
        raise BgApiError(422, INVALID_REQUEST)
    try:
        await fetch_to_file(url, image, request.app[SETTINGS], max_bytes=limit)
    except FetchError as exc:
        if isinstance(exc, DownloadTooLarge):
            raise _BodyTooLarge() from None
        raise BgApiError(400, {"detail": f"Failed to download image: {exc.reason}"}) from None
    return fields, image


def _png(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="image/png", headers=PNG_HEADERS)


async def _regular(request: web.Request, operation: str) -> web.Response:
    owner = require_owner(request, "bg")
    await check_rate(request, owner, "bg")
    settings = request.app[SETTINGS]
    staging = _staging(settings)
    try:
        try:
            fields, path = await _receive(request, staging, settings.max_request_bytes)
        except _BodyTooLarge:
            raise BgApiError(400, TOO_LARGE) from None
        limits = _regular_limits(settings)
        try:
            if operation == "generate":
                prompt = validate_form(GenerateForm, fields).prompt
                return _png(await generate_image(request.app[TRITON], path, prompt, limits))
            params = parse_params(fields, operation)
            return _png(await process_image(request.app[TRITON], path, params, limits))
        except ImageTooLarge:
            raise BgApiError(400, TOO_LARGE) from None
        except InvalidImage:
            raise BgApiError(400, INVALID_IMAGE) from None
        except NotTransparent:
            raise BgApiError(400, NOT_TRANSPARENT) from None
    finally:
        await asyncio.to_thread(shutil.rmtree, staging, True)


def _regular_route(operation: str) -> None:
    async def handler(request: web.Request) -> web.Response:
        # admitted (or 429 at once) before the body is read: gateway/shedding.py
        with request.app[IMAGE_IN_FLIGHT].admit(require_owner(request, "bg")):
            return await _regular(request, operation)

    handler.__name__ = f"image_{operation}"
    routes.post(f"/image/{operation}/v1")(handler)


for _operation in (*OPERATIONS, "generate"):
    _regular_route(_operation)


# --- HD ------------------------------------------------------------------------------------------


@routes.post("/image/hd/submit/v1")
async def hd_submit(request: web.Request) -> web.Response:
    owner = require_owner(request, "bg")
    await check_rate(request, owner, "bg")
    await check_capacity(request, owner, "bg")  # refuse before a large upload, not after
    settings, jobs, storage = request.app[SETTINGS], request.app[JOBS], request.app[STORAGE]
    staging = _staging(settings)
    job_id: str | None = None
    try:
        try:
            fields, path = await _receive(request, staging, settings.max_upload_bytes)
        except _BodyTooLarge:
            message = f"Image file too large for HD processing (over {settings.max_upload_bytes} bytes)."
            raise BgApiError(400, {"message": message}) from None
        form = validate_form(HdImageForm, fields)
        params = form.params(form.operation)
        if form.webhook_url is not None and (reason := await url_refusal(form.webhook_url, settings)):
            raise BgApiError(400, {"message": f"webhook_url: {reason}"})
        try:
            await asyncio.to_thread(check_whole, path, hd_limits(settings))
        except InvalidImage:
            raise BgApiError(400, INVALID_IMAGE) from None
        except ImageTooLarge:
            raise BgApiError(
                400, {"message": f"Image too large for HD processing (over {settings.hd_max_pixels} pixels)."}
            ) from None
        try:
            record = await jobs.create(
                owner, ImageHdParams(image=params), job_id_for(request), form.webhook_url
            )
            job_id = record.id
            os.replace(path, input_path(storage, job_id))
            await storage.publish_inputs(job_id)
            await start_job(request, "bg", record)
        except ApiError:
            raise
        except ServiceUnavailable:  # the store (or Redis) is down: 503, nothing kept
            await _forget(request, job_id)
            raise
        except Exception:
            await _forget(request, job_id)
            raise BgApiError(500, {"detail": "Failed to submit image"}) from None
        job_id = None  # queued: from here on the worker owns the upload
        body = {"message": "Image submitted for processing", "uuid": record.id, "status": "processing"}
        return web.json_response(body, status=202)
    finally:
        if job_id is not None:
            await storage.remove_uploads(job_id)
        await asyncio.to_thread(shutil.rmtree, staging, True)


async def _forget(request: web.Request, job_id: str | None) -> None:
    if job_id is None:
        return
    await request.app[STORAGE].remove_uploads(job_id)
    with contextlib.suppress(Exception):  # Redis is what failed; the record expires on its own
        await request.app[JOBS].delete(job_id)


@routes.get("/image/hd/result/{uuid}")
async def hd_result(request: web.Request) -> web.StreamResponse:
    owner = require_owner(request, "bg")
    await check_poll_rate(request, owner, "bg")
    job_id = request.match_info["uuid"]
    record = await request.app[JOBS].get(job_id, owner)
    if record is None or record.kind != JobKind.IMAGE_HD:
        raise BgApiError(404, TASK_NOT_FOUND)
    if record.status == JobStatus.FAILED:
        raise BgApiError(500, {"detail": "Image processing failed"})
    if record.status != JobStatus.COMPLETED:
        body: dict[str, Any] = {"message": "Task is still processing", "uuid": job_id, "status": "processing"}
        if record.progress_percentage is not None:  # by pipeline step (worker.image_hd), not frames
            body["progress_percentage"] = record.progress_percentage
        return web.json_response(body, status=202)
    if record.result is None:
        raise result_removed("Processed image file not found")
    return await send_result(
        request,
        request.app[STORAGE],
        job_id,
        record.result,
        {**PNG_HEADERS, "Content-Type": "image/png"},
        gone=lambda: result_removed("Processed image file not found"),
        delete_after=True,
    )
