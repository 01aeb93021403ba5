"""Session fixtures: a real Redis, a real tritonserver and, on top, the real gateway and worker.

Every process listens on a free loopback port and writes under a per-session temporary data dir,
so the suite never touches a developer's running stack. The processes are started with the same
functions `make run` uses (devstack).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from common.settings import REPO_ROOT, Settings
from devstack.app_services import gateway_service, webhook_service, worker_service
from devstack.processes import Service, free_port
from devstack.redis_server import redis_service
from devstack.seaweedfs import seaweedfs_service
from devstack.stack import supervise
from devstack.tritonserver import triton_service

SHARED = (REPO_ROOT.parent / "shared").resolve()
DATA = SHARED / "data"
HUNT = SHARED / "hunt"  # field inputs that broke the service (its README says what is right)
VIDEOS = DATA / "videos"
IMAGES = DATA / "images"
VIDEO_MASKS = DATA / "video_masks"

TEST_TOKEN = "test-token-alpha"
OTHER_TOKEN = "test-token-beta"
WEBHOOK_SECRET = "test-webhook-secret"


def require_models(repo: Path) -> None:
    missing = [p for p in ("rvm/1/model.onnx", "u2netp/1/model.onnx") if not (repo / p).exists()]
    if missing:
        pytest.fail(f"exported models missing ({', '.join(missing)}): run `make models` (make test does)")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack-data")


@pytest.fixture(scope="session")
def redis_port(data_dir: Path) -> Iterator[int]:
    port = free_port()
    svc = redis_service(port, data_dir / "redis")
    svc.start()
    try:
        svc.wait_ready(30)
        yield port
    finally:
        svc.stop()


@dataclass
class S3Server:
    """A real S3 store (SeaweedFS `weed mini`) for the session: what Settings need to reach it."""

    service: Service
    endpoint_url: str
    access_key_id: str
    secret_access_key: str

    def settings(self, base: Settings, bucket: str, **changes: object) -> Settings:
        return base.with_overrides(
            storage_backend="s3",
            s3_endpoint_url=self.endpoint_url,
            s3_bucket=bucket,
            s3_access_key_id=self.access_key_id,
            s3_secret_access_key=self.secret_access_key,
            **changes,
        )


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    port = free_port()
    key, secret = "test-access-key", os.urandom(16).hex()
    svc = seaweedfs_service(port, tmp_path_factory.mktemp("seaweedfs"), key, secret)
    svc.start()
    try:
        svc.wait_ready(60)
        yield S3Server(svc, f"http://127.0.0.1:{port}", key, secret)
    finally:
        svc.stop()


@pytest.fixture(scope="session")
def triton(data_dir: Path) -> Iterator[Service]:
    """A real tritonserver serving model_repository/ (the exported CPU configs)."""
    require_models(REPO_ROOT / "model_repository")
    settings = Settings(
        triton_grpc_port=free_port(),
        triton_http_port=free_port(),
        triton_metrics_port=free_port(),
        data_dir=data_dir,
    )
    svc = triton_service(settings, data_dir / "logs" / "tritonserver.log", data_dir / "backends")
    svc.settings = settings  # type: ignore[attr-defined]
    svc.start()
    # Supervised as `make run` supervises it: tritonserver 2.51's Python backend can abort under
    # concurrent BLS calls (upstream issue 8882; docs/reliability.md), and one such crash would
    # otherwise fail every later test of the session. A restart is printed with the server's last
    # log lines (pytest shows it beside a test that failed meanwhile).
    stop = {"flag": False}
    watcher = threading.Thread(target=supervise, args=([svc], stop), name="triton-supervise", daemon=True)
    try:
        svc.wait_ready(240)
        watcher.start()
        yield svc
    finally:
        stop["flag"] = True
        if watcher.is_alive():
            watcher.join(timeout=15)
        svc.stop()


@pytest.fixture(scope="session")
def triton_settings(triton: Service) -> Settings:
    return triton.settings  # type: ignore[attr-defined,no-any-return]


@pytest.fixture(scope="session")
def triton_url(triton_settings: Settings) -> str:
    return triton_settings.triton_grpc_url


@pytest.fixture(scope="session")
def media_server() -> Iterator[str]:
    """Serves ../shared/data and generated test media over loopback HTTP, for URL inputs."""
    root = DATA

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.fixture(scope="session")
def video_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every input clip of the video tests, made once per session (tests/media.py INPUT_CLIPS)."""
    from media import make_input_clips

    return make_input_clips(VIDEOS / "01_dog.mp4", tmp_path_factory.mktemp("clips"))


async def gone(path: Path, within_s: float = 5.0) -> bool:
    """A downloaded result is removed once its last byte is handed to the transport, which can be
    a moment after the client has read it all: allow that moment, no more."""
    deadline = time.monotonic() + within_s
    while path.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return not path.exists()


async def post_json_job(http: aiohttp.ClientSession, stack: Stack, path: str, body: dict[str, Any]) -> dict:
    """POST a JSON job as `stack.token`, waiting out 429s (a test's jobs run together within the
    token's concurrent-job limit); asserts the 202 and returns its body."""
    for _ in range(60):
        async with http.post(f"{stack.url}{path}", json=body, headers={"api_token": stack.token}) as r:
            payload = await r.json()
        if r.status != 429:
            break
        await asyncio.sleep(0.5)
    assert r.status == 202, payload
    return dict(payload)


async def finished_status(
    http: aiohttp.ClientSession, stack: Stack, request_id: str, timeout_s: float = 240
) -> dict:
    """Poll the mask API's `/status/{request_id}` as `stack.token` until the job completes or
    fails; returns that status body. A 503 (the service's documented "try again", e.g. its Redis
    briefly slow on a loaded CI machine) is waited out like "processing"; any other answer but 200
    fails the test."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with http.get(f"{stack.url}/status/{request_id}", headers={"api_token": stack.token}) as r:
            if r.status == 503:
                await asyncio.sleep(1.0)
                continue
            assert r.status == 200, await r.text()
            body = await r.json()
        assert body["status"] in ("queued", "processing", "completed", "failed"), body
        if body["status"] in ("completed", "failed"):
            return dict(body)
        await asyncio.sleep(0.3)
    raise AssertionError(f"job {request_id} did not finish in {timeout_s}s")


async def mask_error(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, dict]:
    """Send a request the mask API must refuse; check the documented error object, return it."""
    async with http.request(method, url, **kw) as r:
        body = await r.json()
    assert set(body) == {"error", "request_id"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == r.status and body["error"]["details"]
    return r.status, body


@dataclass
class Stack:
    settings: Settings
    url: str
    token: str
    other_token: str
    gateway: Service
    workers: list[Service]


@pytest.fixture(scope="session")
def stack(triton_settings: Settings, redis_port: int, data_dir: Path) -> Iterator[Stack]:
    """The gateway and one worker against the session's Redis and tritonserver."""
    settings = triton_settings.with_overrides(
        gateway_port=free_port(),
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        data_dir=data_dir,
    )
    env = {
        "API_TOKENS": f"{TEST_TOKEN},{OTHER_TOKEN}",
        "ALLOW_LOOPBACK_URLS": "true",
        "RATE_LIMIT_PER_MINUTE": os.environ.get("TEST_RATE_LIMIT_PER_MINUTE", "100000"),
        "POLL_LIMIT_PER_MINUTE": "100000",  # tests poll tightly; test_consistency checks the limit
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "WEBHOOK_RETRY_BASE_S": "0.5",  # test_webhooks: a retry within a second, give up in seconds
        "WEBHOOK_GIVE_UP_S": "4",
    }
    logs = data_dir / "logs"
    gw = gateway_service(settings, logs / "gateway.log", env)
    workers = [worker_service(settings, 0, logs / "worker-0.log", env)]
    sender = webhook_service(settings, logs / "webhooks.log", env)
    started: list[Service] = []
    try:
        for svc in [gw, *workers, sender]:
            svc.start()
            started.append(svc)
        gw.wait_ready(60)
        for worker in [*workers, sender]:
            worker.wait_ready(60)
        yield Stack(settings, settings.base_url, TEST_TOKEN, OTHER_TOKEN, gw, workers)
    finally:
        for svc in reversed(started):
            svc.stop()
