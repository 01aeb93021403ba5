"""Liveness (/healthz: the process answers) and readiness (/readyz: it can serve real work)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.keys import REDIS, TRITON

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
    """200 only when Triton, every required model and Redis are ready; else 503 naming the failures."""
    triton, redis_ok = await asyncio.gather(request.app[TRITON].ready(), _redis_ok(request))
    checks = {f"triton_{name}" if name == "server" else f"model_{name}": ok for name, ok in triton.items()}
    checks["redis"] = redis_ok
    failed = sorted(name for name, ok in checks.items() if not ok)
    body = {"status": "not_ready" if failed else "ready", "checks": checks, "failed": failed}
    return web.json_response(body, status=503 if failed else 200)
