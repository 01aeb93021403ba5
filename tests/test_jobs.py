"""JobStore lifecycle, owner isolation, job slots and the worker's job wrapper, on the real Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis

from common import redis_keys
from common.settings import Settings
from gateway.images.params import Params
from gateway.job_params import (
    PARAMS_BY_KIND,
    ForegroundMaskParams,
    ImageHdParams,
    JobKind,
    JobParams,
    KeyPointMaskParams,
    VideoMatteParams,
)
from gateway.job_slots import acquire_job_slot, admit_to_queue, release_job_slot
from gateway.jobs import JobRecord, JobStatus, JobStore
from gateway.storage import Storage, StoredResult
from gateway.triton import Triton
from triton_models.foreground import ForegroundModel
from worker.context import CTX_KEY, JobContext
from worker.main import JOB_FUNCTIONS, job_function

OWNER, OTHER = "a" * 64, "b" * 64
MASK = ForegroundMaskParams(
    preset="mp4_h264", model=ForegroundModel.AUTO, source_url="https://example.com/v.mp4"
)
KEY_POINTS = KeyPointMaskParams(
    preset="webm_vp9",
    source_url="https://example.com/k.mp4",
    frame_index=3,
    key_points=((10, 20, 1), (30, 40, 0)),
    auto_trim=True,
    limit_s=5.0,
)
MATTE = VideoMatteParams(
    preset="mp4_h264",
    model=ForegroundModel.SALIENT,
    bg_color=(1, 2, 3),
    original_duration_s=12.5,
    max_duration_s=10.0,
    trim_s=10.0,
)
HD = ImageHdParams(image=Params(operation="shadow", bg_color=(4, 5, 6), shadow_opacity=0.25))
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
    record = await jobs.create(OWNER, MASK)
    assert record.status == "queued" and not record.done
    assert (
        await redis.ttl(redis_keys.job_record(record.id)) > settings.result_ttl_s
    )  # bounded even if never run

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
    assert 0 < await redis.ttl(redis_keys.job_record(record.id)) <= settings.result_ttl_s


async def test_progress_never_goes_back_on_a_re_run(jobs: JobStore) -> None:
    """A re-run (dead worker, retried try) starts from frame 0; the client keeps seeing the
    furthest frame reached until the re-run passes it."""
    record = await jobs.create(OWNER, MASK)
    await jobs.mark_processing(record.id)
    await jobs.set_progress(record.id, 50, 150)
    await jobs.mark_processing(record.id)  # the re-run
    for frame, shown in ((12, 50), (50, 50), (60, 60)):
        jobs._last_progress.clear()  # each write lands (they are throttled per job)
        await jobs.set_progress(record.id, frame, 150)
        now = await jobs.get(record.id)
        assert now is not None and (now.current_frame, now.status) == (shown, "processing"), frame
    assert now.progress_percentage == 40.0


async def test_terminal_status_is_final(jobs: JobStore) -> None:
    record = await jobs.create(OWNER, HD)
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
    record = await jobs.create(OWNER, KEY_POINTS)
    assert await jobs.get(record.id, owner=OWNER) is not None
    assert await jobs.get(record.id, owner=OTHER) is None
    assert await jobs.get(record.id) is not None  # internal callers (worker, signed links)
    for bad in ["", "../../etc", record.id.upper(), record.id + "x", "job:*"]:
        assert await jobs.get(bad) is None


def test_every_kind_has_its_parameters() -> None:
    assert set(PARAMS_BY_KIND) == set(JobKind)
    assert all(kind == params.KIND for kind, params in PARAMS_BY_KIND.items())


# What the routes wrote as untyped dicts before the parameters were typed: records queued by an
# older gateway must still read, and the stored JSON must not change.
STORED_PARAMS: list[tuple[JobParams, dict[str, Any]]] = [
    (MASK, {"preset": "mp4_h264", "model": "auto", "source_url": "https://example.com/v.mp4"}),
    (
        KEY_POINTS,
        {
            "preset": "webm_vp9",
            "source_url": "https://example.com/k.mp4",
            "frame_index": 3,
            "key_points": [[10, 20, 1], [30, 40, 0]],
            "auto_trim": True,
            "limit_s": 5.0,
        },
    ),
    (
        MATTE,
        {
            "bg_color": [1, 2, 3],
            "preset": "mp4_h264",
            "model": "salient",
            "original_duration_s": 12.5,
            "max_duration_s": 10.0,
            "trim_s": 10.0,
        },
    ),
    (
        VideoMatteParams(
            preset="webm_vp9_alpha", model=ForegroundModel.RVM, original_duration_s=3.0, trim_s=10
        ),
        {
            "preset": "webm_vp9_alpha",
            "model": "rvm",
            "original_duration_s": 3.0,
            "max_duration_s": None,
            "trim_s": 10,
        },
    ),
    (
        HD,
        {
            "params": {
                **Params().to_dict(),
                "operation": "shadow",
                "bg_color": (4, 5, 6),
                "shadow_opacity": 0.25,
            }
        },
    ),
]


@pytest.mark.parametrize(("params", "stored"), STORED_PARAMS, ids=lambda p: getattr(p, "KIND", ""))
def test_parameters_keep_their_stored_shape(params: JobParams, stored: dict[str, Any]) -> None:
    assert json.loads(json.dumps(params.to_dict())) == json.loads(json.dumps(stored))
    assert type(params).from_dict(json.loads(json.dumps(stored))) == params
    record = JobRecord(
        id="x", kind=params.KIND, owner=OWNER, status=JobStatus.QUEUED, params=params, created_at=1.0
    )
    stored_record = json.loads(record.to_json())
    assert (stored_record["kind"], stored_record["status"]) == (params.KIND.value, "queued")
    assert JobRecord.from_json(record.to_json()) == record


async def test_enqueue_once_and_queue_depth(jobs: JobStore, redis: ArqRedis) -> None:
    assert await jobs.queue_depth() == 0
    record = await jobs.create(OWNER, MASK)
    assert await jobs.enqueue(record) is True
    assert await jobs.enqueue(record) is False
    assert await jobs.queue_depth() == 1
    assert await redis.exists(redis_keys.arq_job(record.id))


@pytest.mark.parametrize("end", ["complete", "fail"])
async def test_a_finished_job_frees_its_slot_in_the_same_step(
    jobs: JobStore, redis: ArqRedis, settings: Settings, tmp_path: Path, end: str
) -> None:
    record = await jobs.create(OWNER, HD)
    assert await acquire_job_slot(redis, settings, OWNER, record.id)
    await jobs.mark_processing(record.id)
    if end == "complete":
        await jobs.complete(record.id, StoredResult(str(tmp_path / "r.png"), "image/png", "r.png"))
    else:
        await jobs.fail(record.id, 500, "Processing failed", "x")
    assert await redis.zscore(redis_keys.job_slots(OWNER), record.id) is None


async def test_job_slots_limit_and_release(redis: ArqRedis, settings: Settings) -> None:
    assert await acquire_job_slot(redis, settings, OWNER, "j1")
    assert await acquire_job_slot(redis, settings, OWNER, "j1")  # idempotent for the same job
    assert await acquire_job_slot(redis, settings, OWNER, "j2")
    assert not await acquire_job_slot(redis, settings, OWNER, "j3")  # limit is 2
    assert await acquire_job_slot(redis, settings, OTHER, "k1")  # per token
    await release_job_slot(redis, OWNER, "j1")
    assert await acquire_job_slot(redis, settings, OWNER, "j3")
    assert await redis.ttl(redis_keys.job_slots(OWNER)) > 0  # never leaked forever


async def test_queue_admission_holds_under_a_concurrent_burst(
    jobs: JobStore, redis: ArqRedis, settings: Settings
) -> None:
    # Two jobs already queued; a burst of 12 concurrent admissions against a bound of 8 total.
    for _ in range(2):
        await jobs.enqueue(await jobs.create(OWNER, MASK))
    bounded = settings.with_overrides(max_queued_jobs=8)
    results = await asyncio.gather(*(admit_to_queue(redis, bounded, f"burst-{i}") for i in range(12)))
    assert sum(results) == 6
    assert await redis.zcard(redis_keys.QUEUE_ADMISSION) == 6
    assert await redis.ttl(redis_keys.QUEUE_ADMISSION) > 0  # tickets of a crashed gateway expire


async def test_expired_slot_frees_itself(redis: ArqRedis, settings: Settings) -> None:
    await redis.zadd(redis_keys.job_slots(OWNER), {"dead1": 1.0, "dead2": 2.0})  # holders long expired
    assert await acquire_job_slot(redis, settings, OWNER, "fresh")


# --- the worker's job wrapper ----------------------------------------------------------------------


@pytest.fixture
async def triton(settings: Settings) -> AsyncIterator[Triton]:
    client = Triton(settings)  # never called by these jobs: the wrapper alone is under test
    try:
        yield client
    finally:
        await client.close()


def _ctx(settings: Settings, jobs: JobStore, triton: Triton, job_try: int = 1) -> dict[str, Any]:
    """What arq hands a job once worker.main.startup ran: the JobContext and arq's try count."""
    assert isinstance(jobs.redis, ArqRedis)
    context = JobContext(settings, jobs.redis, JobStore(jobs.redis, settings), Storage(settings), triton)
    return {CTX_KEY: context, "job_try": job_try}


def test_every_kind_has_a_worker_function() -> None:
    assert set(JOB_FUNCTIONS) == set(JobKind)
    assert all(function.name == kind.value for kind, function in JOB_FUNCTIONS.items())


async def _submitted(jobs: JobStore, redis: ArqRedis, settings: Settings) -> str:
    record = await jobs.create(OWNER, MASK)
    assert await acquire_job_slot(redis, settings, OWNER, record.id)
    (Storage(settings).uploads_dir(record.id) / "input.mp4").write_bytes(b"x")
    return record.id


async def _slot_held(redis: ArqRedis, job_id: str) -> bool:
    return await redis.zscore(redis_keys.job_slots(OWNER), job_id) is not None


async def test_wrapper_completes_and_releases(
    jobs: JobStore, redis: ArqRedis, settings: Settings, triton: Triton
) -> None:
    job_id = await _submitted(jobs, redis, settings)

    async def work(job: JobContext, record: JobRecord, params: ForegroundMaskParams) -> None:
        jid = record.id
        tmp = job.storage.new_temp_dir(jid)
        (tmp / "r.bin").write_bytes(b"ok")
        assert (await job.jobs.get(jid)).status == "processing"  # type: ignore[union-attr]
        await job.jobs.complete(jid, await job.storage.store(jid, tmp / "r.bin", "r.bin", "x/y"))

    await job_function(ForegroundMaskParams, work)(_ctx(settings, jobs, triton), job_id)
    record = await jobs.get(job_id)
    assert record is not None and record.status == "completed"
    assert not await _slot_held(redis, job_id)
    assert not (settings.tmp_dir / job_id).exists() and not (settings.data_dir / "uploads" / job_id).exists()


async def test_wrapper_records_crash(
    jobs: JobStore, redis: ArqRedis, settings: Settings, triton: Triton
) -> None:
    job_id = await _submitted(jobs, redis, settings)

    async def boom(job: JobContext, record: JobRecord, params: ForegroundMaskParams) -> None:
        raise RuntimeError("secret internal detail")

    await job_function(ForegroundMaskParams, boom)(_ctx(settings, jobs, triton), job_id)
    record = await jobs.get(job_id)
    assert record is not None and record.status == "failed" and record.error is not None
    assert record.error.code == 500 and "secret" not in record.error.details
    assert not await _slot_held(redis, job_id)


async def test_wrapper_fails_job_that_returns_without_result(
    jobs: JobStore, redis: ArqRedis, settings: Settings, triton: Triton
) -> None:
    job_id = await _submitted(jobs, redis, settings)

    async def forgetful(job: JobContext, record: JobRecord, params: ForegroundMaskParams) -> None:
        return None

    await job_function(ForegroundMaskParams, forgetful)(_ctx(settings, jobs, triton), job_id)
    record = await jobs.get(job_id)
    assert record is not None and record.status == "failed"


async def test_wrapper_gives_up_after_max_tries(
    jobs: JobStore, redis: ArqRedis, settings: Settings, triton: Triton
) -> None:
    job_id = await _submitted(jobs, redis, settings)
    ran = asyncio.Event()

    async def never(job: JobContext, record: JobRecord, params: ForegroundMaskParams) -> None:
        ran.set()

    ctx = _ctx(settings, jobs, triton, job_try=settings.job_max_tries + 1)
    await job_function(ForegroundMaskParams, never)(ctx, job_id)
    record = await jobs.get(job_id)
    assert not ran.is_set()
    assert record is not None and record.status == "failed" and "interrupted" in record.error.details  # type: ignore[union-attr]
    assert not await _slot_held(redis, job_id)


async def test_wrapper_times_out(jobs: JobStore, redis: ArqRedis, settings: Settings, triton: Triton) -> None:
    job_id = await _submitted(jobs, redis, settings)

    async def slow(job: JobContext, record: JobRecord, params: ForegroundMaskParams) -> None:
        await asyncio.sleep(10)

    ctx = _ctx(settings.with_overrides(job_timeout_s=1), jobs, triton)
    await job_function(ForegroundMaskParams, slow)(ctx, job_id)
    record = await jobs.get(job_id)
    assert record is not None and record.status == "failed" and record.error is not None
    assert record.error.message == "Processing timed out"


async def test_wrapper_shortens_the_in_progress_lease(
    jobs: JobStore, redis: ArqRedis, settings: Settings, triton: Triton
) -> None:
    """A dead worker's job must become visible to other workers in about a minute, not JOB_TIMEOUT_S."""
    job_id = await _submitted(jobs, redis, settings)
    lease = redis_keys.arq_in_progress(job_id)
    await redis.psetex(lease, 3_600_000, b"1")  # what arq sets for a long job timeout
    seen: list[int] = []

    async def work(job: JobContext, record: JobRecord, params: ForegroundMaskParams) -> None:
        await asyncio.sleep(0.1)
        seen.append(await redis.ttl(lease))
        await job.jobs.fail(record.id, 400, "Bad", "bad input")

    await job_function(ForegroundMaskParams, work)(_ctx(settings, jobs, triton), job_id)
    assert seen and 0 < seen[0] <= 60


async def test_wrapper_refuses_parameters_of_another_kind(
    jobs: JobStore, redis: ArqRedis, settings: Settings, triton: Triton
) -> None:
    job_id = await _submitted(jobs, redis, settings)  # a foreground_mask record
    ran = asyncio.Event()

    async def hd(job: JobContext, record: JobRecord, params: ImageHdParams) -> None:
        ran.set()

    await job_function(ImageHdParams, hd)(_ctx(settings, jobs, triton), job_id)
    record = await jobs.get(job_id)
    assert not ran.is_set()
    assert record is not None and record.status == "failed" and record.error is not None
    assert record.error.code == 500 and not await _slot_held(redis, job_id)
