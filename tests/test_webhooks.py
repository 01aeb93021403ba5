"""Webhooks against a real receiver on loopback: delivery with a valid signature and idempotency
key, status showing the delivery, a retry after a 500, giving up after the bound (the test stack
sets WEBHOOK_GIVE_UP_S=4, WEBHOOK_RETRY_BASE_S=0.5), private addresses refused on submit."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from conftest import WEBHOOK_SECRET, Stack, mask_error
from media import serve
from PIL import Image

from devstack.processes import free_port
from gateway.identity import WEBHOOK_USER_AGENT
from gateway.webhooks import signature


@dataclass
class Receiver:
    url: str
    answers: list[int] = field(default_factory=list)  # statuses to give, in order; then 200
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    hook = Receiver(f"http://127.0.0.1:{port}/hook")

    async def handle(request: web.Request) -> web.Response:
        hook.calls.append((dict(request.headers), await request.read()))
        return web.Response(status=hook.answers.pop(0) if hook.answers else 200)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield hook
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
def clip_url(video_clips: dict[str, Path]) -> Iterator[str]:
    with serve(video_clips["h264_aac.mp4"].parent) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def _submit_hd(http: aiohttp.ClientSession, stack: Stack, webhook_url: str) -> tuple[int, dict]:
    png = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(png, "PNG")
    form = aiohttp.FormData()
    form.add_field("file", png.getvalue(), filename="a.png", content_type="image/png")
    form.add_field("webhook_url", webhook_url)
    async with http.post(
        f"{stack.url}/image/hd/submit/v1", data=form, headers={"api_token": stack.token}
    ) as r:
        return r.status, await r.json()


async def _until(condition: object, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.1)


async def test_delivery_signed_and_shown_in_status(
    stack: Stack, http: aiohttp.ClientSession, receiver: Receiver, clip_url: str
) -> None:
    # surrounding spaces, as a form or a template leaves them: the receiver routes /hook only
    body = {"video": f"{clip_url}/one.mp4", "model": "rvm", "webhook_url": f" {receiver.url}  "}
    headers = {"api_token": stack.token}
    async with http.post(f"{stack.url}/foreground_mask", json=body, headers=headers) as r:
        assert r.status == 202, await r.text()
        job_id = (await r.json())["request_id"]
    await _until(lambda: receiver.calls, 60)
    assert len(receiver.calls) == 1
    sent, raw = receiver.calls[0]
    assert sent["webhook-id"] == job_id
    assert sent["User-Agent"] == WEBHOOK_USER_AGENT
    expected = signature(WEBHOOK_SECRET.encode(), job_id, int(sent["webhook-timestamp"]), raw)
    assert sent["webhook-signature"] == expected
    assert abs(int(sent["webhook-timestamp"]) - time.time()) < 60
    document = json.loads(raw)
    async with http.get(f"{stack.url}/status/{job_id}", headers=headers) as r:
        status = await r.json()
    assert document["request_id"] == job_id and document["status"] == "completed" == status["status"]
    assert document["mask_url"]
    await _until(lambda: False, 0.3)  # the state is written right after the receiver answered
    async with http.get(f"{stack.url}/status/{job_id}", headers=headers) as r:
        status = await r.json()
    assert status["webhook"] == {"state": "delivered", "attempts": 1, "last_status": 200, "last_error": None}


async def test_retry_after_500_then_give_up(
    stack: Stack, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    receiver.answers = [500]
    status, body = await _submit_hd(http, stack, receiver.url)
    assert status == 202, body
    await _until(lambda: len(receiver.calls) >= 2, 30)
    (first, first_raw), (second, second_raw) = receiver.calls[:2]
    assert first["webhook-id"] == second["webhook-id"] == body["uuid"] and first_raw == second_raw
    assert json.loads(second_raw)["status"] == "success"

    receiver.calls.clear()
    receiver.answers = [503] * 100  # never accepts: bounded by WEBHOOK_GIVE_UP_S=4
    started = time.monotonic()
    status, body = await _submit_hd(http, stack, receiver.url)
    assert status == 202, body
    await _until(lambda: len(receiver.calls) >= 3, 30)
    await asyncio.sleep(6)  # past the bound: no further attempt
    count = len(receiver.calls)
    await asyncio.sleep(2)
    assert len(receiver.calls) == count and 3 <= count <= 6, count
    assert time.monotonic() - started < 20


async def test_private_and_reserved_addresses_refused(stack: Stack, http: aiohttp.ClientSession) -> None:
    headers = {"api_token": stack.token}
    hooks = (
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest",
        "http://[fd00::1]/x",
        "ftp://a/b",
        "http://2130706433:8080/hook",  # 127.0.0.1 written as one number: never deliverable
    )
    for hook in hooks:
        body = {"video": "http://127.0.0.1:1/a.mp4", "webhook_url": hook}
        status, error = await mask_error(
            http, "POST", f"{stack.url}/foreground_mask", json=body, headers=headers
        )
        assert status == 422 and "webhook_url" in error["error"]["details"], (hook, error)
        status, bg = await _submit_hd(http, stack, hook)
        assert status == 400 and "webhook_url" in bg["message"], (hook, bg)
