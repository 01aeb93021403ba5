"""GET /studio: a page to place key points and run the mask jobs; POST/GET /studio/uploads.

The page (gateway/studio/: plain HTML, CSS and an ES module, no build step, nothing from a CDN)
is served with a strict Content-Security-Policy: scripts and styles only from this origin, no
inline script, images from blob:/data: (the preview's frame and mask), media from this origin
and blob: (the input and result videos), requests only to this origin, never framed. It talks
to the public API with the token the user typed, kept in sessionStorage.
Uploads: gateway/studio_uploads.py (signed links, local copies, janitor).
"""

from __future__ import annotations

import asyncio
import uuid
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qsl

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage
from pydantic import ValidationError

from common.settings import Settings
from gateway.auth import require_owner
from gateway.bounded import BodyTooLarge, FormBudget, read_body
from gateway.departures import client_gone
from gateway.errors import MaskApiError
from gateway.keys import SETTINGS, STORAGE
from gateway.limits import check_rate
from gateway.schemas.requests import StudioUploadForm
from gateway.studio_uploads import UPLOADS_PATH, signed_link, upload_file, verify
from gateway.video.geometry import display_size
from gateway.video.intake import fetch_and_probe
from gateway.video.probe import MediaError, VideoInfo, probe
from gateway.video.run import expected_frames

routes = web.RouteTableDef()

_ASSETS = resources.files("gateway") / "studio"
_STATIC = {"studio.js": "text/javascript", "studio.css": "text/css"}
_CHUNK = 1 << 16
# Containers a browser may play as they are; anything else is offered as a download.
_MEDIA_TYPES = {"mov,mp4,m4a,3gp,3g2,mj2": "video/mp4", "matroska,webm": "video/webm", "gif": "image/gif"}
_MEDIA_TYPE_FILE = "media_type"


def page_headers(settings: Settings) -> dict[str, str]:
    """Security headers of the page and its assets (see the module docstring)."""
    base = settings.base_url
    csp = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        f"media-src 'self' blob: {base}; connect-src 'self' {base}; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-cache",
    }


@routes.get("/studio")
async def studio_page(request: web.Request) -> web.Response:
    html = (_ASSETS / "index.html").read_text(encoding="utf-8")
    return web.Response(
        text=html, content_type="text/html", charset="utf-8", headers=page_headers(request.app[SETTINGS])
    )


@routes.get("/studio/static/{name}")
async def studio_asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _STATIC:
        raise MaskApiError(404, "Not Found", "No such file of the studio page.")
    return web.Response(
        text=(_ASSETS / name).read_text(encoding="utf-8"),
        content_type=_STATIC[name],
        charset="utf-8",
        headers=page_headers(request.app[SETTINGS]),
    )


def _media_type(info: VideoInfo) -> str:
    return _MEDIA_TYPES.get(info.container, "application/octet-stream")


def video_facts(info: VideoInfo, settings: Settings) -> dict[str, object]:
    """The StudioUpload fields that describe the video (see gateway/schemas/responses.py)."""
    width, height = display_size(info.width, info.height, info.rotation)
    limit_s = settings.keypoints_max_duration_s
    needs_trim = info.duration_s > limit_s + 1e-3
    return {
        "width": width,
        "height": height,
        "fps": round(float(info.fps), 3),
        "duration_s": round(info.duration_s, 3),
        "frame_count": expected_frames(info, limit_s if needs_trim else None),
        "needs_auto_trim": needs_trim,
    }


async def _save_part(part: BodyPartReader, dest: Path, limit: int) -> None:
    size = 0
    with dest.open("wb") as out:
        while chunk := await part.read_chunk(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise MaskApiError(413, "Payload Too Large", f"The video exceeds {limit} bytes.")
            await asyncio.to_thread(out.write, chunk)


async def _receive(request: web.Request, dest: Path, settings: Settings) -> str | None:
    """Writes a `file` part to `dest`, or returns the `video` URL field (None: a file came).
    Read within the forms' bounds (parts, text bytes: 413 past them) and MAX_UPLOAD_BYTES."""
    try:
        if request.content_type == "application/x-www-form-urlencoded":  # a form with the URL only
            raw = await read_body(request, settings.form_max_text_bytes)
            fields = dict(parse_qsl(raw.decode("utf-8", "replace"), max_num_fields=settings.form_max_parts))
            return _url_field(fields.get("video"))
        if not request.content_type.startswith("multipart/"):
            raise MaskApiError(
                415,
                "Unsupported Media Type",
                "Send multipart/form-data with a 'file' part or a 'video' URL field.",
            )
        url: str | None = None
        budget = FormBudget(settings.form_max_parts, settings.form_max_text_bytes)
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            budget.part()
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "file" and part.filename is not None:
                await _save_part(part, dest, settings.max_upload_bytes)
                return None
            text = await budget.text(part, settings.form_max_field_bytes)
            if part.name == "video":
                url = text
    except BodyTooLarge as exc:
        raise MaskApiError(413, "Payload Too Large", str(exc)) from None
    except (ValueError, AssertionError, BadHttpMessage) as exc:  # malformed framing or headers
        if client_gone(request, exc):
            raise  # the error middleware logs the departure as 499
        raise MaskApiError(400, "Bad Request", "Malformed form body.") from None
    return _url_field(url)


def _url_field(url: object) -> str:
    if url is None:
        raise MaskApiError(
            422, "Invalid request data", "Send the video in a 'file' part or a 'video' URL field."
        )
    try:
        return str(StudioUploadForm.model_validate({"video": str(url)}).video).strip()
    except ValidationError:
        raise MaskApiError(422, "Invalid request data", "Field 'video' must be an http(s) URL.") from None


@routes.post(UPLOADS_PATH)
async def upload(request: web.Request) -> web.Response:
    """Stores a video (uploaded, or fetched once from `video`) and answers a signed link to it
    with the facts the page needs (StudioUpload). 415/413/422 as the mask endpoints answer them."""
    owner = require_owner(request, "mask")
    await check_rate(request, owner, "mask")
    settings, storage = request.app[SETTINGS], request.app[STORAGE]
    upload_id = str(uuid.uuid4())
    storage.uploads_dir(upload_id)
    dest = upload_file(settings, upload_id)
    try:
        url = await _receive(request, dest, settings)
        try:
            if url is not None:  # downloaded and probed as the mask endpoints do it
                info = await fetch_and_probe(url, dest, settings, max_duration_s=None)
            else:
                info = await asyncio.to_thread(probe, dest, max_side=settings.video_max_side)
        except MediaError as exc:
            raise MaskApiError(exc.status, exc.message, exc.details) from None
        (dest.parent / _MEDIA_TYPE_FILE).write_text(_media_type(info))
    except BaseException:
        await storage.remove_uploads(upload_id)
        raise
    link, expires = signed_link(settings, upload_id)
    body = {
        "video": link,
        "video_expires_at": expires.isoformat().replace("+00:00", "Z"),
        **video_facts(info, settings),
    }
    return web.json_response(body, status=201)


@routes.get(UPLOADS_PATH + "/{upload_id}")
async def download(request: web.Request) -> web.StreamResponse:
    """The stored video through its signed link (the signature is the credential)."""
    settings = request.app[SETTINGS]
    upload_id, query = request.match_info["upload_id"], request.query
    if not verify(settings, upload_id, query.get("expires", ""), query.get("sig", "")):
        raise MaskApiError(403, "Forbidden", "The upload link is invalid or has expired.")
    path = upload_file(settings, upload_id)
    if not path.is_file():
        raise MaskApiError(404, "Not Found", "The upload no longer exists.")
    media_type = (path.parent / _MEDIA_TYPE_FILE).read_text().strip()
    return web.FileResponse(
        path, headers={"Content-Type": media_type, "Cache-Control": "private, max-age=60"}
    )
