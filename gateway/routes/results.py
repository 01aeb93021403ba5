"""GET /results/{job_id}?expires=...&sig=...: result download through a signed, expiring link.

The signature is the credential (no api_token), so links can be handed to other systems. Errors
are in the mask family: these links are what /status reports as mask_url.
"""

from __future__ import annotations

from aiohttp import web

from gateway.errors import MaskApiError
from gateway.jobs import JobStatus
from gateway.keys import JOBS, STORAGE
from gateway.result_download import send_result

routes = web.RouteTableDef()


@routes.get("/results/{job_id}")
async def get_result(request: web.Request) -> web.StreamResponse:
    job_id = request.match_info["job_id"]
    query = request.query
    if not request.app[STORAGE].verify(job_id, query.get("expires", ""), query.get("sig", "")):
        raise MaskApiError(403, "Forbidden", "The result link is invalid or has expired.")
    record = await request.app[JOBS].get(job_id)
    result = record.result if record is not None and record.status == JobStatus.COMPLETED else None
    if result is None:
        raise _gone()
    headers = {
        "Content-Type": result.media_type,
        "Content-Disposition": f'attachment; filename="{result.filename}"',
        "Cache-Control": "no-cache",
    }
    # fetched any number of times until the link expires: never deleted here
    return await send_result(
        request, request.app[STORAGE], job_id, result, headers, gone=_gone, delete_after=False
    )


def _gone() -> MaskApiError:
    return MaskApiError(404, "Not Found", "The result no longer exists.")
