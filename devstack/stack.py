"""The whole local stack: Redis, tritonserver, the gateway and arq workers, in start order.

`run` keeps it in the foreground (Ctrl-C stops everything) and starts a crashed service again
(`supervise`), `up` / `down` run the same thing in the background with a pid file. Tests and
benchmarks compose their own stacks from `stack_services` and `private_settings`, so what they
exercise is what a user runs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from common.settings import REPO_ROOT, Settings
from devstack.app_services import gateway_service, webhook_service, worker_service
from devstack.processes import Service, StackError, free_port, http_ok, port_open, running
from devstack.redis_server import redis_service
from devstack.seaweedfs import s3_answers, seaweedfs_service
from devstack.tritonserver import triton_service


def _redis_port(settings: Settings) -> int:
    return urlparse(settings.redis_url).port or 6379


def _local_s3_port(settings: Settings) -> int | None:
    """The port of a loopback S3 endpoint the launcher may start SeaweedFS on; None otherwise."""
    endpoint = urlparse(settings.s3_endpoint_url)
    if settings.storage_backend != "s3" or endpoint.hostname not in ("127.0.0.1", "localhost"):
        return None
    return endpoint.port or 80


def private_settings(data_dir: Path) -> Settings:
    """Settings for a stack of its own (tests, benchmarks): every service on a free loopback port."""
    return Settings(
        gateway_port=free_port(),
        triton_grpc_port=free_port(),
        triton_http_port=free_port(),
        triton_metrics_port=free_port(),
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        data_dir=data_dir,
    )


def stack_services(
    settings: Settings,
    workers: int = 1,
    env: dict[str, str] | None = None,
    *,
    start_redis: bool = True,
    start_s3: bool = True,
) -> list[Service]:
    """Redis, SeaweedFS (STORAGE=s3 on a loopback endpoint), tritonserver, gateway, workers and the
    webhook sender for `settings`, in start order (stop in reverse)."""
    logs = settings.data_dir / "logs"
    services: list[Service] = []
    if start_redis:
        services.append(redis_service(_redis_port(settings), settings.data_dir / "redis"))
    s3_port = _local_s3_port(settings)
    if start_s3 and s3_port is not None:
        services.append(
            seaweedfs_service(
                s3_port,
                settings.data_dir / "seaweedfs",
                settings.s3_access_key_id,
                settings.s3_secret_access_key,
            )
        )
    services.append(triton_service(settings, logs / "tritonserver.log", settings.data_dir / "backends"))
    services.append(gateway_service(settings, logs / "gateway.log", env))
    services.extend(worker_service(settings, i, logs / f"worker-{i}.log", env) for i in range(workers))
    services.append(webhook_service(settings, logs / "webhooks.log", env))
    return services


def plan_stack(settings: Settings, workers: int = 1) -> list[Service]:
    """The services `make run` starts: Redis only when nothing answers at REDIS_URL already, and
    with STORAGE=s3 SeaweedFS only when nothing answers at a loopback S3_ENDPOINT_URL."""
    redis_port = _redis_port(settings)
    start_redis = not port_open("127.0.0.1", redis_port)
    if not start_redis:
        print(f"using the Redis already listening on port {redis_port}")
    start_s3 = _local_s3_port(settings) is not None and not s3_answers(settings.s3_endpoint_url)
    if settings.storage_backend == "s3" and not start_s3:
        print(f"using the S3 store at {settings.s3_endpoint_url}")
    return stack_services(settings, workers, start_redis=start_redis, start_s3=start_s3)


def _dev_s3_env() -> dict[str, str]:
    """STORAGE=s3 on one development machine: the signing key and, for a loopback store, S3 keys
    the launcher's SeaweedFS accepts, kept in DATA_DIR so a restart (or a store still running)
    keeps working. Explicit settings always win; nothing is printed."""
    if os.environ.get("STORAGE", "").strip().lower() != "s3":
        return {}
    data_dir = Path(os.environ.get("DATA_DIR", "").strip() or REPO_ROOT / ".run").resolve()
    env: dict[str, str] = {}
    if not (os.environ.get("RESULT_SIGNING_SECRET") or os.environ.get("RESULT_SIGNING_SECRET_FILE")):
        env["RESULT_SIGNING_SECRET_FILE"] = str(_dev_secret(data_dir / "signing.secret"))
    if not (os.environ.get("S3_ACCESS_KEY_ID") or os.environ.get("S3_ACCESS_KEY_ID_FILE")):
        env["S3_ACCESS_KEY_ID"] = "matting-dev"
        env["S3_SECRET_ACCESS_KEY_FILE"] = str(_dev_secret(data_dir / "seaweedfs" / "dev-secret-key"))
    return env


def _dev_secret(path: Path) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(24), encoding="utf-8")
    return path


def _dev_token_notice(settings: Settings) -> dict[str, str]:
    """With no token configured, mint one for this run and say so: a usable service out of the box."""
    if settings.api_token_hashes:
        return {}
    token = "dev-" + os.urandom(12).hex()
    print(
        f"\nNo API_TOKENS configured: development token for this run:\n\n    api_token: {token}\n",
        flush=True,
    )
    return {"API_TOKENS": token}


def run(workers: int = 1) -> int:
    os.environ.update(_dev_s3_env())
    settings = Settings.from_env()
    extra = _dev_token_notice(settings)
    os.environ.update(extra)
    services = plan_stack(settings, workers)
    stop = {"flag": False}

    def _on_signal(signum: int, _frame: object) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        with running(services) as started:
            print(f"\nready: gateway on {settings.base_url}  (Ctrl-C stops everything)\n", flush=True)
            return supervise(started, stop)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


# A crashed service is started again instead of taking the others down with it: tritonserver
# 2.51's Python backend can abort under concurrent BLS load (boost lock_exception / SIGSEGV in a
# model process; upstream triton-inference-server/server issue 8882), and the workers retry a job
# whose Triton went away (docs/reliability.md). A service that keeps dying (more than
# RESTARTS_ALLOWED times within RESTART_WINDOW_S) stops the stack, as a broken set-up would. A
# restart that is not ready within RESTART_READY_S is killed and counts as one more exit: a
# supervisor that waits forever on a wedged start serves nothing either.
RESTARTS_ALLOWED = 5
RESTART_WINDOW_S = 600.0
RESTART_READY_S = 120.0


def supervise(
    started: list[Service],
    stop: dict[str, bool],
    poll_s: float = 0.5,
    restart_ready_s: float = RESTART_READY_S,
) -> int:
    """Watch `started` until stop["flag"]; restart each one that exits (its whole process group
    first, so a crashed tritonserver leaves no model process or shared memory behind), giving each
    restart `restart_ready_s` seconds to be ready. Returns 0 when stopped, 1 when a service exits,
    or fails to come back, too often."""
    restarts: dict[str, list[float]] = {}
    while not stop["flag"]:
        for svc in started:
            if svc.alive():
                continue
            now = time.monotonic()
            recent = [t for t in restarts.get(svc.name, []) if now - t < RESTART_WINDOW_S]
            code = svc.proc.returncode if svc.proc is not None else None
            print(f"{svc.name} exited (code {code}); last log lines:\n{svc.tail()}", flush=True)
            if len(recent) >= RESTARTS_ALLOWED:
                print(f"{svc.name} exited {len(recent) + 1} times in {RESTART_WINDOW_S:.0f} s", flush=True)
                return 1
            restarts[svc.name] = [*recent, now]
            svc.kill_group()
            print(f"restarting {svc.name} ({len(recent) + 1} of {RESTARTS_ALLOWED} allowed)", flush=True)
            svc.start()
            try:
                svc.wait_ready(restart_ready_s)
            except StackError as exc:
                print(f"{svc.name} did not come back: {exc}", flush=True)
                svc.stop(timeout_s=5, sig=signal.SIGKILL)  # the next round starts it again
                continue
            print(f"{svc.name} is back", flush=True)
        time.sleep(poll_s)
    return 0


def _pid_file(settings: Settings) -> Path:
    return settings.data_dir / "stack.pid"


def up(workers: int = 1, timeout_s: float = 600.0) -> int:
    """Run the stack in the background and return once /readyz answers 200."""
    os.environ.update(_dev_s3_env())
    settings = Settings.from_env()
    pid_file = _pid_file(settings)
    if pid_file.exists():
        if _pid_alive(int(pid_file.read_text(encoding="utf-8").strip() or 0)):
            print(f"a stack is running already (pid file {pid_file}); `make down` first")
            return 1
        pid_file.unlink()  # left by a launcher that died: nothing to stop
    log_path = settings.data_dir / "logs" / "stack.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devstack", "run", "--workers", str(workers)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
    pid_file.write_text(str(proc.pid), encoding="utf-8")
    ready_url = f"http://{settings.gateway_host}:{settings.gateway_port}/readyz"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pid_file.unlink(missing_ok=True)
            print(f"the stack exited during start-up; see {log_path}")
            return 1
        if http_ok(ready_url):
            print(f"ready: {settings.base_url} (log: {log_path})")
            token_lines = [ln for ln in log_path.read_text().splitlines() if "api_token:" in ln]
            if token_lines:
                print("development token:", token_lines[-1].split("api_token:")[1].strip())
            return 0
        time.sleep(1)
    print(f"not ready after {timeout_s:.0f}s; see {log_path}")
    return 1


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def down() -> int:
    os.environ.update(_dev_s3_env())
    settings = Settings.from_env()
    pid_file = _pid_file(settings)
    if not pid_file.exists():
        print("no stack running")
        return 0
    pid = int(pid_file.read_text(encoding="utf-8").strip())
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        for _ in range(120):
            os.kill(pid, 0)
            time.sleep(0.5)
    pid_file.unlink(missing_ok=True)
    print("stopped")
    return 0
