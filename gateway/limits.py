"""Per-token request rate, per-token concurrent jobs and a global queue-depth guard, as HTTP 429s.

State lives in Redis so the limits hold across any number of gateway processes, and every key has
a TTL so a crashed gateway or a killed worker can never leak a limit forever. The slots and the
queue admission themselves are gateway.job_slots (shared with the worker, which releases slots).

How an endpoint starts a job:
    owner = require_owner(request, family); await check_rate(request, owner, family)
    await check_capacity(request, owner, family)        # optional: refuse before a big upload
    record = await request.app[JOBS].create(owner, params)   # typed (+ write inputs)
    await start_job(request, family, record)            # 429 (record deleted) or enqueued
The worker releases the slot when the job ends (worker.main.job_function does it).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from aiohttp import web

from common import redis_keys
from common.settings import Settings
from gateway.errors import ApiError, Family, api_error
from gateway.job_slots import (
    acquire_job_slot,
    admit_to_queue,
    drop_admission_ticket,
    release_job_slot,
    running_jobs,
)
from gateway.jobs import JobRecord
from gateway.keys import JOBS, REDIS, SETTINGS
from gateway.metrics import REJECTED

log = logging.getLogger("gateway.jobs")

WINDOW_S = 60
BUSY_RETRY_AFTER_S = 15
# A token over its window stays over it for a while, so this process answers that token's next
# requests of the same kind from memory for up to REFUSAL_MEMO_S, without a Redis round trip: a
# flood of refused polls then costs half the CPU (measured with a wrk flood, benchmarks/flood.py:
# gateway 0.49 + Redis 0.05 cores at 1,166 polls/s before, 0.27 + 0.00 at 1,259/s). Refusals from
# memory are not counted in Redis; the window only decays meanwhile, so at worst a request is
# refused up to one second after its token came back under the limit.
REFUSAL_MEMO_S = 1.0


class RefusalMemo:
    """(reason, owner) -> (monotonic deadline of the memo, wall-clock time the window frees).
    Bounded by the number of api_tokens (owners are authenticated before any window check)."""

    def __init__(self) -> None:
        self._until: dict[tuple[str, str], tuple[float, float]] = {}

    def retry_after(self, reason: str, owner: str) -> int | None:
        """Seconds to tell the client when it is still refused from memory, else None."""
        entry = self._until.get((reason, owner))
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._until[(reason, owner)]
            return None
        return max(1, math.ceil(entry[1] - time.time()))

    def remember(self, reason: str, owner: str, retry_after_s: int) -> None:
        self._until[(reason, owner)] = (
            time.monotonic() + min(REFUSAL_MEMO_S, retry_after_s),
            time.time() + retry_after_s,
        )


REFUSALS = web.AppKey("refusals", RefusalMemo)


async def check_rate(request: web.Request, owner: str, family: Family) -> None:
    """Sliding-window estimate over two fixed one-minute windows (no burst at window edges).

    Raises the family's 429 with Retry-After (seconds) past RATE_LIMIT_PER_MINUTE."""
    limit = request.app[SETTINGS].rate_limit_per_minute
    await _check_window(request, owner, family, limit, redis_keys.rate_window, "requests", "rate")


async def check_poll_rate(request: web.Request, owner: str, family: Family) -> None:
    """The polling endpoints' own per-token window (POLL_LIMIT_PER_MINUTE), so a tight polling
    loop is slowed down without eating into the budget for submits; same 429 + Retry-After."""
    limit = request.app[SETTINGS].poll_limit_per_minute
    await _check_window(request, owner, family, limit, redis_keys.poll_window, "status polls", "poll")


async def _check_window(
    request: web.Request,
    owner: str,
    family: Family,
    limit: int,
    key: Callable[[str, int], str],
    what: str,
    reason: str,
) -> None:
    if limit <= 0:
        return
    memo = request.app[REFUSALS]
    if (remembered := memo.retry_after(reason, owner)) is not None:
        raise _over_window(family, limit, what, reason, remembered)
    redis = request.app[REDIS]
    now = time.time()
    window = int(now // WINDOW_S)
    current_key, previous_key = key(owner, window), key(owner, window - 1)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(current_key)
        pipe.expire(current_key, 2 * WINDOW_S)
        pipe.get(previous_key)
        current, _, previous = await pipe.execute()
    elapsed = now - window * WINDOW_S
    estimate = int(previous or 0) * (1 - elapsed / WINDOW_S) + int(current)
    if estimate > limit:
        retry_after = max(1, math.ceil(WINDOW_S - elapsed))
        memo.remember(reason, owner, retry_after)
        raise _over_window(family, limit, what, reason, retry_after)


def _over_window(family: Family, limit: int, what: str, reason: str, retry_after: int) -> ApiError:
    REJECTED.labels(reason).inc()
    return api_error(
        family,
        429,
        "Too Many Requests",
        f"Rate limit of {limit} {what} per minute exceeded; retry in {retry_after}s.",
        headers={"Retry-After": str(retry_after)},
    )


def _busy(family: Family, details: str) -> ApiError:
    return api_error(
        family, 429, "Too Many Requests", details, headers={"Retry-After": str(BUSY_RETRY_AFTER_S)}
    )


def _queue_full(family: Family) -> ApiError:
    REJECTED.labels("queue_full").inc()
    return _busy(family, "The service is busy: too many queued jobs; retry later.")


def _slots_full(family: Family, settings: Settings) -> ApiError:
    REJECTED.labels("job_slots").inc()
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
    if await running_jobs(request.app[REDIS], owner) >= settings.max_concurrent_jobs_per_token:
        raise _slots_full(family, settings)


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
            log.info("job queued", extra={"job_id": record.id, "kind": record.kind.value})
        finally:
            # Once enqueued the job counts in the arq queue itself; until then the ticket did.
            await drop_admission_ticket(redis, record.id)
    except BaseException:
        await jobs.delete(record.id)
        raise
