"""Slow and vanished clients: bounded time for headers and bodies, and a departure logged as one.

* Headers and idle connections: aiohttp's keep-alive timer (`HTTP_IDLE_TIMEOUT_S`, passed to
  run_app) closes a connection that has not completed a request's headers within that time of
  opening or of the previous response, which covers an idle socket and headers trickled a line
  at a time alike.
* Bodies: `body_deadline_middleware` watches how many body bytes have arrived while the handler
  runs; once a window (`HTTP_BODY_WINDOW_S`) passes with fewer than `HTTP_BODY_MIN_BYTES_PER_S`
  x window new bytes and the body is not complete, the client gets a 408 in the endpoint's error
  format (with its X-Request-ID) and the connection is closed (the handler, blocked on the read,
  then fails on a closed connection). Written to the transport directly: the handler owns the
  response object and is still waiting for the body.
* A client that goes away mid-request is not an error of ours: `departures.client_gone` tells
  the error middleware to log it as status 499 (nginx's "client closed request") at INFO, not
  as a 500 with a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.departures import BODY_TIMED_OUT
from gateway.errors import REQUEST_ID, api_error, family_of
from gateway.identity import SERVER
from gateway.keys import SETTINGS

log = logging.getLogger("gateway.slow_clients")


def _timeout_response(request: web.Request) -> bytes:
    """The whole 408 response: the family's error body, X-Request-ID, Server, Connection: close."""
    request_id = request.get(REQUEST_ID, "")
    body = json.dumps(api_error(family_of(request.path), 408).body(request_id)).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Request-ID: {request_id}\r\n"
        f"Server: {SERVER}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


async def _watch_body(request: web.Request, window_s: float, min_bytes: float) -> None:
    content = request.content
    seen = content.total_bytes
    while True:
        await asyncio.sleep(window_s)
        if content.is_eof():
            return
        now = content.total_bytes
        if now - seen < min_bytes:
            request[BODY_TIMED_OUT] = True
            transport = request.transport
            if transport is not None and not transport.is_closing():
                transport.write(_timeout_response(request))
                transport.close()
            log.info("request body too slow", extra={"path": request.path, "received_bytes": now})
            return
        seen = now


@web.middleware
async def body_deadline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.can_read_body:
        return await handler(request)
    settings = request.app[SETTINGS]
    window_s = settings.http_body_window_s
    watcher = asyncio.create_task(
        _watch_body(request, window_s, settings.http_body_min_bytes_per_s * window_s)
    )
    try:
        return await handler(request)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
