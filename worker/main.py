"""arq worker: settings, per-process clients and the job functions; `python -m worker.main`.

Every job kind has one coroutine `(job: JobContext, record: JobRecord, params: <its params>)`
(one module per kind beside this one). `job_function` wraps it into the arq function registered
under the kind's name (the name JobStore.enqueue uses); the wrapper reads the record, checks the
parameters are the kind's, and owns the parts every job needs the same way:

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
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from arq import Retry, cron
from arq.connections import RedisSettings
from arq.worker import Function, func, run_worker

from common import compat, redis_keys
from common.settings import Settings
from gateway.job_params import (
    ForegroundMaskParams,
    ImageHdParams,
    JobKind,
    JobParams,
    KeyPointMaskParams,
    VideoMatteParams,
)
from gateway.job_slots import release_job_slot, slot_lifetime_s
from gateway.jobs import JobRecord, JobStatus, JobStore, WebhookDelivery
from gateway.json_log import bind, setup_logging
from gateway.storage import Storage, is_job_id
from gateway.triton import Triton, TritonUnavailable
from gateway.unavailable import ServiceUnavailable
from triton_models.cpu_priority import yield_cpu
from worker import image_hd, keypoint_mask, metrics, video_foreground
from worker.context import CTX_KEY, JobContext

log = logging.getLogger("worker")

P = TypeVar("P", bound=JobParams)
JobRun = Callable[[JobContext, JobRecord, P], Awaitable[None]]
ArqJob = Callable[[dict[str, Any], str], Awaitable[None]]

HEARTBEAT_TTL_S = 60  # default of Settings.job_lease_s; the beat renews the lease 4 times per lease
JOB_COMPLETION_WAIT_S = 15
TRITON_RETRY_DELAY_S = 10


async def _heartbeat(job: JobContext, job_id: str) -> None:
    key = redis_keys.arq_in_progress(job_id)
    lease_s = max(1, job.settings.job_lease_s)
    while True:
        try:
            # pexpire never creates the key, so a beat racing arq's own cleanup is harmless.
            await job.redis.pexpire(key, lease_s * 1000)
        except Exception:  # a missed beat only shortens the lease; the job itself goes on
            log.warning("heartbeat failed", extra={"job_id": job_id}, exc_info=True)
        await asyncio.sleep(lease_s / 4)


async def _release(job: JobContext, job_id: str, owner: str) -> None:
    await job.storage.remove_uploads(job_id)
    await release_job_slot(job.redis, owner, job_id)


async def _queue_webhook(job: JobContext, job_id: str) -> None:
    """One delivery per job, sent by `python -m gateway.webhooks` (its own queue: a slow receiver
    never holds a job worker); arq's job id makes a second enqueue a no-op."""
    await job.jobs.set_webhook_delivery(job_id, WebhookDelivery("pending"))
    await job.redis.enqueue_job(
        redis_keys.WEBHOOK_FUNCTION,
        job_id,
        _queue_name=redis_keys.WEBHOOK_QUEUE,
        _job_id=f"webhook:{job_id}",
    )


def _count_end(final: JobRecord) -> None:
    kind = final.kind.value
    metrics.JOBS.labels(kind, final.status.value).inc()
    if final.started_at is not None and final.finished_at is not None:
        seconds = max(0.0, final.finished_at - final.started_at)
        metrics.DURATION.labels(kind).observe(seconds)
        if final.status == JobStatus.COMPLETED and final.total_frames and seconds > 0:
            metrics.FPS.labels(kind).observe(final.total_frames / seconds)


def job_function(params_type: type[P], run: JobRun[P]) -> ArqJob:
    """Wrap `run` with status, lease, retry and clean-up handling (see module doc).

    The result takes arq's `(ctx, job_id)`; `ctx` holds the JobContext and arq's `job_try`."""

    async def arq_job(ctx: dict[str, Any], job_id: str) -> None:
        with bind(job_id=job_id):
            await _run_job(ctx, job_id)

    async def _run_job(ctx: dict[str, Any], job_id: str) -> None:
        job = JobContext.of(ctx)
        record = await job.jobs.get(job_id)
        if record is None:  # expired or deleted while queued: nothing to do, nobody to tell
            return
        kind, job_try = record.kind.value, int(ctx["job_try"])
        if job_try == 1 and not record.done:
            metrics.QUEUE_WAIT.labels(kind).observe(max(0.0, time.time() - record.created_at))
        elif not record.done:
            metrics.RETRIES.labels(kind).inc()  # after a Triton outage or a dead worker
        running = metrics.IN_PROGRESS.labels(kind).track_inprogress()
        with bind(request_id=record.request_id, kind=kind), running:
            log.info("job started", extra={"try": job_try})
            await _run_record(job, job_id, job_try, record)
            final = await job.jobs.get(job_id)
            if final is not None and final.done and not record.done:
                log.info("job ended", extra={"status": final.status.value})
                _count_end(final)
                if final.webhook_url:
                    await _queue_webhook(job, job_id)

    async def _run_record(job: JobContext, job_id: str, job_try: int, record: JobRecord) -> None:
        settings, jobs, storage = job.settings, job.jobs, job.storage
        if record.done:  # a duplicate delivery after the job already ended
            await _release(job, job_id, record.owner)
            return
        tries = settings.job_max_tries
        if job_try > tries:
            await jobs.fail(
                job_id, 500, "Processing failed", f"The job was interrupted {tries} times; gave up."
            )
            await _release(job, job_id, record.owner)
            return
        beat = asyncio.create_task(_heartbeat(job, job_id))
        retrying = False
        try:
            # None: the record ended or went while this delivery waited (another worker finished it)
            if await jobs.mark_processing(job_id) is None:
                return
            async with compat.timeout(settings.job_timeout_s) as deadline:
                if not isinstance(record.params, params_type):
                    raise TypeError(f"{params_type.__name__} job given a {record.kind} record")
                await storage.fetch_inputs(job_id)  # STORAGE=s3: the gateway's upload, onto this host
                await run(job, record, record.params)
        except TimeoutError:
            if not deadline.expired():  # a timeout inside the job (a download, say), not ours
                log.exception("job failed", extra={"job_id": job_id, "kind": record.kind})
            detail = f"The job ran longer than {settings.job_timeout_s}s." if deadline.expired() else ""
            await jobs.fail(
                job_id, 500, "Processing timed out", detail or "An operation of the job timed out."
            )
        except ServiceUnavailable as exc:  # Triton or the object store: transient, retried
            backend = "triton" if isinstance(exc, TritonUnavailable) else "object store"
            if job_try < tries:
                retrying = True
                log.warning(f"{backend} unavailable; retrying", extra={"job_id": job_id, "try": job_try})
                raise Retry(defer=TRITON_RETRY_DELAY_S * job_try) from None
            reason = (
                "The inference service is unavailable."
                if backend == "triton"
                else "The object store is unavailable; submit the job again later."
            )
            await jobs.fail(job_id, 500, "Processing failed", reason)
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
                await _release(job, job_id, record.owner)

    arq_job.__qualname__ = arq_job.__name__ = f"{params_type.KIND.value}_job"
    return arq_job


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
    """arq cron: `remove_stale` with the worker's settings and storage."""
    job = JobContext.of(ctx)
    return await remove_stale(job.settings, job.storage)


async def remove_stale(settings: Settings, storage: Storage) -> int:
    """Removes results nobody fetched (RESULT_TTL_S) and inputs/temp dirs of jobs long dead, on
    this host and (STORAGE=s3) in the store; returns how many directories and objects went."""
    stale_work_s = slot_lifetime_s(settings)
    removed = await asyncio.to_thread(_sweep, settings.results_dir, settings.result_ttl_s)
    removed += await asyncio.to_thread(_sweep, settings.tmp_dir, stale_work_s)
    removed += await asyncio.to_thread(_sweep, storage.uploads_root, stale_work_s)
    removed += await storage.sweep_store(settings.result_ttl_s, stale_work_s)
    if removed:
        log.info("janitor removed stale dirs", extra={"count": removed})
    return removed


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    redis = ctx["redis"]  # arq's own pool
    storage = Storage(settings)
    await storage.start()  # STORAGE=s3: the bucket exists before the first job
    ctx[CTX_KEY] = JobContext(
        settings=settings,
        redis=redis,
        jobs=JobStore(redis, settings),
        storage=storage,
        triton=Triton(settings),  # built here: the gRPC channel binds to the running loop
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    metrics.process_exited()
    job: JobContext | None = ctx.get(CTX_KEY)
    if job is not None:
        await job.triton.close()
        await job.storage.close()


def _registered(params_type: type[P], run: JobRun[P]) -> Function:
    return func(job_function(params_type, run), name=params_type.KIND.value)


# One entry per job kind, under the kind's name; tests/test_jobs.py checks none is missing.
JOB_FUNCTIONS: dict[JobKind, Function] = {
    JobKind.FOREGROUND_MASK: _registered(ForegroundMaskParams, video_foreground.mask),
    JobKind.VIDEO_MATTE: _registered(VideoMatteParams, video_foreground.matte),
    JobKind.MASK_BY_KEY_POINTS: _registered(KeyPointMaskParams, keypoint_mask.run),
    JobKind.IMAGE_HD: _registered(ImageHdParams, image_hd.run),
}
functions: list[Any] = [health_job, *JOB_FUNCTIONS.values()]


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
    if metrics_dir := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        Path(metrics_dir).mkdir(parents=True, exist_ok=True)
    settings = Settings.from_env()
    # video work yields the CPU to a waiting photo request
    yield_cpu(settings.worker_cpu_nice, sched_idle=settings.worker_cpu_sched_idle)
    if settings.worker_metrics_port:
        metrics.serve(settings.worker_metrics_port)
    run_worker(worker_settings(settings))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
