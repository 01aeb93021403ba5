"""Several tritonservers (TRITON_URLS): two real ones behind a gateway and a worker, one killed
mid-video. The video's sequence starts again on the other server and the job completes with every
frame; image calls keep working while one server is down; /readyz counts the servers.

Its own Redis, two tritonservers, gateway and worker on free loopback ports (nothing of the
session stack is killed). The clip is short and small (320x180, 2 s) and the video runs `rvm`
alone, so the test stays within about a minute of tritonserver start-up plus a few seconds of work.
"""

from __future__ import annotations

import re
import signal
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from urllib.parse import urlparse

import aiohttp
import numpy as np
import pytest
from conftest import IMAGES, VIDEOS, require_models
from faults import status_of, submit_mask, wait_status
from media import ClipSpec, decode_rgba, inspect, make_clip, serve
from PIL import Image
from tritonclient.utils import InferenceServerException

from common.model_contract import GATEWAY_MODELS
from common.settings import REPO_ROOT, Settings
from devstack.app_services import gateway_service, worker_service
from devstack.processes import Service, free_port
from devstack.redis_server import redis_service
from devstack.stack import private_settings
from devstack.tritonserver import triton_service
from gateway.triton import (
    SEQUENCE_SERVERS_PER_TRY,
    InferenceFailed,
    Triton,
    TritonServer,
    TritonUnavailable,
    _translate,
)
from gateway.video.decode import frame_limits
from gateway.video.probe import probe
from worker.keypoint_mask import decode_to_memmap, prompt_arrays, segment

TOKEN = "failover-token"
CLIP = ClipSpec("juggle.mp4", "libx264", duration_s=2.0)
GT01 = IMAGES / "alphamatting_gt01"
_SUCCESS = re.compile(r'^nv_inference_request_success\{model="rvm",version="1"\} (\d+)', re.MULTILINE)


@dataclass
class TwoTritons:
    settings: Settings
    tritons: list[Service]
    worker: Service

    @property
    def url(self) -> str:
        return self.settings.base_url

    def rvm_requests(self, index: int) -> int:
        """rvm requests server `index` has answered (its Prometheus counter); -1 once it is gone."""
        port = self.tritons[index].settings.triton_metrics_port  # type: ignore[attr-defined]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                found = _SUCCESS.search(r.read().decode())
        except OSError:
            return -1
        return int(found.group(1)) if found else 0


@pytest.fixture  # one test uses it: stopped right after, so no other test shares the CPU with it
def two_tritons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoTritons]:
    require_models(REPO_ROOT / "model_repository")
    root = tmp_path_factory.mktemp("two-tritons")
    base = private_settings(root / "data")
    tritons = []
    for index in range(2):
        own = base.with_overrides(
            triton_grpc_port=free_port(), triton_http_port=free_port(), triton_metrics_port=free_port()
        )
        svc = triton_service(own, root / "logs" / f"triton-{index}.log", root / f"backends-{index}")
        svc.settings = own  # type: ignore[attr-defined]
        tritons.append(svc)
    settings = base.with_overrides(triton_urls=tuple(t.settings.triton_grpc_url for t in tritons))  # type: ignore[attr-defined]
    env = {
        "API_TOKENS": TOKEN,
        "ALLOW_LOOPBACK_URLS": "true",
        "RATE_LIMIT_PER_MINUTE": "0",
        "TRITON_TIMEOUT_S": "15",
    }
    redis_port = urlparse(settings.redis_url).port
    assert redis_port is not None
    redis = redis_service(redis_port, root / "redis")
    gateway = gateway_service(settings, root / "logs" / "gateway.log", env)
    worker = worker_service(settings, 0, root / "logs" / "worker-0.log", env)
    started: list[Service] = []
    try:
        for svc in [redis, *tritons]:  # both tritonservers load at once
            svc.start()
            started.append(svc)
        redis.wait_ready(30)
        for svc in tritons:
            svc.wait_ready(300)
        for svc in (gateway, worker):
            svc.start()
            started.append(svc)
            svc.wait_ready(60)
        yield TwoTritons(settings, tritons, worker)
    finally:
        for svc in reversed(started):
            svc.stop(timeout_s=20)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(VIDEOS / "05_default_juggle.mp4", tmp_path_factory.mktemp("failover-clip"), CLIP)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


async def _readiness(http: aiohttp.ClientSession, stack: TwoTritons) -> tuple[int, dict]:
    async with http.get(f"{stack.url}/readyz") as r:
        return r.status, await r.json()


async def _matte_iou(http: aiohttp.ClientSession, stack: TwoTritons) -> float:
    """One synchronous image call: IoU of its alpha with GT01's true alpha."""
    form = aiohttp.FormData()
    image = (GT01 / "GT01_image.png").read_bytes()
    form.add_field("file", image, filename="upload", content_type="image/png")
    async with http.post(f"{stack.url}/image/matte/v1", data=form, headers={"api_token": TOKEN}) as r:
        body = await r.read()
        assert r.status == 200, body[:300]
    alpha = np.asarray(Image.open(BytesIO(body)).getchannel("A")) > 127
    truth = np.asarray(Image.open(GT01 / "GT01_alpha.png").convert("L")) > 127
    return float((alpha & truth).sum() / (alpha | truth).sum())


async def _mask_frames(http: aiohttp.ClientSession, url: str, dest: Path) -> np.ndarray:
    async with http.get(url) as r:
        assert r.status == 200
        dest.write_bytes(await r.read())
    return np.stack([frame[..., 0] for frame in decode_rgba(dest)])


async def test_triton_killed_mid_video(
    two_tritons: TwoTritons, clip: Path, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    stack = two_tritons
    status, ready = await _readiness(http, stack)
    assert status == 200 and ready["triton_servers"] == {"configured": 2, "ready": 2}, ready
    source = inspect(clip)
    headers = {"api_token": TOKEN}
    with serve(clip.parent) as clip_url:
        job_id = await submit_mask(http, stack.url, headers, f"{clip_url}/{clip.name}")
        await wait_status(http, stack.url, headers, job_id, ("processing",), 120, min_frame=8)
        counts = [stack.rvm_requests(i) for i in range(2)]
        victim = int(np.argmax(counts))  # the server the video's sequence runs on
        assert counts[victim] >= 8 and counts[1 - victim] < 8, counts
        stack.tritons[victim].stop(sig=signal.SIGKILL)
        killed_at = time.monotonic()
        running = await status_of(http, stack.url, headers, job_id)
        assert running["status"] == "processing", "the video ended before the kill: nothing tested"

        done = await wait_status(http, stack.url, headers, job_id, ("completed",), 180)
        recovered_s = time.monotonic() - killed_at

        # image calls go on while one server is down (the gateway's first finds it dead and moves
        # on). After the video, not beside it: on a shared 2-core machine under outside load the
        # survivor's Python-backend stubs can miss their health beat with both at once.
        for _ in range(3):
            assert await _matte_iou(http, stack) > 0.5
        status, ready = await _readiness(http, stack)
        assert status == 200 and ready["triton_servers"] == {"configured": 2, "ready": 1}, ready
        masks = await _mask_frames(http, done["mask_url"], tmp_path / "failover.mkv")
        assert masks.shape[0] == source.frames == done["total_frames"]
        # the survivor ran the whole video again: the sequence was started afresh, not continued
        assert stack.rvm_requests(1 - victim) >= source.frames
        restarts = [
            line
            for line in stack.worker.log_path.read_text(encoding="utf-8").splitlines()
            if "starting again on another" in line and job_id in line
        ]
        # restarted inside the job, on the stream's loss (a later arq retry logs no such line)
        assert restarts and "UNAVAILABLE" in restarts[0], restarts

        # sane mask: the same as an uninterrupted run of the same clip on the survivor
        again = await submit_mask(http, stack.url, headers, f"{clip_url}/{clip.name}")
        reference = await wait_status(http, stack.url, headers, again, ("completed",), 180)
        expected = await _mask_frames(http, reference["mask_url"], tmp_path / "reference.mkv")
    assert masks.shape == expected.shape
    difference = np.abs(masks.astype(np.int16) - expected.astype(np.int16))
    assert difference.mean() < 1.0, difference.mean()
    coverage = (masks > 127).mean(axis=(1, 2))
    assert (coverage > 0.01).all() and (coverage < 0.9).all(), coverage  # the juggler, every frame
    print(f"video finished {recovered_s:.1f}s after the kill; {masks.shape[0]} frames")


# --- the pool's rules, on real gRPC clients to closed ports ---------------------------------------


def test_triton_urls_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TRITON_URL", "a:8001")
    assert Settings.from_env().triton_grpc_urls == ("a:8001",)  # the one-server name stays valid
    monkeypatch.setenv("TRITON_URLS", " a:8001, b:9001 ,")
    assert Settings.from_env().triton_grpc_urls == ("a:8001", "b:9001")
    monkeypatch.delenv("TRITON_URL")
    monkeypatch.delenv("TRITON_URLS")
    monkeypatch.setenv("TRITON_GRPC_PORT", "7001")
    assert Settings.from_env().triton_grpc_urls == ("127.0.0.1:7001",)


async def test_pool_tries_each_server_once_then_gives_up() -> None:
    urls = (f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}")
    triton = Triton(Settings(triton_urls=urls, triton_retry_after_s=30))
    try:
        tried: list[str] = []

        async def attempt(server: TritonServer) -> None:
            tried.append(server.url)
            await server.u2netp(np.zeros((8, 8, 3), np.uint8))

        with pytest.raises(TritonUnavailable):
            await triton.on_one_server(attempt)
        assert sorted(tried) == sorted(urls)  # each once: no loop over dead servers
        assert not any(server.healthy for server in triton.servers)
        assert all(server.in_flight == 0 for server in triton.servers)
        # both down: the one whose pause ends first is still tried (a stale mark costs one call)
        first_back = min(triton.servers, key=lambda server: server.down_until)
        assert triton.pick() is first_back
        with pytest.raises(ValueError, match="one server"):
            await triton.infer("rvm", {}, ["alpha"], sequence_id=5, start=True)
        assert await triton.ready() == {"server": False, **dict.fromkeys(GATEWAY_MODELS, False)}
    finally:
        await triton.close()


async def test_a_sequence_tries_two_servers_per_job_try() -> None:
    """A video that stalls or kills servers must not take every one down in turn."""
    triton = Triton(Settings(triton_urls=tuple(f"127.0.0.1:{free_port()}" for _ in range(3))))
    try:
        tried: list[str] = []

        async def attempt(server: TritonServer) -> None:
            tried.append(server.url)
            await server.u2netp(np.zeros((8, 8, 3), np.uint8))

        with pytest.raises(TritonUnavailable):
            await triton.on_one_server(attempt, SEQUENCE_SERVERS_PER_TRY)
        assert len(tried) == len(set(tried)) == SEQUENCE_SERVERS_PER_TRY == 2
    finally:
        await triton.close()


async def test_pool_spreads_calls_and_skips_a_server_marked_down() -> None:
    triton = Triton(Settings(triton_urls=(f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}")))
    try:
        a, b = triton.servers
        assert {triton.pick().url for _ in range(4)} == {a.url, b.url}  # in turn when equally idle
        a.in_flight = 1
        assert {triton.pick().url for _ in range(4)} == {b.url}  # the less busy one
        a.in_flight = 0
        b.mark_down()
        assert {triton.pick().url for _ in range(4)} == {a.url}
        b.mark_up()
        assert b.healthy
    finally:
        await triton.close()


async def test_keypoint_walk_starts_again_on_a_live_server(
    triton_settings: Settings, video_clips: dict[str, Path], tmp_path: Path
) -> None:
    """Both walks of a key-point job over a pool whose first server is dead: the walk sent there
    starts again on the live one from its prompt frame; every mask is written and counted once,
    and equals a run on the live server alone."""
    source = video_clips["h264_aac.mp4"]
    info = probe(source)
    # 0.25 s (about 6 frames): enough for two walks, cheap on a loaded CPU
    clip = decode_to_memmap(source, info, tmp_path, frame_limits(info, max_fps=240, trim_s=0.25))
    n = clip.frames.shape[0]
    points, labels = prompt_arrays(((160, 100, 1),))

    async def masks_over(settings: Settings, name: str) -> tuple[np.ndarray, int, list[int]]:
        masks = np.memmap(tmp_path / name, dtype=np.uint8, mode="w+", shape=clip.frames.shape[:3])
        counted = 0

        async def progress(count: int) -> None:
            nonlocal counted
            counted += count

        triton = Triton(settings)
        try:
            await segment(triton, clip.frames, n // 2, points, labels, masks, progress)
            failures = [server.failures for server in triton.servers]
        finally:
            await triton.close()
        return np.array(masks), counted, failures

    dead = f"127.0.0.1:{free_port()}"
    pool = Settings(triton_urls=(dead, triton_settings.triton_grpc_url))
    masks, counted, failures = await masks_over(pool, "pool.u8")
    assert failures == [1, 0]  # the dead one was tried once, the walk sent there started again
    expected, _, _ = await masks_over(triton_settings, "alone.u8")
    assert counted == n
    assert np.array_equal(masks, expected)
    assert masks.any()


def test_a_lost_python_backend_process_counts_as_the_server_unavailable() -> None:
    """Triton's Python backend reports a lost model process per request; the request was fine."""
    lost = InferenceServerException("Stub process 'rvm_0_0' is not healthy.", status="StatusCode.INTERNAL")
    assert isinstance(_translate(lost, "rvm"), TritonUnavailable)
    refused = InferenceServerException("inputs must be uint8", status="StatusCode.INVALID_ARGUMENT")
    failed = _translate(refused, "rvm")
    assert isinstance(failed, InferenceFailed) and not isinstance(failed, TritonUnavailable)
