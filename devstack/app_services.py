"""The project's own processes: the aiohttp gateway and arq workers, configured through the
environment so each child builds the same Settings as the launcher."""

from __future__ import annotations

import sys
from pathlib import Path

from common import redis_keys
from common.settings import Settings
from devstack.processes import Service, http_ok


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process build the same Settings."""
    return {
        "GATEWAY_HOST": settings.gateway_host,
        "GATEWAY_PORT": str(settings.gateway_port),
        "TRITON_HOST": settings.triton_host,
        "TRITON_GRPC_PORT": str(settings.triton_grpc_port),
        "TRITON_HTTP_PORT": str(settings.triton_http_port),
        "TRITON_METRICS_PORT": str(settings.triton_metrics_port),
        "TRITON_URLS": ",".join(settings.triton_grpc_urls),
        "REDIS_URL": settings.redis_url,
        "MODEL_REPOSITORY": str(settings.model_repository),
        "DATA_DIR": str(settings.data_dir),
        **s3_env(settings),
    }


def s3_env(settings: Settings) -> dict[str, str]:
    """The object-store part of settings_env (credentials only when set: else the child's own
    environment or botocore's chain applies)."""
    env = {
        "STORAGE": settings.storage_backend,
        "S3_ENDPOINT_URL": settings.s3_endpoint_url,
        "S3_PUBLIC_ENDPOINT_URL": settings.s3_public_endpoint_url,
        "S3_BUCKET": settings.s3_bucket,
        "S3_REGION": settings.s3_region,
        "S3_PRESIGNED_LINKS": str(settings.s3_presigned_links).lower(),
    }
    if settings.s3_access_key_id and settings.s3_secret_access_key:
        env["S3_ACCESS_KEY_ID"] = settings.s3_access_key_id
        env["S3_SECRET_ACCESS_KEY"] = settings.s3_secret_access_key
    return env


def gateway_service(settings: Settings, log_path: Path, env: dict[str, str] | None = None) -> Service:
    url = f"http://{settings.gateway_host}:{settings.gateway_port}/healthz"
    return Service(
        "gateway",
        [sys.executable, "-m", "gateway.app"],
        lambda: http_ok(url),
        log_path,
        env={**settings_env(settings), **(env or {})},
    )


def _worker_registered(redis_url: str, key: str = redis_keys.ARQ_WORKER_HEALTH_CHECK) -> bool:
    """arq writes its health-check key on the first pass of its main loop: the worker is polling."""
    import redis

    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
        with client:
            return bool(client.exists(key))
    except redis.RedisError:
        return False


def worker_service(
    settings: Settings, index: int, log_path: Path, env: dict[str, str] | None = None
) -> Service:
    metrics_dir = settings.worker_metrics_dir
    metrics_dir.mkdir(parents=True, exist_ok=True)
    return Service(
        f"worker-{index}",
        [sys.executable, "-m", "worker.main"],
        lambda: _worker_registered(settings.redis_url),
        log_path,
        env={**settings_env(settings), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), **(env or {})},
    )


def webhook_service(settings: Settings, log_path: Path, env: dict[str, str] | None = None) -> Service:
    """The webhook sender (`python -m gateway.webhooks`): one is enough for a deployment."""
    return Service(
        "webhooks",
        [sys.executable, "-m", "gateway.webhooks"],
        lambda: _worker_registered(settings.redis_url, redis_keys.WEBHOOK_HEALTH_CHECK),
        log_path,
        env={**settings_env(settings), **(env or {})},
    )
