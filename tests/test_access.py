"""Access control on real gateway processes: rate limits shared through Redis by two gateways, the
per-token concurrent-job limit, the queue-depth guard, owner isolation, and no token in any log.

Each test runs its own gateway process(es) on the session Redis (a Redis database of its own, so
queued jobs here are never picked up by the session worker) and the session tritonserver.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from conftest import VIDEOS
from media import ClipSpec, make_clip

from common import redis_keys
from common.settings import Settings
from devstack.app_services import gateway_service
from devstack.processes import Service, free_port
from gateway.app import ROUTE_TABLES

# Distinct from the session tokens so these counters and slots never touch another module's.
TOKEN_A = f"access-a-{uuid.uuid4().hex}"
TOKEN_B = f"access-b-{uuid.uuid4().hex}"
LOG_DIR: list[Path] = []  # every gateway log written by this module, for the token check


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("access-logs")
    LOG_DIR.append(path)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(
        VIDEOS / "01_dog.mp4", tmp_path_factory.mktemp("access-clip"), ClipSpec("a.mp4", "libx264")
    )


@contextlib.contextmanager
def gateways(
    base: Settings, redis_port: int, db: int, logs: Path, count: int = 1, **env: str
) -> Iterator[list[str]]:
    """`count` gateway processes sharing Redis database `db`; the database is emptied afterwards."""
    redis_url = f"redis://127.0.0.1:{redis_port}/{db}"
    data_dir = logs / f"data-{db}"
    services: list[Service] = []
    try:
        for _ in range(count):
            settings = base.with_overrides(gateway_port=free_port(), redis_url=redis_url, data_dir=data_dir)
            environment = {"API_TOKENS": f"{TOKEN_A},{TOKEN_B}", "ALLOW_LOOPBACK_URLS": "true", **env}
            svc = gateway_service(settings, logs / f"gateway-{db}-{len(services)}.log", environment)
            services.append(svc)
            svc.start()
            svc.wait_ready(60)
        yield [f"http://127.0.0.1:{s.env['GATEWAY_PORT']}" for s in services]
    finally:
        for svc in services:
            svc.stop()
        with redis.Redis.from_url(redis_url) as client:
            client.flushdb()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


def assert_family(family: str, status: int, body: dict[str, Any], headers: Any) -> None:
    """The documented error body of each family (mask: error object + request_id; bg: message)."""
    if family == "mask":
        assert set(body) == {"error", "request_id"}, body
        assert body["error"]["code"] == status and body["error"]["message"], body
        assert body["request_id"] == headers["X-Request-ID"]
    else:
        assert set(body) == {"message"} and body["message"], body


async def post_mask(http: aiohttp.ClientSession, url: str, token: str, body: Any) -> tuple[int, Any, Any]:
    async with http.post(f"{url}/foreground_mask", json=body, headers={"api_token": token}) as r:
        return r.status, await r.json(), r.headers


async def post_video(
    http: aiohttp.ClientSession, url: str, token: str, clip: Path | None
) -> tuple[int, Any, Any]:
    form = aiohttp.FormData()
    if clip is not None:
        form.add_field("file", clip.read_bytes(), filename="a.mp4", content_type="video/mp4")
    else:
        form.add_field("bg_color", "1,2,3")
    async with http.post(f"{url}/video/submit/v1", data=form, headers={"api_token": token}) as r:
        return r.status, await r.json(), r.headers


# --- rate limit: one budget per token, whichever gateway is asked ---


async def test_rate_limit_holds_across_two_gateway_processes(
    stack: Any, redis_port: int, logs: Path, http: aiohttp.ClientSession
) -> None:
    limit = 6
    with gateways(stack.settings, redis_port, 4, logs, count=2, RATE_LIMIT_PER_MINUTE=str(limit)) as urls:
        window = int(time.time() // 60)
        statuses: list[int] = []
        refused: list[tuple[str, int, Any, Any]] = []
        for i in range(12):  # alternate gateways and families: one budget for them all
            url = urls[i % 2]
            if i % 4 < 2:
                status, body, headers = await post_mask(http, url, TOKEN_A, {})  # 422 once admitted
                family = "mask"
            else:
                status, body, headers = await post_video(http, url, TOKEN_A, None)  # 400 once admitted
                family = "bg"
            statuses.append(status)
            if status == 429:
                refused.append((family, status, body, headers))
        admitted = [s for s in statuses if s != 429]
        assert set(admitted) <= {400, 422}, statuses
        if int(time.time() // 60) == window:  # a new minute may legitimately admit again
            assert len(admitted) == limit, statuses
            assert statuses[limit:] == [429] * (12 - limit), statuses
        assert {f for f, *_ in refused} == {"mask", "bg"}
        for family, status, body, headers in refused:
            assert 1 <= int(headers["Retry-After"]) <= 60
            assert_family(family, status, body, headers)
        # another token has its own budget, on either gateway
        for url in urls:
            status, _, _ = await post_mask(http, url, TOKEN_B, {})
            assert status == 422


# --- concurrent jobs per token and the queue guard (no worker consumes database 5) ---


async def test_concurrent_job_limit_and_full_queue_answer_429(
    stack: Any, redis_port: int, logs: Path, http: aiohttp.ClientSession, media_server: str, clip: Path
) -> None:
    env = {"MAX_CONCURRENT_JOBS_PER_TOKEN": "2", "MAX_QUEUED_JOBS": "3", "RATE_LIMIT_PER_MINUTE": "0"}
    video = {"video": f"{media_server}/videos/01_dog.mp4"}
    with gateways(stack.settings, redis_port, 5, logs, **env) as (url,):
        accepted = [await post_mask(http, url, TOKEN_A, video), await post_video(http, url, TOKEN_A, clip)]
        for family, (status, body, headers) in (
            ("mask", await post_mask(http, url, TOKEN_A, video)),
            ("bg", await post_video(http, url, TOKEN_A, clip)),
        ):
            assert status == 429 and int(headers["Retry-After"]) > 0
            assert_family(family, status, body, headers)
            text = body["error"]["details"] if family == "mask" else body["message"]
            assert "At most 2 jobs" in text  # which limit, not a bare "Too Many Requests"
        # B has free slots, but the queue holds 3 jobs at most
        accepted.append(await post_mask(http, url, TOKEN_B, video))
        assert [status for status, _, _ in accepted] == [202, 202, 202]
        for family, (status, body, headers) in (
            ("mask", await post_mask(http, url, TOKEN_B, video)),
            ("bg", await post_video(http, url, TOKEN_B, clip)),
        ):
            assert status == 429 and int(headers["Retry-After"]) > 0
            assert_family(family, status, body, headers)
            text = body["error"]["details"] if family == "mask" else body["message"]
            assert "too many queued jobs" in text
        with redis.Redis.from_url(f"redis://127.0.0.1:{redis_port}/5") as client:
            assert client.zcard(redis_keys.ARQ_QUEUE) == 3  # refused work was never queued
            assert len(client.keys(redis_keys.job_record("*"))) == 3  # nor left a record behind
        ids = {body.get("request_id") or body["uuid"] for _, body, _ in accepted}
        assert {p.name for p in (logs / "data-5" / "uploads").iterdir()} == ids  # nor an input file


def _has_route(path: str) -> bool:
    return any(getattr(r, "path", None) == path for table in ROUTE_TABLES for r in table)


# --- owner isolation ---


async def test_one_token_never_reads_another_tokens_jobs(
    stack: Any, redis_port: int, logs: Path, http: aiohttp.ClientSession, media_server: str, clip: Path
) -> None:
    with gateways(stack.settings, redis_port, 6, logs, RATE_LIMIT_PER_MINUTE="0") as (url,):
        status, body, _ = await post_mask(http, url, TOKEN_A, {"video": f"{media_server}/videos/01_dog.mp4"})
        assert status == 202
        mask_id = body["request_id"]
        status, body, _ = await post_video(http, url, TOKEN_A, clip)
        assert status == 202
        video_id = body["uuid"]
        owner, other = {"api_token": TOKEN_A}, {"api_token": TOKEN_B}
        async with http.get(f"{url}/status/{mask_id}", headers=owner) as r:
            assert r.status == 200 and (await r.json())["request_id"] == mask_id
        async with http.get(f"{url}/video/result/{video_id}", headers=owner) as r:
            assert r.status == 202
        checks = [("mask", f"/status/{mask_id}"), ("bg", f"/video/result/{video_id}")]
        checks += [("mask", f"/status/{video_id}"), ("bg", f"/video/result/{mask_id}")]  # wrong kind
        if _has_route("/image/hd/result/{uuid}"):  # the HD image API, once it has landed
            checks += [("bg", f"/image/hd/result/{video_id}"), ("bg", f"/image/hd/result/{mask_id}")]
        for family, path in checks:
            async with http.get(f"{url}{path}", headers=other) as r:
                body = await r.json()
                assert r.status == 404, (path, body)
                assert "api_token" not in r.headers and TOKEN_A not in await r.text()
                if family == "mask":
                    assert_family(family, 404, body, r.headers)
        # the owner id leaks nowhere in what the owner sees either
        async with http.get(f"{url}/status/{mask_id}", headers=owner) as r:
            text = await r.text()
            assert TOKEN_A not in text and "owner" not in text


# --- tokens never appear in logs ---


def test_tokens_never_appear_in_logs(stack: Any) -> None:
    """Runs last in this module: every gateway log written above, and the session stack's logs."""
    paths = [p for d in LOG_DIR for p in d.glob("*.log")]
    paths += [stack.gateway.log_path, *(w.log_path for w in stack.workers)]
    assert len(paths) >= 5
    requests = 0
    for path in paths:
        text = path.read_text(encoding="utf-8", errors="replace")
        requests += text.count('"msg": "request"')
        for token in (TOKEN_A, TOKEN_B, stack.token, stack.other_token):
            assert token not in text, f"a token appears in {path}"
    assert requests > 20  # the logs did record the traffic above
