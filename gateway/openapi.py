"""The OpenAPI 3.1 document of the gateway, built from the models the handlers validate with.

Request fields come from gateway.schemas.requests (what the handlers validate with), bodies from
gateway.schemas.responses; this module only says which operation takes and answers which model,
with which status. `tests/test_openapi.py` checks the live service against the result
(schemathesis) and that every route the app serves is in it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from common.settings import Settings
from gateway.errors import Family
from gateway.schemas import requests as rq
from gateway.schemas import responses as rs

REF = "#/components/schemas/{model}"
REQUEST_ID_HEADER = {
    "description": "This request's id: the client's own when it sent a valid one (1-128 of "
    "A-Z a-z 0-9 . _ : - , starting with a letter or digit), else a UUID the gateway chose. "
    "Every log line of the request (and of a job it submitted) carries it.",
    "schema": {"type": "string"},
}
RETRY_AFTER_HEADER = {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}
_PNG = {"image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}}}


@dataclass(frozen=True)
class Answer:
    """One documented response: JSON models (several: any one of them), or a binary media type."""

    description: str
    models: tuple[type[BaseModel], ...] = ()
    content: dict[str, Any] | None = None  # a non-JSON body, as OpenAPI's `content`
    headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    tag: str
    family: Family | None  # None: no api_token (health, signed links, the document itself)
    answers: dict[int, Answer]
    json_body: type[BaseModel] | None = None
    form_body: type[BaseModel] | None = None
    files: dict[str, str] = field(default_factory=dict)  # form file parts -> description
    required_files: tuple[str, ...] = ()
    path_params: dict[str, str] = field(default_factory=dict)
    query_params: dict[str, str] = field(default_factory=dict)
    description: str = ""


def _mask_errors(*statuses: int) -> dict[int, Answer]:
    texts = {
        400: "Malformed JSON, or the video could not be downloaded.",
        403: "Missing or invalid api_token.",
        404: "No such job for this api_token.",
        405: "Method not allowed.",
        413: "The body or the input video is too large.",
        415: "Not application/json, or a container/codec the service does not read.",
        422: "A field is missing or invalid, or the video breaks a limit.",
        429: "Rate, polling or concurrency limit reached, or the queue is full (see Retry-After).",
        500: "Internal error.",
        503: "A backend (Redis, Triton) is unavailable; retry later.",
    }
    return {
        s: Answer(texts[s], (rs.MaskError,), headers=("Retry-After",) if s in (429, 503) else ())
        for s in statuses
    }


def _bg_errors(*statuses: int) -> dict[int, Answer]:
    texts = {
        400: "The input or a field is refused (the message says why).",
        401: "Missing or invalid api_token.",
        413: "The body is too large.",
        415: "Not multipart/form-data (or a form without file).",
        422: "Invalid request data.",
        429: "Rate or concurrency limit reached, or the queue is full (see Retry-After).",
        500: "Internal error.",
        503: "A backend (Redis, Triton) is unavailable; retry later.",
    }
    return {
        s: Answer(
            texts[s],
            # the document's video part answers {"detail"}, its image part {"message"}
            (rs.BgMessage, rs.BgDetail) if s in (400, 413, 415, 500) else (rs.BgMessage,),
            headers=("Retry-After",) if s in (429, 503) else (),
        )
        for s in statuses
    }


_MASK_SUBMIT = _mask_errors(400, 403, 405, 413, 415, 422, 429, 500, 503)
_BG_SUBMIT = _bg_errors(400, 401, 413, 415, 422, 429, 500, 503)
_JOB_ID = {"uuid": "The job id from the submit's 202 answer."}
_IMAGE_FILE = {"file": "The image (JPEG, PNG, WebP, HEIC, GIF, BMP, TIFF); or send image_url."}


def _image_operations() -> list[Operation]:
    ops = []
    for operation, what in (
        ("matte", "the subject on a transparent background"),
        ("blur", "the subject over its own background, blurred (blur_radius)"),
        ("color", "the subject over a colour (bg_color, white by default)"),
        ("gradient", "the subject over a gradient (gradient_start, gradient_end, gradient_direction)"),
        ("shadow", "the subject with a drop shadow (shadow_*; bg_color: transparent when absent)"),
    ):
        ops.append(
            Operation(
                "post",
                f"/image/{operation}/v1",
                f"Returns {what}, as PNG",
                "images",
                "bg",
                {200: Answer("The processed image.", content=_PNG, headers=("Cache-Control",)), **_BG_SUBMIT},
                form_body=rq.ImageForm,
                files=_IMAGE_FILE,
                description="Images up to 2048x2048 pixels; larger ones: /image/hd/submit/v1.",
            )
        )
    return ops


def operations(settings: Settings) -> list[Operation]:
    """Every public operation of the gateway."""
    mask_submit_202 = Answer("Job accepted.", (rs.MaskJobAccepted,))
    video_media = {
        media: {"schema": {"type": "string", "contentMediaType": media}}
        for media in ("video/mp4", "video/webm", "video/quicktime")
    }
    return [
        Operation(
            "post",
            "/foreground_mask",
            "Starts a foreground mask video job",
            "mask",
            "mask",
            {202: mask_submit_202, **_MASK_SUBMIT},
            json_body=rq.ForegroundMaskRequest,
            description=f"Videos up to {settings.video_max_duration_s:g} s and "
            f"{settings.video_max_side}x{settings.video_max_side}. Poll status_url.",
        ),
        Operation(
            "post",
            "/mask_by_key_points",
            "Starts a mask video job of the object marked by key points",
            "mask",
            "mask",
            {202: mask_submit_202, **_MASK_SUBMIT},
            json_body=rq.MaskByKeyPointsRequest,
            description=f"Videos up to {settings.keypoints_max_duration_s:g} s (longer: set auto_trim) "
            f"and {settings.keypoints_max_short_side}p.",
        ),
        Operation(
            "post",
            "/mask_by_key_points/preview",
            "The mask of the object marked by key points on one frame, at once (no job)",
            "mask",
            "mask",
            {
                200: Answer("The frame and its mask.", (rs.KeyPointPreview,), headers=("Cache-Control",)),
                **_MASK_SUBMIT,
            },
            json_body=rq.KeyPointPreviewRequest,
            description="The /mask_by_key_points job's prompt frame and mask, synchronously: the same "
            "limits and checks, the same keypoint_mask model. Admitted like the image endpoints "
            f"({settings.image_max_in_flight} at once per gateway process, "
            f"{settings.image_max_in_flight_per_token} per api_token; 429 beyond). "
            "Key points empty: the frame only.",
        ),
        Operation(
            "post",
            "/studio/uploads",
            "Stores a video (upload or URL) and answers a signed link to it, for the mask endpoints",
            "studio",
            "mask",
            {
                201: Answer("Stored.", (rs.StudioUpload,)),
                **_mask_errors(400, 403, 405, 413, 415, 422, 429, 500, 503),
            },
            form_body=rq.StudioUploadForm,
            files={"file": "The video; or send the video field (a URL) instead."},
            description=f"The link expires after {settings.signed_link_ttl_s} s; the file is removed "
            "by the workers' janitor once stale.",
        ),
        Operation(
            "get",
            "/studio/uploads/{upload_id}",
            "Downloads a stored video through its signed link",
            "studio",
            None,
            {
                200: Answer(
                    "The video as uploaded.",
                    content={"application/octet-stream": {"schema": {"type": "string"}}},
                    headers=("Cache-Control",),
                ),
                **_mask_errors(403, 404, 500),
            },
            path_params={"upload_id": "From the link."},
            query_params={"expires": "From the link.", "sig": "From the link."},
        ),
        Operation(
            "get",
            "/studio",
            "A page to place key points on a video and run the mask and background jobs",
            "studio",
            None,
            {200: Answer("HTML page.", content={"text/html": {"schema": {"type": "string"}}})},
        ),
        Operation(
            "get",
            "/studio/static/{name}",
            "The studio page's script and style sheet",
            "studio",
            None,
            {
                200: Answer(
                    "The file.",
                    content={
                        "text/javascript": {"schema": {"type": "string"}},
                        "text/css": {"schema": {"type": "string"}},
                    },
                ),
                **_mask_errors(404),
            },
            path_params={"name": "studio.js or studio.css."},
        ),
        Operation(
            "get",
            "/status/{request_id}",
            "A mask job's status; mask_url once completed",
            "mask",
            "mask",
            {200: Answer("The job's state.", (rs.StatusDocument,)), **_mask_errors(403, 404, 429, 500, 503)},
            path_params={"request_id": "The job id (request_id of the submit's 202 answer)."},
        ),
        Operation(
            "get",
            "/results/{job_id}",
            "Downloads a mask job's result through its signed link (mask_url)",
            "mask",
            None,
            {
                200: Answer(
                    "The result video (any number of times until the link expires).",
                    content={"application/octet-stream": {"schema": {"type": "string"}}},
                    headers=("Content-Disposition", "Cache-Control"),
                ),
                **_mask_errors(403, 404, 500, 503),
            },
            path_params={"job_id": "The job id."},
            query_params={"expires": "From mask_url.", "sig": "From mask_url."},
        ),
        *_image_operations(),
        Operation(
            "post",
            "/image/generate/v1",
            "Returns the subject of a transparent image over a generated backdrop, as PNG",
            "images",
            "bg",
            {200: Answer("The composed image.", content=_PNG, headers=("Cache-Control",)), **_BG_SUBMIT},
            form_body=rq.GenerateForm,
            files={"file": "A PNG/WebP image with a transparent background; or send image_url."},
        ),
        Operation(
            "post",
            "/image/hd/submit/v1",
            "Starts an image operation on a large image (a job)",
            "images",
            "bg",
            {202: Answer("Job accepted.", (rs.HdAccepted,)), **_BG_SUBMIT},
            form_body=rq.HdImageForm,
            files=_IMAGE_FILE,
            description=f"Images up to {settings.hd_max_pixels} pixels.",
        ),
        Operation(
            "get",
            "/image/hd/result/{uuid}",
            "An HD job's result (removed after one complete download)",
            "images",
            "bg",
            {
                200: Answer("The processed image.", content=_PNG, headers=("Cache-Control",)),
                202: Answer("Still processing, with progress when known.", (rs.HdProcessing,)),
                404: Answer(
                    "No such task, or its result was already downloaded (results are removed after "
                    "one complete download; then X-Result-Removed says so).",
                    (rs.BgDetail,),
                    headers=("X-Result-Removed",),
                ),
                **_bg_errors(401, 429, 500, 503),
            },
            path_params=_JOB_ID,
        ),
        Operation(
            "post",
            "/video/submit/v1",
            "Starts a video matte job (colour, image or transparent background)",
            "video",
            "bg",
            {202: Answer("Job accepted (with a warning when trimmed).", (rs.VideoAccepted,)), **_BG_SUBMIT},
            form_body=rq.VideoSubmitForm,
            files={"file": "The video.", "bg_image": "A background image."},
            required_files=("file",),
            description=f"Videos longer than {settings.video_submit_trim_s:g} s are trimmed.",
        ),
        Operation(
            "get",
            "/video/result/{uuid}",
            "A video job's result (removed after one complete download)",
            "video",
            "bg",
            {
                200: Answer(
                    "The video file, or a JSON document with upload_link.",
                    (rs.VideoUploaded,),
                    content=video_media,
                    headers=("Content-Disposition", "Cache-Control"),
                ),
                202: Answer("Still processing, with progress when known.", (rs.VideoProcessing,)),
                404: Answer(
                    "No such task, or its result was already downloaded (results are removed after "
                    "one complete download; then X-Result-Removed says so).",
                    (rs.VideoTaskNotFound, rs.BgDetail),
                    headers=("X-Result-Removed",),
                ),
                500: Answer("The job failed.", (rs.VideoFailed, rs.BgMessage, rs.BgDetail)),
                **_bg_errors(401, 429, 503),
            },
            path_params=_JOB_ID,
        ),
        Operation("get", "/healthz", "Liveness", "operations", None, {200: Answer("Alive.", (rs.Health,))}),
        Operation(
            "get",
            "/readyz",
            "Readiness: Triton, every model the gateway calls, and Redis",
            "operations",
            None,
            {200: Answer("Ready.", (rs.Readiness,)), 503: Answer("Not ready.", (rs.Readiness,))},
        ),
        Operation(
            "get",
            "/metrics",
            "Prometheus metrics of the gateway (and of the workers, see docs/operations.md)",
            "operations",
            None,
            {200: Answer("Prometheus text format.", content={"text/plain": {"schema": {"type": "string"}}})},
        ),
        Operation(
            "get",
            "/openapi.json",
            "This document",
            "operations",
            None,
            {200: Answer("OpenAPI 3.1.", content={"application/json": {"schema": {"type": "object"}}})},
        ),
        Operation(
            "get",
            "/docs",
            "Interactive documentation of this document (Swagger UI, served offline)",
            "operations",
            None,
            {200: Answer("HTML page.", content={"text/html": {"schema": {"type": "string"}}})},
        ),
    ]


def _schema_of(models: tuple[type[BaseModel], ...]) -> dict[str, Any]:
    refs = [{"$ref": REF.format(model=m.__name__)} for m in models]
    return refs[0] if len(refs) == 1 else {"oneOf": refs}


def _answer(answer: Answer) -> dict[str, Any]:
    content: dict[str, Any] = dict(answer.content or {})
    if answer.models:
        content["application/json"] = {"schema": _schema_of(answer.models)}
    headers = {"X-Request-ID": REQUEST_ID_HEADER}
    for name in answer.headers:
        headers[name] = RETRY_AFTER_HEADER if name == "Retry-After" else {"schema": {"type": "string"}}
    out: dict[str, Any] = {"description": answer.description, "headers": headers}
    if content:
        out["content"] = content
    return out


def _form_schema(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    assert op.form_body is not None
    fields = components[op.form_body.__name__]
    properties = {
        **{name: {"type": "string", "contentMediaType": "application/octet-stream", "description": text}
           for name, text in op.files.items()},
        **fields.get("properties", {}),
    }  # fmt: skip
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if op.required_files:
        schema["required"] = list(op.required_files)
    return schema


def _operation(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "description": text, "schema": {"type": "string"}}
        for name, text in op.path_params.items()
    ]
    params += [
        {"name": name, "in": "query", "required": True, "description": text, "schema": {"type": "string"}}
        for name, text in op.query_params.items()
    ]
    params.append(
        {"name": "X-Request-ID", "in": "header", "required": False, "schema": {"type": "string"},
         "description": REQUEST_ID_HEADER["description"]}
    )  # fmt: skip
    out: dict[str, Any] = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": op.method + re.sub(r"[^A-Za-z0-9]+", "_", op.path).rstrip("_"),
        "parameters": params,
        "responses": {str(s): _answer(a) for s, a in sorted(op.answers.items())},
    }
    if op.description:
        out["description"] = op.description
    if op.family is not None:
        out["security"] = [{"api_token": []}]
    if op.json_body is not None:
        schema = {"$ref": REF.format(model=op.json_body.__name__)}
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    if op.form_body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"multipart/form-data": {"schema": _form_schema(op, components)}},
        }
    return out


def _all_models(ops: list[Operation]) -> list[type[BaseModel]]:
    seen: dict[str, type[BaseModel]] = {}
    for op in ops:
        for model in (op.json_body, op.form_body, *(m for a in op.answers.values() for m in a.models)):
            if model is not None:
                seen[model.__name__] = model
    return list(seen.values())


@functools.cache
def document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document (a dict, JSON-ready). Cached: it depends on the settings only."""
    ops = operations(settings)
    models = _all_models(ops)
    _, defs = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    components = defs.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(op.path, {})[op.method] = _operation(op, components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Matting service",
            "version": "1",
            "description": "Background removal and video matting. Two error families: the mask "
            "API's error object and the background API's message/detail bodies (the customer "
            "documents). Job results: the mask API's mask_url may be fetched any number of times "
            "until it expires; the background API's HD and video results are removed after one "
            "complete download.",
        },
        "servers": [{"url": settings.base_url}],
        "tags": [{"name": t} for t in ("mask", "images", "video", "studio", "operations")],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"api_token": {"type": "apiKey", "in": "header", "name": "api_token"}},
        },
    }
