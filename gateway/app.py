"""Application factory, middlewares and start-up/shutdown; `python -m gateway.app` serves it.

Handlers reach the shared per-process clients through the keys in gateway.keys. Each route module
exposes `routes: web.RouteTableDef`; ROUTE_TABLES lists them all, so the endpoints a gateway
serves are read here, in one line, and an endpoint is added by adding its module to that line.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler
from arq.connections import ArqRedis

from common.settings import Settings
from gateway import protocol_errors
from gateway.errors import REQUEST_ID, REQUEST_ID_IS_OURS, error_middleware
from gateway.identity import set_server_header
from gateway.jobs import JobStore
from gateway.json_log import bind, setup_logging
from gateway.keys import JOBS, REDIS, SETTINGS, STORAGE, TRITON
from gateway.limits import REFUSALS, RefusalMemo
from gateway.metrics import metrics, metrics_middleware
from gateway.routes import docs, health, images, keypoints, masks, results, studio, videos
from gateway.shedding import IMAGE_IN_FLIGHT, InFlight
from gateway.slow_clients import body_deadline_middleware
from gateway.storage import Storage
from gateway.triton import Triton

ROUTE_TABLES: tuple[web.RouteTableDef, ...] = (
    docs.routes,
    health.routes,
    images.routes,
    keypoints.routes,
    masks.routes,
    results.routes,
    studio.routes,
    videos.routes,
)

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_REDIS_TIMEOUT_S = 5.0

access_log = logging.getLogger("gateway.access")


def connect_redis(settings: Settings) -> ArqRedis:
    """Lazy connection (the process starts even while Redis is down; /readyz says so)."""
    return ArqRedis.from_url(
        settings.redis_url, socket_timeout=_REDIS_TIMEOUT_S, socket_connect_timeout=_REDIS_TIMEOUT_S
    )


@web.middleware
async def request_context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id first (every later layer logs with it), then one access-log line per request."""
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    chosen = bool(_SANE_REQUEST_ID.match(incoming))  # anything else is never logged nor echoed
    request[REQUEST_ID] = incoming if chosen else str(uuid.uuid4())
    request[REQUEST_ID_IS_OURS] = not chosen
    started = time.perf_counter()
    status = 500
    try:
        with bind(request_id=request[REQUEST_ID]):
            response = await handler(request)
        status = response.status
        return response
    finally:
        access_log.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,  # never the query: it may carry a result link's signature
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "request_id": request[REQUEST_ID],
            },
        )


async def _add_request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    # A signal rather than middleware so streamed responses (prepared by handlers) get it too.
    request_id = request.get(REQUEST_ID)
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id


def create_app(settings: Settings) -> web.Application:
    protocol_errors.install()  # requests the HTTP parser refuses answer in our format too
    app = web.Application(
        client_max_size=settings.max_request_bytes,
        middlewares=[
            metrics_middleware,
            request_context_middleware,
            error_middleware,
            body_deadline_middleware,
        ],
    )
    app[SETTINGS] = settings
    storage = app[STORAGE] = Storage(settings)
    app[REFUSALS] = RefusalMemo()
    app[IMAGE_IN_FLIGHT] = InFlight(settings.image_max_in_flight, settings.image_max_in_flight_per_token)

    async def clients(app: web.Application) -> AsyncIterator[None]:
        redis = connect_redis(settings)
        triton = Triton(settings, interactive=True)  # built here: the gRPC channel binds to the running loop
        app[REDIS] = redis
        app[TRITON] = triton
        app[JOBS] = JobStore(redis, settings)
        await storage.start()
        try:
            yield
        finally:
            await storage.close()
            await triton.close()
            await redis.aclose()

    app.cleanup_ctx.append(clients)
    app.on_response_prepare.append(_add_request_id_header)
    app.on_response_prepare.append(set_server_header)
    for table in ROUTE_TABLES:
        app.router.add_routes(table)
    docs.add_docs_page(app)
    app.router.add_get("/metrics", metrics)
    return app


def main() -> None:
    setup_logging()
    settings = Settings.from_env()
    # run_app turns SIGINT/SIGTERM into a graceful shutdown: stop accepting, finish in-flight
    # requests (up to shutdown_timeout), then run the cleanup contexts.
    web.run_app(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        access_log=None,
        keepalive_timeout=settings.http_idle_timeout_s,  # also the header deadline: slow_clients.py
        shutdown_timeout=30.0,
        print=None,
    )


if __name__ == "__main__":
    main()
