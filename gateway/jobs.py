"""Job records in Redis (one JSON document per job at `job:{id}`, see common.redis_keys) and
enqueueing onto arq.

The record is the single source of truth that every status endpoint translates into its own
document's shape. Only the worker writes after `create`, but writes still go through an optimistic
WATCH/MULTI transaction so a late progress update can never overwrite a terminal status.
The job's parameters are typed (gateway.job_params); the arq function is named after the kind.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import Redis
from redis.exceptions import WatchError

from common import redis_keys
from common.compat import StrEnum
from common.settings import Settings
from gateway.job_params import JobKind, JobParams, params_from_dict
from gateway.json_log import bound
from gateway.storage import StoredResult, is_job_id

log = logging.getLogger("gateway.jobs")


class JobStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


TERMINAL: frozenset[JobStatus] = frozenset({JobStatus.COMPLETED, JobStatus.FAILED})
PROGRESS_MIN_INTERVAL_S = 0.25  # at most ~4 progress writes per second per job


@dataclass(frozen=True)
class JobError:
    code: int
    message: str
    details: str


@dataclass(frozen=True)
class WebhookDelivery:
    """Where a job's webhook stands: pending (not yet delivered, retrying), delivered, failed
    (gave up); `attempts` so far, the receiver's last HTTP status or the last error."""

    state: str
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class JobRecord:
    """One job as stored; times are epoch seconds, durations seconds, `owner` a token's SHA-256."""

    id: str
    kind: JobKind
    owner: str
    status: JobStatus
    params: JobParams
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    current_frame: int | None = None
    total_frames: int | None = None
    progress_percentage: float | None = None
    result: StoredResult | None = None
    warning: str | None = None
    original_duration: float | None = None
    processed_duration: float | None = None
    error: JobError | None = None
    request_id: str | None = None  # X-Request-ID of the submit (the job id unless the client chose it)
    webhook_url: str | None = None  # POSTed the job's final document when it ends (gateway.webhooks)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def trimmed(self) -> bool:
        """The result covers less of the video than the input holds (a trim, with its warning)."""
        original, processed = self.original_duration, self.processed_duration
        return original is not None and processed is not None and processed < original

    def to_json(self) -> str:
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["params"] = self.params.to_dict()
        data["result"] = self.result.to_dict() if self.result else None
        data["error"] = asdict(self.error) if self.error else None
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> JobRecord:
        """Raises ValueError/KeyError on a document `to_json` never wrote."""
        data = json.loads(raw)
        result = data.get("result")
        error = data.get("error")
        kind = JobKind(data["kind"])
        data["kind"] = kind
        data["status"] = JobStatus(data["status"])
        data["params"] = params_from_dict(kind, data.get("params") or {})
        data["result"] = StoredResult.from_dict(result) if result else None
        data["error"] = JobError(**error) if error else None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class JobStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        # arq needs its own Redis subclass for enqueueing; share the caller's connection pool.
        self.arq = redis if isinstance(redis, ArqRedis) else ArqRedis(connection_pool=redis.connection_pool)
        self._last_progress: dict[str, float] = {}

    @property
    def active_ttl_s(self) -> int:
        """A record that never ends (lost queue, dead Redis client) still expires, in bounded time."""
        s = self.settings
        return s.result_ttl_s + s.job_timeout_s * (s.job_max_tries + 1) + 86_400

    async def create(
        self, owner: str, params: JobParams, job_id: str | None = None, webhook_url: str | None = None
    ) -> JobRecord:
        """A queued record of the kind `params` belong to (not yet enqueued: see `enqueue`).

        `job_id`: the id to use (the submitting request's own, a UUID4 the gateway made), so the
        202's id, the X-Request-ID header and the logs agree; a fresh UUID4 when None or taken."""
        if job_id is None or not is_job_id(job_id) or await self.redis.exists(redis_keys.job_record(job_id)):
            job_id = str(uuid.uuid4())
        record = JobRecord(
            id=job_id,
            kind=params.KIND,
            owner=owner,
            status=JobStatus.QUEUED,
            params=params,
            created_at=time.time(),
            request_id=bound("request_id"),
            webhook_url=webhook_url,
        )
        await self.redis.set(
            redis_keys.job_record(record.id), record.to_json(), ex=self.active_ttl_s, nx=True
        )
        return record

    async def get(self, job_id: str, owner: str | None = None) -> JobRecord | None:
        """None when absent, malformed id, or owned by someone else (indistinguishable on purpose)."""
        if not is_job_id(job_id):
            return None
        raw = await self.redis.get(redis_keys.job_record(job_id))
        if raw is None:
            return None
        record = JobRecord.from_json(raw)
        if owner is not None and record.owner != owner:
            return None
        return record

    async def _update(
        self,
        job_id: str,
        ttl_s: int | None = None,
        transform: Callable[[JobRecord], dict[str, Any]] | None = None,
        **changes: Any,
    ) -> JobRecord | None:
        """Apply `changes` (and those `transform` derives from the stored record) unless the job
        already ended; returns the new record (None if skipped)."""
        key = redis_keys.job_record(job_id)
        while True:
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        return None
                    record = JobRecord.from_json(raw)
                    if record.done:
                        return None
                    updated = replace(record, **changes, **(transform(record) if transform else {}))
                    pipe.multi()
                    if ttl_s is None:
                        pipe.set(key, updated.to_json(), keepttl=True)
                    else:
                        pipe.set(key, updated.to_json(), ex=ttl_s)
                    if updated.done:
                        # The owner's concurrency slot goes in the same step: a client that reads
                        # "completed" and submits the next job must find the slot free.
                        pipe.zrem(redis_keys.job_slots(record.owner), job_id)
                    await pipe.execute()
                    return updated
                except WatchError:
                    continue

    async def mark_processing(self, job_id: str) -> JobRecord | None:
        """Also used on a re-run (a worker died, a try failed on an unavailable service): the
        progress already reported is kept, since a client's progress must not go back; set_progress
        leaves it still until the re-run passes it."""
        return await self._update(job_id, status=JobStatus.PROCESSING, started_at=time.time())

    async def set_progress(self, job_id: str, current: int, total: int | None) -> None:
        """Cheap enough to call per frame: writes at most every PROGRESS_MIN_INTERVAL_S, plus the last."""
        now = time.monotonic()
        is_last = total is not None and current >= total
        if not is_last and now - self._last_progress.get(job_id, 0.0) < PROGRESS_MIN_INTERVAL_S:
            return
        self._last_progress[job_id] = now

        def ahead(record: JobRecord) -> dict[str, Any]:
            shown = record.current_frame if record.total_frames == total and record.current_frame else 0
            frame = max(current, shown)
            percentage = round(100.0 * frame / total, 1) if total else None
            return {"current_frame": frame, "progress_percentage": percentage}

        await self._update(job_id, transform=ahead, status=JobStatus.PROCESSING, total_frames=total)

    async def complete(
        self,
        job_id: str,
        result: StoredResult,
        warning: str | None = None,
        original_duration: float | None = None,
        processed_duration: float | None = None,
    ) -> JobRecord | None:
        self._last_progress.pop(job_id, None)
        changes: dict[str, Any] = {}
        record = await self.get(job_id)
        if record is not None and record.total_frames:
            changes = {"current_frame": record.total_frames, "progress_percentage": 100.0}
        return await self._update(
            job_id,
            ttl_s=self.settings.result_ttl_s,
            status=JobStatus.COMPLETED,
            finished_at=time.time(),
            result=result,
            warning=warning,
            original_duration=original_duration,
            processed_duration=processed_duration,
            error=None,
            **changes,
        )

    async def fail(self, job_id: str, code: int, message: str, details: str) -> JobRecord | None:
        self._last_progress.pop(job_id, None)
        return await self._update(
            job_id,
            ttl_s=self.settings.result_ttl_s,
            status=JobStatus.FAILED,
            finished_at=time.time(),
            error=JobError(code, message, details),
        )

    async def webhook_delivery(self, job_id: str) -> WebhookDelivery | None:
        raw = await self.redis.get(redis_keys.webhook_state(job_id))
        return WebhookDelivery(**json.loads(raw)) if raw else None

    async def set_webhook_delivery(self, job_id: str, delivery: WebhookDelivery) -> None:
        """Kept as long as a finished record (RESULT_TTL_S)."""
        await self.redis.set(
            redis_keys.webhook_state(job_id), json.dumps(asdict(delivery)), ex=self.settings.result_ttl_s
        )

    async def delete(self, job_id: str) -> None:
        if is_job_id(job_id):
            await self.redis.delete(redis_keys.job_record(job_id))

    async def enqueue(self, record: JobRecord) -> bool:
        """Queue the job once (arq dedupes on `_job_id`); False when it was already queued.

        The arq function is the one the worker registers under the job's kind; it receives the
        job id alone and reads everything else from the record.
        """
        job = await self.arq.enqueue_job(record.kind.value, record.id, _job_id=record.id)
        return job is not None

    async def queue_depth(self) -> int:
        return int(await self.redis.zcard(redis_keys.ARQ_QUEUE))
