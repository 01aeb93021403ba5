"""Per-token request rate, per-token concurrent jobs and a global queue-depth guard, in Redis.

State lives in Redis so the limits hold across any number of gateway processes, and every key has
a TTL so a crashed gateway or a killed worker can never leak a limit forever.

How an endpoint starts a job:
    owner = require_owner(request, family); await check_rate(request, owner, family)
    await check_capacity(request, owner, family)        # optional: refuse before a big upload
    record = await request.app[JOBS].create(kind, owner, params)   # (+ write inputs)
    await start_job(request, family, record)            # 429 (record deleted) or enqueued
The worker releases the slot when the job ends (gateway.worker.job_function does it).
"""

from __future__ import annotations

import math
import time

from aiohttp import web
from arq.constants import default_queue_name
from redis.asyncio import Redis

from common.settings import Settings
from gateway.app import JOBS, REDIS, SETTINGS
from gateway.errors import ApiError, Family, api_error
from gateway.jobs import JobRecord

RATE_PREFIX = "limit:rate:"
SLOTS_PREFIX = "limit:slots:"
WINDOW_S = 60
BUSY_RETRY_AFTER_S = 15

# Atomically: drop expired holders, refuse when full, else hold a slot for job ARGV[4] until ARGV[2].
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIREAT', KEYS[1], math.ceil(tonumber(ARGV[2])))
return 1
"""

# Queue admission in one step: jobs in the arq queue plus admissions still being enqueued must stay
# under the bound. A separate check-then-enqueue let a concurrent burst through all at once.
ADMISSION_KEY = "limit:admission"
ADMISSION_TICKET_S = 60
_ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
redis.call('EXPIREAT', KEYS[2], math.ceil(tonumber(ARGV[2])))
return 1
"""


def slot_lifetime_s(settings: Settings) -> int:
    """Upper bound of a job's life (every try at its timeout): a slot is never held longer."""
    return settings.job_timeout_s * (settings.job_max_tries + 1) + 300


async def check_rate(request: web.Request, owner: str, family: Family) -> None:
    """Sliding-window estimate over two fixed one-minute windows (no burst at window edges)."""
    settings = request.app[SETTINGS]
    limit = settings.rate_limit_per_minute
    if limit <= 0:
        return
    redis = request.app[REDIS]
    now = time.time()
    window = int(now // WINDOW_S)
    current_key, previous_key = f"{RATE_PREFIX}{owner}:{window}", f"{RATE_PREFIX}{owner}:{window - 1}"
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(current_key)
        pipe.expire(current_key, 2 * WINDOW_S)
        pipe.get(previous_key)
        current, _, previous = await pipe.execute()
    elapsed = now - window * WINDOW_S
    estimate = int(previous or 0) * (1 - elapsed / WINDOW_S) + int(current)
    if estimate > limit:
        retry_after = max(1, math.ceil(WINDOW_S - elapsed))
        raise api_error(
            family,
            429,
            "Too Many Requests",
            f"Rate limit of {limit} requests per minute exceeded; retry in {retry_after}s.",
            headers={"Retry-After": str(retry_after)},
        )


async def _running_jobs(redis: Redis, owner: str) -> int:
    key = SLOTS_PREFIX + owner
    await redis.zremrangebyscore(key, "-inf", time.time())
    return int(await redis.zcard(key))


def _busy(family: Family, details: str) -> ApiError:
    return api_error(
        family, 429, "Too Many Requests", details, headers={"Retry-After": str(BUSY_RETRY_AFTER_S)}
    )


def _queue_full(family: Family) -> ApiError:
    return _busy(family, "The service is busy: too many queued jobs; retry later.")


def _slots_full(family: Family, settings: Settings) -> ApiError:
    return _busy(
        family,
        f"At most {settings.max_concurrent_jobs_per_token} jobs may run at once per api_token; "
        "retry when one has finished.",
    )


async def check_capacity(request: web.Request, owner: str, family: Family) -> None:
    """Refuse early (before reading a large body) when the queue or the caller's slots are full."""
    settings = request.app[SETTINGS]
    if await request.app[JOBS].queue_depth() >= settings.max_queued_jobs:
        raise _queue_full(family)
    if await _running_jobs(request.app[REDIS], owner) >= settings.max_concurrent_jobs_per_token:
        raise _slots_full(family, settings)


async def admit_to_queue(redis: Redis, settings: Settings, job_id: str) -> bool:
    """Hold an admission ticket for job_id unless the queue is full; drop it once enqueued."""
    now = time.time()
    admitted = await redis.eval(
        _ADMIT,
        2,
        default_queue_name,
        ADMISSION_KEY,
        now,
        now + ADMISSION_TICKET_S,
        settings.max_queued_jobs,
        job_id,
    )
    return bool(admitted)


async def acquire_job_slot(redis: Redis, settings: Settings, owner: str, job_id: str) -> bool:
    now = time.time()
    expires = now + slot_lifetime_s(settings)
    held = await redis.eval(
        _ACQUIRE, 1, SLOTS_PREFIX + owner, now, expires, settings.max_concurrent_jobs_per_token, job_id
    )
    return bool(held)


async def release_job_slot(redis: Redis, owner: str, job_id: str) -> None:
    await redis.zrem(SLOTS_PREFIX + owner, job_id)


async def start_job(request: web.Request, family: Family, record: JobRecord) -> None:
    """Queue guard + concurrency slot + enqueue; on refusal the record is deleted and 429 raised.

    The caller removes any input files it wrote for the record when this raises.
    """
    settings, jobs, redis = request.app[SETTINGS], request.app[JOBS], request.app[REDIS]
    try:
        if not await admit_to_queue(redis, settings, record.id):
            raise _queue_full(family)
        try:
            if not await acquire_job_slot(redis, settings, record.owner, record.id):
                raise _slots_full(family, settings)
            try:
                await jobs.enqueue(record)
            except BaseException:
                await release_job_slot(redis, record.owner, record.id)
                raise
        finally:
            # Once enqueued the job counts in the arq queue itself; until then the ticket did.
            await redis.zrem(ADMISSION_KEY, record.id)
    except BaseException:
        await jobs.delete(record.id)
        raise
