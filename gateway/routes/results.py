"""GET /results/{job_id}?expires=...&sig=...: result download through a signed, expiring link.

The signature is the credential (no api_token), so links can be handed to other systems. Errors
are in the mask family: these links are what /status reports as mask_url.
"""

from __future__ import annotations

from aiohttp import web

from gateway.errors import MaskApiError
from gateway.jobs import JobStatus
from gateway.keys import JOBS, STORAGE

routes = web.RouteTableDef()


@routes.get("/results/{job_id}")
async def get_result(request: web.Request) -> web.StreamResponse:
    job_id = request.match_info["job_id"]
    query = request.query
    if not request.app[STORAGE].verify(job_id, query.get("expires", ""), query.get("sig", "")):
        raise MaskApiError(403, "Forbidden", "The result link is invalid or has expired.")
    record = await request.app[JOBS].get(job_id)
    result = record.result if record is not None and record.status == JobStatus.COMPLETED else None
    path = request.app[STORAGE].path_of(job_id, result.filename) if result is not None else None
    if result is None or path is None:
        raise MaskApiError(404, "Not Found", "The result no longer exists.")
    return web.FileResponse(
        path,
        headers={
            "Content-Type": result.media_type,
            "Content-Disposition": f'attachment; filename="{result.filename}"',
            "Cache-Control": "no-cache",
        },
    )
