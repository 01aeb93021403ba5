"""No shared disk: the gateways and the worker each have their own DATA_DIR and exchange files only
through the S3 store (a real SeaweedFS), as on separate hosts. Every endpoint of the three
documents works end to end there, results are removed after their download, a second gateway hands
out presigned store links, and a store outage is a 503 on the request / a retried job: nothing is
lost."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import IMAGES, TEST_TOKEN, S3Server
from media import serve
from PIL import Image

from common.settings import Settings
from devstack.app_services import gateway_service, worker_service
from devstack.processes import Service, free_port
from devstack.seaweedfs import seaweedfs_service
from gateway.object_store import S3Store

PHOTO = IMAGES / "sod_bsds300" / "images" / "100098.jpg"
SIGNING_KEY = "split-hosts-signing-key"


@dataclass
class SplitStack:
    store: S3Server
    gateway: Settings  # gateway A: results streamed through it
    presigning: Settings  # gateway B: presigned store links
    worker: Settings
    worker_service: Service

    @property
    def url(self) -> str:
        return self.gateway.base_url


@pytest.fixture(scope="module")
def split_stack(triton_settings: Settings, redis_port: int, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[SplitStack]:  # fmt: skip
    root = tmp_path_factory.mktemp("split")
    port, key, secret = free_port(), "split-key", os.urandom(16).hex()
    weed = seaweedfs_service(port, root / "seaweedfs", key, secret)
    store = S3Server(weed, f"http://127.0.0.1:{port}", key, secret)
    # db 3: a queue of its own, so the session's other worker never takes these jobs
    base = triton_settings.with_overrides(redis_url=f"redis://127.0.0.1:{redis_port}/3")
    gateway = store.settings(base, "split", gateway_port=free_port(), data_dir=root / "gateway-a")
    presigning = gateway.with_overrides(
        gateway_port=free_port(), data_dir=root / "gateway-b", s3_presigned_links=True
    )
    worker = gateway.with_overrides(data_dir=root / "worker")
    env = {
        "API_TOKENS": TEST_TOKEN,
        "ALLOW_LOOPBACK_URLS": "true",
        "RATE_LIMIT_PER_MINUTE": "100000",
        "POLL_LIMIT_PER_MINUTE": "100000",
        "RESULT_SIGNING_SECRET": SIGNING_KEY,
    }
    services = [
        weed,
        gateway_service(gateway, root / "logs" / "gateway-a.log", env),
        gateway_service(presigning, root / "logs" / "gateway-b.log", env),
        worker_service(worker, 0, root / "logs" / "worker.log", env),
    ]
    started: list[Service] = []
    try:
        for svc in services:
            svc.start()
            started.append(svc)
            svc.wait_ready(60)
        yield SplitStack(store, gateway, presigning, worker, services[-1])
    finally:
        for svc in reversed(started):
            svc.stop()


@pytest.fixture(scope="module")
def clip_url(video_clips: dict[str, Path]) -> Iterator[str]:
    with serve(video_clips["h264_aac.mp4"].parent) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=120), headers={"api_token": TEST_TOKEN}
    ) as session:
        yield session


def _files(root: Path, job_ids: list[str]) -> list[Path]:
    """Files of these jobs left anywhere under a data dir (uploads, results, tmp)."""
    return [p for p in root.rglob("*") if p.is_file() and any(j in str(p) for j in job_ids)]


async def _objects(stack: SplitStack, prefix: str) -> list[str]:
    store = S3Store(stack.worker)
    try:
        return [item.key for item in await store.list(prefix)]
    finally:
        await store.close()


async def _post_json(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(url, json=body) as r:
        payload = await r.json()
        assert r.status == 202, payload
    return payload


async def _post_form(http: aiohttp.ClientSession, url: str, data: bytes, name: str, ctype: str,
                     **fields: str) -> tuple[int, dict[str, Any]]:  # fmt: skip
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type=ctype)
    for key, value in fields.items():
        form.add_field(key, value)
    async with http.post(url, data=form) as r:
        return r.status, await r.json()


async def _until(
    http: aiohttp.ClientSession, url: str, done: Any, timeout_s: float = 240
) -> aiohttp.ClientResponse:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = await http.get(url)
        if await done(r):
            return r
        r.release()
        await asyncio.sleep(0.3)
    raise AssertionError(f"{url} did not finish in {timeout_s}s")


async def _finished_status(r: aiohttp.ClientResponse) -> bool:
    return (await r.json())["status"] in ("completed", "failed")


async def _not_202(r: aiohttp.ClientResponse) -> bool:
    return r.status != 202


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.open(PHOTO).convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


async def test_every_endpoint_without_a_shared_disk(
    split_stack: SplitStack, http: aiohttp.ClientSession, clip_url: str, video_clips: dict[str, Path]
) -> None:
    clip_file = video_clips["h264_aac.mp4"]
    stack, url, b_url = split_stack, split_stack.url, split_stack.presigning.base_url
    # synchronous image: Triton only, no files
    form = aiohttp.FormData()
    form.add_field("file", _jpeg(), filename="p.jpg", content_type="image/jpeg")
    async with http.post(f"{url}/image/matte/v1", data=form) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "image/png"

    clip = f"{clip_url}/h264_aac.mp4"
    mask = await _post_json(http, f"{url}/foreground_mask", {"video": clip, "model": "rvm"})
    points = await _post_json(
        http,
        f"{url}/mask_by_key_points",
        {"video": clip, "key_points": [{"x": 160, "y": 90, "type": "positive"}]},
    )
    status, video = await _post_form(
        http,
        f"{url}/video/submit/v1",
        clip_file.read_bytes(),
        "clip.mp4",
        "video/mp4",
        bg_color="0,255,0",
        model="rvm",
    )
    assert status == 202, video
    status, hd = await _post_form(http, f"{url}/image/hd/submit/v1", _jpeg(), "p.jpg", "image/jpeg",
                                  operation="color", bg_color="0,0,255")  # fmt: skip
    assert status == 202, hd
    ids = [mask["request_id"], points["request_id"], video["uuid"], hd["uuid"]]
    # the gateway kept no input: everything it accepted went to the store
    assert not _files(stack.gateway.data_dir, ids)

    for request_id in ids[:2]:
        r = await _until(http, f"{url}/status/{request_id}", _finished_status)
        body = await r.json()
        assert body["status"] == "completed", body
        assert body["mask_url"].startswith(f"{url}/results/{request_id}?")
        for _ in range(2):  # a mask_url serves until it expires
            async with http.get(body["mask_url"], headers={}) as got:
                assert got.status == 200 and got.headers["Content-Type"] == "video/mp4"
                assert len(await got.read()) > 1000
        # gateway B signs with the store's own key: a presigned link on the store itself
        async with http.get(f"{b_url}/status/{request_id}") as r:
            presigned = (await r.json())["mask_url"]
        assert presigned.startswith(f"{stack.store.endpoint_url}/split/results/{request_id}/")
        async with aiohttp.ClientSession() as anonymous, anonymous.get(presigned) as got:
            assert got.status == 200 and len(await got.read()) > 1000

    # /video/result: gateway B answers the document's upload_link, gateway A streams the file
    r = await _until(http, f"{b_url}/video/result/{video['uuid']}", _not_202)
    linked = await r.json()
    assert r.status == 200 and linked["status"] == "success", linked
    async with aiohttp.ClientSession() as anonymous, anonymous.get(linked["upload_link"]) as got:
        assert got.status == 200
        via_link = await got.read()
    async with http.get(f"{url}/video/result/{video['uuid']}") as r:
        assert r.status == 200 and r.headers["Content-Type"] == "video/mp4"
        assert await r.read() == via_link
    async with http.get(f"{url}/video/result/{video['uuid']}") as again:
        assert again.status == 404 and again.headers["X-Result-Removed"]

    r = await _until(http, f"{url}/image/hd/result/{hd['uuid']}", _not_202)
    assert r.status == 200 and (await r.read()).startswith(b"\x89PNG")
    async with http.get(f"{url}/image/hd/result/{hd['uuid']}") as again:
        assert again.status == 404

    # nothing of these jobs is left on any host; the store holds only the two mask results
    for settings in (stack.gateway, stack.presigning, stack.worker):
        assert not _files(settings.data_dir, ids), settings.data_dir
    assert await _objects(stack, "uploads/") == []
    assert sorted(k.split("/")[1] for k in await _objects(stack, "results/")) == sorted(ids[:2])


async def test_a_store_outage_loses_nothing(
    split_stack: SplitStack, http: aiohttp.ClientSession, clip_url: str
) -> None:
    stack, url = split_stack, split_stack.url
    clip = f"{clip_url}/h264_aac.mp4"
    # a job accepted while the store was up, whose worker then finds the store gone: retried
    accepted = await _post_json(http, f"{url}/foreground_mask", {"video": clip, "model": "rvm"})
    stack.store.service.stop(sig=signal.SIGKILL)
    try:
        async with http.get(f"{url}/readyz") as r:
            ready = await r.json()
            assert r.status == 503 and ready["checks"]["object_store"] is False
        # requests that need the store: 503 in each family's format, nothing kept
        async with http.post(f"{url}/foreground_mask", json={"video": clip}) as r:
            body = await r.json()
            assert r.status == 503 and r.headers["Retry-After"], body
            assert body["error"]["code"] == 503 and body["request_id"]
        refused = body["request_id"]
        status, body = await _post_form(http, f"{url}/image/hd/submit/v1", _jpeg(), "p.jpg", "image/jpeg")
        assert status == 503, body
        async with http.get(f"{url}/status/{refused}") as r:
            assert r.status == 404  # the refused job left no record
        assert not [p for p in (stack.gateway.data_dir / "uploads").rglob("*") if p.is_file()]
        # the worker's first try found the store down and was deferred, not failed
        deadline = time.monotonic() + 30
        while "object store unavailable; retrying" not in stack.worker_service.log_path.read_text():
            assert time.monotonic() < deadline, "the worker never met the outage"
            await asyncio.sleep(0.2)
    finally:
        stack.store.service.start()
        stack.store.service.wait_ready(60)
    r = await _until(http, f"{url}/status/{accepted['request_id']}", _finished_status, timeout_s=90)
    body = await r.json()
    assert body["status"] == "completed", body  # on a later try: nothing was lost
    async with http.get(f"{url}/readyz") as r:
        assert r.status == 200
