"""JobStore lifecycle, owner isolation, job slots and the worker's job wrapper, on the real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis

from common.settings import Settings
from gateway.jobs import JobStore
from gateway.limits import ADMISSION_KEY, SLOTS_PREFIX, acquire_job_slot, admit_to_queue, release_job_slot
from gateway.storage import Storage
from gateway.worker import job_function

OWNER, OTHER = "a" * 64, "b" * 64
DB = 7  # a database of its own: queue-depth assertions must not see other tests' jobs


@pytest.fixture
async def redis(redis_port: int) -> AsyncIterator[ArqRedis]:
    client = ArqRedis.from_url(f"redis://127.0.0.1:{redis_port}/{DB}")
    await client.flushdb()
    try:
        yield client
    finally:
        await client.flushdb()
        await client.aclose()


@pytest.fixture
def settings(tmp_path: Path, redis_port: int) -> Settings:
    return Settings(
        data_dir=tmp_path,
        redis_url=f"redis://127.0.0.1:{redis_port}/{DB}",
        result_ttl_s=120,
        max_concurrent_jobs_per_token=2,
        signing_secret=b"test",
    )


@pytest.fixture
def jobs(redis: ArqRedis, settings: Settings) -> JobStore:
    return JobStore(redis, settings)


async def test_lifecycle(jobs: JobStore, redis: ArqRedis, tmp_path: Path, settings: Settings) -> None:
    record = await jobs.create("foreground_mask", OWNER, {"video": "https://example.com/v.mp4"})
    assert record.status == "queued" and not record.done
    assert await redis.ttl(f"job:{record.id}") > settings.result_ttl_s  # bounded even if never run

    assert (await jobs.mark_processing(record.id)).status == "processing"  # type: ignore[union-attr]
    for frame in range(1, 121):
        await jobs.set_progress(record.id, frame, 120)
    progress = await jobs.get(record.id)
    assert progress is not None
    # throttled, yet the last frame is always written
    assert (progress.current_frame, progress.total_frames, progress.progress_percentage) == (120, 120, 100.0)

    src = tmp_path / "out.tmp"
    src.write_bytes(b"data")
    stored = await Storage(settings).store(record.id, src, "mask.mp4", "video/mp4")
    done = await jobs.complete(
        record.id, stored, warning="trimmed", original_duration=5.2, processed_duration=5.0
    )
    assert done is not None and done.status == "completed" and done.finished_at is not None
    fetched = await jobs.get(record.id, owner=OWNER)
    assert fetched == done
    assert fetched.result is not None and Path(fetched.result.path).read_bytes() == b"data"
    assert 0 < await redis.ttl(f"job:{record.id}") <= settings.result_ttl_s


async def test_terminal_status_is_final(jobs: JobStore) -> None:
    record = await jobs.create("image_hd", OWNER, {})
    await jobs.mark_processing(record.id)
    await jobs.fail(record.id, 422, "Unprocessable", "the image could not be decoded")
    # a late progress write or a second run must not resurrect a finished job
    await jobs.set_progress(record.id, 99, 100)
    assert await jobs.mark_processing(record.id) is None
    final = await jobs.get(record.id)
    assert final is not None and final.status == "failed" and final.current_frame is None
    assert final.error is not None and (final.error.code, final.error.details) == (
        422,
        "the image could not be decoded",
    )


async def test_owner_isolation_and_bad_ids(jobs: JobStore) -> None:
    record = await jobs.create("mask_by_key_points", OWNER, {})
    assert await jobs.get(record.id, owner=OWNER) is not None
    assert await jobs.get(record.id, owner=OTHER) is None
    assert await jobs.get(record.id) is not None  # internal callers (worker, signed links)
    for bad in ["", "../../etc", record.id.upper(), record.id + "x", "job:*"]:
        assert await jobs.get(bad) is None


async def test_unknown_kind_rejected(jobs: JobStore) -> None:
    with pytest.raises(ValueError, match="unknown job kind"):
        await jobs.create("nope", OWNER, {})


async def test_enqueue_once_and_queue_depth(jobs: JobStore, redis: ArqRedis) -> None:
    assert await jobs.queue_depth() == 0
    record = await jobs.create("foreground_mask", OWNER, {})
    assert await jobs.enqueue(record) is True
    assert await jobs.enqueue(record) is False
    assert await jobs.queue_depth() == 1
    assert await redis.exists(f"arq:job:{record.id}")


async def test_job_slots_limit_and_release(redis: ArqRedis, settings: Settings) -> None:
    assert await acquire_job_slot(redis, settings, OWNER, "j1")
    assert await acquire_job_slot(redis, settings, OWNER, "j1")  # idempotent for the same job
    assert await acquire_job_slot(redis, settings, OWNER, "j2")
    assert not await acquire_job_slot(redis, settings, OWNER, "j3")  # limit is 2
    assert await acquire_job_slot(redis, settings, OTHER, "k1")  # per token
    await release_job_slot(redis, OWNER, "j1")
    assert await acquire_job_slot(redis, settings, OWNER, "j3")
    assert await redis.ttl(SLOTS_PREFIX + OWNER) > 0  # never leaked forever


async def test_queue_admission_holds_under_a_concurrent_burst(
    jobs: JobStore, redis: ArqRedis, settings: Settings
) -> None:
    # Two jobs already queued; a burst of 12 concurrent admissions against a bound of 8 total.
    for _ in range(2):
        await jobs.enqueue(await jobs.create("foreground_mask", OWNER, {}))
    bounded = settings.with_overrides(max_queued_jobs=8)
    results = await asyncio.gather(*(admit_to_queue(redis, bounded, f"burst-{i}") for i in range(12)))
    assert sum(results) == 6
    assert await redis.zcard(ADMISSION_KEY) == 6
    assert await redis.ttl(ADMISSION_KEY) > 0  # tickets of a crashed gateway expire


async def test_expired_slot_frees_itself(redis: ArqRedis, settings: Settings) -> None:
    await redis.zadd(SLOTS_PREFIX + OWNER, {"dead1": 1.0, "dead2": 2.0})  # holders long expired
    assert await acquire_job_slot(redis, settings, OWNER, "fresh")


# --- the worker's job wrapper ----------------------------------------------------------------------


async def _ctx(redis: ArqRedis, settings: Settings, jobs: JobStore, job_try: int = 1) -> dict[str, Any]:
    return {
        "redis": redis,
        "settings": settings,
        "jobs": jobs,
        "storage": Storage(settings),
        "job_try": job_try,
    }


async def _submitted(jobs: JobStore, redis: ArqRedis, settings: Settings) -> str:
    record = await jobs.create("foreground_mask", OWNER, {})
    assert await acquire_job_slot(redis, settings, OWNER, record.id)
    (Storage(settings).uploads_dir(record.id) / "input.mp4").write_bytes(b"x")
    return record.id


async def _slot_held(redis: ArqRedis, job_id: str) -> bool:
    return await redis.zscore(SLOTS_PREFIX + OWNER, job_id) is not None


async def test_wrapper_completes_and_releases(jobs: JobStore, redis: ArqRedis, settings: Settings) -> None:
    job_id = await _submitted(jobs, redis, settings)

    async def work(ctx: dict[str, Any], jid: str) -> None:
        tmp = ctx["storage"].new_temp_dir(jid)
        (tmp / "r.bin").write_bytes(b"ok")
        assert (await ctx["jobs"].get(jid)).status == "processing"
        await ctx["jobs"].complete(jid, await ctx["storage"].store(jid, tmp / "r.bin", "r.bin", "x/y"))

    await job_function(work)(await _ctx(redis, settings, jobs), job_id)
    record = await jobs.get(job_id)
    assert record is not None and record.status == "completed"
    assert not await _slot_held(redis, job_id)
    assert not (settings.tmp_dir / job_id).exists() and not (settings.data_dir / "uploads" / job_id).exists()


async def test_wrapper_records_crash(jobs: JobStore, redis: ArqRedis, settings: Settings) -> None:
    job_id = await _submitted(jobs, redis, settings)

    async def boom(ctx: dict[str, Any], jid: str) -> None:
        raise RuntimeError("secret internal detail")

    await job_function(boom)(await _ctx(redis, settings, jobs), job_id)
    record = await jobs.get(job_id)
    assert record is not None and record.status == "failed" and record.error is not None
    assert record.error.code == 500 and "secret" not in record.error.details
    assert not await _slot_held(redis, job_id)


async def test_wrapper_fails_job_that_returns_without_result(
    jobs: JobStore, redis: ArqRedis, settings: Settings
) -> None:
    job_id = await _submitted(jobs, redis, settings)

    async def forgetful(ctx: dict[str, Any], jid: str) -> None:
        return None

    await job_function(forgetful)(await _ctx(redis, settings, jobs), job_id)
    record = await jobs.get(job_id)
    assert record is not None and record.status == "failed"


async def test_wrapper_gives_up_after_max_tries(jobs: JobStore, redis: ArqRedis, settings: Settings) -> None:
    job_id = await _submitted(jobs, redis, settings)
    ran = asyncio.Event()

    async def never(ctx: dict[str, Any], jid: str) -> None:
        ran.set()

    ctx = await _ctx(redis, settings, jobs, job_try=settings.job_max_tries + 1)
    await job_function(never)(ctx, job_id)
    record = await jobs.get(job_id)
    assert not ran.is_set()
    assert record is not None and record.status == "failed" and "interrupted" in record.error.details  # type: ignore[union-attr]
    assert not await _slot_held(redis, job_id)


async def test_wrapper_times_out(jobs: JobStore, redis: ArqRedis, settings: Settings) -> None:
    job_id = await _submitted(jobs, redis, settings)

    async def slow(ctx: dict[str, Any], jid: str) -> None:
        await asyncio.sleep(10)

    ctx = await _ctx(redis, settings.with_overrides(job_timeout_s=1), jobs)
    await job_function(slow)(ctx, job_id)
    record = await jobs.get(job_id)
    assert record is not None and record.status == "failed" and record.error is not None
    assert record.error.message == "Processing timed out"


async def test_wrapper_shortens_the_in_progress_lease(
    jobs: JobStore, redis: ArqRedis, settings: Settings
) -> None:
    """A dead worker's job must become visible to other workers in about a minute, not JOB_TIMEOUT_S."""
    job_id = await _submitted(jobs, redis, settings)
    lease = f"arq:in-progress:{job_id}"
    await redis.psetex(lease, 3_600_000, b"1")  # what arq sets for a long job timeout
    seen: list[int] = []

    async def work(ctx: dict[str, Any], jid: str) -> None:
        await asyncio.sleep(0.1)
        seen.append(await redis.ttl(lease))
        await ctx["jobs"].fail(jid, 400, "Bad", "bad input")

    await job_function(work)(await _ctx(redis, settings, jobs), job_id)
    assert seen and 0 < seen[0] <= 60
