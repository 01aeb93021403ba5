"""The workers' Prometheus metrics, multiprocess-safe: every worker process writes its values to
files under PROMETHEUS_MULTIPROC_DIR (devstack and compose set it to Settings.worker_metrics_dir,
in the shared data dir) and the gateway's /metrics aggregates them (gateway.metrics). Without a
shared disk (STORAGE=s3, one host per worker) the gateway cannot read those files: each worker
then serves its own /metrics on WORKER_METRICS_PORT (`serve`), scraped like any other target.

prometheus-client picks its multiprocess value store when first imported, from that variable, so
it must be in the worker's environment at start; without it the values stay in the process and
nothing exports them.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client import multiprocess as prometheus_multiprocess

DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
FPS_BUCKETS = (0.5, 1, 2, 4, 8, 15, 25, 50, 100)

JOBS = Counter("matting_jobs", "Jobs ended, by kind and outcome (completed, failed)", ["kind", "outcome"])
RETRIES = Counter("matting_job_retries", "Later tries of a job (Triton outage, dead worker)", ["kind"])
DURATION = Histogram(
    "matting_job_duration_seconds", "Run time of ended jobs", ["kind"], buckets=DURATION_BUCKETS
)
QUEUE_WAIT = Histogram(
    "matting_job_queue_wait_seconds", "Submit to first start", ["kind"], buckets=WAIT_BUCKETS
)
FPS = Histogram(
    "matting_job_frames_per_second", "Frames/s of completed video jobs", ["kind"], buckets=FPS_BUCKETS
)
IN_PROGRESS = Gauge(
    "matting_jobs_in_progress", "Jobs running now (all live workers)", ["kind"], multiprocess_mode="livesum"
)


def process_exited() -> None:
    """Drops this process' live gauges from the aggregate (worker shutdown)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        prometheus_multiprocess.mark_process_dead(os.getpid())


def serve(port: int, host: str = "0.0.0.0") -> None:
    """Serves this host's worker series on `port` (a daemon thread): the multiprocess files of
    every worker sharing PROMETHEUS_MULTIPROC_DIR, or this process' own registry without it."""
    registry = None
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
    if registry is None:
        start_http_server(port, addr=host)
    else:
        start_http_server(port, addr=host, registry=registry)
