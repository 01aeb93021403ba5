"""Streams a job's result to the client from wherever it lives (local disk or the object store),
for every endpoint that hands out result files (/video/result, /image/hd/result, /results)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

from aiohttp import web

from gateway.object_store import StoreUnavailable
from gateway.storage import ResultGone, Storage, StoredResult


async def send_result(
    request: web.Request,
    storage: Storage,
    job_id: str,
    result: StoredResult,
    headers: Mapping[str, str],
    *,
    gone: Callable[[], Exception],
    delete_after: bool,
) -> web.StreamResponse:
    """Streams `result` with `headers`; `gone()` is the endpoint's error when it was removed.
    `delete_after`: removed once its last byte was handed to the transport (an interrupted
    download keeps it for a retry; a client that has the whole file can rely on it being gone).
    Raises StoreUnavailable (503) when the store cannot be read before the first byte."""
    try:
        async with storage.open_result(job_id, result) as opened:
            response = web.StreamResponse(headers=dict(headers))
            response.content_length = opened.size
            await response.prepare(request)
            async for chunk in opened.chunks:
                await response.write(chunk)
    except ResultGone:
        raise gone() from None
    if delete_after:
        # a store that fails now leaves the object to the janitor (RESULT_TTL_S); the client has it
        with contextlib.suppress(OSError, StoreUnavailable):
            await storage.delete(job_id)
    await response.write_eof()
    return response
