"""Faults on a private stack (tests/faults.py): real processes killed with real signals, a real
full disk (tmpfs), a client that hangs up mid-upload. Nothing queued may be lost, no job may hang,
no partial result may be presented as a success. The janitor is exercised directly.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from conftest import VIDEOS
from faults import PrivateStack, start_private_stack, submit_mask, wait_status
from media import ClipSpec, inspect, make_clip, serve

from common import redis_keys
from common.settings import Settings
from gateway.storage import Storage
from worker.main import remove_stale

SRC = VIDEOS / "01_dog.mp4"
SHORT = ClipSpec("short.mp4", "libx264", duration_s=1.0)
LONG = ClipSpec("long.mp4", "libx264", duration_s=6.0)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fault-clips")
    for spec in (SHORT, LONG):
        make_clip(SRC, root, spec)
    return root


@pytest.fixture(scope="module")
def clip_url(clips: Path) -> Iterator[str]:
    with serve(clips) as url:
        yield url


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateStack]:
    stack = start_private_stack(tmp_path_factory.mktemp("fault-stack"))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


def _leftovers(stack: PrivateStack, job_id: str) -> list[Path]:
    s = stack.settings
    return [p for p in (s.tmp_dir / job_id, s.data_dir / "uploads" / job_id) if p.exists()]


# --- janitor ---


def _aged(path: Path, age_s: float, file: bool = False) -> Path:
    if file:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    else:
        path.mkdir(parents=True)
        (path / "f").write_bytes(b"x")
    past = time.time() - age_s
    os.utime(path, (past, past))
    return path


async def test_janitor_removes_expired_results_and_orphaned_temp_files(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, result_ttl_s=5, job_timeout_s=10, job_max_tries=1)
    storage = Storage(settings)
    stale = 10 * 2 + 300 + 60  # older than any job can live (limits.slot_lifetime_s) plus a margin
    ids = [str(uuid.uuid4()) for _ in range(6)]
    expired_result = _aged(settings.results_dir / ids[0], 60)
    fresh_result = _aged(settings.results_dir / ids[1], 0)
    orphan_tmp = _aged(settings.tmp_dir / ids[2], stale)
    live_tmp = _aged(settings.tmp_dir / ids[3], 60)  # a job that may still run: kept
    orphan_staging = _aged(settings.tmp_dir / f"upload-{ids[4]}", stale)  # gateway died mid-upload
    orphan_upload = _aged(storage.uploads_root / ids[5], stale)
    foreign = _aged(settings.results_dir / "not-a-job", 10_000)  # never touch what we did not write
    removed = await remove_stale(settings, storage)
    assert removed == 4
    for gone in (expired_result, orphan_tmp, orphan_staging, orphan_upload):
        assert not gone.exists(), gone
    for kept in (fresh_result, live_tmp, foreign):
        assert kept.exists(), kept


# --- a client that hangs up mid-upload ---


async def test_client_disconnect_mid_upload_leaves_no_file(
    fault_stack: PrivateStack, http: aiohttp.ClientSession
) -> None:
    s = fault_stack.settings
    boundary = "reliabilityboundary"
    head = (
        "POST /video/submit/v1 HTTP/1.1\r\n"
        f"Host: {s.gateway_host}\r\napi_token: {fault_stack.token}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        "Content-Length: 50000000\r\n\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="v.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    _, writer = await asyncio.open_connection(s.gateway_host, s.gateway_port)
    writer.write(head + SRC.read_bytes()[:1_500_000])
    await writer.drain()
    staged: list[Path] = []
    for _ in range(100):  # the gateway has started writing the upload to disk
        staged = [p for p in s.tmp_dir.glob("upload-*") if any(p.iterdir())]
        if staged:
            break
        await asyncio.sleep(0.05)
    assert staged, "the upload never reached the staging dir"
    writer.transport.abort()  # RST, like a client that lost its network
    for _ in range(100):
        if not any(s.tmp_dir.glob("upload-*")):
            break
        await asyncio.sleep(0.1)
    assert not any(s.tmp_dir.glob("upload-*")), "orphaned upload left after a client hang-up"
    assert not any((s.data_dir / "uploads").glob("*")), "an input was kept for a job never queued"
    async with http.get(f"{fault_stack.url}/healthz") as r:
        assert r.status == 200
    assert fault_stack.gateway.alive()


# --- a worker killed with SIGKILL mid-video ---


async def test_worker_sigkill_mid_video_job_finishes_on_the_other(
    fault_stack: PrivateStack, http: aiohttp.ClientSession, clip_url: str, clips: Path, tmp_path: Path
) -> None:
    job_id = await submit_mask(http, fault_stack.url, fault_stack.headers, f"{clip_url}/long.mp4")
    await wait_status(http, fault_stack.url, fault_stack.headers, job_id, ("processing",), 120, min_frame=3)
    victim = fault_stack.worker_running(job_id)
    assert victim is not None
    fault_stack.workers[victim].stop(sig=signal.SIGKILL)
    killed_at = time.monotonic()
    body = await wait_status(http, fault_stack.url, fault_stack.headers, job_id, ("completed",), 180)
    survivor = fault_stack.workers[1 - victim]
    assert job_id in survivor.log_path.read_text(encoding="utf-8"), "the other worker did not re-run it"
    source = inspect(clips / "long.mp4")
    async with http.get(body["mask_url"]) as r:
        assert r.status == 200
        out = tmp_path / "mask.mkv"
        out.write_bytes(await r.read())
    facts = inspect(out)
    assert facts.frames == source.frames == body["total_frames"]
    assert (facts.width, facts.height) == (source.width, source.height)
    assert 5 < facts.luma_mean < 250
    assert _leftovers(fault_stack, job_id) == []
    print(f"re-run finished {time.monotonic() - killed_at:.1f}s after SIGKILL")
    fault_stack.start_worker(victim)


# --- Redis killed and restarted (AOF persistence) ---


async def test_redis_restart_loses_no_queued_job(
    fault_stack: PrivateStack, http: aiohttp.ClientSession, clip_url: str
) -> None:
    for worker in fault_stack.workers:  # nobody consumes: the jobs stay queued across the restart
        worker.stop()
    ids = [
        await submit_mask(http, fault_stack.url, fault_stack.headers, f"{clip_url}/short.mp4")
        for _ in range(3)
    ]
    client = aioredis.Redis.from_url(fault_stack.settings.redis_url)
    try:
        assert await client.zcard(redis_keys.ARQ_QUEUE) == 3
        await asyncio.sleep(1.5)  # appendfsync everysec: what is older than a second is on disk
        fault_stack.redis.stop(sig=signal.SIGKILL)
        async with http.get(f"{fault_stack.url}/status/{ids[0]}", headers=fault_stack.headers) as r:
            assert r.status == 503 and "Retry-After" in r.headers
            assert (await r.json())["error"]["code"] == 503
        fault_stack.redis.start()
        fault_stack.redis.wait_ready(30)
        await asyncio.sleep(0.5)  # the AOF is replayed before Redis answers commands
        assert await client.zcard(redis_keys.ARQ_QUEUE) == 3
    finally:
        await client.aclose()
    for index in range(len(fault_stack.workers)):
        fault_stack.start_worker(index)
    for job_id in ids:
        body = await wait_status(http, fault_stack.url, fault_stack.headers, job_id, ("completed",), 180)
        assert body["total_frames"] and body["mask_url"]


# --- tritonserver killed mid-job ---


async def test_triton_restart_mid_job_retries_or_fails_clearly(
    fault_stack: PrivateStack, http: aiohttp.ClientSession, clip_url: str
) -> None:
    job_id = await submit_mask(http, fault_stack.url, fault_stack.headers, f"{clip_url}/long.mp4")
    await wait_status(http, fault_stack.url, fault_stack.headers, job_id, ("processing",), 120, min_frame=3)
    fault_stack.restart(fault_stack.triton, signal.SIGKILL, pause_s=1.0)
    body = await wait_status(http, fault_stack.url, fault_stack.headers, job_id, timeout_s=240)
    if body["status"] == "completed":
        assert body["current_frame"] == body["total_frames"] and body["mask_url"]
    else:
        assert body["error"]["message"] and body["error"]["details"], body
        assert "mask_url" not in body
    print(f"after a Triton restart the job ended {body['status']}: {body.get('error')}")
    assert _leftovers(fault_stack, job_id) == []
    # and the restarted server serves the next job
    job_id = await submit_mask(http, fault_stack.url, fault_stack.headers, f"{clip_url}/short.mp4")
    await wait_status(http, fault_stack.url, fault_stack.headers, job_id, ("completed",), 120)


# --- the data disk fills up while a result is written ---


async def test_disk_full_while_writing_result_fails_cleanly(
    fault_stack: PrivateStack, http: aiohttp.ClientSession, clip_url: str, clips: Path
) -> None:
    if not fault_stack.tmpfs:
        pytest.skip("cannot mount a tmpfs here (not root): no real full disk to test against")
    data = fault_stack.settings.data_dir
    ballast = data / "ballast"
    headroom = (clips / "short.mp4").stat().st_size + 32 * 1024  # the input fits, ProRes 4444 does not
    try:
        with ballast.open("wb") as f:
            f.truncate(0)
            remaining = shutil.disk_usage(data).free - headroom
            chunk = b"\0" * (1 << 20)
            while remaining > 0:
                remaining -= f.write(chunk[: min(len(chunk), remaining)])
        job_id = await submit_mask(
            http, fault_stack.url, fault_stack.headers, f"{clip_url}/short.mp4", "mov_proresks"
        )
        body = await wait_status(http, fault_stack.url, fault_stack.headers, job_id, ("failed",), 120)
        print(f"disk full: {body['error']}")
        assert "mask_url" not in body
        assert "space" in body["error"]["details"].lower(), body["error"]
        assert not (fault_stack.settings.results_dir / job_id).exists() or not any(
            (fault_stack.settings.results_dir / job_id).iterdir()
        )
        assert _leftovers(fault_stack, job_id) == []
    finally:
        ballast.unlink(missing_ok=True)
    job_id = await submit_mask(
        http, fault_stack.url, fault_stack.headers, f"{clip_url}/short.mp4", "mov_proresks"
    )
    await wait_status(http, fault_stack.url, fault_stack.headers, job_id, ("completed",), 120)
