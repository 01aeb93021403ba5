"""One typed settings object, read from the environment once per process.

Every process of the stack (gateway, worker, launcher, tests) builds its settings here, so a
variable means the same thing everywhere. Defaults suit a single development machine on loopback.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env_str(name: str, default: str) -> str:
    return os.environ.get(name, default).strip() or default


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from exc


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name} must be a number, got {raw!r}") from exc


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"environment variable {name} must be true or false, got {raw!r}")


def _env_list(*names: str) -> tuple[str, ...]:
    """Comma-separated items of the first of `names` that is set (blank items dropped)."""
    for name in names:
        raw = os.environ.get(name, "").strip()
        if raw:
            return tuple(item for item in (part.strip() for part in raw.split(",")) if item)
    return ()


def hash_token(token: str) -> str:
    """Tokens are kept and compared only as SHA-256 digests, never in clear."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _read_token_hashes(tokens: str, tokens_file: str) -> frozenset[str]:
    raw: list[str] = [t for t in (s.strip() for s in tokens.split(",")) if t]
    if tokens_file:
        for line in Path(tokens_file).read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                raw.append(line)
    return frozenset(hash_token(t) for t in raw)


def _env_secret(name: str) -> str:
    """`name` from the environment, or the first line of the file `name`_FILE names (a mounted
    secret); "" when neither is set. The value is never logged."""
    value = os.environ.get(name, "").strip()
    if value:
        return value
    path = os.environ.get(f"{name}_FILE", "").strip()
    if path:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return lines[0].strip() if lines else ""
    return ""


def _signing_secret(
    data_dir: Path,
    variable: str = "RESULT_SIGNING_SECRET",
    name: str = "signing",
    *,
    required: bool = False,
) -> bytes:
    """An explicit `variable` (or `variable`_FILE) wins; otherwise one secret per data dir, shared
    by the processes of one host, so what one process signs verifies in another. `required`: no
    shared disk (STORAGE=s3), so a per-data-dir secret would differ between hosts; raises
    ValueError instead of minting one."""
    explicit = _env_secret(variable)
    if explicit:
        return explicit.encode("utf-8")
    if required:
        raise ValueError(
            f"{variable} (or {variable}_FILE) must be set when STORAGE=s3: the hosts share no disk, "
            "so every gateway and worker needs the same key"
        )
    path = data_dir / f"{name}.secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(secrets.token_hex(32), encoding="utf-8")
        tmp.chmod(0o600)
        os.replace(tmp, path)
    return path.read_text(encoding="utf-8").strip().encode("utf-8")


@dataclass(frozen=True)
class Settings:
    # --- network -----------------------------------------------------------------------------
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    public_base_url: str = ""  # base of status_url / mask_url; derived from host and port if empty
    triton_host: str = "127.0.0.1"
    triton_grpc_port: int = 8001
    triton_http_port: int = 8000
    triton_metrics_port: int = 8002
    triton_model_config_name: str = ""  # "" = config.pbtxt (CPU); "gpu" = configs/gpu.pbtxt
    # several tritonservers ("host:port" gRPC addresses, TRITON_URLS); empty: the one above
    triton_urls: tuple[str, ...] = ()
    redis_url: str = "redis://127.0.0.1:6379/0"

    # --- paths -------------------------------------------------------------------------------
    model_repository: Path = REPO_ROOT / "model_repository"
    data_dir: Path = REPO_ROOT / ".run"  # results, uploads, temp files, Redis data, logs

    # --- access ------------------------------------------------------------------------------
    api_token_hashes: frozenset[str] = field(default_factory=frozenset)
    signing_secret: bytes = b""
    rate_limit_per_minute: int = 120
    poll_limit_per_minute: int = 600  # /status, /video/result, /image/hd/result reads per token
    metrics_include_workers: bool = True  # /metrics also serves the workers' series (one gateway)

    # --- webhooks (docs/webhooks.md) ----------------------------------------------------------
    webhook_secret: bytes = b""  # HMAC key of the webhook-signature header (WEBHOOK_SECRET)
    webhook_give_up_s: float = 3600.0  # retries stop this long after the job ended
    webhook_retry_base_s: float = 5.0  # backoff: base * 2**(attempt-1), at most 10 minutes
    webhook_timeout_s: float = 10.0  # one delivery attempt, connect to last byte
    max_concurrent_jobs_per_token: int = 4
    max_queued_jobs: int = 200  # beyond this the queue answers 429/503 instead of accepting work

    # --- fetching foreign URLs ---------------------------------------------------------------
    allow_loopback_urls: bool = False  # admits 127.0.0.0/8 and ::1 only; for tests and local use
    download_max_bytes: int = 1024 * 1024 * 1024
    download_timeout_s: float = 120.0
    download_max_redirects: int = 5

    # --- limits --------------------------------------------------------------------------------
    max_request_bytes: int = 64 * 1024 * 1024  # multipart bodies of the synchronous image API
    # slow clients (gateway/slow_clients.py): headers within the idle timeout of opening a
    # connection or of the previous response; bodies at least this rate over each window
    http_idle_timeout_s: float = 15.0
    http_body_min_bytes_per_s: float = 1024.0
    http_body_window_s: float = 10.0
    # synchronous image requests admitted at once per gateway process (gateway/shedding.py): one,
    # the photos the CPU host's one u2netp instance runs at once; a second would wait a whole photo
    image_max_in_flight: int = 1
    image_max_in_flight_per_token: int = 1
    json_max_bytes: int = 64 * 1024  # JSON bodies (the mask endpoints need about 1 KB)
    form_max_parts: int = 32  # parts of one multipart form (files and text fields)
    form_max_text_bytes: int = 64 * 1024  # all text fields of one form together
    form_max_field_bytes: int = 4096  # one text field
    max_upload_bytes: int = 1024 * 1024 * 1024  # video/HD uploads, streamed to disk
    image_max_side: int = 2048  # regular image endpoints: width and height each at most this
    hd_max_pixels: int = 100_000_000
    video_max_duration_s: float = 60.0
    video_max_side: int = 16000
    # frame-count limits: a duration limit x this rate (timestamps squeezed together cannot carry
    # more frames past a limit); 240 fps covers phone slow motion
    video_max_fps: float = 240.0
    video_submit_trim_s: float = 4.0
    keypoints_max_duration_s: float = 5.0
    keypoints_max_short_side: int = 750

    # --- jobs ----------------------------------------------------------------------------------
    worker_max_jobs: int = 2
    job_timeout_s: int = 1800
    job_max_tries: int = 3
    # a worker's CPU priority (nice 0..19; triton_models/cpu_priority.py): below the gateway's
    # and the photo model's, as the video models in Triton (their config's cpu_nice)
    worker_cpu_nice: int = 19
    worker_cpu_sched_idle: bool = True  # and the SCHED_IDLE policy, as the video models' cpu_sched_idle
    job_lease_s: int = 60  # a killed worker's job is re-run by another worker after about this long
    result_ttl_s: int = 3600  # results never downloaded are removed by the janitor after this
    signed_link_ttl_s: int = 3600

    # --- object storage (STORAGE=s3; docs/ARCHITECTURE.md "Running on many hosts") --------------
    storage_backend: str = "local"  # STORAGE: "local" (DATA_DIR, one host) | "s3" (no shared disk)
    s3_endpoint_url: str = "http://127.0.0.1:8333"  # make run starts SeaweedFS here when it is loopback
    s3_public_endpoint_url: str = ""  # host of presigned links as clients reach it ("" = s3_endpoint_url)
    s3_bucket: str = "matting"
    s3_region: str = "us-east-1"
    # "" = botocore's own chain (AWS_* variables, ~/.aws, instance or pod role)
    s3_access_key_id: str = field(default="", repr=False)
    s3_secret_access_key: str = field(default="", repr=False)
    s3_presigned_links: bool = False  # mask_url / upload_link: presigned store URLs, not the gateway
    s3_multipart_threshold_bytes: int = 16 * 1024 * 1024  # larger files go up in parts
    s3_part_bytes: int = 8 * 1024 * 1024  # S3's minimum part is 5 MiB
    s3_timeout_s: float = 30.0  # read timeout of one store call (connect: 5 s; one retry)
    worker_metrics_port: int = 0  # > 0: the worker serves its own /metrics here (no shared disk)

    # --- inference -----------------------------------------------------------------------------
    triton_timeout_s: float = 60.0
    # a server whose call failed is skipped this long (doubling per failure in a row, 60 s at most)
    triton_retry_after_s: float = 5.0
    frames_in_flight: int = 4  # per video job: bounded pipelining of gRPC requests

    @property
    def triton_grpc_url(self) -> str:
        return f"{self.triton_host}:{self.triton_grpc_port}"

    @property
    def triton_grpc_urls(self) -> tuple[str, ...]:
        """Every tritonserver this process calls (gRPC "host:port"), in the configured order."""
        return self.triton_urls or (self.triton_grpc_url,)

    @property
    def base_url(self) -> str:
        return self.public_base_url.rstrip("/") or f"http://{self.gateway_host}:{self.gateway_port}"

    @property
    def worker_metrics_dir(self) -> Path:
        """prometheus-client multiprocess files of the workers (PROMETHEUS_MULTIPROC_DIR)."""
        return self.data_dir / "metrics" / "workers"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @property
    def tmp_dir(self) -> Path:
        return self.data_dir / "tmp"

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls) -> Settings:
        data_dir = Path(_env_str("DATA_DIR", str(REPO_ROOT / ".run"))).resolve()
        d = cls()
        storage_backend = _env_str("STORAGE", d.storage_backend).lower()
        if storage_backend not in ("local", "s3"):
            raise ValueError(f"environment variable STORAGE must be local or s3, got {storage_backend!r}")
        return cls(
            gateway_host=_env_str("GATEWAY_HOST", d.gateway_host),
            gateway_port=_env_int("GATEWAY_PORT", d.gateway_port),
            public_base_url=_env_str("PUBLIC_BASE_URL", ""),
            triton_host=_env_str("TRITON_HOST", d.triton_host),
            triton_grpc_port=_env_int("TRITON_GRPC_PORT", d.triton_grpc_port),
            triton_http_port=_env_int("TRITON_HTTP_PORT", d.triton_http_port),
            triton_metrics_port=_env_int("TRITON_METRICS_PORT", d.triton_metrics_port),
            triton_model_config_name=_env_str("TRITON_MODEL_CONFIG_NAME", ""),
            # TRITON_URL (one address) stays valid: a list of one
            triton_urls=_env_list("TRITON_URLS", "TRITON_URL"),
            redis_url=_env_str("REDIS_URL", d.redis_url),
            model_repository=Path(_env_str("MODEL_REPOSITORY", str(d.model_repository))).resolve(),
            data_dir=data_dir,
            api_token_hashes=_read_token_hashes(
                os.environ.get("API_TOKENS", ""), os.environ.get("API_TOKENS_FILE", "").strip()
            ),
            signing_secret=_signing_secret(data_dir, required=storage_backend == "s3"),
            webhook_secret=_signing_secret(data_dir, "WEBHOOK_SECRET", "webhook"),
            webhook_give_up_s=_env_float("WEBHOOK_GIVE_UP_S", d.webhook_give_up_s),
            webhook_retry_base_s=_env_float("WEBHOOK_RETRY_BASE_S", d.webhook_retry_base_s),
            rate_limit_per_minute=_env_int("RATE_LIMIT_PER_MINUTE", d.rate_limit_per_minute),
            poll_limit_per_minute=_env_int("POLL_LIMIT_PER_MINUTE", d.poll_limit_per_minute),
            metrics_include_workers=_env_bool("METRICS_INCLUDE_WORKERS", d.metrics_include_workers),
            max_concurrent_jobs_per_token=_env_int(
                "MAX_CONCURRENT_JOBS_PER_TOKEN", d.max_concurrent_jobs_per_token
            ),
            max_queued_jobs=_env_int("MAX_QUEUED_JOBS", d.max_queued_jobs),
            allow_loopback_urls=_env_bool("ALLOW_LOOPBACK_URLS", d.allow_loopback_urls),
            download_max_bytes=_env_int("DOWNLOAD_MAX_BYTES", d.download_max_bytes),
            download_timeout_s=_env_float("DOWNLOAD_TIMEOUT_S", d.download_timeout_s),
            download_max_redirects=_env_int("DOWNLOAD_MAX_REDIRECTS", d.download_max_redirects),
            max_request_bytes=_env_int("MAX_REQUEST_BYTES", d.max_request_bytes),
            max_upload_bytes=_env_int("MAX_UPLOAD_BYTES", d.max_upload_bytes),
            image_max_side=_env_int("IMAGE_MAX_SIDE", d.image_max_side),
            hd_max_pixels=_env_int("HD_MAX_PIXELS", d.hd_max_pixels),
            video_max_duration_s=_env_float("VIDEO_MAX_DURATION_S", d.video_max_duration_s),
            video_max_side=_env_int("VIDEO_MAX_SIDE", d.video_max_side),
            video_max_fps=_env_float("VIDEO_MAX_FPS", d.video_max_fps),
            json_max_bytes=_env_int("JSON_MAX_BYTES", d.json_max_bytes),
            image_max_in_flight=_env_int("IMAGE_MAX_IN_FLIGHT", d.image_max_in_flight),
            image_max_in_flight_per_token=_env_int(
                "IMAGE_MAX_IN_FLIGHT_PER_TOKEN", d.image_max_in_flight_per_token
            ),
            http_idle_timeout_s=_env_float("HTTP_IDLE_TIMEOUT_S", d.http_idle_timeout_s),
            http_body_min_bytes_per_s=_env_float("HTTP_BODY_MIN_BYTES_PER_S", d.http_body_min_bytes_per_s),
            http_body_window_s=_env_float("HTTP_BODY_WINDOW_S", d.http_body_window_s),
            form_max_parts=_env_int("FORM_MAX_PARTS", d.form_max_parts),
            form_max_text_bytes=_env_int("FORM_MAX_TEXT_BYTES", d.form_max_text_bytes),
            form_max_field_bytes=_env_int("FORM_MAX_FIELD_BYTES", d.form_max_field_bytes),
            video_submit_trim_s=_env_float("VIDEO_SUBMIT_TRIM_S", d.video_submit_trim_s),
            keypoints_max_duration_s=_env_float("KEYPOINTS_MAX_DURATION_S", d.keypoints_max_duration_s),
            keypoints_max_short_side=_env_int("KEYPOINTS_MAX_SHORT_SIDE", d.keypoints_max_short_side),
            worker_max_jobs=_env_int("WORKER_MAX_JOBS", d.worker_max_jobs),
            job_timeout_s=_env_int("JOB_TIMEOUT_S", d.job_timeout_s),
            job_max_tries=_env_int("JOB_MAX_TRIES", d.job_max_tries),
            job_lease_s=_env_int("JOB_LEASE_S", d.job_lease_s),
            worker_cpu_nice=_env_int("WORKER_CPU_NICE", d.worker_cpu_nice),
            worker_cpu_sched_idle=_env_bool("WORKER_CPU_SCHED_IDLE", d.worker_cpu_sched_idle),
            result_ttl_s=_env_int("RESULT_TTL_S", d.result_ttl_s),
            signed_link_ttl_s=_env_int("SIGNED_LINK_TTL_S", d.signed_link_ttl_s),
            storage_backend=storage_backend,
            s3_endpoint_url=_env_str("S3_ENDPOINT_URL", d.s3_endpoint_url),
            s3_public_endpoint_url=_env_str("S3_PUBLIC_ENDPOINT_URL", ""),
            s3_bucket=_env_str("S3_BUCKET", d.s3_bucket),
            s3_region=_env_str("S3_REGION", d.s3_region),
            s3_access_key_id=_env_secret("S3_ACCESS_KEY_ID"),
            s3_secret_access_key=_env_secret("S3_SECRET_ACCESS_KEY"),
            s3_presigned_links=_env_bool("S3_PRESIGNED_LINKS", d.s3_presigned_links),
            s3_multipart_threshold_bytes=_env_int(
                "S3_MULTIPART_THRESHOLD_BYTES", d.s3_multipart_threshold_bytes
            ),
            s3_part_bytes=_env_int("S3_PART_BYTES", d.s3_part_bytes),
            s3_timeout_s=_env_float("S3_TIMEOUT_S", d.s3_timeout_s),
            worker_metrics_port=_env_int("WORKER_METRICS_PORT", d.worker_metrics_port),
            triton_timeout_s=_env_float("TRITON_TIMEOUT_S", d.triton_timeout_s),
            triton_retry_after_s=_env_float("TRITON_RETRY_AFTER_S", d.triton_retry_after_s),
            frames_in_flight=_env_int("FRAMES_IN_FLIGHT", d.frames_in_flight),
        )
