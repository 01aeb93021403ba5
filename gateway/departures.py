"""A client that went away (or was cut off for a body too slow) is not an error of ours.

A leaf module (no gateway imports) so the error middleware, the slow-client watchdog and the
routes that catch broad exceptions can all ask the same question without an import cycle.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client closed the connection first"
BODY_TIMED_OUT = "body_timed_out"  # request key: the watchdog cut the connection


def client_gone(request: web.Request, exc: BaseException) -> bool:
    """True when `exc` comes from the client's connection going away (or being cut by the body
    watchdog), not from our own code."""
    if request.get(BODY_TIMED_OUT):
        return True
    transport = request.transport
    closed = transport is None or transport.is_closing()
    return closed and isinstance(exc, OSError | BadHttpMessage | ValueError | asyncio.CancelledError)
