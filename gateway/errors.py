"""The two documented error families, rendered in one place.

* mask family (seeds foreground_mask.txt, mask_by_key_points.txt):
  ``{"error": {"code": <HTTP status>, "message", "details"}, "request_id"}``
* background family (seeds background_api.txt): the body exactly as the document shows it,
  ``{"message": ...}`` or ``{"detail": ...}``.

Which family a failure belongs to follows from the path, so aiohttp's own 404/405/413 and unknown
exceptions look like the endpoint the client called.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Literal

from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.departures import BODY_TIMED_OUT, CLIENT_CLOSED_REQUEST, client_gone
from gateway.unavailable import ServiceUnavailable

log = logging.getLogger("gateway.errors")

# The id every response and error body carries (X-Request-ID), set first by the app middleware.
REQUEST_ID = web.RequestKey("request_id", str)
# True when the gateway made REQUEST_ID (a UUID4), False when the client chose it.
REQUEST_ID_IS_OURS = web.RequestKey("request_id_is_ours", bool)


def job_id_for(request: web.Request) -> str | None:
    """The id a job submitted by `request` takes: the request's own when the gateway made it (so
    request_id in the 202, X-Request-ID and the job id are one value); None (a fresh one) when the
    client chose its X-Request-ID, which may repeat."""
    return request[REQUEST_ID] if request.get(REQUEST_ID_IS_OURS) else None


Family = Literal["mask", "bg"]

MASK_ENDPOINTS = ("/foreground_mask", "/mask_by_key_points")
MASK_PATH_PREFIXES = ("/status/", "/results/", "/mask_by_key_points/", "/studio")

# Short, fixed texts: never an exception's own message, which can carry paths or internals.
_REASONS: dict[int, tuple[str, str]] = {
    400: ("Bad Request", "The request could not be understood."),
    401: ("Unauthorized", "A valid api_token header is required."),
    403: ("Forbidden", "A valid api_token header is required."),
    404: ("Not Found", "The requested resource does not exist."),
    405: ("Method Not Allowed", "This endpoint does not support the request method."),
    408: ("Request Timeout", "The request body arrived too slowly; send it again at a steady pace."),
    413: ("Payload Too Large", "The request body exceeds the size limit."),
    415: ("Unsupported Media Type", "The request content type is not supported."),
    422: ("Unprocessable Entity", "Invalid request data."),
    429: ("Too Many Requests", "Slow down and retry later."),
    500: ("Internal Server Error", ""),
    503: ("Service Unavailable", "A backend service is temporarily unavailable; retry later."),
}


class ApiError(Exception):
    """Base of both families: an HTTP status, a body builder and optional extra headers."""

    def __init__(self, status: int, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.headers: dict[str, str] = dict(headers or {})

    def body(self, request_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def response(self, request_id: str) -> web.Response:
        return web.json_response(self.body(request_id), status=self.status, headers=self.headers)


class MaskApiError(ApiError):
    def __init__(
        self, status: int, message: str, details: str = "", headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(status, headers)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return f"{self.status} {self.message}: {self.details}"

    def body(self, request_id: str) -> dict[str, Any]:
        return {
            "error": {"code": self.status, "message": self.message, "details": self.details},
            "request_id": request_id,
        }


class BgApiError(ApiError):
    def __init__(
        self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(status, headers)
        self.payload = dict(body)

    def __str__(self) -> str:
        return f"{self.status} {self.payload}"

    def body(self, request_id: str) -> dict[str, Any]:
        return dict(self.payload)


RESULT_REMOVED_HEADER = "X-Result-Removed"


def result_removed(detail: str) -> BgApiError:
    """The background API's 404 for a finished job whose result file is gone: HD and video results
    are removed after one complete download. The body is the document's word for word; the
    X-Result-Removed header says why, so a client that downloads twice is not left guessing."""
    return BgApiError(404, {"detail": detail}, {RESULT_REMOVED_HEADER: "after its first complete download"})


def family_of(path: str) -> Family:
    path = path.rstrip("/") if path != "/" else path
    is_mask = path in MASK_ENDPOINTS or path.startswith(MASK_PATH_PREFIXES) or path in ("/status", "/results")
    return "mask" if is_mask else "bg"


def api_error(
    family: Family,
    status: int,
    message: str | None = None,
    details: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> ApiError:
    """One error in the caller's family; message/details default to the status' fixed texts.

    The background family carries only ``{"message": ...}`` (its documented generic shape), so
    there the explicit details, when given, are the message: a 429 says which limit and when to
    retry, not a bare "Too Many Requests".
    """
    reason, default_details = _REASONS.get(status, ("Error", ""))
    if family == "mask":
        return MaskApiError(
            status, message or reason, default_details if details is None else details, headers
        )
    return BgApiError(status, {"message": details or message or reason}, headers)


def _from_http_exception(family: Family, exc: web.HTTPException) -> ApiError:
    headers = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after"}}
    return api_error(family, exc.status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    family = family_of(request.path)
    request_id: str = request.get(REQUEST_ID, "")
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response(request_id)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and other non-errors raised as exceptions pass as they are
            raise
        return _from_http_exception(family, exc).response(request_id)
    except (ServiceUnavailable, RedisConnectionError, RedisTimeoutError) as exc:
        retry = getattr(exc, "retry_after_s", ServiceUnavailable.retry_after_s)
        log.warning(
            "backend unavailable", extra={"request_id": request_id, "error": f"{type(exc).__name__}: {exc}"}
        )
        return api_error(family, 503, headers={"Retry-After": str(retry)}).response(request_id)
    except (Exception, asyncio.CancelledError) as exc:
        if request.get(BODY_TIMED_OUT):  # the body watchdog has sent its 408: log what was sent
            log.info("request body too slow; answered 408", extra={"request_id": request_id})
            return web.Response(status=408)
        if client_gone(request, exc):  # nobody to answer: logged as 499, not as our error
            log.info("client closed the connection", extra={"request_id": request_id})
            return web.Response(status=CLIENT_CLOSED_REQUEST)
        if isinstance(exc, asyncio.CancelledError):
            raise
        log.exception("unhandled error", extra={"request_id": request_id})
        return api_error(family, 500).response(request_id)
