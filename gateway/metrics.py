"""Prometheus metrics of the gateway, and GET /metrics (text exposition format, prometheus-client).

The gateway's own series live in one process registry: requests by route and status, latency,
in-flight requests, requests refused by a limit. When METRICS_INCLUDE_WORKERS is on (default),
/metrics also carries the workers' series (worker.metrics), aggregated by prometheus-client's
multiprocess collector from the files the workers write under `Settings.worker_metrics_dir` (the
shared data dir). With several gateways on one data dir, leave it on for one of them only, or the
worker series are scraped twice.
"""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.keys import SETTINGS

REGISTRY = CollectorRegistry()
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

REQUESTS = Counter(
    "matting_http_requests", "HTTP requests answered", ["route", "method", "status"], registry=REGISTRY
)
LATENCY = Histogram(
    "matting_http_request_duration_seconds",
    "Time to answer (streamed bodies: to the last byte)",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
IN_FLIGHT = Gauge("matting_http_requests_in_flight", "Requests being answered now", registry=REGISTRY)
REJECTED = Counter(
    "matting_http_rejections",
    "Requests refused by a limit (rate, poll, queue_full, job_slots)",
    ["reason"],
    registry=REGISTRY,
)


def _route(request: web.Request) -> str:
    # The route's template ("/status/{request_id}"), never the raw path: bounded label values.
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    IN_FLIGHT.inc()
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        IN_FLIGHT.dec()
        route = _route(request)
        REQUESTS.labels(route, request.method, str(status)).inc()
        LATENCY.labels(route, request.method).observe(time.perf_counter() - started)


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: the gateway's registry, plus the workers' when configured."""
    settings = request.app[SETTINGS]
    body = generate_latest(REGISTRY)
    workers_dir = settings.worker_metrics_dir
    if settings.metrics_include_workers and workers_dir.is_dir():
        workers = CollectorRegistry()
        MultiProcessCollector(workers, path=str(workers_dir))
        body += generate_latest(workers)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
