"""Webhooks: when a job with a `webhook_url` ends, its final document is POSTed there, signed.

`python -m gateway.webhooks` runs the sender: an arq worker on its own queue (WEBHOOK_QUEUE), so
slow or dead receivers never hold a job worker; the job worker enqueues one delivery per job
(arq job id `webhook:<job id>`, so at most one is queued). Delivery, after the Standard Webhooks
conventions (https://www.standardwebhooks.com):

* headers `webhook-id` (the job id: the idempotency key, the same on every retry),
  `webhook-timestamp` (Unix seconds of this attempt) and
  `webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>" with WEBHOOK_SECRET>`;
* body: the document /status gives for a mask job, or for the background API's jobs
  `{"uuid", "status": "success"|"failed", "message", "result_url"}`;
* any 2xx is delivered; anything else (another status, a redirect, which is never followed, a
  refused address, a timeout) is retried with exponential backoff (WEBHOOK_RETRY_BASE_S doubling,
  at most 10 minutes) until WEBHOOK_GIVE_UP_S after the job ended, then the delivery is failed;
* the URL obeys the URL fetcher's rules (gateway.fetch): every address the host resolves to must
  be public (loopback only with ALLOW_LOOPBACK_URLS), checked at submit and again, pinned, on
  every attempt (no DNS rebinding).

The delivery state (pending, delivered, failed; attempts; last status) is in /status (`webhook`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import aiohttp
from arq import Retry
from arq.connections import RedisSettings
from arq.worker import func, run_worker
from yarl import URL

from common import redis_keys
from common.settings import Settings
from gateway.fetch import FetchError, PinnedResolver, resolve_checked
from gateway.identity import WEBHOOK_USER_AGENT
from gateway.job_params import JobKind
from gateway.jobs import JobRecord, JobStatus, JobStore, WebhookDelivery
from gateway.json_log import bind, setup_logging
from gateway.routes.masks import status_body
from gateway.storage import Storage

log = logging.getLogger("gateway.webhooks")

MAX_BACKOFF_S = 600.0
_RESULT_PATHS = {JobKind.IMAGE_HD: "/image/hd/result/", JobKind.VIDEO_MATTE: "/video/result/"}


def signature(secret: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: `v1,` + base64 HMAC-SHA256 of id.timestamp.body."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()


async def document(record: JobRecord, storage: Storage, settings: Settings) -> dict[str, Any]:
    """What the webhook carries: the job's final document, as its API gives it."""
    if record.kind in (JobKind.FOREGROUND_MASK, JobKind.MASK_BY_KEY_POINTS):
        return await status_body(record, storage)  # the Status Service's own rendering
    ok = record.status == JobStatus.COMPLETED
    what = "Image" if record.kind == JobKind.IMAGE_HD else "Video"
    return {
        "uuid": record.id,
        "status": "success" if ok else "failed",
        "message": f"{what} processing {'completed successfully' if ok else 'failed'}",
        "result_url": f"{settings.base_url}{_RESULT_PATHS[record.kind]}{record.id}",
    }


async def _post(url: URL, body: bytes, headers: dict[str, str], settings: Settings) -> int:
    addresses = await resolve_checked(url, settings.allow_loopback_urls)
    connector = aiohttp.TCPConnector(
        resolver=PinnedResolver(url.raw_host or "", addresses), use_dns_cache=False, limit=1
    )
    timeout = aiohttp.ClientTimeout(total=settings.webhook_timeout_s)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as session,
        session.post(url, data=body, headers=headers, allow_redirects=False) as response,
    ):
        return response.status


async def deliver(ctx: dict[str, Any], job_id: str) -> str:
    """One attempt; raises arq's Retry (backoff) until delivered or WEBHOOK_GIVE_UP_S passed."""
    settings: Settings = ctx["settings"]
    jobs: JobStore = ctx["jobs"]
    record = await jobs.get(job_id)
    if record is None or not record.done or not record.webhook_url:
        return "nothing to deliver"
    with bind(job_id=job_id, request_id=record.request_id):
        before = await jobs.webhook_delivery(job_id) or WebhookDelivery("pending")
        if before.state != "pending":
            return before.state  # a duplicate delivery job: delivered or given up already
        body = json.dumps(await document(record, ctx["storage"], settings), separators=(",", ":")).encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": WEBHOOK_USER_AGENT,
            "webhook-id": job_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(settings.webhook_secret, job_id, timestamp, body),
        }
        status: int | None = None
        error: str | None = None
        try:
            status = await _post(URL(record.webhook_url), body, headers, settings)
        except FetchError as exc:
            error = exc.reason
        except TimeoutError:
            error = f"The receiver did not answer within {settings.webhook_timeout_s:g} s."
        except (aiohttp.ClientError, OSError):
            error = "The receiver could not be reached."
        attempts = before.attempts + 1
        if status is not None and 200 <= status < 300:
            await jobs.set_webhook_delivery(job_id, WebhookDelivery("delivered", attempts, status))
            log.info("webhook delivered", extra={"attempts": attempts, "status": status})
            return "delivered"
        delay = min(MAX_BACKOFF_S, settings.webhook_retry_base_s * 2 ** (attempts - 1))
        ended = record.finished_at or time.time()
        if time.time() + delay > ended + settings.webhook_give_up_s:
            await jobs.set_webhook_delivery(job_id, WebhookDelivery("failed", attempts, status, error))
            log.warning("webhook given up", extra={"attempts": attempts, "status": status, "error": error})
            return "failed"
        await jobs.set_webhook_delivery(job_id, WebhookDelivery("pending", attempts, status, error))
        log.info("webhook attempt failed", extra={"attempts": attempts, "status": status, "error": error})
        raise Retry(defer=delay)


async def _startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    ctx["jobs"] = JobStore(ctx["redis"], settings)
    ctx["storage"] = Storage(settings)


def worker_settings(settings: Settings) -> dict[str, Any]:
    return {
        # retries are bounded by time (WEBHOOK_GIVE_UP_S), not by arq's count
        "functions": [func(deliver, name=redis_keys.WEBHOOK_FUNCTION, max_tries=10_000)],
        "queue_name": redis_keys.WEBHOOK_QUEUE,
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "ctx": {"settings": settings},
        "on_startup": _startup,
        "max_jobs": 50,
        "job_timeout": settings.webhook_timeout_s + 30,
        "keep_result": 60,
        "health_check_key": redis_keys.WEBHOOK_HEALTH_CHECK,
    }


def main() -> None:
    setup_logging()
    run_worker(worker_settings(Settings.from_env()))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
