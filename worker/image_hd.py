"""Job `image_hd` (POST /image/hd/submit/v1): the image pipeline on an uploaded photo of up to
HD_MAX_PIXELS.

The gateway wrote the input to job_params.input_path and the ImageHdParams into the job record;
the result PNG is stored atomically as the job's result. The wrapper in worker.main owns status
on crashes, the concurrency slot and removing the upload and temp dir.
"""

from __future__ import annotations

import asyncio

from gateway.images.params import hd_limits
from gateway.images.process import process_image
from gateway.job_params import ImageHdParams, input_path
from gateway.jobs import JobRecord
from triton_models.decode import ImageTooLarge, InvalidImage
from worker.context import JobContext

# Progress of an image job in steps of its pipeline (an image has no frames to count): decode,
# matte, compose and encode run as one call, then the result is written and stored.
STEPS = 5
PIPELINE_DONE_STEP = 4


def result_filename(job_id: str) -> str:
    return f"processed_{job_id}.png"


async def run(job: JobContext, record: JobRecord, params: ImageHdParams) -> None:
    """Decode, matte and compose the upload; store the PNG, or fail 400 on a corrupt body."""
    jobs, storage, job_id = job.jobs, job.storage, record.id
    source = input_path(storage, job_id)
    await jobs.set_progress(job_id, 0, STEPS)
    try:
        png = await process_image(job.triton, source, params.image, hd_limits(job.settings))
    except (InvalidImage, ImageTooLarge) as exc:
        # The gateway checked the header; a body that is truncated or corrupt shows only now.
        await jobs.fail(job_id, 400, "Invalid image file", str(exc)[:200])
        return
    await jobs.set_progress(job_id, PIPELINE_DONE_STEP, STEPS)
    out = storage.new_temp_dir(job_id) / "result.png"
    await asyncio.to_thread(out.write_bytes, png)
    result = await storage.store(job_id, out, result_filename(job_id), "image/png")
    await jobs.complete(job_id, result)
