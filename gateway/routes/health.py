"""Liveness (/healthz: the process answers) and readiness (/readyz: it can serve real work)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.keys import REDIS, STORAGE, TRITON
from gateway.triton import most_complete

routes = web.RouteTableDef()

_PING_TIMEOUT_S = 2.0


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _redis_ok(request: web.Request) -> bool:
    try:
        return bool(await asyncio.wait_for(request.app[REDIS].ping(), _PING_TIMEOUT_S))
    except Exception:  # any failure means "not ready"; the reason is not the client's business
        return False


async def _store_ok(request: web.Request) -> bool:
    try:
        return await asyncio.wait_for(request.app[STORAGE].ready(), _PING_TIMEOUT_S)
    except asyncio.TimeoutError:  # not yet the builtin TimeoutError on Python 3.10
        return False


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """200 only when Redis, (STORAGE=s3) the object store and one tritonserver with every required
    model are ready (that one can serve every request: sequences never span servers); else 503
    naming the failures."""
    storage = request.app[STORAGE]
    by_server, redis_ok, store_ok = await asyncio.gather(
        request.app[TRITON].ready_by_server(), _redis_ok(request), _store_ok(request)
    )
    best = most_complete(by_server)
    checks = {f"triton_{name}" if name == "server" else f"model_{name}": ok for name, ok in best.items()}
    checks["redis"] = redis_ok
    if storage.object_store is not None:
        checks["object_store"] = store_ok
    failed = sorted(name for name, ok in checks.items() if not ok)
    body = {
        "status": "not_ready" if failed else "ready",
        "checks": checks,
        "failed": failed,
        "triton_servers": {
            "configured": len(by_server),
            "ready": sum(all(answer.values()) for answer in by_server),
        },
    }
    return web.json_response(body, status=503 if failed else 200)
