"""Per-token concurrency slots and queue admission, in Redis only (no HTTP: the worker uses it).

A slot is held by a job id in `limit:slots:{owner}` from admission until the worker releases it
when the job ends; every slot lapses on its own after `slot_lifetime_s`, so a killed worker never
leaks one. Queue admission holds a short ticket in `limit:admission` while a job is enqueued, so
a burst of concurrent submissions cannot overshoot MAX_QUEUED_JOBS. Key names: common.redis_keys.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from common import redis_keys
from common.settings import Settings

ADMISSION_TICKET_S = 60

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
_ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
redis.call('EXPIREAT', KEYS[2], math.ceil(tonumber(ARGV[2])))
return 1
"""


def slot_lifetime_s(settings: Settings) -> int:
    """Upper bound of a job's life in seconds (every try at its timeout): no slot is held longer."""
    return settings.job_timeout_s * (settings.job_max_tries + 1) + 300


async def running_jobs(redis: Redis, owner: str) -> int:
    """How many slots `owner` holds now (lapsed ones dropped first)."""
    key = redis_keys.job_slots(owner)
    await redis.zremrangebyscore(key, "-inf", time.time())
    return int(await redis.zcard(key))


async def admit_to_queue(redis: Redis, settings: Settings, job_id: str) -> bool:
    """Hold an admission ticket for job_id unless the queue is full; drop it once enqueued."""
    now = time.time()
    admitted = await redis.eval(
        _ADMIT,
        2,
        redis_keys.ARQ_QUEUE,
        redis_keys.QUEUE_ADMISSION,
        now,
        now + ADMISSION_TICKET_S,
        settings.max_queued_jobs,
        job_id,
    )
    return bool(admitted)


async def drop_admission_ticket(redis: Redis, job_id: str) -> None:
    await redis.zrem(redis_keys.QUEUE_ADMISSION, job_id)


async def acquire_job_slot(redis: Redis, settings: Settings, owner: str, job_id: str) -> bool:
    """True when `job_id` holds one of owner's MAX_CONCURRENT_JOBS_PER_TOKEN slots (idempotent)."""
    now = time.time()
    expires = now + slot_lifetime_s(settings)
    held = await redis.eval(
        _ACQUIRE,
        1,
        redis_keys.job_slots(owner),
        now,
        expires,
        settings.max_concurrent_jobs_per_token,
        job_id,
    )
    return bool(held)


async def release_job_slot(redis: Redis, owner: str, job_id: str) -> None:
    await redis.zrem(redis_keys.job_slots(owner), job_id)
