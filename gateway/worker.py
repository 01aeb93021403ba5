"""arq worker: settings, per-process clients and the job functions; `python -m gateway.worker`.

Job functions take `(ctx, job_id)` and read everything else from the job record. Each is wrapped
by `job_function`, which owns the parts every job needs the same way:

* status: marks the record processing, and failed (500) if the function raises or returns without
  completing or failing it, so no job ever hangs in "processing";
* re-runs after a dead worker: arq re-runs a job whose `arq:in-progress:<id>` key expired. arq sets
  that key for the whole job timeout; the wrapper shortens it to JOB_LEASE_S and refreshes it
  while the job runs, so a killed worker's job is picked up by another worker within about
  JOB_LEASE_S (+ poll delay) instead of after JOB_TIMEOUT_S. Consequence for job authors: keep
  the event loop responsive (CPU work in threads), and make functions safe to re-run (fresh temp
  dir, results written atomically, `complete` is a no-op on a finished record);
* tries: arq is allowed one try more than JOB_MAX_TRIES so that the wrapper, on that extra try,
  records the failure instead of arq dropping the job silently;
* transient Triton outages are retried with back-off while tries remain;
* the concurrency slot, temp dir and uploaded inputs are released once the job has ended.

SIGTERM: the worker stops taking jobs, lets running ones finish for JOB_COMPLETION_WAIT_S, then
cancels the rest, which arq re-queues for another worker.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from arq import Retry, cron
from arq.connections import RedisSettings
from arq.constants import in_progress_key_prefix
from arq.worker import run_worker

from common.settings import Settings
from gateway.app import setup_logging
from gateway.images.hd import image_hd_job
from gateway.jobs import JobStore
from gateway.limits import release_job_slot, slot_lifetime_s
from gateway.pipeline.jobs import video_mask_job, video_matte_job
from gateway.pipeline.keypoints_job import keypoint_mask_job
from gateway.storage import Storage, is_job_id
from gateway.triton import Triton, TritonUnavailable

log = logging.getLogger("gateway.worker")

JobFn = Callable[[dict[str, Any], str], Awaitable[None]]

HEARTBEAT_TTL_S = 60  # default of Settings.job_lease_s; the beat renews the lease 4 times per lease
JOB_COMPLETION_WAIT_S = 15
TRITON_RETRY_DELAY_S = 10


async def _heartbeat(ctx: dict[str, Any], job_id: str) -> None:
    key = in_progress_key_prefix + job_id
    lease_s = max(1, ctx["settings"].job_lease_s)
    while True:
        try:
            # pexpire never creates the key, so a beat racing arq's own cleanup is harmless.
            await ctx["redis"].pexpire(key, lease_s * 1000)
        except Exception:  # a missed beat only shortens the lease; the job itself goes on
            log.warning("heartbeat failed", extra={"job_id": job_id}, exc_info=True)
        await asyncio.sleep(lease_s / 4)


async def _release(ctx: dict[str, Any], job_id: str, owner: str) -> None:
    storage: Storage = ctx["storage"]
    storage.remove_uploads(job_id)
    await release_job_slot(ctx["redis"], owner, job_id)


def job_function(fn: JobFn) -> JobFn:
    """Wrap a job function with status, lease, retry and clean-up handling (see module doc)."""

    @functools.wraps(fn)
    async def run(ctx: dict[str, Any], job_id: str) -> None:
        settings: Settings = ctx["settings"]
        jobs: JobStore = ctx["jobs"]
        storage: Storage = ctx["storage"]
        record = await jobs.get(job_id)
        if record is None:  # expired or deleted while queued: nothing to do, nobody to tell
            return
        if record.done:  # a duplicate delivery after the job already ended
            await _release(ctx, job_id, record.owner)
            return
        tries = settings.job_max_tries
        if ctx["job_try"] > tries:
            await jobs.fail(
                job_id, 500, "Processing failed", f"The job was interrupted {tries} times; gave up."
            )
            await _release(ctx, job_id, record.owner)
            return
        beat = asyncio.create_task(_heartbeat(ctx, job_id))
        retrying = False
        try:
            await jobs.mark_processing(job_id)
            async with asyncio.timeout(settings.job_timeout_s) as deadline:
                await fn(ctx, job_id)
        except TimeoutError:
            if not deadline.expired():  # a timeout inside the job (a download, say), not ours
                log.exception("job failed", extra={"job_id": job_id, "kind": record.kind})
            detail = f"The job ran longer than {settings.job_timeout_s}s." if deadline.expired() else ""
            await jobs.fail(
                job_id, 500, "Processing timed out", detail or "An operation of the job timed out."
            )
        except TritonUnavailable:
            if ctx["job_try"] < tries:
                retrying = True
                log.warning("triton unavailable; retrying", extra={"job_id": job_id, "try": ctx["job_try"]})
                raise Retry(defer=TRITON_RETRY_DELAY_S * ctx["job_try"]) from None
            await jobs.fail(job_id, 500, "Processing failed", "The inference service is unavailable.")
        except asyncio.CancelledError:
            retrying = True  # worker shutdown: arq re-queues the job
            raise
        except Exception:
            log.exception("job failed", extra={"job_id": job_id, "kind": record.kind})
            await jobs.fail(job_id, 500, "Processing failed", "An internal error stopped the job.")
        finally:
            beat.cancel()
            storage.remove_temp_dir(job_id)
            if not retrying:
                final = await jobs.get(job_id)
                if final is not None and not final.done:
                    log.error("job returned without a result", extra={"job_id": job_id})
                    await jobs.fail(job_id, 500, "Processing failed", "The job ended without a result.")
                await _release(ctx, job_id, record.owner)

    return run


async def health_job(ctx: dict[str, Any]) -> str:
    """Round trip through the queue, for smoke tests and monitoring."""
    return "ok"


def _sweep(root: Path, max_age_s: float, only_job_dirs: bool = True) -> int:
    removed = 0
    if not root.is_dir():
        return 0
    cutoff = time.time() - max_age_s
    for entry in root.iterdir():
        # `upload-<uuid>` is the gateway's staging dir: a gateway killed mid-upload leaves it behind
        if only_job_dirs and not is_job_id(entry.name.removeprefix("upload-")):
            continue
        try:
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        except FileNotFoundError:
            continue
    return removed


async def janitor(ctx: dict[str, Any]) -> int:
    """Removes results nobody fetched (RESULT_TTL_S) and inputs/temp dirs of jobs long dead."""
    settings: Settings = ctx["settings"]
    storage: Storage = ctx["storage"]
    stale_work_s = slot_lifetime_s(settings)
    removed = await asyncio.to_thread(_sweep, settings.results_dir, settings.result_ttl_s)
    removed += await asyncio.to_thread(_sweep, settings.tmp_dir, stale_work_s)
    removed += await asyncio.to_thread(_sweep, storage.uploads_root, stale_work_s)
    if removed:
        log.info("janitor removed stale dirs", extra={"count": removed})
    return removed


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    ctx["jobs"] = JobStore(ctx["redis"], settings)  # ctx["redis"] is arq's own pool
    ctx["storage"] = Storage(settings)
    ctx["triton"] = Triton(settings)


async def shutdown(ctx: dict[str, Any]) -> None:
    triton: Triton | None = ctx.get("triton")
    if triton is not None:
        await triton.close()


# Each job engineer adds ONE import line at the top of this module and ONE entry here:
#     from gateway.<module> import video_mask_job      # async def video_mask_job(ctx, job_id: str) -> None
#     job_function(video_mask_job),
# The arq function name is the function's own name (see gateway.jobs.FUNCTIONS).
functions: list[Any] = [
    health_job,
    job_function(video_mask_job),
    job_function(video_matte_job),
    job_function(keypoint_mask_job),
    job_function(image_hd_job),
]


def worker_settings(settings: Settings) -> dict[str, Any]:
    return {
        "functions": functions,
        "cron_jobs": [cron(janitor, minute=set(range(0, 60, 10)), run_at_startup=True)],
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "ctx": {"settings": settings},
        "on_startup": startup,
        "on_shutdown": shutdown,
        "max_jobs": settings.worker_max_jobs,
        # the wrapper enforces JOB_TIMEOUT_S itself (and records it); arq's limit is the backstop
        "job_timeout": settings.job_timeout_s + 60,
        "max_tries": settings.job_max_tries + 1,
        "keep_result": 60,
        "job_completion_wait": JOB_COMPLETION_WAIT_S,
        "health_check_interval": 30,
    }


def main() -> None:
    setup_logging()
    run_worker(worker_settings(Settings.from_env()))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
