"""Answers a new user finds consistent (issue 19, section 3): content types, one id per name,
the polling limit, HD progress."""

from __future__ import annotations

import asyncio
import io
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from conftest import Stack, mask_error
from PIL import Image
from redis.asyncio import Redis

from common import redis_keys
from common.settings import hash_token
from devstack.app_services import gateway_service
from devstack.processes import free_port

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


def _png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(out, "PNG", compress_level=1)
    return out.getvalue()


async def test_json_endpoints_answer_415_for_other_content_types(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    headers = {"api_token": stack.token}
    for path in ("/foreground_mask", "/mask_by_key_points"):
        for data, ctype in (
            ("video=http://x/a.mp4", "application/x-www-form-urlencoded"),
            ("{}", "text/plain"),
        ):
            status, body = await mask_error(
                http, "POST", stack.url + path, data=data, headers={**headers, "Content-Type": ctype}
            )
            assert status == 415 and "application/json" in body["error"]["details"], (path, ctype)


async def test_form_endpoints_say_send_a_form_to_a_json_body(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    headers = {"api_token": stack.token}
    for path, key in (
        ("/image/matte/v1", "message"),
        ("/image/hd/submit/v1", "message"),
        ("/video/submit/v1", "detail"),
    ):
        async with http.post(stack.url + path, json={"image_url": "http://x/a.png"}, headers=headers) as r:
            body = await r.json()
        assert r.status == 415 and set(body) == {key} and "multipart/form-data" in body[key], (path, body)


async def test_job_id_is_the_request_id_and_hd_reports_progress(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    """One value for the 202's id and X-Request-ID when the gateway chose it; a client's own
    X-Request-ID is echoed and the job gets a fresh id. An HD job shows progress while it runs."""
    big = _png((3000, 2000))  # takes long enough on CPU to be seen processing
    headers = {"api_token": stack.token}
    form = aiohttp.FormData()
    form.add_field("file", big, filename="a.png", content_type="image/png")
    async with http.post(f"{stack.url}/image/hd/submit/v1", data=form, headers=headers) as r:
        body = await r.json()
        assert r.status == 202 and body["uuid"] == r.headers["X-Request-ID"], body
    job_id = body["uuid"]
    progress: list[float] = []
    for _ in range(1200):
        async with http.get(f"{stack.url}/image/hd/result/{job_id}", headers=headers) as r:
            if r.status == 200:
                await r.read()
                break
            polled = await r.json()
            assert r.status == 202, polled
            if "progress_percentage" in polled:
                progress.append(polled["progress_percentage"])
        await asyncio.sleep(0.05)
    assert progress and all(0 <= p < 100 for p in progress), progress
    # the one download removed it: the 404 that follows
    async with http.get(f"{stack.url}/image/hd/result/{job_id}", headers=headers) as r:
        assert r.status == 404

    form = aiohttp.FormData()
    form.add_field("file", _png((64, 64)), filename="b.png", content_type="image/png")
    mine = f"client-{uuid.uuid4().hex[:8]}"
    async with http.post(
        f"{stack.url}/image/hd/submit/v1", data=form, headers={**headers, "X-Request-ID": mine}
    ) as r:
        body = await r.json()
        assert r.status == 202 and r.headers["X-Request-ID"] == mine and UUID_RE.match(body["uuid"])


async def _status_of(request: Any) -> int:
    async with request as r:
        return r.status


async def test_polling_has_its_own_per_token_limit(stack: Stack, http: aiohttp.ClientSession) -> None:
    """A second gateway on the same Redis with POLL_LIMIT_PER_MINUTE=20: the 21st poll of a
    minute is a 429 with Retry-After in each document's format; submits are not counted."""
    settings = stack.settings.with_overrides(gateway_port=free_port())
    env = {
        "API_TOKENS": "poll-token,poll-token-2",
        "POLL_LIMIT_PER_MINUTE": "20",
        "RATE_LIMIT_PER_MINUTE": "0",
    }
    gateway = gateway_service(settings, settings.data_dir / "logs" / "gateway-poll.log", env)
    gateway.start()
    try:
        await asyncio.to_thread(gateway.wait_ready, 60)
        url, headers = settings.base_url, {"api_token": "poll-token"}
        statuses = []
        for _ in range(20):
            async with http.get(f"{url}/status/{uuid.uuid4()}", headers=headers) as r:
                statuses.append(r.status)
        assert statuses == [404] * 20
        status, body = await mask_error(http, "GET", f"{url}/status/{uuid.uuid4()}", headers=headers)
        assert status == 429 and "status polls" in body["error"]["details"]
        # A flood of refused polls is answered from this process's memory (gateway/limits.py,
        # RefusalMemo): 20 more, at once, are all 429 and cost Redis no count each (before the
        # memo every one was counted: +20). A slow machine may let the 1 s memo lapse once.
        counter = redis_keys.poll_window(hash_token("poll-token"), int(time.time() // 60))
        redis = Redis.from_url(settings.redis_url)
        try:
            before = int(await redis.get(counter) or 0)
            flood = [http.get(f"{url}/status/{uuid.uuid4()}", headers=headers) for _ in range(20)]
            answers = await asyncio.gather(*(_status_of(request) for request in flood))
            grown = int(await redis.get(counter) or 0) - before
        finally:
            await redis.aclose()
        assert answers == [429] * 20 and grown < 10, (answers, grown)
        async with http.get(f"{url}/video/result/{uuid.uuid4()}", headers=headers) as r:
            assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
            assert set(await r.json()) == {"message"}
        # submits have their own budget: a refused-for-content submit is not a 429
        async with http.post(f"{url}/image/matte/v1", json={}, headers=headers) as r:
            assert r.status == 415
        # another token polls freely
        async with http.get(f"{url}/status/{uuid.uuid4()}", headers={"api_token": "poll-token-2"}) as r:
            assert r.status == 404
    finally:
        gateway.stop()
