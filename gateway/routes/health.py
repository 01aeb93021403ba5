"""Liveness (/healthz: the process answers) and readiness (/readyz: it can serve real work)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.keys import REDIS, TRITON
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


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """200 only when Redis is ready and one tritonserver has every required model ready (that one
    can serve every request: sequences never span servers); else 503 naming the failures."""
    by_server, redis_ok = await asyncio.gather(request.app[TRITON].ready_by_server(), _redis_ok(request))
    best = most_complete(by_server)
    checks = {f"triton_{name}" if name == "server" else f"model_{name}": ok for name, ok in best.items()}
    checks["redis"] = redis_ok
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
