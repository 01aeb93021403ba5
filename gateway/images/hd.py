"""arq job `image_hd_job`: the image pipeline on an uploaded photo of up to HD_MAX_PIXELS.

The gateway wrote the input to storage.uploads_dir(job_id)/INPUT_NAME and the Params into the job
record; the result PNG is stored atomically as the job's result. The worker's job wrapper owns
status on crashes, the concurrency slot and removing the upload and temp dir.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from common.settings import Settings
from gateway.images.decode import ImageTooLarge, InvalidImage, Limits
from gateway.images.params import Params
from gateway.images.process import process_image
from gateway.jobs import JobStore
from gateway.storage import Storage
from gateway.triton import Triton

log = logging.getLogger("gateway.images.hd")

INPUT_NAME = "input"


def hd_limits(settings: Settings) -> Limits:
    return Limits(max_side=None, max_pixels=settings.hd_max_pixels)


def result_filename(job_id: str) -> str:
    return f"processed_{job_id}.png"


async def image_hd_job(ctx: dict[str, Any], job_id: str) -> None:
    settings: Settings = ctx["settings"]
    jobs: JobStore = ctx["jobs"]
    storage: Storage = ctx["storage"]
    triton: Triton = ctx["triton"]
    record = await jobs.get(job_id)
    if record is None:
        return
    params = Params.from_dict(record.params["params"])
    source = storage.uploads_dir(job_id) / INPUT_NAME
    try:
        png = await process_image(triton, source, params, hd_limits(settings))
    except (InvalidImage, ImageTooLarge) as exc:
        # The gateway checked the header; a body that is truncated or corrupt shows only now.
        await jobs.fail(job_id, 400, "Invalid image file", str(exc)[:200])
        return
    out = storage.new_temp_dir(job_id) / "result.png"
    await asyncio.to_thread(out.write_bytes, png)
    result = await storage.store(job_id, out, result_filename(job_id), "image/png")
    await jobs.complete(job_id, result)
