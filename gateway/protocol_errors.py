"""Requests refused by aiohttp's HTTP parser, answered in the service's own error format.

A header line over 8190 bytes, too many headers, a request line too long, a negative
Content-Length, Content-Length beside Transfer-Encoding: aiohttp answers these before any route,
middleware or response signal runs, from `RequestHandler.handle_error`, with a text/plain body
that quotes the offending bytes back, its own `Server: Python/x aiohttp/y` and no X-Request-ID.
`install()` makes that method answer as every other error of the gateway does: the family's
JSON body (by path; the parser's dummy request is "/", the background family), a fresh
X-Request-ID, our `Server` name, no client bytes echoed, and the refusal logged at INFO (a bad
request is not an error of ours). Server errors (5xx) keep aiohttp's logging of the exception.

aiohttp has no public hook for this (the handler class is built inside `web.Server`), so the one
method is wrapped, once, at gateway start; tests/test_bounded_input.py sends such requests to a
running gateway and fails if an aiohttp upgrade changes the method's contract.
"""

from __future__ import annotations

import logging
import uuid

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from gateway.errors import api_error, family_of
from gateway.identity import SERVER

log = logging.getLogger("gateway.protocol")

_original = RequestHandler.handle_error
TOO_LONG = "The request line or headers are over the size limit."
NOT_HTTP = "The request is not valid HTTP."


def _handle_error(
    self: RequestHandler,
    request: BaseRequest,
    status: int = 500,
    exc: BaseException | None = None,
    message: str | None = None,
) -> web.StreamResponse:
    if status >= 500:
        _original(self, request, status, exc, message)  # logs the exception; raises if sent already
    else:
        if request.writer.output_size > 0:  # as aiohttp: a response has begun, nothing can follow
            raise ConnectionError("a response was sent already; cannot send the parser's refusal")
        log.info("request refused by the HTTP parser", extra={"status": status, "error": type(exc).__name__})
    request_id = str(uuid.uuid4())
    details = None
    if status < 500:  # a fixed sentence: the parser's own message quotes the request's bytes
        too_long = isinstance(exc, LineTooLong) or status == 431
        details = TOO_LONG if too_long else NOT_HTTP
    response = api_error(family_of(request.path), status, details=details).response(request_id)
    response.headers["X-Request-ID"] = request_id
    response.headers["Server"] = SERVER
    response.force_close()
    return response


def install() -> None:
    """Route aiohttp's parser refusals through `_handle_error` (idempotent)."""
    RequestHandler.handle_error = _handle_error  # type: ignore[method-assign]
