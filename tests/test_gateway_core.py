"""Gateway core against real processes: the conftest stack (gateway + worker + Redis + Triton), an
in-process app on the real Redis for handler-level error paths, and a dedicated Redis + Triton +
gateway that the readiness test stops one by one."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from conftest import OTHER_TOKEN, TEST_TOKEN, Stack
from redis.asyncio import Redis

from common import redis_keys
from common.settings import Settings, hash_token
from devstack.app_services import gateway_service
from devstack.processes import Service, free_port
from devstack.redis_server import redis_service
from devstack.tritonserver import triton_service
from gateway.app import create_app
from gateway.auth import require_owner
from gateway.job_params import ForegroundMaskParams
from gateway.jobs import JobRecord, JobStatus
from gateway.limits import check_rate
from gateway.storage import Storage, StoredResult
from triton_models.foreground import ForegroundModel

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


def _assert_mask_error(body: dict, status: int, request_id: str) -> None:
    assert set(body) == {"error", "request_id"}
    assert body["error"]["code"] == status
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], str)
    assert body["request_id"] == request_id


# --- the running stack ---------------------------------------------------------------------------


async def test_healthz_and_readyz(stack: Stack, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{stack.url}/healthz") as r:
        assert r.status == 200 and (await r.json())["status"] == "ok"
    async with http.get(f"{stack.url}/readyz") as r:
        body = await r.json()
        assert r.status == 200, body
        assert body["failed"] == [] and body["checks"]["redis"] and body["checks"]["model_rvm"]


async def test_request_id_generated_echoed_and_sanitised(stack: Stack, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{stack.url}/healthz") as r:
        assert UUID_RE.match(r.headers["X-Request-ID"])
    async with http.get(f"{stack.url}/healthz", headers={"X-Request-ID": "client-42.a:b"}) as r:
        assert r.headers["X-Request-ID"] == "client-42.a:b"
    for bad in ["has space", "x" * 200, "<script>", ""]:
        async with http.get(f"{stack.url}/healthz", headers={"X-Request-ID": bad}) as r:
            assert UUID_RE.match(r.headers["X-Request-ID"]), bad


async def test_unknown_path_and_wrong_method_in_each_family(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{stack.url}/no/such/thing") as r:
        assert r.status == 404 and await r.json() == {"message": "Not Found"}
    async with http.post(f"{stack.url}/healthz") as r:
        assert r.status == 405 and await r.json() == {"message": "Method Not Allowed"}
        assert "GET" in r.headers["Allow"]
    async with http.get(f"{stack.url}/status/", headers={"X-Request-ID": "rid-404"}) as r:
        assert r.status == 404
        _assert_mask_error(await r.json(), 404, "rid-404")
    async with http.post(f"{stack.url}/results/{uuid.uuid4()}") as r:
        assert r.status == 405
        _assert_mask_error(await r.json(), 405, r.headers["X-Request-ID"])


def _stack_storage(stack: Stack) -> Storage:
    # The gateway process owns the per-data-dir secret; sign with the same one.
    secret = (stack.settings.data_dir / "signing.secret").read_text(encoding="utf-8").strip().encode()
    return Storage(stack.settings.with_overrides(signing_secret=secret))


async def _completed_job(stack: Stack, storage: Storage, content: bytes) -> str:
    job_id = str(uuid.uuid4())
    src = storage.new_temp_dir(job_id) / "mask.mp4"
    src.write_bytes(content)
    stored: StoredResult = await storage.store(job_id, src, "mask.mp4", "video/mp4")
    storage.remove_temp_dir(job_id)
    params = ForegroundMaskParams(preset="mp4_h264", model=ForegroundModel.AUTO, source_url="https://x/v.mp4")
    record = JobRecord(
        id=job_id, kind=params.KIND, owner=hash_token(TEST_TOKEN), status=JobStatus.COMPLETED,
        params=params, created_at=time.time(), finished_at=time.time(), result=stored,
    )  # fmt: skip
    redis = Redis.from_url(stack.settings.redis_url)
    try:
        await redis.set(redis_keys.job_record(job_id), record.to_json(), ex=300)
    finally:
        await redis.aclose()
    return job_id


async def test_signed_result_links(stack: Stack, http: aiohttp.ClientSession) -> None:
    storage = _stack_storage(stack)
    content = b"\x00mask-bytes\xff" * 100
    job_id = await _completed_job(stack, storage, content)

    url, expires_at = storage.signed_url(job_id)
    assert url.startswith(f"{stack.url}/results/{job_id}?") and expires_at.timestamp() > time.time()
    async with http.get(url) as r:  # no api_token: the signature is the credential
        assert r.status == 200 and await r.read() == content
        assert r.headers["Content-Type"] == "video/mp4"
        assert r.headers["Content-Disposition"] == 'attachment; filename="mask.mp4"'

    expired, _ = storage.signed_url(job_id, ttl_s=-5)
    tampered_sig = url[:-1] + ("0" if url[-1] != "0" else "1")
    expires = int(expires_at.timestamp())
    extended = url.replace(f"expires={expires}", f"expires={expires + 3600}")
    other_job = url.replace(job_id, str(uuid.uuid4()))
    for bad in [expired, tampered_sig, extended, other_job, f"{stack.url}/results/{job_id}"]:
        async with http.get(bad) as r:
            assert r.status == 403, bad
            _assert_mask_error(await r.json(), 403, r.headers["X-Request-ID"])

    missing = str(uuid.uuid4())
    missing_url, _ = storage.signed_url(missing)
    async with http.get(missing_url) as r:
        assert r.status == 404
        _assert_mask_error(await r.json(), 404, r.headers["X-Request-ID"])


async def test_access_log_is_json_without_token(stack: Stack, http: aiohttp.ClientSession) -> None:
    rid = f"log-{uuid.uuid4().hex}"
    async with http.get(f"{stack.url}/healthz", headers={"X-Request-ID": rid, "api_token": TEST_TOKEN}) as r:
        assert r.status == 200
    text = ""
    for _ in range(20):  # the line is written right after the response; give the file a moment
        text = stack.gateway.log_path.read_text(encoding="utf-8")
        if rid in text:
            break
        await asyncio.sleep(0.1)
    line = next(json.loads(ln) for ln in text.splitlines() if rid in ln)
    assert (line["method"], line["path"], line["status"], line["request_id"]) == ("GET", "/healthz", 200, rid)
    assert isinstance(line["duration_ms"], int | float)
    assert TEST_TOKEN not in text and OTHER_TOKEN not in text


# --- handler-level paths, in process on the real Redis ----------------------------------------------


@pytest.fixture(scope="module")
async def local_app(redis_port: int, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    settings = Settings(
        gateway_port=free_port(),
        triton_grpc_port=free_port(),  # nothing listens: these routes never call Triton
        redis_url=f"redis://127.0.0.1:{redis_port}/7",
        data_dir=tmp_path_factory.mktemp("core-app"),
        api_token_hashes=frozenset({hash_token(TEST_TOKEN)}),
        signing_secret=b"s",
        max_request_bytes=1024,
        rate_limit_per_minute=5,
    )
    app = create_app(settings)

    async def whoami(request: web.Request) -> web.Response:
        family = "mask" if request.path.startswith("/status/") else "bg"
        return web.json_response({"owner": require_owner(request, family)})

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("/secret/internal/path")

    async def upload(request: web.Request) -> web.Response:
        return web.json_response({"size": len(await request.read())})

    async def limited(request: web.Request) -> web.Response:
        family = "mask" if request.path.startswith("/status/") else "bg"
        await check_rate(request, require_owner(request, family), family)
        return web.json_response({"ok": True})

    for prefix in ("/status/_t", "/_t"):
        app.router.add_get(f"{prefix}/limited", limited)
        app.router.add_get(f"{prefix}/whoami", whoami)
        app.router.add_get(f"{prefix}/boom", boom)
        app.router.add_post(f"{prefix}/upload", upload)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.gateway_port).start()
    try:
        yield settings.base_url
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    "headers", [{}, {"api_token": ""}, {"api_token": "wrong"}, {"api_token": OTHER_TOKEN}]
)
async def test_token_errors_per_family(local_app: str, http: aiohttp.ClientSession, headers: dict) -> None:
    async with http.get(f"{local_app}/_t/whoami", headers=headers) as r:
        assert r.status == 401
        body = await r.json()
        assert set(body) == {"message"} and "api_token" in body["message"]
    async with http.get(f"{local_app}/status/_t/whoami", headers=headers) as r:
        assert r.status == 403
        _assert_mask_error(await r.json(), 403, r.headers["X-Request-ID"])


async def test_valid_token_yields_owner_hash(local_app: str, http: aiohttp.ClientSession) -> None:
    for path in ("/_t/whoami", "/status/_t/whoami"):
        async with http.get(f"{local_app}{path}", headers={"api_token": TEST_TOKEN}) as r:
            assert r.status == 200 and (await r.json())["owner"] == hash_token(TEST_TOKEN)


async def test_unhandled_exception_is_500_without_internals(
    local_app: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{local_app}/_t/boom") as r:
        assert r.status == 500 and await r.json() == {"message": "Internal Server Error"}
    async with http.get(f"{local_app}/status/_t/boom") as r:
        assert r.status == 500
        body = await r.json()
        _assert_mask_error(body, 500, r.headers["X-Request-ID"])
        assert "secret" not in json.dumps(body)


async def test_body_too_large_is_413_in_each_family(local_app: str, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{local_app}/_t/upload", data=b"x" * 100) as r:
        assert r.status == 200
    async with http.post(f"{local_app}/_t/upload", data=b"x" * 5000) as r:
        assert r.status == 413 and await r.json() == {"message": "Payload Too Large"}
    async with http.post(f"{local_app}/status/_t/upload", data=b"x" * 5000) as r:
        assert r.status == 413
        _assert_mask_error(await r.json(), 413, r.headers["X-Request-ID"])


async def test_rate_limit_per_token_in_each_family(local_app: str, http: aiohttp.ClientSession) -> None:
    headers = {"api_token": TEST_TOKEN}
    statuses = []
    for _ in range(5):
        async with http.get(f"{local_app}/_t/limited", headers=headers) as r:
            statuses.append(r.status)
    assert statuses == [200] * 5
    async with http.get(f"{local_app}/_t/limited", headers=headers) as r:
        assert r.status == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
        assert set(await r.json()) == {"message"}
    async with http.get(f"{local_app}/status/_t/limited", headers=headers) as r:
        assert r.status == 429 and "Retry-After" in r.headers
        _assert_mask_error(await r.json(), 429, r.headers["X-Request-ID"])


# --- readiness follows its dependencies ----------------------------------------------------------------


async def _ready(http: aiohttp.ClientSession, url: str) -> tuple[int, list[str]]:
    async with http.get(f"{url}/readyz") as r:
        return r.status, (await r.json())["failed"]


async def _wait_ready_status(http: aiohttp.ClientSession, url: str, status: int) -> list[str]:
    failed: list[str] = []
    for _ in range(60):
        code, failed = await _ready(http, url)
        if code == status:
            return failed
        await asyncio.sleep(0.5)
    raise AssertionError(f"/readyz never answered {status}; last failed checks: {failed}")


async def test_readyz_follows_redis_and_triton(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """Dedicated Redis, tritonserver and gateway, so stopping them disturbs no other test."""
    settings = Settings(
        gateway_port=free_port(),
        triton_grpc_port=free_port(),
        triton_http_port=free_port(),
        triton_metrics_port=free_port(),
        data_dir=tmp_path,
    )
    redis_port = free_port()
    settings = settings.with_overrides(redis_url=f"redis://127.0.0.1:{redis_port}/0")
    redis = redis_service(redis_port, tmp_path / "redis")
    triton = triton_service(settings, tmp_path / "logs" / "triton.log", tmp_path / "backends")
    gateway = gateway_service(settings, tmp_path / "logs" / "gateway.log", {"API_TOKENS": TEST_TOKEN})
    started: list[Service] = []
    try:
        for svc, timeout in ((redis, 30), (triton, 240), (gateway, 60)):
            svc.start()
            started.append(svc)
            svc.wait_ready(timeout)
        url = settings.base_url
        assert await _wait_ready_status(http, url, 200) == []

        redis.stop()
        assert await _wait_ready_status(http, url, 503) == ["redis"]
        redis.start()
        redis.wait_ready(30)
        assert await _wait_ready_status(http, url, 200) == []  # recovers without a restart

        triton.stop()
        failed = await _wait_ready_status(http, url, 503)
        assert "triton_server" in failed and "redis" not in failed
        async with http.get(f"{url}/healthz") as r:
            assert r.status == 200  # alive, just not ready
    finally:
        for svc in reversed(started):
            svc.stop()
